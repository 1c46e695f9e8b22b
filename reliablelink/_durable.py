"""Where a durable session is stored, and the one write that keeps the store current.

The bookkeeping (what the store holds, what it lacks, when a batched delivery commit is due)
is the core's sans-I/O :class:`~reliablelink._core.StoreCursor`; this module adds the I/O.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import trio

from ._core import PendingCommit, SessionCore, StoreCursor
from .stores._base import SessionChange, StoreError

if TYPE_CHECKING:
    from .stores import SessionStore

__all__ = ["Durability"]


class Durability:
    """Where one session is stored, under which epoch, and how far the store has it.

    Args:
        store: the store.
        key: the session's key in it.
        epoch: the fencing epoch this process holds the session under.
        core: the session's core (made durable: nothing goes on the wire before it is stored).

    Attributes:
        store: the store.
        key: the session's key in it.
        epoch: the fencing epoch this process holds the session under.
        cursor: what the store holds, what it lacks, and when a delivery commit is due.
    """

    __slots__ = ("_forgotten", "_writing", "cursor", "epoch", "key", "store")

    def __init__(self, store: SessionStore, key: str, epoch: int, core: SessionCore) -> None:
        self.store = store
        self.key = key
        self.epoch = epoch
        self.cursor = StoreCursor(core)
        self._forgotten = False
        # One write at a time per session. Without it, a write that finds nothing missing
        # (another task's write already took its message) would return while that other
        # write is still under way: send() would report a message accepted that the store
        # does not hold yet, and a crash at that moment would lose it.
        self._writing = trio.Lock()

    async def write(self, token: bytes | None = None) -> PendingCommit | None:
        """Write what the store lacks (with ``token``, a new resume token, if given).

        Shielded from cancellation: a message is either stored or not, never half-way. It
        returns only once the store holds everything the cursor had recorded as accepted
        when it was called, also when another task's write is storing it.

        Returns:
            What was written, for ``cursor.committed()`` (``None``: the store lacked nothing).

        Raises:
            StoreFenced: another attachment owns the session now.
            StoreError: the store failed.
        """
        with trio.CancelScope(shield=True):
            async with self._writing:
                pending = self.cursor.take_change(token)
                if pending is None:
                    return None
                p = pending
                change = SessionChange(p.appended, p.next_seq, p.acked, p.delivered, token=p.token)
                await self.store.commit(self.key, self.epoch, change)
        return pending

    async def delete(self) -> None:
        """Drop the stored copy, once; shielded, and a store failure is ignored (a stored
        session the store keeps by mistake expires on its own)."""
        if self._forgotten:
            return
        self._forgotten = True
        with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
            await self.store.delete(self.key, self.epoch)
