"""A durable session store in one SQLite file (standard library ``sqlite3``, WAL mode)."""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Literal

from ._base import SessionChange, SessionRecord, SessionStore

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key TEXT PRIMARY KEY,
    session_id BLOB NOT NULL,
    client_id TEXT NOT NULL,
    token BLOB NOT NULL,
    prev_token BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    next_seq INTEGER NOT NULL,
    acked INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    expires_at REAL
);
CREATE TABLE IF NOT EXISTS messages (
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (key, seq)
) WITHOUT ROWID;
"""


class SQLiteStore(SessionStore):
    """Sessions in a SQLite database file, so either end can be killed and restarted.

    One process uses one file (for several server nodes, use :class:`RedisStore`). Writes go
    through a worker thread, batched: all changes waiting at the same moment share one
    transaction.

    Args:
        path: the database file (created if missing).
        synchronous: SQLite's ``synchronous`` setting. ``"NORMAL"`` (default) survives the
            process being killed (the write is in the operating system's hands before
            ``send()`` returns); ``"FULL"`` also survives power loss and kernel crashes, at the
            cost of an ``fsync`` per batch.
        clock: wall-clock source for expiry (``time.time``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock)
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        self.path = os.fspath(path)
        # Opened here, used only from the store's worker thread, one call at a time.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    def _load(self, key: str, now: float) -> SessionRecord | None:
        db = self._db
        row = db.execute(
            "SELECT session_id, client_id, token, prev_token, epoch, next_seq, acked, delivered, expires_at "
            "FROM sessions WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        sid, cid, token, prev, epoch, next_seq, acked, delivered, expires_at = row
        if expires_at is not None and expires_at < now:
            self._delete(key, epoch)
            return None
        rows = db.execute(
            "SELECT seq, payload FROM messages WHERE key = ? AND seq > ? ORDER BY seq", (key, acked)
        ).fetchall()
        unacked = [(s, bytes(p)) for s, p in rows]
        return SessionRecord(key, sid, cid, token, prev, epoch, next_seq, acked, delivered, unacked, expires_at)

    def _create(self, r: SessionRecord) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM messages WHERE key = ?", (r.key,))
            db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.key,
                    r.session_id,
                    r.client_id,
                    r.token,
                    r.prev_token,
                    r.epoch,
                    r.next_seq,
                    r.acked,
                    r.delivered,
                    r.expires_at,
                ),
            )
            db.executemany("INSERT INTO messages VALUES (?, ?, ?)", [(r.key, s, p) for s, p in r.unacked])

    def _take_over(self, key: str, epoch: int) -> SessionRecord | None:
        with self._transaction() as db:
            cur = db.execute("UPDATE sessions SET epoch = epoch + 1 WHERE key = ? AND epoch = ?", (key, epoch))
            if cur.rowcount != 1:
                return None
            return self._load(key, -math.inf)

    def _claim(self, key: str, epoch: int, tokens: tuple[bytes, bytes], expires_at: float | None) -> bool:
        with self._transaction() as db:
            cur = db.execute(
                "UPDATE sessions SET token = ?, prev_token = ?, expires_at = ? WHERE key = ? AND epoch = ?",
                (*tokens, expires_at, key, epoch),
            )
            return cur.rowcount == 1

    def _commit(self, changes: Sequence[tuple[str, int, SessionChange]]) -> list[bool]:
        results = []
        with self._transaction() as db:
            for key, epoch, c in changes:
                row = db.execute("SELECT epoch FROM sessions WHERE key = ?", (key,)).fetchone()
                if row is None or row[0] != epoch:
                    results.append(False)
                    continue
                if c.appended:
                    db.executemany("INSERT INTO messages VALUES (?, ?, ?)", [(key, s, p) for s, p in c.appended])
                db.execute("DELETE FROM messages WHERE key = ? AND seq <= ?", (key, c.acked))
                db.execute(
                    "UPDATE sessions SET next_seq = ?, acked = ?, delivered = ?, "
                    "token = coalesce(?, token), expires_at = coalesce(?, expires_at) WHERE key = ?",
                    (c.next_seq, c.acked, c.delivered, c.token, c.expires_at, key),
                )
                results.append(True)
        return results

    def _delete(self, key: str, epoch: int) -> None:
        with self._transaction() as db:
            cur = db.execute("DELETE FROM sessions WHERE key = ? AND epoch = ?", (key, epoch))
            if cur.rowcount:
                db.execute("DELETE FROM messages WHERE key = ?", (key,))

    def _renew(self, leases: Sequence[tuple[str, int]], expires_at: float, now: float) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE sessions SET expires_at = ? WHERE key = ? AND epoch = ?",
                [(expires_at, key, epoch) for key, epoch in leases],
            )
            db.execute(
                "DELETE FROM messages WHERE key IN (SELECT key FROM sessions WHERE expires_at < ?)",
                (now,),
            )
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))

    def _close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error."""

    __slots__ = ("db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
