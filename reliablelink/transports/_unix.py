"""``unix:///absolute/path``: a Unix domain socket, for a server and clients on one host.

No TCP options apply (there is no network to break silently); the session's heartbeats
still detect a peer that hangs. The server removes a stale socket file left by a crashed
server before binding, and removes its own file when it stops.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from typing import final
from urllib.parse import SplitResult, quote, unquote

import trio

from ._base import StreamHandler, StreamOptions

__all__ = ["UnixTransport"]


def _socket_path(url: SplitResult) -> str:
    path = unquote(url.path)
    if url.netloc or not path.startswith("/"):
        raise ValueError(
            f"a unix:// URL has an empty host and an absolute path (unix:///run/app.sock), got {url.geturl()!r}"
        )
    return path


async def _remove_stale(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on; refuse to touch anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, f"{path} exists and is not a socket; not removing it")
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        # Left by a server that died without cleaning up: nothing accepts on it.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"{path} is in use by a running server")


@final
class UnixTransport:
    """The ``unix://`` transport. URLs name the socket file: ``unix:///run/app/rl.sock``."""

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """Connect to the socket file (``FileNotFoundError`` or ``ConnectionRefusedError``
        while no server runs: the client retries them like any refused connection)."""
        return await trio.open_unix_socket(_socket_path(url))

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind the socket file, report ``unix:///path``, serve until cancelled, remove the file."""
        path = _socket_path(url)
        await _remove_stale(path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bound: os.stat_result | None = None
        try:
            try:
                await sock.bind(path)
            except OSError as exc:
                raise _bind_error(exc, path) from exc
            bound = os.stat(path)
            sock.listen(socket.SOMAXCONN)
            listener = trio.SocketListener(sock)
            task_status.started(f"unix://{quote(path)}")
            await trio.serve_listeners(handler, [listener])
        finally:
            sock.close()
            if bound is not None:
                _unlink_if_ours(path, bound)


def _bind_error(exc: OSError, path: str) -> OSError:
    """The error of binding ``path``, with the path in it (the socket's own error has none)."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, FileNotFoundError):
        reason += f" (the directory {os.path.dirname(path) or '/'} does not exist)"
    if exc.errno is None:
        return OSError(f"cannot listen on unix socket {path}: {reason}")
    return OSError(exc.errno, f"cannot listen on unix socket {path}: {reason}")


def _unlink_if_ours(path: str, bound: os.stat_result) -> None:
    # Only the file this server created: a newer server may already have replaced it.
    with contextlib.suppress(OSError):
        now = os.stat(path)
        if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
            os.unlink(path)
