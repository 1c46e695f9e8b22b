"""Real loopback TCP: killed connections, pulled cables, socket options, hostile bytes."""

from __future__ import annotations

import random
import socket
from urllib.parse import urlsplit

import pytest
import trio

import reliablelink
from reliablelink._core._frames import DATA_HEADER, HEADER, PREFACE, U64_FRAME, FrameType
from reliablelink.testing import ChaosProxy, Ledger, number_of, numbered
from reliablelink.transports import StreamOptions, TCPTransport
from tests.helpers import FAST, KEY, SERVER_FAST, RunServer, echo
from tests.security.raw import ERROR_BYTE, handshake, open_from, read_until_closed


async def test_thousands_of_messages_survive_dozens_of_killed_connections(
    run_server: RunServer, nursery: trio.Nursery
) -> None:
    """4,000 numbered messages each way through an echo server while the proxy resets the
    connection 40 times, spread evenly, each with messages in flight and each only once the
    connection has carried echoes."""
    total, cuts = 4000, 40
    cut_at = {(k + 1) * total // (cuts + 1) for k in range(cuts)}
    up, down = Ledger(), Ledger()
    echoed = trio.lowlevel.ParkingLot()

    async def recording_echo(session: reliablelink.Session) -> None:
        async for data in session:
            up.on_receive(number_of(data))
            await session.send(data)
            down.on_send(number_of(data))

    async def cut(session: reliablelink.Session, proxy: ChaosProxy) -> None:
        while session.link_state is not reliablelink.LinkState.CONNECTED:
            await session.wait_link_change()
        before = down.received
        while down.received == before and session.stats.in_flight:
            await echoed.park()
        proxy.kill_all()
        await session.wait_link_change()  # noticed: the next cut is on a new connection

    async def send_all(session: reliablelink.Session, proxy: ChaosProxy) -> None:
        for i in range(total):
            if i in cut_at:
                await cut(session, proxy)
            await session.send(numbered(i, 100))
            up.on_send(i)

    with trio.fail_after(120):
        server = await run_server(recording_echo, "tcp://127.0.0.1:0")
        proxy = ChaosProxy(server.url)
        url = await nursery.start(proxy.run)
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, reconnect_backoff=(0.005, 0.1)) as session:
            async with trio.open_nursery() as inner:
                inner.start_soon(send_all, session, proxy)
                while down.received < total:
                    down.on_receive(number_of(await session.receive()))
                    echoed.unpark_all()
            await session.drain()
            stats = session.stats
    assert proxy.kills == cuts
    assert stats.reconnects >= cuts, f"every cut forced a reconnect ({stats.reconnects})"
    assert stats.resent > 0, "cuts landed with messages in flight"
    assert up.result().exact, up.result().line("client -> server")
    assert down.result().exact, down.result().line("server -> client")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_independent_streams_both_ways_with_random_kills(
    seed: int, run_server: RunServer, nursery: trio.Nursery
) -> None:
    """Client and server each push their own stream while the proxy resets connections at
    random moments (seeded: rerun with the seed printed in the failure)."""
    rng = random.Random(seed)
    total = 3000
    up, down = Ledger(), Ledger()
    progress = trio.lowlevel.ParkingLot()

    async def push(session: reliablelink.Session, ledger: Ledger, sizes: random.Random) -> None:
        for i in range(total):
            await session.send(numbered(i, sizes.randrange(8, 2000)))
            ledger.on_send(i)

    async def pull(session: reliablelink.Session, ledger: Ledger) -> None:
        while ledger.received < total:
            ledger.on_receive(number_of(await session.receive()))
            progress.unpark_all()

    async def handler(session: reliablelink.Session) -> None:
        async with trio.open_nursery() as n:
            n.start_soon(push, session, down, random.Random(seed + 1000))
            n.start_soon(pull, session, up)
        await session.drain()

    with trio.fail_after(120):
        server = await run_server(handler, "tcp://127.0.0.1:0", **SERVER_FAST)
        proxy = ChaosProxy(server.url)
        url = await nursery.start(proxy.run)
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, **(FAST | {"max_inflight": 256})) as session:

            async def chaos() -> None:
                while True:
                    # Kill after a random amount of progress, so cuts land mid-stream.
                    target = up.received + down.received + rng.randrange(50, 400)
                    while up.received + down.received < target:
                        await progress.park()
                    proxy.kill_all()

            async with trio.open_nursery() as inner:
                inner.start_soon(chaos)
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(push, session, up, random.Random(seed))
                    traffic.start_soon(pull, session, down)
                inner.cancel_scope.cancel()
            await session.drain()
            reconnects = session.stats.reconnects
    assert proxy.kills >= 5, f"seed {seed}: only {proxy.kills} kills"
    assert reconnects >= 5, f"seed {seed}: only {reconnects} reconnects"
    for name, ledger in (("client -> server", up), ("server -> client", down)):
        assert ledger.result().exact, f"seed {seed}: {ledger.result().line(name)}"


async def test_blackholed_connection_is_detected_and_replaced(run_server: RunServer, nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
        proxy = ChaosProxy(server.url)
        url = await nursery.start(proxy.run)
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, **FAST) as session:
            await session.send(b"before")
            assert await session.receive() == b"before"
            proxy.blackhole_all()  # bytes vanish both ways; no FIN, no RST
            await session.send(b"during")
            assert await session.receive() == b"during", "resent on the new connection"
            assert session.stats.reconnects == 1


async def test_tcp_sockets_get_nodelay_user_timeout_and_keepalive(nursery: trio.Nursery) -> None:
    accepted: list[trio.SocketStream] = []
    arrived = trio.Event()

    async def keep(stream: trio.abc.Stream) -> None:
        assert isinstance(stream, trio.SocketStream)
        accepted.append(stream)
        arrived.set()
        await trio.sleep_forever()

    transport = TCPTransport()
    opts = StreamOptions(dead_after=7.0)
    url = await nursery.start(transport.serve, urlsplit("tcp://127.0.0.1:0"), keep, opts)
    client = await transport.open_stream(urlsplit(url), opts)
    await arrived.wait()
    for stream in (client, accepted[0]):
        assert isinstance(stream, trio.SocketStream)
        sock = stream.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 7000
    await client.aclose()


HOSTILE_BEFORE_HANDSHAKE = {
    "garbage preface": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "wrong version": b"RLNK\x00\x07\r\n",
    "oversized length": PREFACE + HEADER.pack(2**32 - 1, FrameType.HELLO),
    "unknown frame type": PREFACE + HEADER.pack(1, 77),
    "DATA before handshake": PREFACE + DATA_HEADER.pack(18, FrameType.DATA, 1, 0) + b"x",
}
HOSTILE_AFTER_HANDSHAKE = {
    "ACK of a sequence never sent": U64_FRAME.pack(9, FrameType.ACK, 10),
    "sequence jump": DATA_HEADER.pack(18, FrameType.DATA, 5, 0) + b"x",
    "unknown frame type": HEADER.pack(1, 99),
    "oversized length": HEADER.pack(2**31, FrameType.DATA),
}


@pytest.mark.parametrize(
    "name", sorted(HOSTILE_BEFORE_HANDSHAKE) + [f"after: {n}" for n in sorted(HOSTILE_AFTER_HANDSHAKE)]
)
async def test_hostile_bytes_close_that_connection_and_the_server_keeps_serving(
    name: str, run_server: RunServer
) -> None:
    with trio.fail_after(20):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        if name.startswith("after: "):
            stream = await open_from(server.url)
            await handshake(stream, "agent-1", KEY)
            await stream.send_all(HOSTILE_AFTER_HANDSHAKE[name.removeprefix("after: ")])
        else:
            stream = await open_from(server.url)
            await stream.send_all(HOSTILE_BEFORE_HANDSHAKE[name])
        answer = await read_until_closed(stream)
        assert ERROR_BYTE in answer, "the server says why before closing"
        await stream.aclose()
        # The server is still up and serves a legitimate client.
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            await session.send(b"still here")
            assert await session.receive() == b"still here"


async def test_truncated_stream_mid_frame_is_just_a_lost_connection(run_server: RunServer) -> None:
    with trio.fail_after(20):
        server = await run_server(echo, "tcp://127.0.0.1:0")
        stream = await open_from(server.url)
        await handshake(stream, "agent-1", KEY)
        await stream.send_all(DATA_HEADER.pack(1017, FrameType.DATA, 1, 0) + b"only part of it")
        await stream.aclose()
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            await session.send(b"ok")
            assert await session.receive() == b"ok"
