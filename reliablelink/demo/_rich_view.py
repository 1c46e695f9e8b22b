"""The demo's live terminal view with ``rich`` (optional: imported only on a terminal)."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ._views import Snapshot

__all__ = ["RichView"]

_STATE_STYLE = {"online": "bold green", "reconnecting": "bold yellow", "new session": "bold magenta"}


class RichView:
    """A table of the agents' links, redrawn in place; events scroll above it."""

    def __init__(self) -> None:
        self._console = Console()
        self._live: Live | None = None
        self._header = ""

    def start(self, header: str) -> None:
        """Print the header and start the live table."""
        self._header = header
        self._console.print(Text(header, style="bold"))
        self._live = Live(Text("starting..."), console=self._console, auto_refresh=False, transient=False)
        self._live.start()

    def event(self, elapsed: float, text: str) -> None:
        """Print the event above the table."""
        self._console.print(Text.assemble((f"{elapsed:5.1f}s ", "dim"), text), highlight=False)

    def update(self, snapshot: Snapshot) -> None:
        """Redraw the table."""
        if self._live is not None:
            self._live.update(_table(snapshot), refresh=True)

    def stop(self) -> None:
        """Leave the last table on screen."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def line(self, text: str) -> None:
        """Print a line of the final report."""
        style = "bold green" if " lost 0, duplicated 0, reordered 0" in text else None
        self._console.print(Text(text, style=style or ""))


def _table(snapshot: Snapshot) -> Table:
    waiting = snapshot.visitor_messages - snapshot.answered
    table = Table(
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
            Text(row.state, style=_STATE_STYLE.get(row.state, "")),
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
