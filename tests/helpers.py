"""Helpers shared by the test modules: keys, the echo handler, starting a server, the
memory transport. Fixtures live in ``conftest.py``; test modules import from here."""

from __future__ import annotations

import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

import reliablelink
from reliablelink.transports import MemoryTransport, get_transport

KEY = b"k" * 32
KEYS = {"agent-1": KEY, "agent-2": b"2" * 32}

# Short heartbeats over real sockets: a dead link is noticed within a second.
FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "dead_after": 0.6, "reconnect_backoff": (0.005, 0.1)}
SERVER_FAST: dict[str, Any] = {"heartbeat_interval": 0.2, "dead_after": 0.6}

Handler = Callable[[reliablelink.Session], Awaitable[None]]


async def echo(session: reliablelink.Session) -> None:
    """The server handler that sends every message back."""
    async for data in session:
        await session.send(data)


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


def memory() -> MemoryTransport:
    """The registered memory:// transport (to cut its connections)."""
    transport, _ = get_transport("memory://x")
    assert isinstance(transport, MemoryTransport)
    return transport


def memory_connections(server: reliablelink.Server) -> list[Any]:
    """Open memory connections to ``server``."""
    return memory().connections_to(server.url.removeprefix("memory://"))


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
