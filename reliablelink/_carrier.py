"""The :class:`Carrier`: the part of a session that deals with its connections.

A session outlives its connections. The application sees it as a
:class:`~reliablelink.Session`; the client's reconnect loop and the server's connection
handler see it as a :class:`Carrier`, and talk to it only through the carrier's public
methods (``run_link``, ``finish``, ``persist``, ...). Both views share one
:class:`~reliablelink._core.SessionCore`.

Each attached connection runs three tasks in a nursery owned by whoever attached it
(:meth:`Carrier.run_link`): a reader that feeds what it reads to the core (many frames per
read), the writer that puts on the wire whatever the core queued (many frames per write),
and a timer for heartbeats, delayed ACKs, dead-link detection and batched store commits. The
carrier itself owns no task.

Bytes go in and out of a connection only through :mod:`reliablelink._link`.
:meth:`Carrier.flush` is the one decision between writing from the calling task now and
waking the writer, and ``_link``'s module docstring gives the safety argument.

"Closed" has one source of truth per question: :attr:`Carrier.error` says whether (and why)
the session ended, :attr:`Carrier.closing` whether this side began closing it, and the
core's per-direction states (``our_state``/``their_state``) what the close handshake has
done.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from . import _stats
from ._core import LinkDead, LinkParams, PeerClosed, PeerError, SessionCore, SessionState, Transition
from ._core._frames import ErrorCode, encode_error
from ._durable import Durability
from ._errors import ProtocolError, ReliableLinkError, SessionClosed, SessionMoved
from ._link import LINK_ERRORS, Link, LinkLost, Replaced, open_link
from .stores._base import StoreError, StoreFenced

if TYPE_CHECKING:
    from .stores import SessionStore

__all__ = ["Carrier", "ClosedByPeer", "ClosedLocally", "LinkState"]


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


class Carrier:
    """Carries one session over one connection at a time (see the module docstring).

    Args:
        core: the session's sans-I/O state.
        close_timeout: how long :meth:`close` may drain and wait for the peer's CLOSE.

    Attributes:
        core: the session's sans-I/O state.
        link: the connection carrying the session now, if any.
        error: how the session ended (``None`` while it is open).
        closing: this side began closing the session (``aclose()``).
        link_state: connected, reconnecting or closed.
        durable: where the session is stored, if it is (see :meth:`use_store`).
        on_link_state: called on every link state change (the server's expiry bookkeeping).
        heard: a new server session's "the client holds it" event, set once the client's
            first bytes after the WELCOME arrive or the session ends. The server starts the
            handler then, so that a session whose WELCOME was lost never accepts messages
            from the application that no client will resume.
        counters: the operational counters of this session's role (client or server side;
            see :mod:`reliablelink._stats`), set when the client or server tracks it.
    """

    def __init__(self, core: SessionCore, *, close_timeout: float) -> None:
        self.core = core
        self.close_timeout = close_timeout
        self.link: Link | None = None
        self.error: ReliableLinkError | None = None
        self.closing = False
        self.link_state = LinkState.RECONNECTING
        self.durable: Durability | None = None
        self.on_link_state: Callable[[LinkState], None] | None = None
        self.heard: trio.Event | None = None
        self.counters = _stats.UNTRACKED
        self._offline_since: float | None = None
        self._offline_total = 0.0
        self._recv_lot = trio.lowlevel.ParkingLot()
        self._send_lot = trio.lowlevel.ParkingLot()
        self._state_lot = trio.lowlevel.ParkingLot()

    def use_store(self, store: SessionStore, key: str, epoch: int) -> None:
        """Keep the session in ``store`` from now on, under ``key`` and fencing ``epoch``."""
        self.durable = Durability(store, key, epoch, self.core)

    @property
    def ended(self) -> bool:
        """Whether the session has ended (closed, expired, moved or failed)."""
        return self.error is not None

    @property
    def state(self) -> SessionState:
        """The core's session state."""
        return self.core.state

    def offline_seconds(self) -> float:
        """Total time spent without a connection after the first one."""
        offline = self._offline_total
        if self._offline_since is not None:
            offline += trio.current_time() - self._offline_since
        return offline

    # -- the one write decision --------------------------------------------------------

    def flush(self, eager: bool) -> None:
        """Put what the core queued on the wire: from this task at once if ``eager`` and the
        link can write without waiting, else by waking the writer, which batches.

        The one decision between writing now and letting the writer batch. Nothing happens
        while the writer is busy (it takes everything queued before it parks again) or
        while detached (the next attach sends it). ``eager`` is for lone messages (a
        reply, a control frame), for which waking the writer costs more than the write; a
        stream of messages goes through the writer. Why a write from this task is safe:
        see :mod:`reliablelink._link`.
        """
        link = self.link
        if link is None or not link.writer_idle:
            return
        if eager and link.writes_directly:
            core = self.core
            rest = link.try_write(core.buffers_to_send(trio.current_time()))
            if not rest:
                return
            core.unsend(rest)
        link.wake_writer()

    # -- waiting (for the public Session) ----------------------------------------------

    def raise_if_ended(self) -> None:
        """Raise why the session can no longer send, if it cannot."""
        if self.closing:
            if self.error is not None:
                raise ClosedLocally("this side closed the session")
            raise ClosedLocally("this side closed the session (aclose); no more messages can be sent")
        if self.error is not None:
            raise _fresh(self.error)
        if self.core.peer_closed:
            raise ClosedByPeer("the peer closed the session")

    async def wait_window(self, size: int) -> None:
        """Wait until a message of ``size`` bytes fits in the window."""
        core = self.core
        while True:
            self.raise_if_ended()
            if core.window_open(size):
                return
            await self._send_lot.park()

    async def wait_acked(self) -> None:
        """Wait until the peer acknowledged every message sent so far."""
        core = self.core
        while core.unacked:
            self.raise_if_ended()
            await self._send_lot.park()

    async def wait_inbox(self) -> None:
        """Wait until a message is ready for ``receive()``; raise if none ever will be."""
        core = self.core
        while not core.inbox:
            if self.closing and self.error is not None:
                raise ClosedLocally("this side closed the session")
            if self.error is not None:
                raise _fresh(self.error)
            if core.peer_closed:
                raise ClosedByPeer("the peer closed the session")
            link = self.link
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

    async def wait_link_change(self, before: LinkState) -> None:
        """Wait until :attr:`link_state` is no longer ``before`` (at once if it is not)."""
        while self.link_state is before:
            await self._state_lot.park()

    def _wake_all(self) -> None:
        self._recv_lot.unpark_all()
        self._send_lot.unpark_all()
        self._state_lot.unpark_all()

    def _set_link_state(self, state: LinkState) -> None:
        if state is self.link_state:
            return
        now = trio.current_time()
        if state is LinkState.CONNECTED and self._offline_since is not None:
            self._offline_total += now - self._offline_since
            self.counters.reconnect_seconds.observe(now - self._offline_since)
            self._offline_since = None
        elif state is LinkState.RECONNECTING and self.core.stats.attaches > 0:
            self._offline_since = now
        elif state is LinkState.CLOSED and self._offline_since is not None:
            self._offline_total += now - self._offline_since
            self._offline_since = None
        self.link_state = state
        self._state_lot.unpark_all()
        if self.on_link_state is not None:
            self.on_link_state(state)

    def _peer_heard(self) -> None:
        """The peer's first bytes arrived (or the session ended): let the handler start."""
        assert self.heard is not None
        self.heard.set()
        self.heard = None

    # -- ending and closing ------------------------------------------------------------

    def finish(self, error: ReliableLinkError, transition: Transition = Transition.FAIL) -> None:
        """End the session for good: every waiter raises ``error`` (a copy of it).

        A clean close leaves the connection to the writer, which ends it once the last
        frames (our CLOSE or CLOSE reply) are flushed; anything else drops it at once.
        Idempotent: the first reason stays.
        """
        if self.error is not None:
            return
        self.error = error
        if self.heard is not None:
            self._peer_heard()
        self.core.finish(transition)
        if transition is Transition.CLOSE_DONE:
            self.flush(eager=False)
        else:
            self.detach(LinkLost(f"session ended: {error}"))
        self._set_link_state(LinkState.CLOSED)
        self.counters.session_ended(error, self._offline_total)
        self._wake_all()

    def detach(self, reason: BaseException) -> None:
        """Stop using the current connection at once (its tasks wind down on their own)."""
        link = self.link
        if link is None:
            return
        link.fail(reason)
        self.link = None
        self.core.detach()
        if self.error is None:
            self._set_link_state(LinkState.RECONNECTING)
        self._wake_all()

    async def close(self) -> None:
        """Close the session: drain, send CLOSE, wait for the peer's CLOSE (all bounded by
        ``close_timeout``). Idempotent; if cancelled, the session is closed at once."""
        if self.closing or self.error is not None:
            self.closing = True
            await trio.lowlevel.checkpoint()
            return
        self.closing = True
        core = self.core
        core.stop_sending()
        try:
            with trio.move_on_after(self.close_timeout):
                if self.durable is not None:
                    # The application is done with everything it received.
                    self.durable.cursor.handle_all()
                    with contextlib.suppress(ReliableLinkError):
                        await self.persist()
                while core.unacked and self.error is None and not core.peer_closed:
                    await self._send_lot.park()
                core.close()
                self.flush(eager=False)
                while not core.finished and self.error is None:
                    await self._send_lot.park()
        finally:
            self.finish(ClosedLocally("the session was closed by this side"), Transition.CLOSE_DONE)

    # -- the store ---------------------------------------------------------------------

    def mark_handled(self) -> None:
        """``receive()`` was called again: what it returned before is handled; store that
        soon (batched like a delayed ACK), and acknowledge it once stored."""
        assert self.durable is not None
        due = self.durable.cursor.mark_handled(trio.current_time())
        link = self.link
        if due is not None and link is not None:
            link.wake_timer_by(due)

    async def persist(self, token: bytes | None = None) -> None:
        """Write to the store what it lacks; then let those messages go on the wire and
        acknowledge what is stored as delivered.

        Shielded from cancellation: a message is either accepted (stored) or not, never
        half-way. Raises the session's error if the store refused or failed (the session
        ends: :class:`StoreFenced` when another attachment owns it, :class:`StoreError`).
        """
        durable = self.durable
        if durable is None:
            return
        pending = None
        try:
            pending = await durable.write(token)
        except StoreError as exc:  # StoreFenced included
            self.finish(exc)
        if self.error is not None:
            raise _fresh(self.error)
        if pending is not None:
            durable.cursor.committed(pending)
            self.flush(eager=False)

    async def save_abandoned(self) -> None:
        """Store everything the store lacks (the delivery position above all) of a session
        left open at shutdown, so that a restart resumes exactly where it stopped. Shielded;
        a store failure is not raised here (the session is being abandoned anyway)."""
        if self.durable is None or self.error is not None:
            return
        with trio.CancelScope(shield=True), contextlib.suppress(ReliableLinkError):
            await self.persist()

    def _keep_stored(self) -> bool:
        """Whether the stored copy must outlive this process's copy: another attachment owns
        it, or it was only abandoned here (cancelled or timed-out close, shutdown) and may be
        resumed by a restart."""
        error = self.error
        if error is None or isinstance(error, StoreFenced):
            return True
        return type(error) in (SessionClosed, ClosedLocally) and not self.core.peer_closed

    async def forget_store(self) -> None:
        """Drop the stored copy of a session that ended for good (idempotent)."""
        if self.durable is not None and not self._keep_stored():
            await self.durable.delete()

    # -- carrying the session over one connection --------------------------------------

    async def run_link(
        self, stream: trio.abc.Stream, params: LinkParams, peer_last_received: int, rest: bytes
    ) -> BaseException | None:
        """Attach ``stream`` and carry the session over it until it fails.

        Args:
            stream: the connection, handshake done.
            params: the link parameters the handshake agreed.
            peer_last_received: the last message the peer holds (it resends from there).
            rest: bytes that arrived after the handshake, to be fed first.

        Never raises for a connection problem (the caller reconnects or waits); a problem
        that ends the session is recorded with :meth:`finish`.

        Returns:
            Why the connection ended (for the log), or ``None`` if it was not attached.
        """
        if self.error is not None:
            await trio.aclose_forcefully(stream)
            return None
        self.detach(Replaced("replaced by a newer connection"))
        core = self.core
        try:
            core.attach(params, peer_last_received, trio.current_time())
        except ProtocolError as exc:
            # The peer lost messages it had promised to hold: continuing would lose or
            # repeat messages, so the session ends here with the reason.
            self.finish(exc)
            await trio.aclose_forcefully(stream)
            return None
        link = open_link(stream)
        self.link = link
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
            if self.link is link:
                if isinstance(link.reason, ProtocolError):
                    # The core queued an ERROR frame saying why the peer broke the protocol.
                    last_words = core.data_to_send(trio.current_time())
                self.detach(link.reason or LinkLost("connection ended"))
            elif isinstance(link.reason, Replaced):
                last_words = encode_error(ErrorCode.SESSION_REPLACED, str(link.reason))
            link.done.set()
            with trio.CancelScope(shield=True):
                if last_words:
                    with trio.move_on_after(1):
                        with contextlib.suppress(*LINK_ERRORS):
                            await link.write([last_words])
                await trio.aclose_forcefully(stream)
        return link.reason

    def _feed(self, link: Link, data: bytes) -> None:
        if self.link is not link:
            # Detached (replaced, or the session ended) while this read was returning.
            return
        if self.heard is not None:
            self._peer_heard()
        core = self.core
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
            self.flush(eager=True)
        # Received bytes move deadlines later (dead-link check; the heartbeat, after a PONG
        # was sent) as well as earlier (an ACK became due): an idle server's timer would
        # otherwise wake once per heartbeat for nothing.
        link.rearm_timer(self._timer_deadline())
        for event in events:
            if isinstance(event, PeerClosed):
                # Receivers finish the inbox, then see the close; senders and drain see it
                # at once. The writer flushes our CLOSE reply, then ends the connection.
                self.finish(ClosedByPeer("the peer closed the session"), Transition.CLOSE_DONE)
            elif isinstance(event, PeerError):
                self._on_peer_error(link, event)

    def _on_peer_error(self, link: Link, event: PeerError) -> None:
        if event.code == ErrorCode.SESSION_REPLACED:
            self.finish(SessionMoved(f"the session was attached from another connection: {event.message}"))
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
        core = self.core
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

    def _timer_deadline(self) -> float:
        """When the timer task must next run: the core's next deadline or a store commit."""
        deadline = self.core.next_deadline()
        if self.durable is not None:
            return min(deadline, self.durable.cursor.commit_at)
        return deadline

    async def _timer(self, link: Link) -> None:
        core = self.core
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
            if self.durable is not None and now >= self.durable.cursor.commit_at:
                try:
                    await self.persist()
                except ReliableLinkError:
                    return
            for event in core.handle_timer(now):
                if isinstance(event, LinkDead):
                    link.fail(LinkLost(f"nothing received for {event.silence:.1f} s: link is dead"))
                    return
            if core.has_data_to_send():
                self.flush(eager=True)


def _fresh(error: ReliableLinkError) -> ReliableLinkError:
    """A new exception like ``error``, so each waiter raises its own object with its own traceback."""
    try:
        copy = type(error)(*error.args)
    except TypeError:
        return error
    copy.__cause__ = error.__cause__
    return copy
