"""Helpers shared by the test modules: keys, option sets, the echo handlers, starting a
server, a legitimate client's exchange, the memory transport. Fixtures live in
``conftest.py``; test modules import from here (not from ``conftest``)."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio

import reliablelink
from reliablelink.testing import Ledger, MemoryConnection, number_of, numbered
from reliablelink.transports import MemoryTransport, StreamOptions, get_transport

KEY = b"k" * 32
KEYS = {"agent-1": KEY, "agent-2": b"2" * 32}

# Short heartbeats over real sockets: a dead link is noticed within a second. FAST is for
# connect() (with a quick reconnect), SERVER_FAST for serve().
FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "dead_after": 0.6, "reconnect_backoff": (0.005, 0.1)}
SERVER_FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "dead_after": 0.6}

Handler = Callable[[reliablelink.Session], Awaitable[None]]


async def echo(session: reliablelink.Session) -> None:
    """The server handler that sends every message back."""
    async for data in session:
        await session.send(data)


def recording_echo(received: Ledger) -> Handler:
    """An echo handler that also records each message's number in ``received``."""

    async def handler(session: reliablelink.Session) -> None:
        async for data in session:
            received.on_receive(number_of(data))
            await session.send(data)

    return handler


async def start_server(
    nursery: trio.Nursery,
    handler: Handler,
    url: str = "memory://",
    **options: Any,
) -> reliablelink.Server:
    """Start ``serve`` in ``nursery`` with :data:`KEYS`; return the Server."""
    server: reliablelink.Server = await nursery.start(
        functools.partial(reliablelink.serve, handler, url, keys=KEYS, **options)
    )
    return server


class RunServer(Protocol):
    """The ``run_server`` fixture: start a server that runs until the test ends."""

    async def __call__(self, handler: Handler = echo, url: str = "memory://", **options: Any) -> reliablelink.Server:
        """Start ``serve(handler, url, keys=KEYS, **options)``; return the Server."""
        ...


async def legitimate_exchange(url: str, count: int = 200, **options: Any) -> None:
    """A legitimate client connects to an echo server and exchanges ``count`` numbered
    messages with it; the ledger must be exact."""
    ledger = Ledger()
    async with reliablelink.connect(url, client_id="agent-1", key=KEY, **options) as session:
        for i in range(count):
            await session.send(numbered(i))
            ledger.on_send(i)
        for _ in range(count):
            ledger.on_receive(number_of(await session.receive()))
    assert ledger.result().exact, ledger.result().line()


def memory() -> MemoryTransport:
    """The registered memory:// transport (to cut its connections)."""
    transport, _ = get_transport("memory://x")
    assert isinstance(transport, MemoryTransport)
    return transport


def memory_connections(server: reliablelink.Server) -> list[Any]:
    """Open memory connections to ``server``."""
    return memory().connections_to(server.url.removeprefix("memory://"))


class MemoryNet:
    """One listener (``memory://net``) on a fresh :class:`MemoryTransport`, and connections to it,
    at the byte-stream level (no session)."""

    def __init__(self, transport: MemoryTransport, nursery: trio.Nursery) -> None:
        self.transport = transport
        self.nursery = nursery
        self.url = urlsplit("memory://net")
        self._accepted, self._arrivals = trio.open_memory_channel[trio.abc.Stream](16)

    async def start(self) -> None:
        async def handler(stream: trio.abc.Stream) -> None:
            await self._accepted.send(stream)
            await trio.sleep_forever()

        await self.nursery.start(functools.partial(self.transport.serve, self.url, handler, StreamOptions()))

    async def connect(self) -> tuple[trio.abc.Stream, trio.abc.Stream, MemoryConnection]:
        """A new connection: (client end, server end, its controls)."""
        client = await self.transport.open_stream(self.url, StreamOptions())
        server = await self._arrivals.receive()
        return client, server, self.transport.connections_to("net")[-1]


async def memory_pair(
    transport: MemoryTransport, nursery: trio.Nursery
) -> tuple[trio.abc.Stream, trio.abc.Stream, MemoryConnection]:
    """A :class:`MemoryNet` listening in ``nursery`` and one connection to it."""
    net = MemoryNet(transport, nursery)
    await net.start()
    return await net.connect()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
