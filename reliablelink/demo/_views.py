"""How the demo shows itself: a live ``rich`` table on a terminal, plain lines otherwise.

``rich`` is optional (``pip install 'reliablelink[demo]'``): it is imported only when
standard output is a terminal, and the plain view is used when it is missing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Protocol, TextIO

__all__ = ["AgentRow", "DemoView", "PlainView", "Snapshot", "TimedPrinter", "make_view"]


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One agent's line in the live view (messages counted both ways on its link).

    Attributes:
        agent: the agent's id.
        state: ``online``, ``reconnecting``, ``new session``, ``closed``...
        since: seconds in that state.
        reconnects: reconnects, over all its sessions.
        sessions: sessions started.
        expired: sessions the server expired.
        conversations: conversations it holds now.
        sent: messages accepted by ``send`` on either end of its link.
        delivered: messages received by the application on either end.
        resent: messages resent after reconnects, both ends.
        in_flight: messages sent and not yet acknowledged, both ends.
    """

    agent: str
    state: str
    since: float
    reconnects: int
    sessions: int
    expired: int
    conversations: int
    sent: int
    delivered: int
    resent: int
    in_flight: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the live view shows at one moment.

    Attributes:
        elapsed: seconds since the start.
        duration: seconds the visitors chat.
        rows: one per agent.
        visitor_messages: messages visitors sent so far.
        answered: of which answered.
    """

    elapsed: float
    duration: float
    rows: list[AgentRow]
    visitor_messages: int
    answered: int


class DemoView(Protocol):
    """Where the demo's progress goes."""

    def start(self, header: str) -> None:
        """The run begins; ``header`` says what it is."""

    def event(self, elapsed: float, text: str) -> None:
        """Something happened (a pull, an expiry, a handover)."""

    def update(self, snapshot: Snapshot) -> None:
        """The current state (called a few times a second)."""

    def stop(self) -> None:
        """The run is over; later output goes below the view."""

    def line(self, text: str) -> None:
        """Print a line of the final report."""


class PlainView:
    """One line per event, and a progress block about once a second.

    Args:
        out: where to write (standard output by default).
        every: seconds between progress blocks.
    """

    def __init__(self, out: TextIO | None = None, every: float = 1.0) -> None:
        self._out = out or sys.stdout
        self._every = every
        self._next = every

    def _print(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def start(self, header: str) -> None:
        """Print the header."""
        self._print(header)

    def event(self, elapsed: float, text: str) -> None:
        """Print ``[ t ] text``."""
        self._print(f"[{elapsed:5.1f}s] {text}")

    def update(self, snapshot: Snapshot) -> None:
        """Print a progress block if one is due."""
        if snapshot.elapsed < self._next:
            return
        self._next = snapshot.elapsed + self._every
        waiting = snapshot.visitor_messages - snapshot.answered
        self._print(
            f"[{snapshot.elapsed:5.1f}s] visitors: {snapshot.visitor_messages} messages sent, "
            f"{snapshot.answered} answered, {waiting} waiting"
        )
        for row in snapshot.rows:
            self._print(
                f"         {row.agent:<9} {row.state:<12} {row.since:5.1f}s  reconnects {row.reconnects:<2} "
                f"expired {row.expired}  conversations {row.conversations:<2} sent {row.sent:<5} "
                f"delivered {row.delivered:<5} resent {row.resent:<3} in flight {row.in_flight}"
            )

    def stop(self) -> None:
        """Nothing to tear down."""

    def line(self, text: str) -> None:
        """Print ``text``."""
        self._print(text)


class TimedPrinter:
    """Prints lines as ``[  3.0s] text`` (seconds since it was made), flushed at once.

    Args:
        out: where to write (standard output by default).
    """

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out
        self._start = time.monotonic()

    def __call__(self, text: str) -> None:
        """Print ``text`` with the time."""
        self.plain(f"[{time.monotonic() - self._start:5.1f}s] {text}")

    def plain(self, text: str) -> None:
        """Print ``text`` as it is."""
        print(text, file=self._out or sys.stdout, flush=True)


def make_view(*, plain: bool = False) -> DemoView:
    """The live ``rich`` view when standard output is a terminal and ``rich`` is installed,
    else :class:`PlainView`."""
    if not plain and sys.stdout.isatty():
        try:
            from ._rich_view import RichView  # noqa: PLC0415 (rich is optional: imported only here)
        except ImportError:
            print("(for a live view: pip install rich)", file=sys.stderr)
        else:
            return RichView()
    return PlainView()
