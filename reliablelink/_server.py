"""``reliablelink.serve``: accept connections, authenticate them, and run one handler per session."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import NoReturn, Unpack, final

import trio

from . import _stats
from ._carrier import Carrier, LinkState
from ._core import (
    ErrorCode,
    ResumeRequest,
    ServerHandshake,
    SessionCore,
    SessionState,
    Transition,
    new_session_id,
    new_token,
    resume_allowed,
    rotate_tokens,
)
from ._core._frames import encode_error
from ._core._handshake import HandshakeResult
from ._errors import AuthenticationError, ProtocolError, ReliableLinkError, SessionExpired, SessionMoved
from ._guard import AddressGuard
from ._link import Replaced
from ._logs import session_log
from ._options import ServeOptions, ServerOptions
from ._session import Session, load_session, new_session
from ._util import KeyLookup, check_handler, collapse_exception_groups, key_lookup
from .stores import SessionRecord, StoreError, StoreFenced
from .transports import StreamOptions, get_transport

__all__ = ["Server", "serve"]

log = logging.getLogger("reliablelink.server")

Handler = Callable[[Session], Awaitable[None]]
_HANDSHAKE_READ = 4096
_CLOSED_REMEMBERED = 10_000
_LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class _Held:
    """The server's record of one session it holds (attached or detached).

    Attributes:
        session: the application's view, given to the handler.
        carrier: what the server drives: attaching connections, ending the session.
        sid: the session id.
        token: the latest resume token issued.
        prev_token: the last token the client proved it had (the WELCOME carrying a new
            one may be lost with the connection, so both are accepted).
        supervised: the handler was started.
        peer: the address of the client's latest connection (for the log).
    """

    __slots__ = ("carrier", "peer", "prev_token", "session", "sid", "supervised", "token")

    def __init__(self, session: Session, carrier: Carrier, sid: bytes, token: bytes, prev_token: bytes = b"") -> None:
        self.session = session
        self.carrier = carrier
        self.sid = sid
        self.token = token
        self.prev_token = prev_token
        self.supervised = False
        self.peer = ""

    def log(self, level: int, event: str, *, exc_info: bool = False, **fields: object) -> None:
        """Log ``event`` about this session (its id, client id and latest peer, then ``fields``)."""
        _say(level, event, self.peer, self.sid.hex(), self.client_id, exc_info=exc_info, stacklevel=2, **fields)

    @property
    def client_id(self) -> str:
        return self.session.client_id

    @property
    def store_key(self) -> str:
        """The session's key in the store (the store is in use)."""
        assert self.carrier.durable is not None
        return self.carrier.durable.key

    @property
    def epoch(self) -> int:
        """The fencing epoch this process holds the session under (the store is in use)."""
        assert self.carrier.durable is not None
        return self.carrier.durable.epoch


class _Refused(Exception):
    """The handshake was refused; the ERROR frame for the client is queued.

    ``busy`` refusals (a cap was reached) are not held against the client's address.
    ``outcome`` is the handshake outcome counted (see ``_stats.HANDSHAKE_OUTCOMES``).
    """

    def __init__(self, message: str = "", *, busy: bool = False, outcome: str = "resume_refused") -> None:
        super().__init__(message)
        self.busy = busy
        self.outcome = outcome


@final
class Server:
    """A running server, as reported by ``nursery.start(serve, ...)``.

    Attributes:
        url: the bound URL, with the real port when port 0 was asked for.
    """

    def __init__(
        self, handler: Handler, keys: Callable[[str], bytes | None], opts: ServerOptions, nursery: trio.Nursery
    ) -> None:
        self.url = ""
        self._handler = handler
        self._keys = keys
        self._opts = opts
        self._nursery = nursery
        self._sessions: dict[bytes, _Held] = {}
        self._per_client: Counter[str] = Counter()
        self._guard = AddressGuard(opts.limits)
        self._closed: OrderedDict[bytes, None] = OrderedDict()
        self._store = opts.store
        # Loading, deciding and claiming a stored session happen under this lock, so two
        # connections resuming the same session cannot both load it.
        self._store_lock = trio.Lock()
        # A stored session's lease: renewed every third of it while this process holds the
        # session, so a crashed node's sessions expire at most this long after the crash.
        self._lease = opts.session_ttl * 4 / 3
        # Detached sessions and when each expires, in the order they were detached: with
        # one session_ttl for all, that is the order they expire in. One task watches them
        # all (a task per session would cost as much memory as the rest of an idle session).
        # (An OrderedDict: popping the front of a plain dict again and again is quadratic.)
        self._detached: OrderedDict[_Held, float] = OrderedDict()
        self._detached_lot = trio.lowlevel.ParkingLot()

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Live sessions (attached or detached), by session id."""
        return {h.session.session_id: h.session for h in self._sessions.values()}

    # -- connections -------------------------------------------------------------------

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        peer = _peer_address(stream)
        refused = self._guard.admit(peer, trio.current_time())
        if refused is not None:
            # Refused before a single byte is read or written: a flood costs an accept().
            _stats.SERVER.handshakes["refused_limits"] += 1
            _say(logging.INFO, "connection refused", peer, reason=refused)
            await trio.aclose_forcefully(stream)
            return
        try:
            try:
                with trio.fail_after(self._opts.handshake_timeout):
                    held, result, resume, rest = await self._handshake(stream, peer)
            except trio.TooSlowError:
                _stats.SERVER.handshakes["timeout"] += 1
                timeout = self._opts.handshake_timeout
                _say(logging.INFO, "handshake refused", peer, outcome="timeout", reason=f"none within {timeout} s")
                self._record_failure(peer)
                with trio.move_on_after(0.1), contextlib.suppress(*_LINK_ERRORS):
                    await stream.send_all(encode_error(ErrorCode.HANDSHAKE_TIMEOUT, "no handshake in time"))
                return
            except _Refused:
                return
            except _LINK_ERRORS as exc:
                # Including a failed TLS handshake, which runs on the stream's first use.
                _stats.SERVER.handshakes["disconnected"] += 1
                _say(logging.DEBUG, "connection lost during the handshake", peer, reason=repr(exc))
                return
            finally:
                self._guard.handshake_done()
            _stats.SERVER.handshakes["ok"] += 1
            held.peer = peer
            if result.resumed:
                _stats.SERVER.resumes += 1
                held.log(logging.INFO, "session resumed")
            else:
                held.log(logging.INFO, "session opened")
            reason = await held.carrier.run_link(stream, result.params, resume.last_received, rest)
            if held.carrier.ended:
                self._forget(held)
            elif reason is not None:
                # This connection's own peer: a resume from elsewhere may have replaced it.
                event = "link replaced" if isinstance(reason, Replaced) else "link lost"
                _say(logging.INFO, event, peer, held.sid.hex(), held.client_id, reason=str(reason))
        finally:
            self._guard.release(peer)
            await trio.aclose_forcefully(stream)

    async def _handshake(
        self, stream: trio.abc.Stream, peer: str
    ) -> tuple[_Held, HandshakeResult, ResumeRequest, bytes]:
        hs = ServerHandshake(self._opts.params)
        await stream.send_all(hs.data_to_send())
        known = False  # whether the client id is one we have a key for
        requested = ""  # the session id a resume asked for
        while True:
            data = await stream.receive_some(_HANDSHAKE_READ)
            if not data:
                raise trio.BrokenResourceError("client left during the handshake")
            try:
                step = hs.receive_data(bytes(data))
                if isinstance(step, str):
                    # An address with recent failures waits before each challenge, so
                    # guessing keys gets slower and slower, then stops (lockout).
                    delay = self._guard.delay(peer, trio.current_time())
                    if delay:
                        await trio.sleep(delay)
                    key = self._keys(step)
                    known = key is not None
                    hs.set_key(key)
                elif isinstance(step, ResumeRequest):
                    requested = step.session_id.hex()
                    if self._store is None:
                        held, result = self._decide(hs, step)
                    else:
                        async with self._store_lock:
                            held, result = await self._decide_stored(hs, step, peer)
                    await stream.send_all(hs.data_to_send())
                    return held, result, step, hs.take_rest()
            except (AuthenticationError, ProtocolError, _Refused) as exc:
                outcome = _outcome(exc, known)
                _stats.SERVER.handshakes[outcome] += 1
                # One line per refused client, with its address; never a key or a token.
                _say(logging.INFO, "handshake refused", peer, requested, hs.client_id, outcome=outcome, reason=str(exc))
                if not (isinstance(exc, _Refused) and exc.busy):
                    self._record_failure(peer, hs.client_id)
                with trio.move_on_after(1):
                    with contextlib.suppress(*_LINK_ERRORS):
                        await stream.send_all(hs.data_to_send())
                raise _Refused() from exc
            out = hs.data_to_send()
            if out:
                await stream.send_all(out)

    def _record_failure(self, peer: str, client_id: str = "") -> None:
        if self._guard.failure(peer, trio.current_time()):
            _stats.SERVER.lockouts += 1
            lockout = f"{self._guard.limits.lockout:.0f}s"
            _say(
                logging.WARNING,
                f"locking out {peer} after repeated failed handshakes",
                peer,
                "",
                client_id,
                lockout=lockout,
            )

    def _decide(self, hs: ServerHandshake, req: ResumeRequest) -> tuple[_Held, HandshakeResult]:
        """Create or resume the session the authenticated client asked for (no awaits here,
        so the session cannot change between the decision and the attach)."""
        ttl = self._opts.session_ttl
        if not req.session_id:
            opts = self._opts
            if self._per_client[hs.client_id] >= opts.max_sessions_per_client:
                hs.reject(
                    ErrorCode.SERVER_BUSY, f"too many sessions for this client (max {opts.max_sessions_per_client})"
                )
                raise _Refused("per-client session cap reached", busy=True, outcome="refused_limits")
            if len(self._sessions) >= opts.max_sessions:
                hs.reject(ErrorCode.SERVER_BUSY, "the server has too many sessions")
                raise _Refused("server session cap reached", busy=True, outcome="refused_limits")
            sid, token = new_session_id(), new_token()
            result = hs.accept(sid, token, 0, resumed=False, session_ttl=ttl)
            core = SessionCore(result.params, ack_delay=self._opts.ack_delay)
            session, carrier = new_session(
                core, session_id=sid, client_id=hs.client_id, close_timeout=self._opts.close_timeout
            )
            carrier.heard = trio.Event()
            if self._store is not None:
                carrier.use_store(self._store, sid.hex(), 1)
            held = _Held(session, carrier, sid, token)
            self._adopt(held)
            return held, result
        found = self._sessions.get(req.session_id)
        if found is None or found.carrier.ended:
            if req.session_id in self._closed:
                hs.reject(ErrorCode.SESSION_CLOSED, "this session was closed")
                raise _Refused("resume of a closed session")
            hs.reject(ErrorCode.SESSION_EXPIRED, "unknown or expired session")
            raise _Refused("resume of an unknown or expired session")
        held = found
        # Same answer for another client's session and for a wrong token.
        if not resume_allowed(
            owner=held.client_id,
            client_id=hs.client_id,
            presented=req.token,
            current=held.token,
            previous=held.prev_token,
        ):
            hs.reject(ErrorCode.AUTH_FAILED, "resume token rejected")
            raise _Refused("resume token rejected")
        held.token, held.prev_token = rotate_tokens(req.token, held.token, held.prev_token)
        # Stop using the old connection before stating what we hold, so nothing more
        # arrives on it between the WELCOME and the new attach.
        held.carrier.detach(Replaced("the session was resumed on a newer connection"))
        result = hs.accept(req.session_id, held.token, held.carrier.core.received, resumed=True, session_ttl=ttl)
        return held, result

    def _adopt(self, held: _Held) -> None:
        _stats.track(held.carrier, _stats.SERVER)
        self._sessions[held.sid] = held
        self._per_client[held.client_id] += 1
        # Expiry watches every session held, supervised or not (a stored session whose
        # claim failed is held without a handler until a resume succeeds or it expires).
        held.carrier.on_link_state = functools.partial(self._track_link, held)
        self._track_link(held, held.carrier.link_state)
        if held.carrier.durable is None:
            held.supervised = True
            self._nursery.start_soon(self._supervise, held)
        # else: the handler starts once the store has recorded the attachment (its writes
        # would be refused before that).

    async def _decide_stored(self, hs: ServerHandshake, req: ResumeRequest, peer: str) -> tuple[_Held, HandshakeResult]:
        """:meth:`_decide` for a server with a store: bring the session in from the store if
        this process does not hold its newest copy, decide, then record the attachment in the
        store (a new session, or a claim that fences off any other holder) before WELCOME."""
        store = self._store
        assert store is not None
        if req.session_id:
            await self._load_stored(hs.client_id, req, peer)
        held, result = self._decide(hs, req)
        expires_at = store.clock() + self._lease
        try:
            if not req.session_id:
                record = SessionRecord(held.store_key, held.sid, held.client_id, held.token)
                record.expires_at = expires_at
                await store.create(record)
                ok = True
            else:
                ok = await store.claim(held.store_key, held.epoch, held.token, held.prev_token, expires_at)
        except StoreError as exc:
            _say(logging.ERROR, "session store failed", peer, held.sid.hex(), hs.client_id, reason=str(exc))
            hs.data_to_send()  # the WELCOME must not go out
            hs.reject(ErrorCode.SERVER_BUSY, "session store unavailable")
            if not req.session_id:
                held.carrier.finish(exc)
                self._forget(held)
            raise _Refused("session store failed", busy=True, outcome="store_error") from exc
        if not ok:
            # Another node attached it since we loaded it: the client will retry.
            hs.data_to_send()
            hs.reject(ErrorCode.SERVER_BUSY, "the session is being resumed elsewhere; retry")
            held.carrier.finish(StoreFenced("the session was resumed on another server node"))
            self._forget(held)
            raise _Refused("lost the race to claim a stored session", busy=True, outcome="resume_conflict")
        if not held.supervised:
            held.supervised = True
            self._nursery.start_soon(self._supervise, held)
        return held, result

    async def _load_stored(self, client_id: str, req: ResumeRequest, peer: str) -> None:
        """Make sure the in-memory copy of ``req``'s session is the store's newest one."""
        store = self._store
        assert store is not None
        sid = req.session_id

        def store_failed(exc: StoreError) -> None:
            _say(logging.ERROR, "session store failed", peer, sid.hex(), client_id, reason=str(exc), stacklevel=2)

        try:
            record = await store.load(sid.hex())
        except StoreError as exc:
            store_failed(exc)
            return
        held = self._sessions.get(sid)
        if record is None:
            if held is not None and store.shared and not held.carrier.ended:
                # Ended or expired elsewhere while this node still had a copy.
                held.carrier.finish(SessionExpired("the session is no longer in the shared store"), Transition.EXPIRE)
            return
        if held is not None and not held.carrier.ended and held.epoch == record.epoch:
            return
        # Checked before anything is loaded, so a wrong token cannot make us start a handler.
        if not resume_allowed(
            owner=record.client_id,
            client_id=client_id,
            presented=req.token,
            current=record.token,
            previous=record.prev_token,
        ):
            return
        # Take it over: from now on the previous owner's writes are refused, so the record
        # holds everything it accepted.
        try:
            record = await store.take_over(record.key, record.epoch)
        except StoreError as exc:
            store_failed(exc)
            return
        if record is None:
            return  # another node took it just now; this attempt fails and the client retries
        held = self._sessions.get(sid)
        if held is not None:
            held.carrier.finish(StoreFenced("the session was resumed on another server node"))
            self._forget(held)
        core = SessionCore(self._opts.params, ack_delay=self._opts.ack_delay)
        session, carrier = load_session(record, core, self._opts.close_timeout)
        carrier.use_store(store, record.key, record.epoch)
        held = _Held(session, carrier, sid, record.token, record.prev_token)
        held.peer = peer
        self._adopt(held)
        _stats.SERVER.moves_in += 1
        held.log(logging.INFO, "session taken over", epoch=record.epoch)

    async def _renew_leases(self) -> None:
        """Keep stored sessions this process holds from expiring in the store."""
        store = self._store
        assert store is not None
        while True:
            leases = [(h.store_key, h.epoch) for h in self._sessions.values() if not h.carrier.ended]
            try:
                await store.renew(leases, store.clock() + self._lease)
            except StoreError as exc:
                log.error("could not renew session leases: %s", exc)
            await trio.sleep(self._opts.session_ttl / 3)

    # -- sessions ----------------------------------------------------------------------

    async def _supervise(self, held: _Held) -> None:
        """Run the handler once for the session, then close it (expiry: :meth:`_expire_detached`)."""
        session, carrier = held.session, held.carrier
        heard = carrier.heard
        if heard is not None:
            # A new session: run the handler once the client shows it holds the session
            # (its first bytes after the WELCOME). If the WELCOME was lost, the client starts
            # another session and this one expires unused, without the handler having
            # accepted messages that nobody would receive.
            await heard.wait()
        try:
            try:
                if not carrier.ended:
                    await self._handler(session)
            except ReliableLinkError as exc:
                held.log(logging.DEBUG, "handler ended", reason=repr(exc))
            except Exception:
                held.log(logging.ERROR, "handler raised", exc_info=True)
            await session.aclose()
        finally:
            # Shut down (serve() cancelled) with the session still open: it stays in the
            # store for a restart, so store how far the handler got, or what it had handled
            # would be delivered again.
            await carrier.save_abandoned()
        self._forget(held)

    def _track_link(self, held: _Held, state: LinkState) -> None:
        self._detached.pop(held, None)
        if state is LinkState.RECONNECTING and self._sessions.get(held.sid) is held:
            self._detached[held] = trio.current_time() + self._opts.session_ttl
            if len(self._detached) == 1:  # later entries never expire before the first
                self._detached_lot.unpark_all()

    async def _expire_detached(self) -> None:
        """End every session that stays detached for longer than ``session_ttl``."""
        ttl = self._opts.session_ttl
        detached = self._detached
        while True:
            if not detached:
                await self._detached_lot.park()
                continue
            held, due = next(iter(detached.items()))
            if trio.current_time() < due:
                with trio.move_on_at(due):
                    await self._detached_lot.park()
                continue
            detached.popitem(last=False)
            carrier = held.carrier
            if carrier.ended or carrier.link_state is not LinkState.RECONNECTING:
                continue
            held.log(logging.INFO, "session expired", detached_for=f"{ttl}s")
            carrier.finish(
                SessionExpired(f"the session was detached for longer than session_ttl ({ttl} s)"), Transition.EXPIRE
            )
            if not held.supervised:
                self._forget(held)  # no handler will: its claim in the store failed

    def _forget(self, held: _Held) -> None:
        self._detached.pop(held, None)
        carrier = held.carrier
        carrier.on_link_state = None
        if self._sessions.get(held.sid) is not held:
            return
        del self._sessions[held.sid]
        error = carrier.error
        if isinstance(error, SessionMoved):
            _stats.SERVER.moves_out += 1
        held.log(logging.INFO, "session ended", reason=_stats.end_reason(error) if error else "-", detail=str(error))
        if carrier.durable is not None:
            self._nursery.start_soon(carrier.forget_store)
        self._per_client[held.client_id] -= 1
        if self._per_client[held.client_id] <= 0:
            del self._per_client[held.client_id]
        if carrier.state is SessionState.CLOSED:
            # Remembered so that a late resume hears "closed", not "expired".
            self._closed[held.sid] = None
            while len(self._closed) > _CLOSED_REMEMBERED:
                self._closed.popitem(last=False)


def _say(
    level: int,
    event: str,
    peer: str,
    session: str = "",
    client: str = "",
    *,
    exc_info: bool = False,
    stacklevel: int = 1,
    **fields: object,
) -> None:
    """Log ``event`` about a connection or a session of this server (see ``_logs.session_log``)."""
    session_log(
        log,
        level,
        event,
        session=session,
        client=client,
        peer=peer,
        exc_info=exc_info,
        stacklevel=stacklevel + 1,
        **fields,
    )


def _outcome(exc: Exception, known: bool) -> str:
    """The handshake outcome counted for a refusal (``known``: the client id has a key)."""
    if isinstance(exc, _Refused):
        return exc.outcome
    if isinstance(exc, AuthenticationError):
        return "wrong_key" if known else "unknown_client"
    return "protocol_error"


def _peer_address(stream: trio.abc.Stream) -> str:
    """The client's address without the port (limits are per host), or a transport label."""
    inner: object = stream
    # Wrapping streams (TLS, WebSocket adapters) expose the one under them.
    for _ in range(4):
        sock = getattr(inner, "socket", None)
        if sock is not None:
            try:
                peer = sock.getpeername()
            except OSError:
                return "unknown"
            return str(peer[0]) if isinstance(peer, tuple) else "local"
        inner = getattr(inner, "transport_stream", None)
        if inner is None:
            break
    return type(stream).__name__


async def serve(
    handler: Handler,
    url: str,
    *,
    keys: Mapping[str, bytes | str] | KeyLookup | str | os.PathLike[str],
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
    **options: Unpack[ServeOptions],
) -> NoReturn:
    """Serve sessions on ``url`` until cancelled; call ``handler(session)`` once per session.

    Use it with ``nursery.start``: it reports a :class:`Server` whose ``url`` has the real
    port. ``handler`` runs once for each new session (not once per connection); when it
    returns, the session is closed (drained, then CLOSE). Exceptions from ``handler`` are
    logged and close that session; they never stop the server.

    Args:
        handler: ``async def handler(session)``.
        url: where to listen, for example ``tcp://0.0.0.0:7000`` (port 0 picks a free one).
        keys: ``{client_id: key}``, a callable ``client_id -> key | None``, or the path of
            a key file (see :func:`load_key_file`).
        task_status: from ``nursery.start``.
        **options: ``heartbeat_interval``, ``dead_after``, ``max_message_size``,
            ``max_inflight``, ``max_inflight_bytes`` (caps on what clients may propose),
            ``session_ttl`` (300 s: how long a detached session is kept),
            ``handshake_timeout`` (10 s), ``close_timeout`` (10 s), ``ack_delay`` (0.02 s),
            ``ssl_context``, ``max_sessions`` (100,000), ``max_sessions_per_client`` (64),
            and the per-address limits ``max_connections_per_address`` (64),
            ``max_pending_handshakes`` (1024), ``failures_before_delay`` (3),
            ``failure_delay`` (0.5 s per failure), ``failure_delay_max`` (5 s),
            ``failures_before_lockout`` (20) and ``lockout`` (60 s). ``store``: a
            :class:`~reliablelink.stores.SessionStore` (default: sessions live in this
            process only). With ``SQLiteStore`` sessions survive a restart of the server;
            with ``RedisStore`` several server processes share them and a client may resume
            on any of them. A session loaded from the store gets its handler started again
            (:attr:`Session.restored` is true). Typed as :class:`ServeOptions`, so type
            checkers and IDEs know the names and types.

    Raises:
        TypeError: ``handler`` is not an async function, ``keys`` is neither a mapping, a
            callable nor a path, or an option is unknown (all at once, before listening).
        ValueError: a bad URL or option value.
        OSError: cannot listen on ``url`` (the message names the address or path).
    """
    check_handler(handler)
    opts = ServerOptions.from_kwargs(options)
    transport, parts = get_transport(url)
    lookup = key_lookup(keys)
    stream_options = StreamOptions(
        opts.ssl_context, opts.params.dead_after, opts.params.max_message_size, opts.handshake_timeout
    )
    with collapse_exception_groups():
        async with trio.open_nursery() as nursery:
            server = Server(handler, lookup, opts, nursery)
            nursery.start_soon(server._expire_detached)
            if opts.store is not None:
                nursery.start_soon(server._renew_leases)
            server.url = await nursery.start(transport.serve, parts, server._handle_connection, stream_options)
            log.info("serving on %s", server.url)
            task_status.started(server)
            await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover
