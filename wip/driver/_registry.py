"""The server's session table: one record per live session, per-client counts, detached
expiry and the ids of recently closed sessions."""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict

import trio

from ._carrier import Carrier, LinkState
from ._core import SessionState, Transition
from ._errors import SessionExpired
from ._session import Session

__all__ = ["ServerSession", "SessionRegistry"]

log = logging.getLogger("reliablelink.server")

_CLOSED_REMEMBERED = 10_000


class ServerSession:
    """The server's bookkeeping for one session (never seen by the application).

    Attributes:
        session: the application's view, passed to the handler.
        carrier: what carries it over connections.
        token: the latest resume token issued.
        prev_token: the last one the client proved it holds (the WELCOME carrying
            ``token`` may have been lost), or ``b""``.
        supervised: whether its handler was started.
    """

    __slots__ = ("carrier", "prev_token", "session", "supervised", "token")

    def __init__(self, session: Session, carrier: Carrier, token: bytes, prev_token: bytes = b"") -> None:
        self.session = session
        self.carrier = carrier
        self.token = token
        self.prev_token = prev_token
        self.supervised = False

    @property
    def session_id(self) -> bytes:
        """The raw session id."""
        return bytes.fromhex(self.session.session_id)

    @property
    def epoch(self) -> int:
        """The fencing epoch this process holds the stored session under (0: no store)."""
        durability = self.carrier.durability
        return durability.epoch if durability is not None else 0


class SessionRegistry:
    """Live sessions by id, with the counts and expiry the server enforces.

    Args:
        session_ttl: how long a detached session is kept.
    """

    def __init__(self, session_ttl: float) -> None:
        self.session_ttl = session_ttl
        self.by_id: dict[bytes, ServerSession] = {}
        self.per_client: Counter[str] = Counter()
        self._closed: OrderedDict[bytes, None] = OrderedDict()
        # Detached sessions and when each expires, in the order they were detached: with
        # one session_ttl for all, that is the order they expire in. One task watches them
        # all (a task per session would cost as much memory as the rest of an idle session).
        # (An OrderedDict: popping the front of a plain dict again and again is quadratic.)
        self._detached: OrderedDict[ServerSession, float] = OrderedDict()
        self._detached_lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, session_id: bytes) -> ServerSession | None:
        """The live record of ``session_id``, if any."""
        return self.by_id.get(session_id)

    def was_closed(self, session_id: bytes) -> bool:
        """Whether ``session_id`` was closed recently (a late resume hears "closed")."""
        return session_id in self._closed

    def adopt(self, record: ServerSession) -> None:
        """Hold ``record``; expiry watches it from now on, supervised or not (a stored session
        whose claim failed is held without a handler until a resume succeeds or it expires)."""
        self.by_id[record.session_id] = record
        self.per_client[record.session.client_id] += 1
        record.carrier.on_link_state = lambda state: self._track(record, state)
        self._track(record, record.carrier.link_state)

    def forget(self, record: ServerSession) -> bool:
        """Stop holding ``record``; return whether it was held."""
        self._detached.pop(record, None)
        record.carrier.on_link_state = None
        sid = record.session_id
        if self.by_id.get(sid) is not record:
            return False
        del self.by_id[sid]
        client_id = record.session.client_id
        self.per_client[client_id] -= 1
        if self.per_client[client_id] <= 0:
            del self.per_client[client_id]
        if record.carrier.core.state is SessionState.CLOSED:
            self._closed[sid] = None
            while len(self._closed) > _CLOSED_REMEMBERED:
                self._closed.popitem(last=False)
        return True

    def _track(self, record: ServerSession, state: LinkState) -> None:
        self._detached.pop(record, None)
        if state is LinkState.RECONNECTING and self.by_id.get(record.session_id) is record:
            self._detached[record] = trio.current_time() + self.session_ttl
            if len(self._detached) == 1:  # later entries never expire before the first
                self._detached_lot.unpark_all()

    async def expire_detached(self) -> None:
        """End every session that stays detached for longer than ``session_ttl`` (runs forever)."""
        ttl = self.session_ttl
        detached = self._detached
        while True:
            if not detached:
                await self._detached_lot.park()
                continue
            record, due = next(iter(detached.items()))
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await self._detached_lot.park()
                continue
            detached.popitem(last=False)
            carrier = record.carrier
            if carrier.ended or carrier.link_state is not LinkState.RECONNECTING:
                continue
            session = record.session
            log.info("session %s (client %r) expired after %.1f s detached", session.session_id, session.client_id, ttl)
            carrier.finish(
                SessionExpired(f"the session was detached for longer than session_ttl ({ttl} s)"), Transition.EXPIRE
            )
            if not record.supervised:
                self.forget(record)  # no handler will: its claim in the store failed
