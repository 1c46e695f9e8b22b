"""The exceptions raised by reliablelink.

Every exception derives from :class:`ReliableLinkError`, so an application can catch one
type. They are named for what the caller can do about them: a closed or expired session is
gone for good, a wrong key will not get better by retrying, a protocol error means the peer
(or something between) is broken.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "ConnectionFailed",
    "MessageTooLarge",
    "ProtocolError",
    "ReliableLinkError",
    "SessionClosed",
    "SessionExpired",
    "SessionMoved",
]


class ReliableLinkError(Exception):
    """Base class of every error raised by reliablelink."""


class SessionClosed(ReliableLinkError):
    """The session was closed, by this side or by the peer.

    ``async for`` over a session ends quietly when the peer closes it; ``receive()`` raises
    this once every message the peer sent before closing has been received.
    """


class SessionMoved(SessionClosed):
    """The session was attached somewhere else (another connection or server node)."""


class SessionExpired(ReliableLinkError):
    """The server no longer knows the session: it was detached for longer than ``session_ttl``.

    Messages that were in flight when the session expired may not have been delivered; this
    error is how the loss is reported, never silently.
    """


class AuthenticationError(ReliableLinkError):
    """The handshake failed: wrong key, unknown client id, or a rejected resume token.

    Raised at once and never retried: retrying with the same key cannot succeed.
    """


class ProtocolError(ReliableLinkError):
    """The peer sent bytes that break the protocol (bad preface, malformed or oversized frame,
    unknown frame type, impossible sequence or acknowledgement number)."""


class MessageTooLarge(ReliableLinkError, ValueError):
    """A message is larger than the negotiated ``max_message_size``."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes > max_message_size {limit}")
        self.size = size
        self.limit = limit


class ConnectionFailed(ReliableLinkError):
    """``connect()`` could not establish the first connection within ``connect_timeout``.

    The last underlying error is chained as ``__cause__``.
    """
