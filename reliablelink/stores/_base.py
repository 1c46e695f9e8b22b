"""What a session store holds, the operations the driver needs, and group commit.

A store keeps, per session, exactly what a process needs to resume it after losing its
memory: identity, resume tokens, the fencing epoch, the next outgoing sequence number,
the peer's acknowledgement, the delivery position and the messages not yet acknowledged.
Messages received but not yet delivered are *not* stored: the resume states the stored
delivery position and the peer, which still holds them (they were never acknowledged),
sends them again.

Writes are batched: every :meth:`SessionStore.commit` waiting at the same moment, from any
session, goes to the backend in one transaction (SQLite) or one round trip (Redis), so a
busy server pays one write for many messages, not one per message.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from .. import _stats
from .._errors import ReliableLinkError, SessionMoved

__all__ = ["SessionChange", "SessionRecord", "SessionStore", "StoreError", "StoreFenced"]

T = TypeVar("T")


class StoreError(ReliableLinkError):
    """The session store failed (disk full, database gone, Redis unreachable).

    The session ends with this error: continuing without the store would break the promise
    that what ``send()`` accepted survives a crash.
    """


class StoreFenced(SessionMoved):
    """A newer attachment (another process or server node) owns the session: this one's writes
    are refused, and its session ends with this error."""


@dataclass(slots=True)
class SessionRecord:
    """Everything stored about one session.

    Attributes:
        key: the store key (server: the session id in hex; client: ``client_id@url``).
        session_id: the 16-byte session id.
        client_id: the authenticated client.
        token: the resume token to present (client) or the latest one issued (server).
        prev_token: the server also accepts this one (the WELCOME carrying ``token`` may be lost).
        epoch: the fencing epoch; every attachment increments it, and a write carrying an
            older epoch is refused.
        next_seq: the next outgoing sequence number.
        acked: the highest outgoing sequence number the peer acknowledged.
        delivered: how many incoming messages were delivered to the application.
        unacked: outgoing messages not yet acknowledged, in order.
        expires_at: wall-clock time (``time.time()``) after which the record may be dropped;
            ``None``: never (clients).
    """

    key: str
    session_id: bytes
    client_id: str
    token: bytes
    prev_token: bytes = b""
    epoch: int = 1
    next_seq: int = 1
    acked: int = 0
    delivered: int = 0
    unacked: list[tuple[int, bytes]] = field(default_factory=list)
    expires_at: float | None = None


@dataclass(slots=True)
class SessionChange:
    """One batched update of a session (see :meth:`SessionStore.commit`).

    Attributes:
        appended: new outgoing messages ``(seq, payload)``, in order.
        next_seq: the next outgoing sequence number after them.
        acked: the peer's acknowledgement (messages up to it are dropped from the store).
        delivered: the delivery position.
        expires_at: new expiry time, or ``None`` to leave it.
        token: a new resume token, or ``None`` to leave it.
    """

    appended: list[tuple[int, bytes]]
    next_seq: int
    acked: int
    delivered: int
    expires_at: float | None = None
    token: bytes | None = None


class SessionStore(abc.ABC):
    """Where sessions live across process restarts (or across server nodes).

    Pass an instance as ``store=`` to :func:`reliablelink.connect` or
    :func:`reliablelink.serve`. All methods are called from Trio; implementations run
    blocking I/O in a worker thread, one operation at a time, in the order called.

    Args:
        clock: wall-clock source for expiry times (``time.time``); tests may replace it.
    """

    #: Whether several processes may share the store (server nodes behind one address).
    shared = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self._queue: list[_Pending] = []
        self._busy = False
        self._idle = trio.Event()
        self._closed = False

    # -- what backends implement (blocking; run in the store's worker thread) -----------

    @abc.abstractmethod
    def _load(self, key: str, now: float) -> SessionRecord | None:
        """The stored session, or ``None`` if there is none or it expired (then drop it)."""

    @abc.abstractmethod
    def _create(self, record: SessionRecord) -> None:
        """Store a new session (replacing any record with the same key)."""

    @abc.abstractmethod
    def _take_over(self, key: str, epoch: int) -> SessionRecord | None:
        """If the stored epoch is ``epoch``, increment it and return the whole record, atomically."""

    @abc.abstractmethod
    def _claim(self, key: str, epoch: int, tokens: tuple[bytes, bytes], expires_at: float | None) -> bool:
        """If the stored epoch is ``epoch``, store the tokens ``(token, prev_token)`` and expiry."""

    @abc.abstractmethod
    def _commit(self, changes: Sequence[tuple[str, int, SessionChange]]) -> list[bool]:
        """Apply the changes in order, atomically; for each, ``False`` if its epoch is stale."""

    @abc.abstractmethod
    def _delete(self, key: str, epoch: int) -> None:
        """Drop the session if its stored epoch is ``epoch``."""

    @abc.abstractmethod
    def _renew(self, leases: Sequence[tuple[str, int]], expires_at: float, now: float) -> None:
        """Set the expiry of these ``(key, epoch)`` sessions and drop expired ones."""

    def _close(self) -> None:  # noqa: B027 (optional hook)
        """Release the backend's resources."""

    # -- what the driver calls -------------------------------------------------------------

    async def load(self, key: str) -> SessionRecord | None:
        """The stored session named ``key``, or ``None``."""
        return await self._run(self._load, key, self.clock())

    async def create(self, record: SessionRecord) -> None:
        """Store a new session."""
        await self._run(self._create, record)

    async def take_over(self, key: str, epoch: int) -> SessionRecord | None:
        """Become the session's owner: increment its epoch if it is still ``epoch`` and return
        the record as it is at that instant (``None`` if someone else took it meanwhile).

        From then on, writes carrying the old epoch are refused, so nothing the old owner
        writes afterwards can be missing from the returned record.
        """
        return await self._run(self._take_over, key, epoch)

    async def claim(self, key: str, epoch: int, token: bytes, prev_token: bytes, expires_at: float | None) -> bool:
        """Record a new attachment by the owner of ``epoch``: its resume tokens and expiry.

        Returns ``False`` if another process took the session over.
        """
        ok: bool = await self._run(self._claim, key, epoch, (token, prev_token), expires_at)
        return ok

    async def delete(self, key: str, epoch: int) -> None:
        """Forget a session that ended (only if ``epoch`` still owns it)."""
        await self._run(self._delete, key, epoch)

    async def renew(self, leases: Sequence[tuple[str, int]], expires_at: float) -> None:
        """Extend the expiry of attached sessions; drop expired ones."""
        await self._run(self._renew, list(leases), expires_at, self.clock())

    async def commit(self, key: str, epoch: int, change: SessionChange) -> None:
        """Write one session's change, batched with every other change waiting now.

        Raises:
            StoreFenced: a newer attachment owns the session.
            StoreError: the backend failed.
        """
        entry = _Pending(key, epoch, change)
        self._queue.append(entry)
        while entry.result is None:
            if self._busy:
                await self._idle.wait()
                continue
            await self._flush()
        if isinstance(entry.result, BaseException):
            raise entry.result

    async def aclose(self) -> None:
        """Close the backend (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._run(self._close)

    # -- internals -------------------------------------------------------------------------

    async def _flush(self) -> None:
        # This task flushes everything queued so far in one batch; tasks that queue while it
        # runs wait for the next batch, which one of them flushes.
        self._busy = True
        batch, self._queue = self._queue, []
        try:
            try:
                outcome = await self._run(self._commit, [(e.key, e.epoch, e.change) for e in batch])
            except StoreError as exc:
                for e in batch:
                    e.result = exc
            else:
                for e, ok in zip(batch, outcome, strict=True):
                    e.result = True if ok else StoreFenced(f"session {e.key} was attached by a newer connection")
        finally:
            self._busy = False
            idle, self._idle = self._idle, trio.Event()
            idle.set()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed and fn != self._close:
            raise StoreError("the session store is closed")
        start = trio.current_time()
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"session store failed: {exc!r}") from exc
        finally:
            # The latency a session sees, waiting for the store's thread included.
            _stats.store_histogram(fn.__name__).observe(trio.current_time() - start)


class _Pending:
    __slots__ = ("change", "epoch", "key", "result")

    def __init__(self, key: str, epoch: int, change: SessionChange) -> None:
        self.key = key
        self.epoch = epoch
        self.change = change
        self.result: bool | BaseException | None = None
