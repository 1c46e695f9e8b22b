"""Transports turn a URL into a byte stream, and serve a URL by handing each accepted stream to a handler.

The session layer only needs a :class:`trio.abc.Stream`; everything about sockets lives
here. Built in: ``tcp://host:port`` and ``memory://name`` (in-process, for tests and the
simulated network of :mod:`reliablelink.testing`). Add your own with
:func:`register_transport`.
"""

from __future__ import annotations

from ._base import StreamHandler, StreamOptions, Transport, get_transport, register_transport
from ._memory import MemoryTransport
from ._tcp import TCPTransport

register_transport("tcp", TCPTransport())
register_transport("memory", MemoryTransport())

__all__ = [
    "MemoryTransport",
    "StreamHandler",
    "StreamOptions",
    "TCPTransport",
    "Transport",
    "get_transport",
    "register_transport",
]
