"""Counters of one endpoint across its sessions (a new session starts after an expiry)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import LinkState, Session

__all__ = ["LinkCounts", "LinkTally"]


@dataclass(frozen=True, slots=True)
class LinkCounts:
    """Counters of all an endpoint's sessions so far.

    Attributes:
        sessions: sessions started.
        expired: sessions that ended by expiry.
        sent: messages its ``send`` accepted.
        received: messages its application received.
        resent: messages sent again after a reconnect.
        reconnects: connections after the first, per session, added up.
        in_flight: messages sent and not yet acknowledged on the current session.
        link_state: the current session's link state (``CLOSED`` between sessions).
    """

    sessions: int
    expired: int
    sent: int
    received: int
    resent: int
    reconnects: int
    in_flight: int
    link_state: LinkState


class LinkTally:
    """Adds the counters of ended sessions to those of the current one."""

    def __init__(self) -> None:
        self.current: Session | None = None
        self.sessions = 0
        self.expired = 0
        self._sent = self._received = self._resent = self._reconnects = 0

    def start(self, session: Session) -> None:
        """``session`` is now the current one."""
        self.current = session
        self.sessions += 1

    def end(self, session: Session, *, expired: bool = False) -> None:
        """``session`` ended; keep its counters."""
        stats = session.stats
        self._sent += stats.sent
        self._received += stats.received
        self._resent += stats.resent
        self._reconnects += stats.reconnects
        self.expired += expired
        if self.current is session:
            self.current = None

    def counts(self) -> LinkCounts:
        """A snapshot."""
        sent, received, resent, reconnects = self._sent, self._received, self._resent, self._reconnects
        in_flight, state = 0, LinkState.CLOSED
        if self.current is not None:
            stats = self.current.stats
            sent += stats.sent
            received += stats.received
            resent += stats.resent
            reconnects += stats.reconnects
            in_flight, state = stats.in_flight, stats.link_state
        return LinkCounts(self.sessions, self.expired, sent, received, resent, reconnects, in_flight, state)
