"""A TCP proxy for Trio that can cut the connections passing through it."""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

__all__ = ["ChaosProxy"]

_CHUNK = 65536


@dataclass(eq=False)
class _Proxied:
    client: trio.SocketStream
    upstream: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    blackholed: bool = False

    def kill(self) -> None:
        # SO_LINGER 0 makes close() send RST: both ends learn at once, as when a NAT or a
        # firewall drops the connection state, or a peer process dies.
        for stream in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.scope.cancel()


class ChaosProxy:
    """Forward TCP connections to ``upstream`` and cut them on demand.

    Start it with ``url = await nursery.start(proxy.run)`` and point clients at ``url``.

    Args:
        upstream: ``tcp://host:port`` of the real server.
        listen: ``tcp://host:port`` to listen on (port 0 picks a free port).
    """

    def __init__(self, upstream: str, listen: str = "tcp://127.0.0.1:0") -> None:
        up = urlsplit(upstream)
        here = urlsplit(listen)
        if up.hostname is None or up.port is None or here.hostname is None or here.port is None:
            raise ValueError("upstream and listen must be tcp://host:port URLs")
        self._upstream = (up.hostname, up.port)
        self._listen = (here.hostname, here.port)
        self._live: set[_Proxied] = set()
        self.url = ""
        self.refuse = False
        """When true, new connections are closed as soon as they are accepted."""
        self.connections_made = 0
        self.kills = 0

    @property
    def live_connections(self) -> int:
        """Connections currently forwarded."""
        return len(self._live)

    def kill_all(self) -> int:
        """Reset every forwarded connection (RST to both ends); return how many."""
        n = 0
        for conn in list(self._live):
            conn.kill()
            n += 1
        self.kills += n
        return n

    def blackhole_all(self) -> int:
        """Silently drop everything on the current connections, both ways (a pulled cable)."""
        for conn in self._live:
            conn.blackholed = True
        return len(self._live)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and forward until cancelled; reports the URL to connect to."""
        listeners = await trio.open_tcp_listeners(self._listen[1], host=self._listen[0])
        port = listeners[0].socket.getsockname()[1]
        self.url = f"tcp://{self._listen[0]}:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        if self.refuse:
            await trio.aclose_forcefully(client)
            return
        try:
            upstream = await trio.open_tcp_stream(*self._upstream)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        conn = _Proxied(client, upstream)
        self._live.add(conn)
        self.connections_made += 1
        try:
            with conn.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, conn, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, conn, upstream, client, nursery.cancel_scope)
        finally:
            self._live.discard(conn)
            # Shielded: if we are being cancelled, the first aclose would re-raise Cancelled
            # and skip the second, leaking a socket.
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(client)
                await trio.aclose_forcefully(upstream)

    async def _pump(
        self, conn: _Proxied, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                data = await source.receive_some(_CHUNK)
                if not data:
                    break
                if not conn.blackholed:
                    await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        scope.cancel()
