"""A session kept in a store: where it is stored, under which epoch, and the one write to it.

What the store lacks is worked out by the sans-I/O :class:`~reliablelink._core.StoreCursor`;
this module only performs the write, shielded from cancellation, and deletes the stored
copy once the session has ended for good.
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
    """Where one session is stored and how far the store has it.

    Attributes:
        store: the store.
        key: the session's key in it.
        epoch: the fencing epoch this process holds the session under.
        cursor: what the store holds, what it lacks, and when a delivery commit is due.
    """

    __slots__ = ("cursor", "epoch", "forgotten", "key", "store")

    def __init__(self, store: SessionStore, key: str, epoch: int, core: SessionCore) -> None:
        self.store = store
        self.key = key
        self.epoch = epoch
        self.cursor = StoreCursor(core)
        self.forgotten = False

    async def write(self, token: bytes | None = None) -> PendingCommit | None:
        """Write what the store lacks (and ``token``, the client's newest resume token).

        Shielded from cancellation: a message is either stored or not, never half-way.
        Returns what was written (``None``: nothing was missing); the caller hands it to
        ``cursor.committed()`` unless the session ended meanwhile. Raises
        :class:`StoreError` or :class:`StoreFenced` if the store failed or another
        attachment owns the session.
        """
        pending = self.cursor.take_change(token)
        if pending is None:
            return None
        change = SessionChange(pending.appended, pending.next_seq, pending.acked, pending.delivered, token=pending.token)
        with trio.CancelScope(shield=True):
            await self.store.commit(self.key, self.epoch, change)
        return pending

    async def delete(self) -> None:
        """Drop the stored copy (once; a store failure is ignored: it expires anyway)."""
        if self.forgotten:
            return
        self.forgotten = True
        with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
            await self.store.delete(self.key, self.epoch)
