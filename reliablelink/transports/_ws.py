"""``ws://host:port/path`` and ``wss://``: the session's byte stream in WebSocket binary messages.

For networks where only HTTP(S) passes, and for servers behind a reverse proxy that speaks
WebSocket. Needs the ``[ws]`` extra (``pip install 'reliablelink[ws]'``), which brings
wsproto; ``import reliablelink`` does not import this module until a ``ws://`` or
``wss://`` URL is used.

The WebSocket protocol is wsproto's, a sans-I/O implementation (bytes in, events out, like
the session core). The stream below drives it from its own ``send_all`` and
``receive_some``, so a connection needs no task of its own. trio-websocket's connections
do: a reader task in a nursery the caller passes in (``connect_websocket(nursery, ...)``),
which ``Transport.open_stream`` has no way to offer.

Message boundaries carry no meaning here: the session frames its own messages. The sender
cuts its bytes into binary messages of at most 64 KiB (a large ``send_all``, which the
session's writer makes when it batches many frames, becomes several WebSocket messages);
the receiver hands on message bytes as they arrive, without reassembling whole messages,
and refuses a message larger than ``max_message_size`` + 64 KiB (close code 1009). Any
receiver accepts what any sender sends, whatever ``max_message_size`` each was given.
permessage-deflate is never negotiated: wsproto's has no cap on the inflated size.
"""

from __future__ import annotations

import contextlib
import logging
import operator
from typing import NoReturn, final
from urllib.parse import SplitResult, urlsplit

import trio

from ._base import StreamHandler, StreamOptions
from ._tcp import open_listeners, tune_socket
from ._tls import host_port, peer_of, shown_host, tls_accept, tls_connect

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Event,
        Ping,
        RejectConnection,
        Request,
        TextMessage,
    )
    from wsproto.frame_protocol import CloseReason
    from wsproto.utilities import LocalProtocolError, RemoteProtocolError
except ImportError as exc:  # pragma: no cover - exercised by a test that hides wsproto
    raise ImportError(
        f"ws:// and wss:// URLs need reliablelink's WebSocket support: pip install 'reliablelink[ws]' ({exc})"
    ) from exc

__all__ = ["WebSocketTransport"]

log = logging.getLogger("reliablelink.transports")

# Every binary message sent is at most this long, and every receiver accepts this much more
# than its max_message_size, so each end accepts the other's messages whatever its options.
_CHUNK = 64 * 1024
_READ_SIZE = 64 * 1024


@final
class _WebSocketStream(trio.abc.Stream):
    """A byte stream carried in the binary messages of one WebSocket connection.

    ``send_all`` sends messages of at most 64 KiB; ``receive_some`` returns message bytes
    in order (keeping what does not fit in ``max_bytes`` for the next call) and ``b""``
    once the peer has closed the WebSocket. A peer that breaks the WebSocket protocol, sends
    text or an oversized message is told why with a close frame, and the stream raises
    :class:`trio.BrokenResourceError`.
    """

    def __init__(self, transport_stream: trio.abc.Stream, ws: WSConnection, max_message: int) -> None:
        self.transport_stream = transport_stream
        self._ws = ws
        self._max_message = max_message
        self._inbox = bytearray()
        self._message_size = 0
        self._upgrade: Event | None = None  # the peer's side of the HTTP upgrade, once received
        self._eof = False
        self._error: str | None = None
        self._closed = False
        self._send_lock = trio.StrictFIFOLock()
        self._deferred = b""
        self._sending = False
        self._receiving = False

    # -- opening -----------------------------------------------------------------------

    @classmethod
    async def connect(cls, stream: trio.abc.Stream, host: str, target: str, max_message: int) -> _WebSocketStream:
        """Send the upgrade request and wait for the server to accept it."""
        ws = WSConnection(ConnectionType.CLIENT)
        self = cls(stream, ws, max_message)
        # No extensions offered: permessage-deflate stays off.
        await stream.send_all(ws.send(Request(host=host, target=target, extensions=[])))
        answer = await self._wait_upgrade()
        if isinstance(answer, RejectConnection):
            raise ConnectionRefusedError(
                f"the server refused the WebSocket upgrade of {target!r} with HTTP {answer.status_code}"
            )
        return self

    @classmethod
    async def accept(cls, stream: trio.abc.Stream, path: str, max_message: int, peer: str) -> _WebSocketStream | None:
        """Answer one upgrade request: 101 for ``path``, 404 for another path, 400 for a bad
        request. ``None`` unless accepted (the caller closes ``stream``)."""
        self = cls(stream, WSConnection(ConnectionType.SERVER), max_message)
        try:
            request = await self._wait_upgrade()
        except trio.BrokenResourceError as exc:
            # A bad request is worth a line for the operator; a client (or a health check)
            # that connects and leaves is not.
            level = logging.INFO if isinstance(exc.__cause__, RemoteProtocolError) else logging.DEBUG
            log.log(level, "refused WebSocket connection from %s: %s", peer, exc)
            return None
        assert isinstance(request, Request)
        target = urlsplit(request.target).path
        if target != path:
            # The path only: a query string may carry a client's credentials.
            log.info("refused WebSocket connection from %s: path %r is not %r (HTTP 404)", peer, target, path)
            with contextlib.suppress(trio.BrokenResourceError):
                await self._send_control(RejectConnection(status_code=404))
            return None
        # Whatever extensions the client offers, none is accepted: permessage-deflate stays off.
        await stream.send_all(self._ws.send(AcceptConnection(extensions=[])))
        return self

    async def _wait_upgrade(self) -> Event:
        while self._upgrade is None:
            await self._receive_more()
        return self._upgrade

    # -- trio.abc.Stream ---------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as binary messages of at most 64 KiB each."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            view = memoryview(data)
            if not view:
                await trio.lowlevel.checkpoint()
                return
            async with self._send_lock:
                for start in range(0, len(view), _CHUNK):
                    if self._ws.state is not ConnectionState.OPEN:
                        raise trio.BrokenResourceError(self._error or "the WebSocket is closing")
                    message = BytesMessage(data=bytes(view[start : start + _CHUNK]))
                    await self.transport_stream.send_all(self._ws.send(message))
                    while self._deferred:
                        control, self._deferred = self._deferred, b""
                        await self.transport_stream.send_all(control)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the underlying stream can take more bytes."""
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next bytes of the peer's messages (at most ``max_bytes``); ``b""`` once the
        peer has closed the WebSocket."""
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            if self._inbox:
                await trio.lowlevel.checkpoint()
            while not self._inbox:
                if self._error is not None:
                    raise trio.BrokenResourceError(self._error)
                if self._eof:
                    await trio.lowlevel.checkpoint()
                    return b""
                await self._receive_more()
            size = len(self._inbox) if max_bytes is None else max_bytes
            chunk = bytes(self._inbox[:size])
            del self._inbox[:size]
            return chunk
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        """Send a close frame if the WebSocket is open and nothing is being sent (none when
        cancelled, as under :func:`trio.aclose_forcefully`), then close the connection."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        try:
            if self._ws.state is ConnectionState.OPEN and not self._send_lock.locked():
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._send_control(CloseConnection(code=CloseReason.NORMAL_CLOSURE))
        finally:
            await self.transport_stream.aclose()

    # -- receiving ---------------------------------------------------------------------

    async def _receive_more(self) -> None:
        """Read once from the network and act on what wsproto makes of it."""
        data = await self.transport_stream.receive_some(_READ_SIZE)
        if not data:
            if self._ws.state is ConnectionState.CONNECTING:
                raise trio.BrokenResourceError("the peer closed the connection during the WebSocket upgrade")
            raise trio.BrokenResourceError("the peer closed the connection without a WebSocket close")
        try:
            self._ws.receive_data(data if type(data) is bytes else bytes(data))
        except RemoteProtocolError as exc:
            # Only the HTTP upgrade raises here (later errors come as CloseConnection events).
            if not self._ws.client and exc.event_hint is not None:
                with contextlib.suppress(trio.BrokenResourceError, LocalProtocolError):
                    await self._send_control(exc.event_hint)
            raise trio.BrokenResourceError(f"bad WebSocket upgrade: {exc}") from exc
        for event in self._ws.events():
            await self._on_event(event)

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, BytesMessage):
            self._message_size += len(event.data)
            if self._message_size > self._max_message:
                await self._fail(CloseReason.MESSAGE_TOO_BIG, f"a WebSocket message over {self._max_message} bytes")
            self._inbox += event.data
            if event.message_finished:
                self._message_size = 0
        elif isinstance(event, Ping):
            # A pong that cannot be sent is no reason to lose bytes already received: a
            # broken connection shows on the next read.
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send_control(event.response())
        elif isinstance(event, CloseConnection):
            if self._ws.state is ConnectionState.OPEN:
                # wsproto reports frames it cannot parse as the close frame it wants sent.
                await self._fail(event.code, event.reason or "malformed WebSocket frame")
            if self._ws.state is ConnectionState.REMOTE_CLOSING:
                # The peer may have closed the connection right after its close frame.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self._send_control(event.response())
            self._eof = True
        elif isinstance(event, TextMessage):
            await self._fail(CloseReason.UNSUPPORTED_DATA, "a text message (only binary messages carry the session)")
        elif isinstance(event, Request | AcceptConnection | RejectConnection):
            self._upgrade = event
        # Pongs need nothing (no pings are sent); RejectData follows a RejectConnection, which
        # already ended the upgrade.

    async def _fail(self, code: int, reason: str) -> NoReturn:
        """Tell the peer why with a close frame, then fail the stream."""
        self._error = f"WebSocket closed with code {code}: {reason}"
        if self._ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._send_control(CloseConnection(code=code, reason=reason))
        raise trio.BrokenResourceError(self._error)

    async def _send_control(self, event: Event) -> None:
        data = self._ws.send(event)
        if self._send_lock.locked():
            # The writer is in send_all; it sends this right after its current message, so
            # the reader never waits behind a large send (and two peers that both stopped
            # reading cannot deadlock on pongs). One slot is enough: a pong may answer only
            # the latest ping (RFC 6455, 5.5.3), and nothing follows a close frame.
            self._deferred = data
            return
        async with self._send_lock:
            await self.transport_stream.send_all(data)


def _host_header(host: str, port: int, secure: bool) -> str:
    if port == (443 if secure else 80):
        return shown_host(host)
    return f"{shown_host(host)}:{port}"


@final
class WebSocketTransport:
    """The ``ws://`` (``secure=False``) and ``wss://`` (``secure=True``) transports.

    The URL's path is the WebSocket endpoint on both sides: the client asks for it, and the
    server answers 404 to any other path. For ``wss://``, ``StreamOptions.ssl_context`` is
    used as for ``tls://``: optional on the client (default: the system's trusted CAs,
    hostname checked), required on the server.

    Args:
        secure: ``True`` for WebSocket over TLS (``wss://``).
    """

    def __init__(self, *, secure: bool) -> None:
        self.secure = secure
        self.scheme = "wss" if secure else "ws"

    def _host_port(self, url: SplitResult) -> tuple[str, int]:
        return host_port(url, default_port=443 if self.secure else 80)

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """Connect (with TLS for ``wss://``) and upgrade to a WebSocket.

        Raises:
            ConnectionRefusedError: the server answered the upgrade with an HTTP error
                (404: no WebSocket endpoint at this path).
            ssl.SSLCertVerificationError: for ``wss://``, the server's certificate is not
                trusted or does not name the URL's host.
            OSError: the connection failed.
        """
        host, port = self._host_port(url)
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        tcp = await trio.open_tcp_stream(host, port)
        try:
            tune_socket(tcp.socket, options.dead_after)
            stream: trio.abc.Stream = tcp
            if self.secure:
                # https_compatible: HTTPS servers and proxies often close without close_notify.
                stream = await tls_connect(tcp, options.ssl_context, host, https_compatible=True)
            return await _WebSocketStream.connect(
                stream, _host_header(host, port, self.secure), target, _max_message(options)
            )
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on every address of the host; report ``ws://host:port/path`` with the real port.

        Raises:
            ValueError: ``wss://`` without ``ssl_context``, or a bad URL.
        """
        host, port = self._host_port(url)
        path = url.path or "/"
        context = options.ssl_context if self.secure else None
        if self.secure and context is None:
            raise ValueError(
                "serving wss:// needs ssl_context: pass serve(..., ssl_context=ctx) with a context that "
                "holds the server's certificate, e.g. ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); "
                "ctx.load_cert_chain('cert.pem', 'key.pem')"
            )
        max_message = _max_message(options)
        listeners = await open_listeners(host, port)

        async def upgrade(tcp: trio.SocketStream) -> None:
            peer = peer_of(tcp)
            ws: _WebSocketStream | None = None
            try:
                tune_socket(tcp.socket, options.dead_after)
                with trio.move_on_after(options.handshake_timeout) as scope:
                    stream: trio.abc.Stream | None = tcp
                    if context is not None:
                        stream = await tls_accept(tcp, context, https_compatible=True)
                    if stream is not None:
                        ws = await _WebSocketStream.accept(stream, path, max_message, peer)
                if scope.cancelled_caught:
                    log.info(
                        "refused WebSocket connection from %s: no upgrade within %.1f s",
                        peer,
                        options.handshake_timeout,
                    )
            except (OSError, trio.BrokenResourceError) as exc:
                log.debug("WebSocket connection from %s failed during the upgrade: %r", peer, exc)
                ws = None
            except BaseException:  # cancelled: the server is stopping
                await trio.aclose_forcefully(tcp)
                raise
            if ws is None:
                await trio.aclose_forcefully(tcp)
                return
            await handler(ws)

        bound_port = listeners[0].socket.getsockname()[1]
        task_status.started(f"{self.scheme}://{shown_host(host)}:{bound_port}{path}")
        await trio.serve_listeners(upgrade, listeners)


def _max_message(options: StreamOptions) -> int:
    # Room above the session's own limit for its framing; see the module docstring.
    return options.max_message_size + _CHUNK
