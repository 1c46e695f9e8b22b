"""The public :class:`Session` and the Trio tasks that carry it over one connection at a time.

Each attached connection runs three tasks in a nursery owned by whoever attached it (the
client's reconnect loop or the server's connection handler): a reader that feeds what it
reads to the core (many frames per read), the writer that puts on the wire whatever the core
queued (many frames per write), and a timer for heartbeats, delayed ACKs and dead-link
detection. The session object itself owns no task: it survives the connection.

Bytes go in and out of a connection only through :mod:`reliablelink._link`. On a plain
socket, ``send()``/``receive()`` and the handling of control frames also write from the
calling task while the writer is idle, and a waiting ``receive()`` reads the socket itself
with the reader task's turn lent to it; :meth:`Session._flush` is the one decision between
writing now and waking the writer, and ``_link``'s module docstring gives the safety argument.
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import trio

from ._core import LinkDead, LinkParams, PeerClosed, PeerError, SessionCore, SessionState, Transition
from ._core._frames import ErrorCode, encode_error
from ._errors import MessageTooLarge, ProtocolError, ReliableLinkError, SessionClosed, SessionMoved
from ._link import LINK_ERRORS, Link, LinkLost, Replaced, open_link
from .stores._base import SessionChange, StoreError, StoreFenced

if TYPE_CHECKING:
    from .stores import SessionRecord, SessionStore

__all__ = ["ClosedByPeer", "ClosedLocally", "LinkState", "Session", "SessionStats"]

# send()/receive() are cancellation points on every call, and schedule points whenever they
# wait and at least once every _YIELD_EVERY calls. A schedule point per call would cap a
# session near one message per pass of the scheduler (~85k/s); this keeps other tasks
# running while letting the writer batch many messages into one write.
_YIELD_EVERY = 64


class ClosedByPeer(SessionClosed, trio.EndOfChannel):
    """The peer closed the session cleanly, and every message it sent has been received.

    Also a :class:`trio.EndOfChannel`, so ``async for`` over a session ends quietly, as it
    does over any Trio channel. Every other way a session ends (moved, fenced, expired)
    ends ``async for`` with its error.
    """


class ClosedLocally(SessionClosed, trio.ClosedResourceError):
    """This side closed the session (``aclose()``, or leaving ``async with``) and then used it.

    Also a :class:`trio.ClosedResourceError`, as for any Trio channel closed by its owner.
    """


class LinkState(enum.Enum):
    """Whether the session has a connection right now (see :attr:`Session.link_state`)."""

    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SessionStats:
    """A snapshot of a session's counters (see :attr:`Session.stats`).

    Attributes:
        sent: messages accepted by ``send``.
        received: messages handed to the application by ``receive``.
        resent: messages sent again after a reconnect.
        acked: messages the peer acknowledged.
        in_flight: messages sent and not yet acknowledged.
        in_flight_bytes: their payload bytes.
        queued: messages received and waiting for ``receive``.
        duplicates_dropped: duplicate messages dropped.
        reconnects: connections after the first.
        offline_seconds: total time spent without a connection after the first one.
        link_state: connected, reconnecting or closed.
        rtt: last heartbeat round-trip time in seconds, or ``None``.
        pings_sent: heartbeats sent.
    """

    sent: int
    received: int
    resent: int
    acked: int
    in_flight: int
    in_flight_bytes: int
    queued: int
    duplicates_dropped: int
    reconnects: int
    offline_seconds: float
    link_state: LinkState
    rtt: float | None
    pings_sent: int


# Kept under their old names for the server, which imports them from here.
_LinkLost = LinkLost
_Replaced = Replaced


@final
class Session(trio.abc.Channel[bytes]):
    """An ordered, exactly-once, two-way stream of messages that outlives its connections.

    Obtained from :func:`reliablelink.connect` or passed to a :func:`reliablelink.serve`
    handler; never constructed directly. A lost connection makes ``send`` and ``receive``
    wait while the link is re-established; nothing is lost, repeated or reordered.
    ``send``/``receive`` may be called from different tasks concurrently; several tasks
    calling ``receive`` each get different messages.

    A :class:`trio.abc.Channel` of ``bytes``: code typed against Trio's channels accepts
    it; ``async for`` ends quietly when the peer closes the session (:class:`ClosedByPeer`
    is a :class:`trio.EndOfChannel`); ``async with session`` closes it on the way out, on
    either end.
    """

    def __init__(self, core: SessionCore, *, session_id: bytes, client_id: str, close_timeout: float) -> None:
        self._core = core
        self._session_id = session_id
        self.client_id = client_id
        """The authenticated client id."""
        self._close_timeout = close_timeout
        self._recv_lot = trio.lowlevel.ParkingLot()
        self._send_lot = trio.lowlevel.ParkingLot()
        self._state_lot = trio.lowlevel.ParkingLot()
        self._link: Link | None = None
        self._error: ReliableLinkError | None = None
        self._link_state = LinkState.RECONNECTING
        # The server's expiry bookkeeping, told of every link state change.
        self._on_link_state: Callable[[Session, LinkState], None] | None = None
        # A new server session: set once the client's first bytes after the WELCOME arrive
        # (proof that it holds the session) or the session ends. The handler waits for it,
        # so that a session whose WELCOME was lost never accepts messages from the server
        # application that no client will ever resume.
        self._heard: trio.Event | None = None
        self._offline_since: float | None = None
        self._offline_total = 0.0
        # Calls left before send()/receive() must yield to the scheduler.
        self._budget = _YIELD_EVERY
        # Whether send()/receive() waited or yielded since the last call: the next message
        # sent is then likely a lone one (a reply), worth writing at once (see _flush).
        self._fresh = True
        # aclose() was called: this side closes (or closed) the session, and using it
        # from now on raises ClosedLocally.
        self._closing = False
        # Resume tokens: the client keeps the one to present; the server accepts the
        # latest it issued and the last one the client proved it had (the WELCOME carrying
        # a new token may be lost with the connection).
        self._token = b""
        self._prev_token = b""
        # Durable sessions (see reliablelink.stores): where the session is stored, the epoch
        # this process owns it under, and what the store already holds.
        self._store: SessionStore | None = None
        self._store_key = ""
        self._epoch = 0
        self._saved_seq = 0
        self._saved_delivered = 0
        self._saved_acked = 0
        # Everything receive() returned before its latest call: the application is done
        # with it, so it may be stored as delivered and acknowledged.
        self._handled = 0
        self._commit_at = math.inf
        self._restored = False
        self._store_forgotten = False
        self._supervised = False  # the server started its handler

    @classmethod
    def _from_record(cls, record: SessionRecord, core: SessionCore, close_timeout: float) -> Session:
        """A session loaded from a store (its core is still fresh)."""
        core.restore(next_seq=record.next_seq, acked=record.acked, delivered=record.delivered, unacked=record.unacked)
        session = cls(core, session_id=record.session_id, client_id=record.client_id, close_timeout=close_timeout)
        session._token = record.token
        session._prev_token = record.prev_token
        session._restored = True
        return session

    def _use_store(self, store: SessionStore, key: str, epoch: int) -> None:
        core = self._core
        core.durable = True
        self._store = store
        self._store_key = key
        self._epoch = epoch
        self._saved_seq = core.next_seq - 1
        self._saved_delivered = self._handled = core.delivered
        self._saved_acked = core.acked

    # -- public surface ----------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session's id (hex), the same on both ends and across reconnects."""
        return self._session_id.hex()

    @property
    def restored(self) -> bool:
        """Whether this process loaded the session from its store (after a restart, or on
        another server node) rather than creating it."""
        return self._restored

    @property
    def link_state(self) -> LinkState:
        """``CONNECTED`` while a connection carries the session, ``RECONNECTING`` between
        connections, ``CLOSED`` once the session has ended."""
        return self._link_state

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the session's counters (the same as :meth:`statistics`)."""
        return self.statistics()

    def statistics(self) -> SessionStats:
        """A snapshot of the session's counters (the name Trio's own objects use)."""
        c = self._core
        s = c.stats
        offline = self._offline_total
        if self._offline_since is not None:
            offline += trio.current_time() - self._offline_since
        return SessionStats(
            sent=s.sent,
            received=c.delivered,
            resent=s.resent,
            acked=s.acked,
            in_flight=len(c.unacked),
            in_flight_bytes=c.unacked_bytes,
            queued=len(c.inbox),
            duplicates_dropped=s.duplicates_dropped,
            reconnects=max(0, s.attaches - 1),
            offline_seconds=offline,
            link_state=self._link_state,
            rtt=s.rtt,
            pings_sent=s.pings_sent,
        )

    async def wait_link_change(self) -> LinkState:
        """Wait until :attr:`link_state` changes; return the new state.

        For showing "reconnecting…" in a user interface without handling errors. Once the
        session is ``CLOSED`` it returns ``CLOSED`` at once, every time: stop watching then.
        """
        before = self._link_state
        while self._link_state is before and before is not LinkState.CLOSED:
            await self._state_lot.park()
        if before is LinkState.CLOSED:
            await trio.lowlevel.checkpoint()
        return self._link_state

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one message. Returns once the session holds it; waits while the window is full.

        A message counts as *accepted* when ``send`` returns: from then on it is delivered
        exactly once unless the session expires or is closed. Use :meth:`drain` to wait
        until the peer has it.

        Raises:
            MessageTooLarge: larger than the agreed ``max_message_size``.
            SessionClosed: the session was closed (by either side).
            SessionExpired: the server forgot the session.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        payload = data if type(data) is bytes else _as_bytes(data)
        try:
            accepted = self._core.try_send(payload)
        except SessionClosed:
            self._raise_if_dead()  # the precise reason: closed here, by the peer, expired...
            raise
        if not accepted:
            await self._send_when_open(payload)
            eager = self._fresh = True
        else:
            eager = self._fresh
            self._fresh = False
            if self._budget:
                self._budget -= 1
            else:
                self._budget = _YIELD_EVERY
                await trio.lowlevel.cancel_shielded_checkpoint()
                self._fresh = True
        if self._store is not None:
            await self._persist()
        else:
            self._flush(eager)

    async def _send_when_open(self, payload: bytes) -> None:
        """The slow path of :meth:`send`: wait for the window, then hand over ``payload``."""
        while True:
            await self._wait_window(len(payload))
            if self._core.try_send(payload):
                self._budget = _YIELD_EVERY
                return

    async def send_many(self, messages: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send several messages in order with one checkpoint for the batch.

        Waits for the window as needed between messages; if it raises, the messages before
        the failing one were accepted and the rest were not.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        core = self._core
        limit = core.params.max_message_size
        payloads = [data if type(data) is bytes else _as_bytes(data) for data in messages]
        too_large: MessageTooLarge | None = None
        for i, payload in enumerate(payloads):
            if len(payload) > limit:
                # The messages before it are still sent, as documented.
                too_large = MessageTooLarge(len(payload), limit)
                del payloads[i:]
                break
        waited = False
        i = 0
        end = len(payloads)
        while True:
            if not core.send_closed:
                i = core.send_many(payloads, i)
            if i == end:
                break
            if self._store is not None:
                await self._persist()
            self._flush(eager=False)
            await self._wait_window(len(payloads[i]))
            waited = True
        if self._store is not None:
            await self._persist()
        else:
            self._flush(eager=False)
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        if too_large is not None:
            raise too_large

    async def receive(self) -> bytes:
        """Return the next message: in order, exactly once. Waits until one arrives.

        Raises:
            SessionClosed: the session was closed (by the peer or by this side) and every
                message that arrived before the close has been received.
            SessionExpired: the server forgot the session.
        """
        core = self._core
        if self._store is not None:
            # Calling receive() again says the application is done with what it had, even
            # if this call is cancelled at once.
            self._mark_handled()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not core.inbox:
            await self._wait_inbox()
            self._budget = _YIELD_EVERY
            self._fresh = True
        elif self._budget:
            self._budget -= 1
            self._fresh = False
        else:
            self._budget = _YIELD_EVERY
            await trio.lowlevel.cancel_shielded_checkpoint()
            self._fresh = True
        data = core.take()
        if core.has_data_to_send():
            # An ACK after this delivery: the sender may be waiting for it to open its window.
            self._flush(eager=True)
        return data

    async def receive_many(self, max_count: int = 1000) -> list[bytes]:
        """Return up to ``max_count`` messages that are ready now (at least one; waits for it).

        Raises:
            SessionClosed, SessionExpired: as :meth:`receive`.
        """
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        core = self._core
        if self._store is not None:
            self._mark_handled()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not core.inbox:
            await self._wait_inbox()
            self._budget = _YIELD_EVERY
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        batch = core.take_many(max_count)
        if core.has_data_to_send():
            self._flush(eager=True)
        return batch

    async def drain(self) -> None:
        """Wait until the peer has acknowledged every message sent so far.

        Raises:
            SessionClosed, SessionExpired: the session ended with messages unacknowledged.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closing:
            self._raise_if_dead()  # ClosedLocally, even with nothing left to wait for
        core = self._core
        while core.unacked:
            self._raise_if_dead()
            await self._send_lot.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Close the session: drain, send CLOSE, wait for the peer's CLOSE (all bounded by
        ``close_timeout``). Safe to call more than once and under cancellation: if
        cancelled, the session is closed at once without waiting."""
        if self._closing or self._error is not None:
            self._closing = True
            await trio.lowlevel.checkpoint()
            return
        self._closing = True
        core = self._core
        core.stop_sending()
        try:
            with trio.move_on_after(self._close_timeout):
                if self._store is not None:
                    # The application is done with everything it received.
                    self._handled = core.delivered
                    with contextlib.suppress(ReliableLinkError):
                        await self._persist()
                while core.unacked and self._error is None and not core.peer_closed:
                    await self._send_lot.park()
                core.close()
                self._flush(eager=False)
                while not core.finished and self._error is None:
                    await self._send_lot.park()
        finally:
            self._finish(ClosedLocally("the session was closed by this side"), Transition.CLOSE_DONE)

    # -- the store -------------------------------------------------------------------------

    def _mark_handled(self) -> None:
        """receive() was called again: what it returned before is handled; store that soon
        (batched like a delayed ACK), and acknowledge it once stored."""
        core = self._core
        self._handled = core.delivered
        if self._handled == self._saved_delivered or self._commit_at != math.inf:
            return
        now = trio.current_time()
        soon = self._handled - self._saved_delivered >= core.ack_every
        self._commit_at = now if soon else now + core.ack_delay
        link = self._link
        if link is not None:
            link.wake_timer_by(self._commit_at)

    async def _persist(self, token: bytes | None = None) -> None:
        """Write to the store what it lacks; then let those messages go on the wire and
        acknowledge what is stored as delivered.

        Shielded from cancellation: a message is either accepted (stored) or not, never
        half-way. Raises the session's error if the store refused or failed (the session
        ends: :class:`StoreFenced` when another attachment owns it, :class:`StoreError`).
        """
        store = self._store
        if store is None:
            return
        core = self._core
        upto = core.next_seq - 1
        handled = self._handled
        if (
            upto == self._saved_seq
            and handled == self._saved_delivered
            and core.acked == self._saved_acked
            and token is None
        ):
            return
        appended: list[tuple[int, bytes]] = []
        if upto > self._saved_seq:
            first = self._saved_seq + 1 - core.unacked[0][0]
            appended = list(itertools.islice(core.unacked, first, None))
        self._saved_seq, self._saved_delivered, self._saved_acked = upto, handled, core.acked
        change = SessionChange(appended, core.next_seq, core.acked, handled, token=token)
        try:
            with trio.CancelScope(shield=True):
                await store.commit(self._store_key, self._epoch, change)
        except StoreFenced as exc:
            self._finish(exc)
        except StoreError as exc:
            self._finish(exc)
        if self._error is not None:
            raise _fresh(self._error)
        core.durable_done(upto, handled)
        self._flush(eager=False)

    async def _save_abandoned(self) -> None:
        """Store everything the store lacks (the delivery position above all) of a session
        left open at shutdown, so that a restart resumes exactly where it stopped. Shielded;
        a store failure is not raised here (the session is being abandoned anyway)."""
        if self._store is None or self._error is not None:
            return
        with trio.CancelScope(shield=True), contextlib.suppress(ReliableLinkError):
            await self._persist()

    @property
    def _keep_stored(self) -> bool:
        """Whether the stored copy must outlive this process's copy: another attachment owns
        it, or it was only abandoned here (cancelled or timed-out close, shutdown) and may be
        resumed by a restart."""
        error = self._error
        if error is None or isinstance(error, StoreFenced):
            return True
        return type(error) in (SessionClosed, ClosedLocally) and not self._core.peer_closed

    async def _forget_store(self) -> None:
        """Drop the stored copy of a session that ended for good (idempotent)."""
        store = self._store
        if store is None or self._store_forgotten or self._keep_stored:
            return
        self._store_forgotten = True
        with trio.CancelScope(shield=True), contextlib.suppress(StoreError):
            await store.delete(self._store_key, self._epoch)

    # -- waiting helpers ---------------------------------------------------------------

    def _raise_if_dead(self) -> None:
        if self._closing and self._error is not None:
            raise ClosedLocally("this side closed the session")
        if self._error is not None:
            raise _fresh(self._error)
        if self._closing:
            raise ClosedLocally("this side closed the session (aclose); no more messages can be sent")
        if self._core.peer_closed:
            raise ClosedByPeer("the peer closed the session")

    async def _wait_window(self, size: int) -> None:
        core = self._core
        while True:
            self._raise_if_dead()
            if core.window_open(size):
                return
            await self._send_lot.park()

    async def _wait_inbox(self) -> None:
        core = self._core
        while not core.inbox:
            if self._closing and self._error is not None:
                raise ClosedLocally("this side closed the session")
            if self._error is not None:
                raise _fresh(self._error)
            if core.peer_closed:
                raise ClosedByPeer("the peer closed the session")
            link = self._link
            if link is None or not link.lends_reads:
                await self._recv_lot.park()
                continue
            # Read the socket from this call rather than wait for the reader task to read
            # and wake us (a pass of the scheduler per message of a request/response
            # exchange): the reader task lends its turn (see reliablelink._link).
            try:
                data = await link.read_lent()
            except LINK_ERRORS as exc:
                link.fail(exc)
                continue
            if data:
                self._feed(link, data)
            else:
                link.fail(LinkLost("peer closed the connection"))

    def _flush(self, eager: bool) -> None:
        """Put what the core queued on the wire: from this task at once if ``eager`` and the
        link can write without waiting, else by waking the writer, which batches.

        The one decision between writing now and letting the writer batch. Nothing happens
        while the writer is busy (it takes everything queued before it parks again) or
        while detached (the next attach sends it). ``eager`` is for lone messages (a
        reply, a control frame), for which waking the writer costs more than the write; a
        stream of messages goes through the writer. Why a write from this task is safe:
        see :mod:`reliablelink._link`.
        """
        link = self._link
        if link is None or not link.writer_idle:
            return
        if eager and link.writes_directly:
            core = self._core
            rest = link.try_write(core.buffers_to_send(trio.current_time()))
            if not rest:
                return
            core.unsend(rest)
        link.wake_writer()

    def _peer_heard(self) -> None:
        """The peer's first bytes arrived (or the session ended): let the handler start."""
        assert self._heard is not None
        self._heard.set()
        self._heard = None

    def _timer_deadline(self) -> float:
        """When the timer task must next run: the core's next deadline or a store commit."""
        return min(self._core.next_deadline(), self._commit_at)

    def _wake_all(self) -> None:
        self._recv_lot.unpark_all()
        self._send_lot.unpark_all()
        self._state_lot.unpark_all()

    def _set_link_state(self, state: LinkState) -> None:
        if state is self._link_state:
            return
        now = trio.current_time()
        if state is LinkState.CONNECTED and self._offline_since is not None:
            self._offline_total += now - self._offline_since
            self._offline_since = None
        elif state is LinkState.RECONNECTING and self._core.stats.attaches > 0:
            self._offline_since = now
        elif state is LinkState.CLOSED and self._offline_since is not None:
            self._offline_total += now - self._offline_since
            self._offline_since = None
        self._link_state = state
        self._state_lot.unpark_all()
        if self._on_link_state is not None:
            self._on_link_state(self, state)

    @property
    def _finished(self) -> bool:
        return self._error is not None

    def _finish(self, error: ReliableLinkError, transition: Transition = Transition.FAIL) -> None:
        """End the session for good: every waiter raises ``error`` (a copy of it).

        A clean close leaves the connection to the writer, which ends it once the last
        frames (our CLOSE or CLOSE reply) are flushed; anything else drops it at once.
        """
        if self._error is not None:
            return
        self._error = error
        if self._heard is not None:
            self._peer_heard()
        self._core.finish(transition)
        if transition is Transition.CLOSE_DONE:
            self._flush(eager=False)
        else:
            self._detach_now(LinkLost(f"session ended: {error}"))
        self._set_link_state(LinkState.CLOSED)
        self._wake_all()

    def _detach_now(self, reason: BaseException) -> None:
        """Stop using the current connection at once (its tasks wind down on their own)."""
        link = self._link
        if link is None:
            return
        link.fail(reason)
        self._link = None
        self._core.detach()
        if self._error is None:
            self._set_link_state(LinkState.RECONNECTING)
        self._wake_all()

    # -- carrying the session over one connection --------------------------------------

    async def _run_link(
        self, stream: trio.abc.Stream, params: LinkParams, peer_last_received: int, rest: bytes
    ) -> None:
        """Attach ``stream`` and carry the session over it until it fails.

        Never raises for a connection problem (the caller reconnects or waits); a problem
        that ends the session is recorded with :meth:`_finish`.
        """
        if self._error is not None:
            await trio.aclose_forcefully(stream)
            return
        self._detach_now(Replaced("replaced by a newer connection"))
        core = self._core
        try:
            core.attach(params, peer_last_received, trio.current_time())
        except ProtocolError as exc:
            # The peer lost messages it had promised to hold: continuing would lose or
            # repeat messages, so the session ends here with the reason.
            self._finish(exc)
            await trio.aclose_forcefully(stream)
            return
        link = open_link(stream)
        self._link = link
        self._set_link_state(LinkState.CONNECTED)
        self._wake_all()
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, link)
                    nursery.start_soon(self._timer, link)
                    if rest:
                        self._feed(link, rest)
                    await self._reader(link)
        finally:
            last_words: bytes | bytearray = b""
            if self._link is link:
                if isinstance(link.reason, ProtocolError):
                    # The core queued an ERROR frame saying why the peer broke the protocol.
                    last_words = core.data_to_send(trio.current_time())
                self._detach_now(link.reason or LinkLost("connection ended"))
            elif isinstance(link.reason, Replaced):
                last_words = encode_error(ErrorCode.SESSION_REPLACED, str(link.reason))
            link.done.set()
            with trio.CancelScope(shield=True):
                if last_words:
                    with trio.move_on_after(1):
                        with contextlib.suppress(*LINK_ERRORS):
                            await link.write([last_words])
                await trio.aclose_forcefully(stream)

    def _feed(self, link: Link, data: bytes) -> None:
        if self._link is not link:
            # Detached (replaced, or the session ended) while this read was returning.
            return
        if self._heard is not None:
            self._peer_heard()
        core = self._core
        acked = core.acked
        try:
            events = core.receive_data(data, trio.current_time())
        except ProtocolError as exc:
            link.fail(exc)
            return
        if core.inbox and self._recv_lot:
            self._recv_lot.unpark_all()
        if core.acked != acked and self._send_lot:
            self._send_lot.unpark_all()
        if core.has_data_to_send():
            # Control frames (PONG, ACK, a CLOSE reply): waking the writer for a 9-byte
            # frame costs more than the write, and idle sessions do this all day.
            self._flush(eager=True)
        # Received bytes move deadlines later (dead-link check; the heartbeat, after a PONG
        # was sent) as well as earlier (an ACK became due): an idle server's timer would
        # otherwise wake once per heartbeat for nothing.
        link.rearm_timer(self._timer_deadline())
        for event in events:
            if isinstance(event, PeerClosed):
                # Receivers finish the inbox, then see the close; senders and drain see it
                # at once. The writer flushes our CLOSE reply, then ends the connection.
                self._finish(ClosedByPeer("the peer closed the session"), Transition.CLOSE_DONE)
            elif isinstance(event, PeerError):
                self._on_peer_error(link, event)

    def _on_peer_error(self, link: Link, event: PeerError) -> None:
        if event.code == ErrorCode.SESSION_REPLACED:
            self._finish(SessionMoved(f"the session was attached from another connection: {event.message}"))
        else:
            link.fail(LinkLost(f"peer reported error {event.code}: {event.message}"))

    async def _reader(self, link: Link) -> None:
        try:
            while link.reason is None:
                data = await link.read()
                if not data:
                    link.fail(LinkLost("peer closed the connection"))
                    return
                self._feed(link, data)
        except LINK_ERRORS as exc:
            link.fail(exc)

    async def _writer(self, link: Link) -> None:
        core = self._core
        try:
            while link.reason is None:
                buffers = core.buffers_to_send(trio.current_time())
                if buffers:
                    await link.write(buffers)
                elif core.finished:
                    # CLOSE exchanged and flushed: this connection has nothing more to do.
                    link.fail(LinkLost("the close handshake is complete"))
                    return
                else:
                    await link.wait_for_work()
        except LINK_ERRORS as exc:
            link.fail(exc)

    async def _timer(self, link: Link) -> None:
        core = self._core
        # Nothing ever unparks this lot: the timer sleeps until its scope's deadline, which
        # link.wake_timer_by() moves earlier when something becomes due sooner, and
        # link.rearm_timer() sets to what is due next when bytes arrive.
        lot = trio.lowlevel.ParkingLot()
        while link.reason is None:
            deadline = self._timer_deadline()
            link.timer_at = deadline
            with trio.CancelScope(deadline=deadline) as scope:
                link.timer_scope = scope
                await lot.park()
            link.timer_scope = None
            link.timer_at = math.inf
            now = trio.current_time()
            if now >= self._commit_at:
                self._commit_at = math.inf
                try:
                    await self._persist()
                except ReliableLinkError:
                    return
            for event in core.handle_timer(now):
                if isinstance(event, LinkDead):
                    link.fail(LinkLost(f"nothing received for {event.silence:.1f} s: link is dead"))
                    return
            if core.has_data_to_send():
                self._flush(eager=True)

    @property
    def _state(self) -> SessionState:
        return self._core.state


def _fresh(error: ReliableLinkError) -> ReliableLinkError:
    """A new exception like ``error``, so each waiter raises its own object with its own traceback."""
    try:
        copy = type(error)(*error.args)
    except TypeError:
        return error
    copy.__cause__ = error.__cause__
    return copy


def _as_bytes(data: object) -> bytes:
    """``data`` as bytes, or a ``TypeError`` that says what a message must be."""
    if isinstance(data, str):
        raise TypeError("a message is bytes, not str: encode it first, for example text.encode()")
    try:
        return memoryview(data).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a message is bytes, bytearray or memoryview, not {type(data).__name__}") from None
