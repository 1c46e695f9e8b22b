"""The TCP forwarding both testing proxies share (:class:`ChaosProxy`, :class:`LoadBalancer`)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import trio

__all__ = ["CHUNK", "pipe", "splice"]

CHUNK = 65536

#: Forwards one direction, ``pump(source, sink, to_server)``, until it is done.
Pump = Callable[[trio.SocketStream, trio.SocketStream, bool], Awaitable[None]]


async def pipe(source: trio.SocketStream, sink: trio.SocketStream, to_server: bool) -> None:
    """Copy ``source`` to ``sink`` as it arrives until end of stream or an error (a plain pump)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        while data := await source.receive_some(CHUNK):
            await sink.send_all(data)


async def splice(client: trio.SocketStream, upstream: trio.SocketStream, pump: Pump = pipe) -> None:
    """Forward both ways with ``pump`` until either direction ends; then close both streams.

    When one direction ends (end of stream, reset, a fault) the other is cancelled: the
    forwarded connection lives and dies as one.

    Args:
        client: the accepted connection.
        upstream: the connection to the server.
        pump: forwards one direction (``to_server`` tells which).
    """
    try:
        async with trio.open_nursery() as nursery:

            async def one_way(source: trio.SocketStream, sink: trio.SocketStream, to_server: bool) -> None:
                await pump(source, sink, to_server)
                nursery.cancel_scope.cancel()

            nursery.start_soon(one_way, client, upstream, True)
            nursery.start_soon(one_way, upstream, client, False)
    finally:
        # Shielded: if we are being cancelled, the first aclose would re-raise Cancelled
        # and skip the second, leaking a socket.
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(client)
            await trio.aclose_forcefully(upstream)
