"""Shared fixtures and helpers."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import reliablelink
from reliablelink.transports import MemoryTransport, get_transport

KEY = b"k" * 32
KEYS = {"agent-1": KEY, "agent-2": b"2" * 32}


async def start_server(
    nursery: trio.Nursery,
    handler: Callable[[reliablelink.Session], Awaitable[None]],
    url: str = "memory://",
    **options: Any,
) -> reliablelink.Server:
    """Start ``serve`` in ``nursery``; return the Server."""
    server: reliablelink.Server = await nursery.start(
        functools.partial(reliablelink.serve, handler, url, keys=KEYS, **options)
    )
    return server


def memory() -> MemoryTransport:
    """The registered memory:// transport (to cut its connections)."""
    transport, _ = get_transport("memory://x")
    assert isinstance(transport, MemoryTransport)
    return transport


def memory_connections(server: reliablelink.Server) -> list[Any]:
    """Open memory connections to ``server``."""
    return memory().connections_to(server.url.removeprefix("memory://"))
