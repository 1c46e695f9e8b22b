"""``MemoryStore``: sessions kept in this process's memory, across restarts of ``serve()``."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import trio

from .. import _stats
from ._base import SessionChange, SessionRecord, SessionStore, StoreError

__all__ = ["MemoryStore"]

T = TypeVar("T")


class MemoryStore(SessionStore):
    """Sessions in a dictionary of this process: they outlive a ``serve()`` (or ``connect()``)
    that is stopped and started again in the same process, not the process.

    Made for tests and simulations: a test restarts a server (cancels its ``serve()`` and
    starts a new one with the same store) without touching a disk, and since no worker
    thread is involved it runs under ``trio.testing.MockClock`` with autojump (pass
    ``clock=trio.current_time`` so that expiry follows the simulated clock). Records are
    copied in and out, so nothing the running session holds is shared with the store.

    Args:
        clock: time source for expiry (``time.time``; ``trio.current_time`` in simulations).
        delay: seconds each operation takes before it takes effect, like a disk or a network
            round trip (cancelling the caller does not stop it, as with the threaded
            stores). With a delay, a simulated crash (:meth:`snapshot`) can land while a
            write is under way.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, delay: float = 0.0) -> None:
        super().__init__(clock=clock)
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay
        self._records: dict[str, SessionRecord] = {}

    def __repr__(self) -> str:
        return f"MemoryStore({len(self._records)} sessions)"

    @property
    def session_count(self) -> int:
        """How many sessions the store holds."""
        return len(self._records)

    def snapshot(self) -> MemoryStore:
        """A new store holding a copy of what this one holds now: what a crashed process
        would find on restart. Give it to the restarted server; writes the stopping server
        makes to this store afterwards (its graceful-shutdown saves) are then lost, as in a
        crash."""
        copy_ = MemoryStore(clock=self.clock, delay=self.delay)
        copy_._records = copy.deepcopy(self._records)
        return copy_

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # Same contract as the threaded backends (a checkpoint, errors as StoreError), run
        # inline: simulated time must not jump while a write is "in flight".
        if self._closed and fn != self._close:
            raise StoreError("the session store is closed")
        # One operation at a time, in the order called, as the threaded stores run them (the
        # limiter is first come, first served; acquiring it is the checkpoint). Once
        # started, an operation completes even if its caller is cancelled.
        start = trio.current_time()
        try:
            async with self._limiter:
                if self.delay:
                    with trio.CancelScope(shield=True):
                        await trio.sleep(self.delay)
                return self._apply(fn, args)
        finally:
            _stats.store_histogram(fn.__name__).observe(trio.current_time() - start)

    def _apply(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(*args)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"session store failed: {exc!r}") from exc

    def _load(self, key: str, now: float) -> SessionRecord | None:
        record = self._records.get(key)
        if record is None:
            return None
        if record.expires_at is not None and record.expires_at < now:
            del self._records[key]
            return None
        return copy.deepcopy(record)

    def _create(self, record: SessionRecord) -> None:
        self._records[record.key] = copy.deepcopy(record)

    def _take_over(self, key: str, epoch: int) -> SessionRecord | None:
        record = self._records.get(key)
        if record is None or record.epoch != epoch:
            return None
        record.epoch += 1
        return self._load(key, -math.inf)

    def _claim(self, key: str, epoch: int, tokens: tuple[bytes, bytes], expires_at: float | None) -> bool:
        record = self._records.get(key)
        if record is None or record.epoch != epoch:
            return False
        record.token, record.prev_token = tokens
        record.expires_at = expires_at
        return True

    def _commit(self, changes: Sequence[tuple[str, int, SessionChange]]) -> list[bool]:
        results = []
        for key, epoch, change in changes:
            record = self._records.get(key)
            if record is None or record.epoch != epoch:
                results.append(False)
                continue
            kept = [(seq, payload) for seq, payload in record.unacked if seq > change.acked]
            kept += [(seq, payload) for seq, payload in change.appended if seq > change.acked]
            record.unacked = kept
            record.next_seq = change.next_seq
            record.acked = change.acked
            record.delivered = change.delivered
            if change.token is not None:
                record.token = change.token
            if change.expires_at is not None:
                record.expires_at = change.expires_at
            results.append(True)
        return results

    def _delete(self, key: str, epoch: int) -> None:
        record = self._records.get(key)
        if record is not None and record.epoch == epoch:
            del self._records[key]

    def _renew(self, leases: Sequence[tuple[str, int]], expires_at: float, now: float) -> None:
        for key, epoch in leases:
            record = self._records.get(key)
            if record is not None and record.epoch == epoch:
                record.expires_at = expires_at
        for key in [k for k, r in self._records.items() if r.expires_at is not None and r.expires_at < now]:
            del self._records[key]
