"""The sans-I/O session: sequence numbers, window, acknowledgements, heartbeats, resume, close.

A :class:`SessionCore` holds everything that must outlive a connection (the next sequence
number, the messages not yet acknowledged, what was received and delivered); the state of
the connection currently attached, if any, is a separate :class:`_Conn` that ``attach``
creates and ``detach`` drops. It never blocks and never reads a clock: bytes go in with
:meth:`~SessionCore.receive_data`, time goes in as ``now``, bytes come out of
:meth:`~SessionCore.buffers_to_send`, and :meth:`~SessionCore.next_deadline` says when to
call :meth:`~SessionCore.handle_timer`.

Delivery rules (see ``docs/guarantees.md``):

* Each direction numbers its messages 1, 2, 3, ... (u64, never wraps).
* TCP keeps order within a connection, so nothing is resent on a live link. On attach each
  side states the last sequence number it *received*; the peer resends everything after it,
  in order. A receiver accepts exactly ``received + 1`` and drops what it already has.
* The cumulative ACK is the last sequence number handed to the application, so the window
  (``max_inflight`` messages, ``max_inflight_bytes`` bytes) bounds every buffer end to end.

The close handshake is one state machine per direction (:class:`~._state.OurSide`,
:class:`~._state.TheirSide`, as h11's ``our_state``/``their_state``); the life cycle is
:class:`~._state.SessionState`. All three tables live in ``_state.py``.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import MessageTooLarge, ProtocolError, SessionClosed
from ._frames import (
    DATA_BODY_OVERHEAD,
    DATA_HEADER,
    DATA_HEADER_SIZE,
    HEADER,
    HEADER_SIZE,
    U64,
    U64_FRAME,
    ErrorCode,
    FrameType,
    check_length,
    decode_error,
    encode_error,
)
from ._params import LinkParams
from ._state import (
    FINAL_STATES,
    OurSide,
    SessionState,
    SideEvent,
    TheirSide,
    Transition,
    next_our_side,
    next_state,
    next_their_side,
)

__all__ = ["LARGE_PAYLOAD", "CoreStats", "LinkDead", "PeerClosed", "PeerError", "SessionCore"]

_DATA = FrameType.DATA
_ACK = FrameType.ACK
_PING = FrameType.PING
_PONG = FrameType.PONG
_CLOSE = FrameType.CLOSE
_ERROR = FrameType.ERROR
_INF = math.inf
_OPEN = OurSide.OPEN
_THEIRS_OPEN = TheirSide.OPEN
_CLOSED_MESSAGE = "the session is closing or closed; no more messages can be sent"

#: Payloads at least this large are not copied into the output buffer: they are handed to
#: the writer as buffers of their own (see :meth:`SessionCore.buffers_to_send`), so a large
#: message is copied once, by the kernel, as with a plain ``send_all``.
LARGE_PAYLOAD = 16 * 1024


@dataclass(slots=True)
class CoreStats:
    """Counters kept by the core. Plain integers; read them any time.

    Attributes:
        sent: messages accepted by ``try_send``/``send_many`` (each counted once, however
            often resent).
        arrived: messages that arrived in order and were queued in the inbox, whether or not
            the application took them yet (``SessionCore.delivered`` counts those it took;
            the driver reports that one as ``SessionStats.received``).
        resent: DATA frames sent again after a reconnect: messages that had been queued on
            an earlier connection (a message first queued on this one is not counted; a
            message restored from a store is, as it may have been sent before).
        duplicates_dropped: DATA frames dropped because that sequence number was already held.
        acked: messages the peer has acknowledged.
        acked_bytes: their payload bytes (counted per acknowledgement, not per message:
            ``acked_bytes + SessionCore.unacked_bytes`` is every payload byte accepted).
        pings_sent: heartbeats sent.
        rtt: last measured round-trip time (seconds) from PING/PONG, or ``None``.
        attaches: how many connections have carried the session.
    """

    sent: int = 0
    arrived: int = 0
    resent: int = 0
    duplicates_dropped: int = 0
    acked: int = 0
    acked_bytes: int = 0
    pings_sent: int = 0
    rtt: float | None = None
    attaches: int = 0


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer sent CLOSE: it will send nothing more."""


@dataclass(frozen=True, slots=True)
class LinkDead:
    """Nothing was received for ``dead_after`` seconds: drop the connection and reconnect."""

    silence: float


@dataclass(frozen=True, slots=True)
class PeerError:
    """The peer sent an ERROR frame and will close the connection."""

    code: int
    message: str


Event = PeerClosed | LinkDead | PeerError


class _Conn:
    """The state of one attached connection: created by ``attach``, dropped by ``detach``.

    Nothing here outlives the connection, so a reconnect cannot inherit half a frame, a
    stale PONG or a timer of the old one.
    """

    __slots__ = (
        "ack_due",
        "chunks",
        "frame_limit",
        "have",
        "last_recv",
        "last_send",
        "need",
        "out",
        "parts",
        "ping_sent_at",
        "ping_token",
        "pong_queued",
        "seq",
        "unframed",
    )

    def __init__(self, frame_limit: int, now: float, ack_due: float) -> None:
        # Outgoing bytes are ``chunks`` (whole buffers: coalesced frames and large payloads,
        # in order) followed by ``out``.
        self.chunks: list[bytes | bytearray] = []
        self.out = bytearray()
        # Messages to put on this connection, in order, not yet encoded: DATA frames are
        # encoded when the bytes are taken (buffers_to_send), one pass per write, not one
        # call per send(). Nothing may be queued behind them that must follow them (CLOSE):
        # _frame_pending() first.
        self.unframed: list[tuple[int, bytes]] = []
        # A frame that the reads so far hold only part of: its pieces (not yet copied),
        # how many bytes they hold, and the frame's whole size (HEADER_SIZE until known).
        self.parts: list[bytes | memoryview] = []
        self.have = 0
        self.need = 0
        self.pong_queued = False
        self.seq = 0  # the last DATA sequence number seen on this connection
        self.frame_limit = frame_limit
        self.last_recv = now
        self.last_send = now
        self.ack_due = ack_due
        self.ping_token = 0
        self.ping_sent_at = 0.0


class SessionCore:
    """Sans-I/O state of one session (see the module docstring).

    Args:
        params: the local link parameters; replaced by the agreed ones on each attach.
        ack_delay: longest time a delivered message waits before a standalone ACK is sent.
    """

    def __init__(self, params: LinkParams, *, ack_delay: float = 0.02) -> None:
        self._params = params
        self.ack_delay = ack_delay
        self.state = SessionState.NEW
        self.our_state = OurSide.OPEN
        self.their_state = TheirSide.OPEN
        self.stats = CoreStats()
        # Outgoing direction.
        self.next_seq = 1
        self.unacked: deque[tuple[int, bytes]] = deque()
        self.unacked_bytes = 0
        self.acked = 0
        # Durable sessions (a store is in use) hold each message back from the wire until the
        # store has it (``released``), and acknowledge only what the store says was delivered
        # (``committed``): a message on the wire before it is held, or an ACK before the
        # delivery is held, is how a crash loses or repeats messages.
        self.durable = False
        self.released = 0
        # The last message queued on a connection before the latest detach: replaying up to
        # here is a resend; a message accepted while detached goes out for the first time.
        self._wired = 0
        self.committed = 0
        # Incoming direction.
        self.received = 0
        self.delivered = 0
        self.inbox: deque[bytes] = deque()
        self.inbox_bytes = 0
        self.ack_sent = 0
        self._ack_sent_bytes = 0
        self._delivered_bytes = 0
        # Copies of the limits in ``params``, read on the per-message path.
        self._max_size = self._max_count = self._max_bytes = 0
        self._ack_every = self._ack_every_bytes = 1
        self._conn: _Conn | None = None
        self._set_limits(params)

    # -- state -------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether a connection currently carries the session."""
        return self._conn is not None

    @property
    def finished(self) -> bool:
        """Whether the session reached a final state."""
        return self.state in FINAL_STATES

    @property
    def send_closed(self) -> bool:
        """Whether this side no longer accepts messages (closing begun, or the session ended)."""
        return self.our_state is not _OPEN

    @property
    def close_sent(self) -> bool:
        """Whether this side's CLOSE is queued (or will be sent on the next attach)."""
        return self.our_state is OurSide.CLOSE_SENT

    @property
    def peer_closed(self) -> bool:
        """Whether the peer sent CLOSE (it sends nothing more)."""
        return self.their_state is TheirSide.CLOSE_RECEIVED

    @property
    def ack_every(self) -> int:
        """How many delivered messages make an acknowledgement (or a store commit) due at once:
        a quarter of the window."""
        return self._ack_every

    @property
    def delivered_bytes(self) -> int:
        """Payload bytes of the messages handed to the application (``delivered`` of them)."""
        return self._delivered_bytes

    @property
    def last_recv(self) -> float:
        """When the attached connection last carried bytes in (0.0 while detached)."""
        conn = self._conn
        return 0.0 if conn is None else conn.last_recv

    @property
    def last_send(self) -> float:
        """When bytes were last taken for the attached connection (0.0 while detached)."""
        conn = self._conn
        return 0.0 if conn is None else conn.last_send

    def _go(self, transition: Transition) -> None:
        self.state = state = next_state(self.state, transition)
        if state in FINAL_STATES and self.our_state is _OPEN:
            # An ended session sends nothing more: one test (``our_state``) covers both.
            self.our_state = next_our_side(self.our_state, SideEvent.STOP_SENDING)

    @property
    def params(self) -> LinkParams:
        """The link parameters in force: the local ones, then the agreed ones of each attach."""
        return self._params

    @params.setter
    def params(self, params: LinkParams) -> None:
        self._set_limits(params)

    def _set_limits(self, params: LinkParams) -> None:
        self._params = params
        self._max_size = params.max_message_size
        self._max_count = params.max_inflight
        self._max_bytes = params.max_inflight_bytes
        # A standalone ACK after a quarter of the window keeps the sender from stalling
        # while sending at most a handful of ACK frames per window.
        self._ack_every = max(1, params.max_inflight // 4)
        self._ack_every_bytes = max(1, params.max_inflight_bytes // 4)

    def restore(self, *, next_seq: int, acked: int, delivered: int, unacked: list[tuple[int, bytes]]) -> None:
        """Load a session's position from a store (before the first attach).

        Received-but-undelivered messages are not kept by stores: the position resumes at
        ``delivered`` and the peer resends the rest.

        Raises:
            RuntimeError: the core was already used.
        """
        if self.stats.attaches or self.next_seq != 1:
            raise RuntimeError("restore() is only valid on a fresh core")
        self.durable = True
        self.next_seq = next_seq
        self.released = self._wired = next_seq - 1  # a restored message may have been sent
        self.acked = acked
        self.unacked = deque(unacked)
        self.unacked_bytes = sum(len(p) for _, p in unacked)
        self.received = self.delivered = self.committed = self.ack_sent = delivered
        self.stats.sent = next_seq - 1
        self.stats.acked = acked

    def _ack_pos(self) -> int:
        return self.committed if self.durable else self.delivered

    # -- attach / detach ---------------------------------------------------------------

    def attach(self, params: LinkParams, peer_last_received: int, now: float) -> None:
        """A new connection carries the session: replay what the peer has not received.

        Args:
            params: the agreed link parameters.
            peer_last_received: the highest sequence number the peer holds from us.
            now: current time.

        Raises:
            ProtocolError: the peer claims to hold messages we never sent, or less than it
                already acknowledged (it lost state it promised to keep).
        """
        if peer_last_received > self.released:
            raise ProtocolError(
                f"peer claims to have received message {peer_last_received} but only {self.released} were sent"
            )
        if peer_last_received < self.acked:
            raise ProtocolError(
                f"peer claims to have received up to {peer_last_received} but already acknowledged {self.acked}"
            )
        self._go(Transition.ATTACH)
        self._set_limits(params)
        # Messages still waiting in the inbox will be delivered on this connection's watch:
        # keep the delayed-ACK timer running for them, or their ACK would wait for traffic.
        self._conn = conn = _Conn(
            params.max_message_size + DATA_BODY_OVERHEAD, now, now + self.ack_delay if self.inbox else _INF
        )
        self.stats.attaches += 1
        # State our ACK first, then resend in order everything the peer does not hold.
        ack = self._ack_pos()
        conn.out += U64_FRAME.pack(9, _ACK, ack)
        self.ack_sent = ack
        self._ack_sent_bytes = self._delivered_bytes
        released = self.released
        conn.unframed = replay = [item for item in self.unacked if peer_last_received < item[0] <= released]
        wired = self._wired
        self.stats.resent += sum(seq <= wired for seq, _ in replay)
        if self.our_state is OurSide.CLOSE_SENT:
            self._queue_close(conn)

    def detach(self) -> None:
        """The connection is gone. Buffers of that connection are dropped; nothing else is."""
        if self._conn is None:
            return
        self._wired = self.released
        self._conn = None
        if self.state not in FINAL_STATES:
            self._go(Transition.DETACH)

    # -- sending -----------------------------------------------------------------------

    def window_open(self, size: int, count: int = 1) -> bool:
        """Whether ``count`` more messages, ``size`` bytes in all, fit in the window now.

        This is the one place the window rule is written. A message fits when nothing is in
        flight, or when it stays within ``max_inflight`` messages and
        ``max_inflight_bytes``: so a message larger than ``max_inflight_bytes`` still goes
        when nothing is in flight, and every message that fits ``max_message_size`` can be
        sent. A batch fits when its last message does, behind the others: the count and the
        bytes in flight only grow along the batch, so each earlier message fits too.
        """
        n = len(self.unacked) + count - 1
        return not n or (n < self._max_count and self.unacked_bytes + size <= self._max_bytes)

    def try_send(self, payload: bytes) -> int:
        """Accept one message if the window has room; return its sequence number, or 0.

        From the moment it is accepted the message is held until the peer acknowledges it,
        across any number of connections. A return of 0 changes nothing: wait for
        acknowledgements (the driver parks until ``acked`` moves) and try again.

        Raises:
            MessageTooLarge: ``payload`` exceeds ``max_message_size``.
            SessionClosed: this side no longer sends (:meth:`stop_sending`, :meth:`close`,
                the peer's CLOSE, or the session ended).
        """
        n = len(payload)
        if n > self._max_size:
            raise MessageTooLarge(n, self._max_size)
        if self.our_state is not _OPEN:
            raise SessionClosed(_CLOSED_MESSAGE)
        if not self.window_open(n):
            return 0
        seq = self.next_seq
        self.next_seq = seq + 1
        item = (seq, payload)
        self.unacked.append(item)
        self.unacked_bytes += n
        self.stats.sent += 1
        if self.durable:
            return seq  # goes on the wire once the store holds it (durable_done)
        self.released = seq
        conn = self._conn
        if conn is not None:
            conn.unframed.append(item)
        return seq

    def send_many(self, payloads: Sequence[bytes], start: int = 0) -> int:
        """Accept ``payloads[start:]`` in order while the window stays open.

        Like :meth:`try_send` for each message, with one DATA encoding pass for the batch;
        the caller checks the sizes first.

        Returns:
            The index after the last message accepted (``len(payloads)`` when all were).

        Raises:
            SessionClosed: this side no longer sends.
        """
        if self.our_state is not _OPEN:
            raise SessionClosed(_CLOSED_MESSAGE)
        rest = payloads[start:]
        total = sum(map(len, rest))
        count = len(rest)
        if count and not self.window_open(total, count):
            # The window fills within the batch: find how many fit, one message at a time.
            count = total = 0
            for payload in rest:
                if not self.window_open(total + len(payload), count + 1):
                    break
                total += len(payload)
                count += 1
            rest = rest[:count]
        if not count:
            return start
        first = self.next_seq
        batch = list(zip(range(first, first + count), rest, strict=True))
        self.unacked += batch
        self.unacked_bytes += total
        self.next_seq = first + count
        self.stats.sent += count
        if not self.durable:
            self.released = first + count - 1
            conn = self._conn
            if conn is not None:
                conn.unframed += batch
        return start + count

    def _frame_pending(self, conn: _Conn) -> None:
        """Encode ``conn.unframed`` as DATA frames, all carrying the ACK position now.

        The one DATA encoder (new messages, the replay on attach, the release of stored
        ones). A payload of ``LARGE_PAYLOAD`` bytes or more is not copied: it becomes an
        output buffer of its own, after the frames coalesced before it.
        """
        ack = self._ack_pos()
        items = conn.unframed
        conn.unframed = []
        self.ack_sent = ack
        self._ack_sent_bytes = self._delivered_bytes
        out = conn.out
        pack = DATA_HEADER.pack
        for seq, payload in items:
            n = len(payload)
            out += pack(n + DATA_BODY_OVERHEAD, _DATA, seq, ack)
            if n < LARGE_PAYLOAD:
                out += payload
            else:
                conn.chunks += (out, payload)
                conn.out = out = bytearray()

    def durable_done(self, released: int, delivered: int) -> None:
        """The store now holds messages up to ``released`` and the position ``delivered``.

        Those messages may go on the wire now, and the ACK may cover up to ``delivered``
        (:class:`~._cursor.StoreCursor` calls this; so may a driver that keeps its own
        bookkeeping).

        Args:
            released: the last sequence number the store holds.
            delivered: the delivery position the store holds.
        """
        if delivered > self.committed:
            self.committed = min(delivered, self.delivered)
        conn = self._conn
        if released > self.released:
            start = self.released
            self.released = min(released, self.next_seq - 1)
            if conn is not None and self.unacked:
                first = max(0, start + 1 - self.unacked[0][0])
                stop = self.released
                conn.unframed += itertools.takewhile(
                    lambda item: item[0] <= stop, itertools.islice(self.unacked, first, None)
                )
        # Messages waiting to be framed carry the ACK; else it goes on its own.
        if conn is not None and self.committed != self.ack_sent and not conn.unframed:
            self._queue_ack(conn)

    def data_to_send(self, now: float) -> bytes | bytearray:
        """Take the bytes to write, as one buffer (empty when there is nothing)."""
        buffers = self.buffers_to_send(now)
        if len(buffers) == 1:
            return buffers[0]
        return b"".join(buffers)

    def buffers_to_send(self, now: float) -> list[bytes | bytearray]:
        """Take the bytes to write as a list of buffers, to be written in order.

        For a scatter/gather write: large payloads are not copied. Empty when there is
        nothing (or no connection is attached).
        """
        conn = self._conn
        if conn is None:
            return []
        if conn.unframed:
            self._frame_pending(conn)
        buffers = conn.chunks
        out = conn.out
        if out:
            buffers.append(out)
            conn.out = bytearray()
        elif not buffers:
            return buffers
        conn.chunks = []
        conn.last_send = now
        conn.pong_queued = False
        return buffers

    def unsend(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        """Put back the unwritten part of :meth:`buffers_to_send`'s buffers.

        A partial write leaves them; they go out first, in front of anything queued since.
        Ignored when the connection they were meant for is gone.
        """
        conn = self._conn
        if conn is not None:
            conn.chunks[:0] = [bytes(b) if isinstance(b, memoryview) else b for b in buffers if len(b)]

    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would return bytes."""
        conn = self._conn
        return conn is not None and (bool(conn.out) or bool(conn.chunks) or bool(conn.unframed))

    def stop_sending(self) -> None:
        """This side begins closing: from now on no new message is accepted.

        :meth:`try_send` and :meth:`send_many` raise ``SessionClosed``; what was accepted
        before is still delivered (the driver drains it, then calls :meth:`close`).
        Idempotent.
        """
        self.our_state = next_our_side(self.our_state, SideEvent.STOP_SENDING)

    def close(self) -> None:
        """Send CLOSE: now if attached, else on the next attach (after the replay).

        Implies :meth:`stop_sending`. Idempotent.
        """
        if self.our_state is OurSide.CLOSE_SENT:
            return
        if self.finished:
            # Nothing left to tell the peer about; only stop sending.
            self.stop_sending()
            return
        self.our_state = next_our_side(self.our_state, SideEvent.SEND_CLOSE)
        self._go(Transition.SEND_CLOSE)
        conn = self._conn
        if conn is not None:
            self._queue_close(conn)
        # else: nobody to tell yet; the next attach sends CLOSE after the replay.

    def _queue_close(self, conn: _Conn) -> None:
        """Queue CLOSE behind every message accepted before it."""
        if conn.unframed:
            self._frame_pending(conn)
        conn.out += U64_FRAME.pack(9, _CLOSE, self._ack_pos())

    def protocol_error(self, message: str) -> None:
        """Queue an ERROR frame telling the peer why the connection is being closed."""
        conn = self._conn
        if conn is not None:
            conn.out += encode_error(ErrorCode.PROTOCOL, message)

    def finish(self, transition: Transition) -> None:
        """Move to a final state from outside (expiry, local close, failure)."""
        if self.state not in FINAL_STATES:
            self._go(transition)

    # -- receiving ---------------------------------------------------------------------

    def take_many(self, max_count: int) -> list[bytes]:
        """Hand up to ``max_count`` received messages to the application (as :meth:`take`)."""
        inbox = self.inbox
        if max_count >= len(inbox):
            batch = list(inbox)
            inbox.clear()
        else:
            popleft = inbox.popleft
            batch = [popleft() for _ in range(max_count)]
        n = sum(map(len, batch))
        self.inbox_bytes -= n
        self.delivered += len(batch)
        self._delivered_bytes += n
        self._ack_if_due()
        return batch

    def take(self) -> bytes:
        """Hand the next received message to the application (the caller checks ``inbox``)."""
        payload = self.inbox.popleft()
        n = len(payload)
        self.inbox_bytes -= n
        self.delivered += 1
        self._delivered_bytes += n
        self._ack_if_due()
        return payload

    def _ack_if_due(self) -> None:
        """The ACK-after-delivery rule: a standalone ACK once a quarter of the window (by
        count or bytes) was delivered since the last one; less waits for the delayed-ACK
        timer or rides on DATA. A durable session acknowledges in ``durable_done`` instead."""
        conn = self._conn
        if (
            conn is not None
            and not self.durable
            and (
                self.delivered - self.ack_sent >= self._ack_every
                or self._delivered_bytes - self._ack_sent_bytes >= self._ack_every_bytes
            )
        ):
            self._queue_ack(conn)

    def _queue_ack(self, conn: _Conn) -> None:
        ack = self._ack_pos()
        conn.out += U64_FRAME.pack(9, _ACK, ack)
        self.ack_sent = ack
        self._ack_sent_bytes = self._delivered_bytes

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Process bytes from the attached connection.

        Returns control events; received messages go to :attr:`inbox`, acknowledgements
        shrink :attr:`unacked`, and replies (PONG, CLOSE) are queued for sending.

        Raises:
            ProtocolError: malformed, oversized or impossible input. An ERROR frame for the
                peer is queued; the caller should flush it and close the connection.
        """
        conn = self._conn
        if conn is None:
            raise RuntimeError("receive_data() on a detached session")
        conn.last_recv = now
        events: list[Event] = []
        pos = 0
        if conn.need:
            # Complete the pending frame with just the bytes it lacks, then parse the rest
            # of this read in place.
            pos = self._complete_pending(conn, data, now, events)
            if pos < 0:
                return events
        end = len(data)
        pos = self._parse(conn, data, pos, now, events)
        if pos < end:
            # Keep the start of the next frame; a large one by reference, not copied.
            rest = data[pos:] if end - pos < LARGE_PAYLOAD else memoryview(data)[pos:]
            conn.parts = [rest]
            conn.have = have = end - pos
            conn.need = (HEADER.unpack_from(rest)[0] + 4) if have >= HEADER_SIZE else HEADER_SIZE
        return events

    def _complete_pending(self, conn: _Conn, data: bytes, now: float, events: list[Event]) -> int:
        """Add the bytes of ``data`` that the pending frame lacks; parse it once whole.

        Returns how many bytes of ``data`` were used, or -1 if all of it was and the frame is
        still incomplete. The pieces are joined once, when the frame is whole: a large
        message's payload is copied once from the reads that carried it.
        """
        parts = conn.parts
        used = 0
        size = len(data)
        while True:
            missing = conn.need - conn.have
            if size - used < missing:
                parts.append(data if not used else memoryview(data)[used:])
                conn.have += size - used
                return -1
            parts.append(data if not used and missing == size else memoryview(data)[used : used + missing])
            used += missing
            conn.have += missing
            if conn.need == HEADER_SIZE:
                # The header just completed: now the frame's own length is known (and checked
                # before a byte of its body is kept).
                head = b"".join(parts)
                parts[:] = [head]
                length = HEADER.unpack_from(head)[0]
                if length > conn.frame_limit or length == 0:
                    self._parse(conn, head, 0, now, events)  # raises the ProtocolError
                conn.need = 4 + length
                if conn.need > HEADER_SIZE:
                    continue
            break
        conn.parts = []
        first = parts[0]
        large = conn.need - DATA_HEADER_SIZE >= LARGE_PAYLOAD
        conn.have = conn.need = 0
        if large and len(first) >= DATA_HEADER_SIZE and first[4] == _DATA:
            parts[0] = first[DATA_HEADER_SIZE:]
            self._parse(conn, bytes(first[:DATA_HEADER_SIZE]), 0, now, events, b"".join(parts))
        else:
            self._parse(conn, b"".join(parts), 0, now, events)
        return used

    def _parse(  # noqa: C901, PLR0912, PLR0915, PLR0917
        self, conn: _Conn, view: bytes, pos: int, now: float, events: list[Event], body: bytes | None = None
    ) -> int:
        """Parse complete frames of ``view`` from ``pos``; return where the first incomplete one starts.

        With ``body``, ``view`` is one DATA frame's header and ``body`` its payload (a large
        message joined from several reads).
        """
        end = len(view) if body is None else len(view) + len(body)
        limit = conn.frame_limit
        inbox = self.inbox
        received = self.received
        try:
            while end - pos >= HEADER_SIZE:
                # One unpack for the whole DATA header (most frames are DATA); any other
                # frame, or the last few bytes, get the five-byte header only.
                if end - pos >= DATA_HEADER_SIZE:
                    length, ftype, seq, ack = DATA_HEADER.unpack_from(view, pos)
                else:
                    length, ftype = HEADER.unpack_from(view, pos)
                    seq = ack = 0
                if length > limit or length == 0:
                    check_length(length, limit)
                stop = pos + 4 + length
                if stop > end:
                    break
                if ftype == _DATA:
                    if length < DATA_BODY_OVERHEAD:
                        raise ProtocolError(f"DATA frame too short ({length} bytes)")
                    if seq <= conn.seq:
                        raise ProtocolError(f"sequence number went backwards ({seq} after {conn.seq})")
                    conn.seq = seq
                    if ack != self.acked:
                        self._on_ack(ack)
                    if seq == received + 1:
                        if self.their_state is not _THEIRS_OPEN:
                            raise ProtocolError("DATA after CLOSE")
                        inbox.append(view[pos + DATA_HEADER_SIZE : stop] if body is None else body)
                        received = seq
                        self.inbox_bytes += length - DATA_BODY_OVERHEAD
                        if len(inbox) > self._max_count or (self.inbox_bytes > self._max_bytes and len(inbox) > 1):
                            raise ProtocolError(
                                f"peer exceeded the window ({len(inbox)} messages, "
                                f"{self.inbox_bytes} bytes unacknowledged)"
                            )
                    elif seq <= received:
                        self.stats.duplicates_dropped += 1
                    else:
                        raise ProtocolError(f"sequence gap: got {seq}, expected {received + 1}")
                elif ftype == _ACK:
                    self._on_ack(self._u64(view, pos, length))
                elif ftype == _PING:
                    token = self._u64(view, pos, length)
                    # At most one PONG waits to be sent: a peer that floods PINGs while not
                    # reading cannot grow our output buffer.
                    if not conn.pong_queued:
                        conn.pong_queued = True
                        conn.out += U64_FRAME.pack(9, _PONG, token)
                elif ftype == _PONG:
                    if self._u64(view, pos, length) == conn.ping_token and conn.ping_sent_at:
                        self.stats.rtt = now - conn.ping_sent_at
                        conn.ping_sent_at = 0.0
                elif ftype == _CLOSE:
                    self._on_ack(self._u64(view, pos, length))
                    self._on_close(conn, events)
                elif ftype == _ERROR:
                    err = decode_error(view[pos + HEADER_SIZE : stop])
                    events.append(PeerError(err.code, err.message))
                else:
                    raise ProtocolError(f"unknown frame type {ftype}")
                pos = stop
        except ProtocolError as exc:
            self.protocol_error(str(exc))
            raise
        finally:
            if self.received != received:
                self.stats.arrived += received - self.received
                self.received = received
                if conn.ack_due == _INF:
                    conn.ack_due = now + self.ack_delay
        return pos

    def _u64(self, view: bytes | bytearray, pos: int, length: int) -> int:
        if length != 9:
            raise ProtocolError(f"control frame with body length {length - 1}, expected 8")
        value: int = U64.unpack_from(view, pos + HEADER_SIZE)[0]
        return value

    def _on_ack(self, ack: int) -> None:
        if ack == self.acked:
            return
        if ack < self.acked:
            raise ProtocolError(f"acknowledgement went backwards ({ack} after {self.acked})")
        if ack > self.released:
            raise ProtocolError(f"acknowledgement of message {ack}, which was never sent (last sent {self.released})")
        unacked = self.unacked
        freed = 0
        while unacked and unacked[0][0] <= ack:
            freed += len(unacked.popleft()[1])
        self.unacked_bytes -= freed
        stats = self.stats
        stats.acked += ack - self.acked
        stats.acked_bytes += freed
        self.acked = ack

    def _on_close(self, conn: _Conn, events: list[Event]) -> None:
        if self.their_state is not _THEIRS_OPEN:
            raise ProtocolError("CLOSE received twice")
        self.their_state = next_their_side(self.their_state, SideEvent.RECEIVE_CLOSE)
        self._go(Transition.RECEIVE_CLOSE)
        if self.our_state is not OurSide.CLOSE_SENT:
            # Answer with our own CLOSE (it may stop a drain of ours short: the peer
            # acknowledged in its CLOSE all it ever will).
            self.our_state = next_our_side(self.our_state, SideEvent.SEND_CLOSE)
            self._queue_close(conn)
        self._go(Transition.CLOSE_DONE)
        events.append(PeerClosed())

    # -- time --------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`handle_timer` must next be called (``inf`` when detached)."""
        conn = self._conn
        if conn is None:
            return _INF
        p = self._params
        return min(conn.last_send + p.heartbeat_interval, conn.last_recv + p.dead_after, conn.ack_due)

    def handle_timer(self, now: float) -> list[Event]:
        """Fire whatever is due at ``now``: dead-link detection, delayed ACK, heartbeat."""
        conn = self._conn
        if conn is None:
            return []
        p = self._params
        # Compare with the same sum next_deadline() returned: ``now - last_recv >= dead_after``
        # can be false at that very instant through float rounding, and the timer would spin.
        if now >= conn.last_recv + p.dead_after:
            return [LinkDead(now - conn.last_recv)]
        if now >= conn.ack_due:
            if self._ack_pos() != self.ack_sent:
                self._queue_ack(conn)
            # While the application holds undelivered messages, look again later: the
            # ACK must follow delivery, and delivery happens outside the core's view.
            conn.ack_due = now + self.ack_delay if self.inbox else _INF
        if now >= conn.last_send + p.heartbeat_interval:
            conn.ping_token += 1
            conn.ping_sent_at = now
            conn.out += U64_FRAME.pack(9, _PING, conn.ping_token)
            self.stats.pings_sent += 1
            # Counted as sent now even if the writer is stuck behind a full socket buffer,
            # so a dead link produces one PING per interval, not a busy loop.
            conn.last_send = now
        return []
