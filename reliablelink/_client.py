"""``reliablelink.connect``: open a session and keep it alive across connections."""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Unpack
from urllib.parse import SplitResult

import trio

from . import _stats
from ._carrier import Carrier
from ._core import ClientHandshake, HandshakeResult, ResumeRequest, SessionCore
from ._errors import (
    AuthenticationError,
    ConnectionFailed,
    ProtocolError,
    ReliableLinkError,
    SessionClosed,
    SessionExpired,
)
from ._logs import session_log
from ._options import ClientOptions, ConnectOptions
from ._session import Session, load_session, new_session
from ._util import collapse_exception_groups, key_bytes
from .stores import SessionRecord, StoreFenced
from .transports import StreamOptions, get_transport

__all__ = ["connect"]

log = logging.getLogger("reliablelink.client")

_HANDSHAKE_READ = 4096
# Errors after which the same attempt will never succeed: stop instead of retrying.
_FATAL = (AuthenticationError, SessionExpired, SessionClosed)
_TRANSIENT = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, ProtocolError)


@asynccontextmanager
async def connect(
    url: str, *, client_id: str, key: bytes | str, **options: Unpack[ConnectOptions]
) -> AsyncIterator[Session]:
    """Open a session to the server at ``url`` and keep it alive until the block ends.

    The session reconnects by itself (exponential backoff with full jitter) and resumes
    where it left off; ``send`` and ``receive`` wait while it does. Leaving the block
    closes the session: it drains what was sent (bounded by ``close_timeout``), tells the
    server, and ends the background tasks.

    Args:
        url: where the server listens, for example ``tcp://host:7000``.
        client_id: this client's id, as the server's ``keys`` knows it.
        key: this client's secret as bytes. A ``str`` is taken as UTF-8 text, not decoded:
            for a hex or base64 key as printed by ``reliablelink keygen``, pass
            ``reliablelink.parse_key(text)``.
        **options: ``heartbeat_interval`` (3 s), ``dead_after`` (3 intervals),
            ``max_message_size`` (1 MiB), ``max_inflight`` (4096 messages),
            ``max_inflight_bytes`` (8 MiB), ``reconnect_backoff`` (a :class:`Backoff` or an
            ``(initial, maximum)`` tuple; default 0.1 s to 5 s), ``connect_timeout`` (10 s:
            the first connection must succeed within it, and each later attempt is bounded
            by it), ``close_timeout`` (10 s), ``ack_delay`` (0.02 s: longest wait before a
            standalone ACK), ``ssl_context``, ``store`` (a
            :class:`~reliablelink.stores.SessionStore`, for example
            ``SQLiteStore("agent.db")``: the session is kept there, so a process killed and
            started again with the same store, url and client id resumes it, and every
            message ``send()`` had accepted is delivered exactly once). Typed as
            :class:`ConnectOptions`, so type checkers and IDEs know the names and types.

    Yields:
        The :class:`Session`.

    Raises:
        AuthenticationError: wrong key or unknown client id (raised at once, never retried).
        SessionExpired: a session loaded from ``store`` could not be resumed (the server
            forgot it); the stored copy is dropped, so the next ``connect`` starts afresh.
        ConnectionFailed: no connection could be made within ``connect_timeout``.
        TypeError: an unknown option.
        ValueError: a bad URL or option value.
    """
    opts = ClientOptions.from_kwargs(options)
    transport, parts = get_transport(url)
    client = _Client(transport, parts, client_id, key_bytes(key), opts)
    # Validates client_id/key before any I/O.
    ClientHandshake(client_id, client.key, opts.params)
    with collapse_exception_groups():
        async with trio.open_nursery() as nursery:
            session: Session = await nursery.start(client.run)
            try:
                yield session
            finally:
                await session.aclose()
                assert client.carrier is not None
                await client.carrier.forget_store()
                nursery.cancel_scope.cancel()
                error = client.carrier.error
                client.log(
                    logging.INFO, "session ended", reason=_stats.end_reason(error) if error else "-", detail=error
                )


class _Client:
    def __init__(self, transport: Any, url: Any, client_id: str, key: bytes, opts: ClientOptions) -> None:
        self.transport = transport
        self.url = url
        self.client_id = client_id
        self.key = key
        self.opts = opts
        self.stream_options = StreamOptions(
            opts.ssl_context, opts.params.dead_after, opts.params.max_message_size, opts.connect_timeout
        )
        self.peer = _peer_of(url)
        self.rng = random.Random(opts.reconnect_backoff.seed)
        self.last_error: BaseException | None = None
        # The session, once there is one: the application's view, the carrier this client
        # drives, its id, and the resume token to present on the next connection.
        self.session: Session | None = None
        self.carrier: Carrier | None = None
        self.session_id = b""
        self.token = b""

    @property
    def store_key(self) -> str:
        return f"{self.client_id}@{self.url.geturl()}"

    def _hold(self, session: Session, carrier: Carrier, session_id: bytes, token: bytes) -> None:
        self.session, self.carrier, self.session_id, self.token = session, carrier, session_id, token
        _stats.track(carrier, _stats.CLIENT)

    def log(self, level: int, event: str, *, exc_info: bool = False, **fields: object) -> None:
        """Log ``event`` with the session id (once there is one), client id and server address."""
        sid = self.session_id.hex()
        session_log(
            log,
            level,
            event,
            session=sid,
            client=self.client_id,
            peer=self.peer,
            exc_info=exc_info,
            stacklevel=2,
            **fields,
        )

    async def _restore(self) -> None:
        """Take the session kept in the store by an earlier run, if any."""
        store = self.opts.store
        if store is None:
            return
        record = await store.load(self.store_key)
        if record is None:
            return
        # Fence off any other process still running with this session (a stale copy of this
        # program): from now on its writes are refused.
        taken = await store.take_over(record.key, record.epoch)
        if taken is None:
            raise StoreFenced(f"another process took over the stored session {record.session_id.hex()} just now")
        core = SessionCore(self.opts.params, ack_delay=self.opts.ack_delay)
        session, carrier = load_session(taken, core, self.opts.close_timeout)
        carrier.use_store(store, taken.key, taken.epoch)
        self._hold(session, carrier, taken.session_id, taken.token)
        self.log(logging.INFO, "session restored", unacknowledged=len(record.unacked))

    async def run(self, task_status: trio.TaskStatus[Session] = trio.TASK_STATUS_IGNORED) -> None:
        opts = self.opts
        await self._restore()
        started = False
        give_up_at = trio.current_time() + opts.connect_timeout
        attempt = 0
        attempts = _stats.CLIENT.connect_attempts
        lost_at: float | None = None
        while True:
            try:
                stream, result, rest = await self._attempt(None if started else give_up_at)
            except ssl.SSLCertVerificationError as exc:
                attempts["failed"] += 1
                # Retrying cannot fix a certificate on the first connection: say so at once. Later
                # (a captive portal, a certificate being rotated) it may clear up: keep trying.
                if not started:
                    raise ConnectionFailed(f"could not connect to {self.url.geturl()}: {exc}") from exc
                self.log(logging.WARNING, "certificate rejected; reconnecting", reason=exc)
                await self._back_off(exc, attempt, None)
                attempt += 1
                continue
            except _FATAL as exc:
                attempts["auth_failed" if isinstance(exc, AuthenticationError) else "session_gone"] += 1
                if self.carrier is None:
                    raise
                await self._cannot_resume(exc, started)
                return
            except _TRANSIENT as exc:
                attempts["failed"] += 1
                await self._back_off(exc, attempt, None if started else give_up_at)
                attempt += 1
                continue
            attempts["ok"] += 1
            session, carrier = await self._attached(result, stream)
            if not started:
                started = True
                task_status.started(session)
            began = trio.current_time()
            self._log_attached(result.resumed, lost_at, began)
            reason = await carrier.run_link(stream, result.params, result.peer_last_received, rest)
            if carrier.ended:
                await carrier.forget_store()
                return
            lost_at = trio.current_time()
            self.log(logging.INFO, "link lost", reason=reason)
            # A link that stayed up a while resets the backoff. One that died at once (a
            # server or middlebox that accepts and then drops us) backs off like a failed
            # attempt: reconnecting at once would be a tight loop.
            if trio.current_time() - began >= result.params.heartbeat_interval:
                attempt = 0
            else:
                await trio.sleep(opts.reconnect_backoff.delay(attempt, self.rng))
                attempt += 1

    def _log_attached(self, resumed: bool, lost_at: float | None, now: float) -> None:
        if lost_at is None:
            self.log(logging.INFO, "session resumed" if resumed else "session opened")
        else:
            self.log(logging.INFO, "session resumed", offline=f"{now - lost_at:.3f}s")

    async def _cannot_resume(self, exc: ReliableLinkError, started: bool) -> None:
        """The server refused to resume the session for good: end it (and its stored copy)."""
        session, carrier = self.session, self.carrier
        assert session is not None and carrier is not None
        lost = len(carrier.core.unacked)
        carrier.finish(exc)
        await carrier.forget_store()
        if not started:
            # A session loaded from the store: connect() reports the loss itself.
            raise type(exc)(
                f"the stored session {session.session_id} cannot be resumed ({lost} messages accepted "
                f"by send() were never acknowledged and are lost): {exc}"
            ) from exc
        self.log(logging.WARNING, "session cannot resume", reason=exc)

    async def _attached(self, result: HandshakeResult, stream: trio.abc.Stream) -> tuple[Session, Carrier]:
        """Record a successful handshake: a new session, or the resume token rotated."""
        try:
            await self._record_attach(result)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        assert self.session is not None and self.carrier is not None
        return self.session, self.carrier

    async def _record_attach(self, result: HandshakeResult) -> None:
        store = self.opts.store
        carrier = self.carrier
        if carrier is None:
            core = SessionCore(result.params, ack_delay=self.opts.ack_delay)
            session, carrier = new_session(
                core, session_id=result.session_id, client_id=self.client_id, close_timeout=self.opts.close_timeout
            )
            self._hold(session, carrier, result.session_id, result.token)
            if store is not None:
                await store.create(SessionRecord(self.store_key, result.session_id, self.client_id, result.token))
                carrier.use_store(store, self.store_key, 1)
            return
        self.token = result.token
        if store is not None:
            # If this write is lost with the process, the server still accepts the token we
            # presented (it keeps the last one the client proved it holds).
            await carrier.persist(token=result.token)

    async def _back_off(self, exc: BaseException, attempt: int, give_up_at: float | None) -> None:
        """Wait before the next attempt; raise ConnectionFailed if the first connection is overdue."""
        # The attempt cut short by the overall deadline says less than the one before it.
        if self.last_error is None or not isinstance(exc, trio.TooSlowError):
            self.last_error = exc
        now = trio.current_time()
        delay = self.opts.reconnect_backoff.delay(attempt, self.rng)
        if give_up_at is not None:
            if now >= give_up_at:
                where, timeout = self.url.geturl(), self.opts.connect_timeout
                raise ConnectionFailed(
                    f"could not connect to {where} within {timeout} s: {self.last_error!r}"
                ) from self.last_error
            delay = min(delay, give_up_at - now)
        self.log(
            logging.DEBUG, "connection attempt failed", attempt=attempt + 1, reason=repr(exc), retry_in=f"{delay:.3f}s"
        )
        await trio.sleep(delay)

    async def _attempt(self, give_up_at: float | None) -> tuple[trio.abc.Stream, HandshakeResult, bytes]:
        deadline = trio.current_time() + self.opts.connect_timeout
        if give_up_at is not None:
            deadline = min(deadline, give_up_at)
        with trio.fail_at(deadline):
            stream = await self.transport.open_stream(self.url, self.stream_options)
            try:
                resume = None
                if self.carrier is not None:
                    resume = ResumeRequest(self.session_id, self.token, self.carrier.core.received)
                hs = ClientHandshake(self.client_id, self.key, self.opts.params, resume)
                await stream.send_all(hs.data_to_send())
                while True:
                    data = await stream.receive_some(_HANDSHAKE_READ)
                    if not data:
                        raise trio.BrokenResourceError("the server closed the connection during the handshake")
                    result = hs.receive_data(data)
                    out = hs.data_to_send()
                    if out:
                        await stream.send_all(out)
                    if result is not None:
                        return stream, result, hs.take_rest()
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise


def _peer_of(url: SplitResult) -> str:
    """The server's address for the log: host and port (never credentials or a query), or
    the path of a Unix socket."""
    return url.netloc.rpartition("@")[2] or url.path
