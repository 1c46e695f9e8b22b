"""What the demo commands show on the terminal, and how Ctrl-C stops them.

The one-process demo shows a live ``rich`` table on a terminal (:class:`RichView`) and plain
lines otherwise (:class:`PlainView`). ``rich`` is optional (``pip install 'reliablelink[demo]'``):
it is imported only when a :class:`RichView` is made, which :func:`make_view` does only when
standard output is a terminal and ``rich`` is installed. ``demo-server`` and ``demo-agent``
print timed lines (:class:`TimedPrinter`). All three stop cleanly on the first Ctrl-C (or
SIGTERM) and at once on the second (:func:`stop_on_signals`).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TextIO

import trio

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

__all__ = [
    "AgentRow",
    "DemoView",
    "PlainView",
    "RichView",
    "Snapshot",
    "TimedPrinter",
    "make_view",
    "stop_on_signals",
]

_STATE_STYLE = {"online": "bold green", "reconnecting": "bold yellow", "new session": "bold magenta"}


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


class RichView:
    """A table of the agents' links, redrawn in place; events scroll above it.

    Raises:
        ImportError: ``rich`` is not installed (it is imported only here).
    """

    def __init__(self) -> None:
        from rich.console import Console  # noqa: PLC0415 (rich is optional: imported only here)
        from rich.live import Live  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        self._make_live, self._make_table, self._text = Live, Table, Text
        self._console: Console = Console()
        self._live: Live | None = None
        self._header = ""

    def start(self, header: str) -> None:
        """Print the header and start the live table."""
        self._header = header
        self._console.print(self._text(header, style="bold"))
        self._live = self._make_live(
            self._text("starting..."), console=self._console, auto_refresh=False, transient=False
        )
        self._live.start()

    def event(self, elapsed: float, text: str) -> None:
        """Print the event above the table."""
        self._console.print(self._text.assemble((f"{elapsed:5.1f}s ", "dim"), text), highlight=False)

    def update(self, snapshot: Snapshot) -> None:
        """Redraw the table."""
        if self._live is not None:
            self._live.update(self._table(snapshot), refresh=True)

    def stop(self) -> None:
        """Leave the last table on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self, text: str) -> None:
        """Print a line of the final report."""
        style = "bold green" if " lost 0, duplicated 0, reordered 0" in text else None
        self._console.print(self._text(text, style=style or ""))

    def _table(self, snapshot: Snapshot) -> Table:
        waiting = snapshot.visitor_messages - snapshot.answered
        table = self._make_table(
            title=f"customer service: {snapshot.elapsed:4.1f} s of {snapshot.duration:.0f} s",
            caption=(
                f"visitors: {snapshot.visitor_messages} messages sent, {snapshot.answered} answered, "
                f"{waiting} waiting  ·  messages counted both ways on each agent's link"
            ),
        )
        for name in ("agent", "link", "for", "reconnects", "expired", "conversations"):
            table.add_column(name, justify="left" if name in ("agent", "link") else "right")
        for name in ("sent", "delivered", "resent", "in flight"):
            table.add_column(name, justify="right")
        for row in snapshot.rows:
            table.add_row(
                row.agent,
                self._text(row.state, style=_STATE_STYLE.get(row.state, "")),
                f"{row.since:.1f} s",
                str(row.reconnects),
                str(row.expired),
                str(row.conversations),
                str(row.sent),
                str(row.delivered),
                str(row.resent),
                str(row.in_flight),
            )
        return table


def make_view(*, plain: bool = False) -> DemoView:
    """The live ``rich`` view when standard output is a terminal and ``rich`` is installed,
    else :class:`PlainView`."""
    if not plain and sys.stdout.isatty():
        try:
            return RichView()
        except ImportError:
            print("(for a live view: pip install rich)", file=sys.stderr)
    return PlainView()


async def stop_on_signals(
    stop: Callable[[], None],
    force: trio.CancelScope,
    say: Callable[[str], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``stop()`` on the first SIGINT or SIGTERM and cancel ``force`` on the second.

    Start it with ``nursery.start`` so the handlers are installed when it returns; cancel
    it when the program ends.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                say(f"{signal.Signals(signum).name}: stopping cleanly (again to force)")
                stop()
            else:
                say(f"{signal.Signals(signum).name}: stopping now")
                force.cancel()
