"""Transports turn a URL into a byte stream, and serve a URL by handing each accepted stream to a handler.

The session layer only needs a :class:`trio.abc.Stream`; everything about sockets lives
here. Built in: ``tcp://host:port``, ``tls://host:port``, ``unix:///path``,
``ws://host:port/path`` and ``wss://host:port/path`` (with the ``[ws]`` extra), and
``memory://name`` (in-process, for tests and the simulated network of
:mod:`reliablelink.testing`). Add your own with :func:`register_transport`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult

import trio

from ._base import StreamHandler, StreamOptions, Transport, get_transport, register_transport
from ._memory import MemoryTransport
from ._tcp import TCPTransport
from ._tls import TLSTransport
from ._unix import UnixTransport

if TYPE_CHECKING:
    from ._ws import WebSocketTransport as WebSocketTransport


class _WebSocketOnDemand:
    """Stands in for :class:`WebSocketTransport` until a ``ws://`` or ``wss://`` URL is used.

    The WebSocket transport needs the optional ``[ws]`` extra; importing it here would make
    ``import reliablelink`` fail (or just load wsproto for nothing) for everyone else. Its
    module is imported on first use, and raises an ``ImportError`` that names the extra.
    """

    def __init__(self, *, secure: bool) -> None:
        self._secure = secure

    def _load(self) -> Transport:
        module = importlib.import_module("._ws", __name__)
        transport: Transport = module.WebSocketTransport(secure=self._secure)
        return transport

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """See :meth:`WebSocketTransport.open_stream`."""
        return await self._load().open_stream(url, options)

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """See :meth:`WebSocketTransport.serve`."""
        await self._load().serve(url, handler, options, task_status=task_status)


def __getattr__(name: str) -> Any:
    # ``from reliablelink.transports import WebSocketTransport`` works, importing the
    # optional dependency only when asked for (it stays out of __all__ so that
    # ``import *`` never needs it).
    if name == "WebSocketTransport":
        return importlib.import_module("._ws", __name__).WebSocketTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_transport("tcp", TCPTransport())
register_transport("tls", TLSTransport())
register_transport("unix", UnixTransport())
register_transport("ws", _WebSocketOnDemand(secure=False))
register_transport("wss", _WebSocketOnDemand(secure=True))
register_transport("memory", MemoryTransport())

__all__ = [
    "MemoryTransport",
    "StreamHandler",
    "StreamOptions",
    "TCPTransport",
    "TLSTransport",
    "Transport",
    "UnixTransport",
    "get_transport",
    "register_transport",
]
