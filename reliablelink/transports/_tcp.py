"""``tcp://host:port``: plain TCP with the socket options a long-lived link needs."""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import SplitResult

import trio

from ._base import StreamHandler, StreamOptions

__all__ = ["TCPTransport", "open_listeners", "tune_socket"]


def tune_socket(sock: trio.socket.SocketType, dead_after: float) -> None:
    """Set ``TCP_NODELAY``, ``TCP_USER_TIMEOUT`` and keepalive where the platform has them.

    Without ``TCP_USER_TIMEOUT`` a send into a silently broken path is retried by the kernel
    for about 15 minutes (``tcp_retries2``); with it the kernel gives up when the session's
    own dead-link detection does.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(dead_after))
    for name, value in (
        ("TCP_USER_TIMEOUT", int(dead_after * 1000)),
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", max(1, idle // 3)),
        ("TCP_KEEPCNT", 3),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:
            with contextlib.suppress(OSError):  # a platform without this option
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)


async def open_listeners(host: str | None, port: int) -> list[trio.SocketListener]:
    """:func:`trio.open_tcp_listeners`, with the address in the error, for example
    ``OSError: [Errno 98] cannot listen on 127.0.0.1:7000: Address already in use``."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        where = f"[{host}]:{port}" if host and ":" in host else f"{host or '*'}:{port}"
        reason = exc.strerror or str(exc)
        if exc.errno is None:
            raise OSError(f"cannot listen on {where}: {reason}") from exc
        raise OSError(exc.errno, f"cannot listen on {where}: {reason}") from exc


def _host_port(url: SplitResult) -> tuple[str, int]:
    if not url.hostname or url.port is None:
        raise ValueError(f"a tcp:// URL needs a host and a port, got {url.geturl()!r}")
    return url.hostname, url.port


class TCPTransport:
    """The ``tcp://`` transport."""

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """Connect (happy eyeballs over every address of the host)."""
        host, port = _host_port(url)
        stream = await trio.open_tcp_stream(host, port)
        try:
            tune_socket(stream.socket, options.dead_after)
        except OSError:
            await trio.aclose_forcefully(stream)
            raise
        return stream

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on every address of the host; report ``tcp://host:port`` with the real port."""
        host, port = _host_port(url)
        listeners = await open_listeners(host, port)

        async def tuned(stream: trio.SocketStream) -> None:
            try:
                tune_socket(stream.socket, options.dead_after)
            except OSError:
                await trio.aclose_forcefully(stream)
                return
            await handler(stream)

        bound_port = listeners[0].socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"tcp://{shown}:{bound_port}")
        await trio.serve_listeners(tuned, listeners)
