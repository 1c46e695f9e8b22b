"""What a durable session's store holds, and what it lacks: the store cursor, sans-I/O.

A session with a store (see ``reliablelink.stores``) writes each accepted message and its
delivery position to the store before they count: a message goes on the wire only once the
store holds it, and an ACK covers only deliveries the store holds
(:meth:`SessionCore.durable_done <reliablelink._core.SessionCore.durable_done>`). The
:class:`StoreCursor` keeps the bookkeeping for that: the positions already saved, what the
application is done with (``handled``), and when a batched delivery commit is due. The
driver does the I/O::

    change = cursor.take_change()
    if change is not None:
        await store.commit(key, epoch, SessionChange(...from change...))
        cursor.committed(change)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from ._session import SessionCore

__all__ = ["PendingCommit", "StoreCursor"]


@dataclass(frozen=True, slots=True)
class PendingCommit:
    """One write the store lacks (the driver turns it into a ``SessionChange``).

    Attributes:
        appended: messages accepted since the last commit, as ``(seq, payload)``, in order.
        next_seq: the session's next sequence number.
        acked: the peer's cumulative acknowledgement.
        delivered: the delivery position to store: messages the application is done with.
        token: the resume token to store with it, or ``None`` to keep the stored one.
        upto: the last sequence number this commit holds (``next_seq - 1``): once stored,
            messages up to here may go on the wire.
    """

    appended: list[tuple[int, bytes]]
    next_seq: int
    acked: int
    delivered: int
    token: bytes | None
    upto: int


class StoreCursor:
    """The store's position of one durable session, beside its :class:`SessionCore`.

    Creating it makes the core durable. The saved positions start at the core's current
    ones: the caller has just loaded them from the store, or is about to store them whole.

    Args:
        core: the session's core.

    Attributes:
        commit_at: when a batched delivery commit is due (``math.inf``: none is).
        handled: the delivery position the application is done with: everything
            ``receive()`` returned before its latest call.
    """

    __slots__ = ("_core", "_saved_acked", "_saved_delivered", "_saved_seq", "commit_at", "handled")

    def __init__(self, core: SessionCore) -> None:
        core.durable = True
        self._core = core
        self._saved_seq = core.next_seq - 1
        self._saved_delivered = self.handled = core.delivered
        self._saved_acked = core.acked
        self.commit_at = math.inf

    def mark_handled(self, now: float) -> float | None:
        """``receive()`` was called again: what it returned before is handled.

        Schedules a commit of the new delivery position, batched like a delayed ACK: at
        ``now`` once a quarter of the window is waiting, else ``ack_delay`` later.

        Args:
            now: current time.

        Returns:
            The new :attr:`commit_at` if a commit was newly scheduled, else ``None`` (nothing
            new to store, or a commit is already scheduled).
        """
        core = self._core
        self.handled = handled = core.delivered
        if handled == self._saved_delivered or self.commit_at != math.inf:
            return None
        soon = handled - self._saved_delivered >= core.ack_every
        self.commit_at = now if soon else now + core.ack_delay
        return self.commit_at

    def handle_all(self) -> None:
        """The application is done with everything delivered (it is closing the session)."""
        self.handled = self._core.delivered

    def take_change(self, token: bytes | None = None) -> PendingCommit | None:
        """What the store lacks, recorded as saved at once.

        Recording it before the write means a concurrent caller does not append the same
        messages twice; a failed write ends the session, so nothing is lost by it. The
        change covers every handled delivery, so no batched commit stays due.

        Args:
            token: a new resume token to store with the change.

        Returns:
            The change, or ``None`` if the store already holds everything and ``token`` is
            ``None``.
        """
        core = self._core
        self.commit_at = math.inf
        upto = core.next_seq - 1
        handled = self.handled
        acked = core.acked
        saved_seq = self._saved_seq
        if upto == saved_seq and handled == self._saved_delivered and acked == self._saved_acked and token is None:
            return None
        appended: list[tuple[int, bytes]] = []
        if upto > saved_seq:
            # Unacknowledged messages are contiguous up to next_seq - 1, and the unsaved
            # ones are not acknowledged yet (the wire never carried them).
            first = saved_seq + 1 - core.unacked[0][0]
            appended = list(itertools.islice(core.unacked, first, None))
        self._saved_seq, self._saved_delivered, self._saved_acked = upto, handled, acked
        return PendingCommit(appended, core.next_seq, acked, handled, token, upto)

    def committed(self, change: PendingCommit) -> None:
        """The store holds ``change``: its messages may go on the wire, its deliveries be
        acknowledged."""
        self._core.durable_done(change.upto, change.delivered)
