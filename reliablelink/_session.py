"""The public :class:`Session`: the application's view of a session.

A session outlives its connections. What deals with them (the reader, writer and timer tasks
of each connection, the close handshake, the store) is the session's
:class:`~reliablelink._carrier.Carrier`, which the client and the server drive; the
:class:`Session` holds the same :class:`~reliablelink._core.SessionCore` and offers the
application ``send``/``receive`` and the rest of the public surface. It owns no task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

import trio

from ._carrier import Carrier, ClosedByPeer, ClosedLocally, LinkState
from ._core import SessionCore
from ._errors import MessageTooLarge, SessionClosed

if TYPE_CHECKING:
    from .stores import SessionRecord

__all__ = ["ClosedByPeer", "ClosedLocally", "LinkState", "Session", "SessionStats", "load_session", "new_session"]

# send()/receive() are cancellation points on every call, and schedule points whenever they
# wait and at least once every _YIELD_EVERY calls. A schedule point per call would cap a
# session near one message per pass of the scheduler (~85k/s); this keeps other tasks
# running while letting the writer batch many messages into one write.
_YIELD_EVERY = 64


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

    def __init__(self, carrier: Carrier, *, session_id: bytes, client_id: str, restored: bool = False) -> None:
        self._carrier = carrier
        # The same object as carrier.core, kept here too: send() and receive() use it on
        # every call.
        self._core = carrier.core
        self._session_id = session_id
        self.client_id = client_id
        """The authenticated client id."""
        self._restored = restored
        # Calls left before send()/receive() must yield to the scheduler; reset to
        # _YIELD_EVERY whenever they wait or yield. A send() that finds it full is the first
        # since then: likely a lone message (a reply), worth writing at once (see
        # Carrier.flush); a stream of messages goes to the writer, in batches.
        self._budget = _YIELD_EVERY

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
        return self._carrier.link_state

    @property
    def stats(self) -> SessionStats:
        """A snapshot of the session's counters (the same as :meth:`statistics`)."""
        return self.statistics()

    def statistics(self) -> SessionStats:
        """A snapshot of the session's counters (the name Trio's own objects use)."""
        c = self._core
        s = c.stats
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
            offline_seconds=self._carrier.offline_seconds(),
            link_state=self._carrier.link_state,
            rtt=s.rtt,
            pings_sent=s.pings_sent,
        )

    async def wait_link_change(self) -> LinkState:
        """Wait until :attr:`link_state` changes; return the new state.

        For showing "reconnecting…" in a user interface without handling errors. Once the
        session is ``CLOSED`` it returns ``CLOSED`` at once, every time: stop watching then.
        """
        carrier = self._carrier
        before = carrier.link_state
        if before is LinkState.CLOSED:
            await trio.lowlevel.checkpoint()
        else:
            await carrier.wait_link_change(before)
        return carrier.link_state

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one message. Returns once the session holds it; waits while the window is full.

        A message counts as *accepted* when ``send`` returns: from then on it is delivered
        exactly once unless the session expires or is closed. Use :meth:`drain` to wait
        until the peer has it.

        Checkpoints: a cancellation point on every call (cancelled, it accepts nothing); a
        schedule point whenever it waits, and otherwise once every 64 calls, so a loop of
        ``send()`` lets other tasks run without paying a task switch per message.

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
            self._carrier.raise_if_ended()  # the precise reason: closed here, by the peer, expired...
            raise
        budget = self._budget
        eager = budget == _YIELD_EVERY
        if not accepted:
            await self._send_when_open(payload)
            eager = True
        elif budget:
            self._budget = budget - 1
        else:
            self._budget = _YIELD_EVERY
            await trio.lowlevel.cancel_shielded_checkpoint()
        carrier = self._carrier
        if carrier.durable is not None:
            await carrier.persist()
        else:
            carrier.flush(eager)

    async def _send_when_open(self, payload: bytes) -> None:
        """The slow path of :meth:`send`: wait for the window, then hand over ``payload``."""
        while True:
            await self._carrier.wait_window(len(payload))
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
            if self._carrier.durable is not None:
                await self._carrier.persist()
            self._carrier.flush(eager=False)
            await self._carrier.wait_window(len(payloads[i]))
            waited = True
        if self._carrier.durable is not None:
            await self._carrier.persist()
        else:
            self._carrier.flush(eager=False)
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        if too_large is not None:
            raise too_large

    async def receive(self) -> bytes:
        """Return the next message: in order, exactly once. Waits until one arrives.

        Checkpoints as :meth:`send`: a cancellation point on every call, a schedule point
        whenever it waits and otherwise once every 64 calls.

        Raises:
            SessionClosed: the session was closed (by the peer or by this side) and every
                message that arrived before the close has been received.
            SessionExpired: the server forgot the session.
        """
        core = self._core
        if self._carrier.durable is not None:
            # Calling receive() again says the application is done with what it had, even
            # if this call is cancelled at once.
            self._carrier.mark_handled()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not core.inbox:
            await self._carrier.wait_inbox()
            self._budget = _YIELD_EVERY
        elif self._budget:
            self._budget -= 1
        else:
            self._budget = _YIELD_EVERY
            await trio.lowlevel.cancel_shielded_checkpoint()
        data = core.take()
        if core.has_data_to_send():
            # An ACK after this delivery: the sender may be waiting for it to open its window.
            self._carrier.flush(eager=True)
        return data

    async def receive_many(self, max_count: int = 1000) -> list[bytes]:
        """Return up to ``max_count`` messages that are ready now (at least one; waits for it).

        Raises:
            SessionClosed, SessionExpired: as :meth:`receive`.
        """
        if max_count < 1:
            raise ValueError(f"max_count must be at least 1, got {max_count}")
        core = self._core
        if self._carrier.durable is not None:
            self._carrier.mark_handled()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not core.inbox:
            await self._carrier.wait_inbox()
            self._budget = _YIELD_EVERY
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        batch = core.take_many(max_count)
        if core.has_data_to_send():
            self._carrier.flush(eager=True)
        return batch

    async def drain(self) -> None:
        """Wait until the peer has acknowledged every message sent so far.

        Raises:
            SessionClosed, SessionExpired: the session ended with messages unacknowledged.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        carrier = self._carrier
        if carrier.closing:
            carrier.raise_if_ended()  # ClosedLocally, even with nothing left to wait for
        await carrier.wait_acked()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def aclose(self) -> None:
        """Close the session: drain, send CLOSE, wait for the peer's CLOSE (all bounded by
        ``close_timeout``). Safe to call more than once and under cancellation: if
        cancelled, the session is closed at once without waiting.

        Raises nothing about the session's end: closing a session that already ended (or
        that the peer closed) just returns."""
        await self._carrier.close()


def new_session(
    core: SessionCore, *, session_id: bytes, client_id: str, close_timeout: float
) -> tuple[Session, Carrier]:
    """A new session over ``core``: the application's view and the carrier's."""
    carrier = Carrier(core, close_timeout=close_timeout)
    return Session(carrier, session_id=session_id, client_id=client_id), carrier


def load_session(record: SessionRecord, core: SessionCore, close_timeout: float) -> tuple[Session, Carrier]:
    """A session loaded from a store into ``core`` (still fresh); not yet using the store
    (see :meth:`Carrier.use_store`)."""
    core.restore(next_seq=record.next_seq, acked=record.acked, delivered=record.delivered, unacked=record.unacked)
    carrier = Carrier(core, close_timeout=close_timeout)
    return Session(carrier, session_id=record.session_id, client_id=record.client_id, restored=True), carrier


def _as_bytes(data: object) -> bytes:
    """``data`` as bytes, or a ``TypeError`` that says what a message must be."""
    if isinstance(data, str):
        raise TypeError("a message is bytes, not str: encode it first, for example text.encode()")
    try:
        return memoryview(data).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"a message is bytes, bytearray or memoryview, not {type(data).__name__}") from None
