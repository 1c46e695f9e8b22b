"""The transport interface and the scheme registry."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

import trio

__all__ = ["StreamHandler", "StreamOptions", "Transport", "get_transport", "register_transport"]

StreamHandler = Callable[[trio.abc.Stream], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """What the session layer tells a transport about the streams it wants.

    Attributes:
        ssl_context: for transports that encrypt (``tls://``, ``wss://``).
        dead_after: this end's configured ``dead_after`` (not the negotiated one, which is
            known only after the handshake); TCP transports use it for ``TCP_USER_TIMEOUT``
            so the kernel gives up on a broken path about when the session would.
        max_message_size: largest session message (message-based transports size their
            own limits from it).
        handshake_timeout: longest time a transport-level handshake (TLS, WebSocket
            upgrade) of an accepted connection may take.
    """

    ssl_context: ssl.SSLContext | None = None
    dead_after: float = 9.0
    max_message_size: int = 1024 * 1024
    handshake_timeout: float = 10.0


class Transport(Protocol):
    """A way to carry a byte stream, selected by URL scheme."""

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """Connect to ``url`` and return the stream."""
        ...

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str],
    ) -> None:
        """Listen on ``url``, run ``handler(stream)`` in a new task for each connection.

        Call ``task_status.started(bound_url)`` once listening, with the real address (for
        example the port the system chose for port 0). Runs until cancelled. ``handler``
        never raises; the transport closes nothing on its behalf.
        """
        ...


_registry: dict[str, Transport] = {}


def register_transport(scheme: str, transport: Transport) -> None:
    """Make ``connect`` and ``serve`` accept URLs of ``scheme`` (replacing any earlier one)."""
    _registry[scheme.lower()] = transport


def get_transport(url: str) -> tuple[Transport, SplitResult]:
    """Find the transport for ``url``; ``ValueError`` if the scheme is unknown."""
    parts = urlsplit(url)
    try:
        return _registry[parts.scheme.lower()], parts
    except KeyError:
        known = ", ".join(f"{s}://" for s in sorted(_registry))
        raise ValueError(f"no transport for URL {url!r}; known schemes: {known}") from None
