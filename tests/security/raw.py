"""A hand-driven client for attacking a server over real loopback sockets."""

from __future__ import annotations

import struct

import trio

from reliablelink._core import ClientHandshake, HandshakeResult, LinkParams, ResumeRequest
from reliablelink._core._frames import FrameType

# The type byte of an ERROR frame: how a server says why it closes a connection.
ERROR_BYTE = struct.pack(">B", FrameType.ERROR)


async def open_from(url: str, source: str = "127.0.0.1") -> trio.SocketStream:
    """Connect to ``tcp://host:port`` from the local address ``source`` (127.0.0.0/8 all works
    on Linux loopback, so each test attacker can have an address of its own)."""
    host, port = url.removeprefix("tcp://").rsplit(":", 1)
    sock = trio.socket.socket()
    try:
        await sock.bind((source, 0))
        await sock.connect((host, int(port)))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def handshake(
    stream: trio.SocketStream,
    client_id: str,
    key: bytes,
    *,
    params: LinkParams | None = None,
    resume: ResumeRequest | None = None,
    transcript: list[bytes] | None = None,
) -> HandshakeResult:
    """Run the client side of the handshake by hand; raises what the core raises.

    ``transcript`` collects every chunk the client sent (to replay it later).
    """
    hs = ClientHandshake(client_id, key, params or LinkParams(), resume)
    out = hs.data_to_send()
    while True:
        if out:
            if transcript is not None:
                transcript.append(out)
            await stream.send_all(out)
        data = await stream.receive_some(4096)
        if not data:
            raise trio.BrokenResourceError("server closed the connection during the handshake")
        result = hs.receive_data(data)
        if result is not None:
            return result
        out = hs.data_to_send()


async def read_until_closed(stream: trio.abc.Stream, limit: float = 10) -> bytes:
    """Everything the server sends until it closes the connection (fails after ``limit`` s)."""
    got = b""
    with trio.fail_after(limit):
        try:
            while data := await stream.receive_some(65536):
                got += data
        except trio.BrokenResourceError:
            pass
    return got
