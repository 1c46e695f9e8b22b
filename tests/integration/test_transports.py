"""The same session tests over every transport (tcp, tls, ws, wss, unix), then each
transport's own checks: certificates, WebSocket upgrades and limits, socket files.

Connections are cut from the server side, the same way for every transport: the test
registers a wrapper transport (under a scheme of its own) that serves through the real one
and wraps each accepted stream in a :class:`FaultyStream` the test can kill (an RST where
TCP is underneath) or blackhole (bytes vanish both ways, nobody is told).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
import trio
import trio.testing

import reliablelink
from reliablelink import LinkState
from reliablelink.testing import Ledger, number_of, numbered
from reliablelink.transports import StreamHandler, StreamOptions, Transport, get_transport, register_transport
from tests.helpers import FAST, KEY, KEYS, SERVER_FAST, echo, legitimate_exchange, recording_echo, start_server
from tests.security.raw import ERROR_BYTE, read_until_closed

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Ping,
        Pong,
        Request,
        TextMessage,
    )
    from wsproto.extensions import PerMessageDeflate

    from reliablelink.transports._ws import _WebSocketStream
except ImportError:  # without the [ws] extra the WebSocket tests skip
    pass

SCHEMES = ["tcp", "tls", "ws", "wss", "unix"]
NEEDS_WS = "ws:// and wss:// need the [ws] extra: pip install 'reliablelink[ws]'"
NEEDS_TRUSTME = "TLS tests need trustme: pip install trustme"


# -- certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class TLSMaterial:
    """Contexts made from throwaway CAs (trustme)."""

    server: ssl.SSLContext  # a certificate for 127.0.0.1 and localhost
    client: ssl.SSLContext  # trusts the CA that issued it
    other_ca_client: ssl.SSLContext  # trusts an unrelated CA only
    other_host_server: ssl.SSLContext  # same CA, but the certificate names example.org only


@pytest.fixture(scope="session")
def tls() -> TLSMaterial:
    trustme = pytest.importorskip("trustme", reason=NEEDS_TRUSTME)
    ca, other_ca = trustme.CA(), trustme.CA()

    def server_context(*names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        return context

    def client_context(authority: Any) -> ssl.SSLContext:
        context = ssl.create_default_context()
        authority.configure_trust(context)
        return context

    return TLSMaterial(
        server=server_context("127.0.0.1", "localhost"),
        client=client_context(ca),
        other_ca_client=client_context(other_ca),
        other_host_server=server_context("example.org"),
    )


# -- one transport, ready to serve -------------------------------------------------------


@dataclass
class Setup:
    """How to serve and reach a server over one transport."""

    scheme: str
    listen: str
    server_options: dict[str, Any] = field(default_factory=dict)
    client_options: dict[str, Any] = field(default_factory=dict)

    def stream_options(self) -> StreamOptions:
        """What ``connect`` would pass to the transport."""
        return StreamOptions(ssl_context=self.client_options.get("ssl_context"))


def make_setup(scheme: str, request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    if scheme in ("ws", "wss"):
        pytest.importorskip("wsproto", reason=NEEDS_WS)
    if scheme == "unix" and not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix domain sockets on this platform")
    listen = {
        "tcp": "tcp://127.0.0.1:0",
        "tls": "tls://127.0.0.1:0",
        "ws": "ws://127.0.0.1:0/rl",
        "wss": "wss://127.0.0.1:0/rl",
        "unix": f"unix://{tmp_path}/s",
    }[scheme]
    setup = Setup(scheme, listen)
    if scheme in ("tls", "wss"):
        material: TLSMaterial = request.getfixturevalue("tls")
        setup.server_options["ssl_context"] = material.server
        setup.client_options["ssl_context"] = material.client
    return setup


@pytest.fixture(params=SCHEMES)
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return make_setup(request.param, request, tmp_path)


@pytest.fixture(params=["tls", "wss"])
def tls_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return make_setup(request.param, request, tmp_path)


@pytest.fixture(params=["tls", "ws", "wss"])
def layered_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    """The transports with a protocol (TLS, HTTP) between TCP and the session."""
    return make_setup(request.param, request, tmp_path)


@pytest.fixture
def needs_ws() -> None:
    # In a fixture, not in the (async) test, so that the skip keeps its reason.
    pytest.importorskip("wsproto", reason=NEEDS_WS)


# -- cutting connections from the server side --------------------------------------------


def _tcp_socket(stream: object) -> socket.socket | None:
    """The TCP socket under ``stream`` and its wrappers (TLS, WebSocket), if any."""
    for _ in range(4):
        sock = getattr(stream, "socket", None)
        if sock is not None:
            return sock if sock.family in (socket.AF_INET, socket.AF_INET6) else None
        stream = getattr(stream, "transport_stream", None)
    return None


class FaultyStream(trio.abc.Stream):
    """A server-side stream that the test can kill or blackhole."""

    def __init__(self, inner: trio.abc.Stream, owner: FaultyTransport) -> None:
        self.transport_stream = inner
        self.blackholed = False
        self._owner = owner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.blackholed:
            await trio.lowlevel.checkpoint()
            return
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while True:
            if self.blackholed:
                await trio.sleep_forever()
            data = await self.transport_stream.receive_some(max_bytes)
            if not self.blackholed:
                return data

    async def aclose(self) -> None:
        self._owner.live.discard(self)
        if self.blackholed:
            # A pulled cable: the server's close never reaches the client, which must find
            # out from the silence. The connection is closed when the test ends.
            self._owner.pulled.append(self.transport_stream)
            await trio.lowlevel.checkpoint()
            return
        await self.transport_stream.aclose()

    async def kill(self) -> None:
        """Reset the connection: with SO_LINGER 0 the close sends RST (TCP); both ends see it."""
        sock = _tcp_socket(self.transport_stream)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._owner.live.discard(self)
        await trio.aclose_forcefully(self.transport_stream)


class FaultyTransport:
    """Serves through the real transport of ``scheme``, wrapping every accepted stream."""

    _names = itertools.count(1)

    def __init__(self, scheme: str) -> None:
        self.inner: Transport = get_transport(f"{scheme}://x")[0]
        self.live: set[FaultyStream] = set()
        self.pulled: list[trio.abc.Stream] = []
        self.accepted = 0
        self.changed = trio.lowlevel.ParkingLot()
        self.scheme = f"faulty{next(self._names)}"
        register_transport(self.scheme, self)

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        return await self.inner.open_stream(url, options)

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async def wrapped(stream: trio.abc.Stream) -> None:
            faulty = FaultyStream(stream, self)
            self.live.add(faulty)
            self.accepted += 1
            self.changed.unpark_all()
            await handler(faulty)

        # The inner transport reports its own URL (tls://..., ws://...): clients use it directly.
        await self.inner.serve(url, wrapped, options, task_status=task_status)

    async def kill_all(self) -> int:
        streams = list(self.live)
        for stream in streams:
            await stream.kill()
        return len(streams)

    def blackhole_all(self) -> int:
        for stream in self.live:
            stream.blackholed = True
        return len(self.live)


@asynccontextmanager
async def serving(
    setup: Setup, handler: Callable[[reliablelink.Session], Awaitable[None]], **options: Any
) -> AsyncIterator[tuple[reliablelink.Server, FaultyTransport]]:
    """Run ``serve`` over ``setup``'s transport, through a :class:`FaultyTransport`."""
    faulty = FaultyTransport(setup.scheme)
    url = setup.listen.replace(f"{setup.scheme}://", f"{faulty.scheme}://", 1)
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                server = await start_server(nursery, handler, url, **setup.server_options, **options)
                yield server, faulty
                nursery.cancel_scope.cancel()
    finally:
        for stream in faulty.pulled:
            await trio.aclose_forcefully(stream)


async def exchange(setup: Setup, url: str, count: int = 50) -> None:
    """A legitimate client exchanges ``count`` messages with an echo server, exactly."""
    await legitimate_exchange(url, count, **setup.client_options)


async def serve_fails(url: str, **options: Any) -> None:
    """Call ``serve``, which is expected to raise before it serves."""
    with trio.fail_after(10):
        await reliablelink.serve(echo, url, keys=KEYS, **options)


# -- the matrix: every transport, the same session behaviour ------------------------------


async def test_serve_reports_its_real_url(setup: Setup) -> None:
    async with serving(setup, echo) as (server, _):
        assert server.url.startswith(f"{setup.scheme}://"), server.url
        if setup.scheme == "unix":
            assert server.url == setup.listen
        else:
            assert urlsplit(server.url).port != 0, f"the real port, not 0: {server.url}"
        if setup.scheme in ("ws", "wss"):
            assert urlsplit(server.url).path == "/rl", "the path is part of the URL"
        await exchange(setup, server.url, count=5)


async def test_echo_survives_killed_connections_with_an_exact_ledger(setup: Setup) -> None:
    total, kills_wanted = 3000, 5
    # A small window keeps traffic flowing in steps rather than one burst, so kills land
    # while messages are in flight both ways.
    step = total // (2 * kills_wanted)
    up, down = Ledger(), Ledger()
    kills = 0
    async with (
        serving(setup, recording_echo(up), **SERVER_FAST) as (server, faulty),
        reliablelink.connect(
            server.url, client_id="agent-1", key=KEY, max_inflight=128, **setup.client_options, **FAST
        ) as session,
    ):

        async def push() -> None:
            for i in range(total):
                # Now and then a message over 64 KiB, so WebSocket sends are split.
                size = 100_000 if i % 400 == 7 else 8 + (i * 37) % 1500
                await session.send(numbered(i, size))
                up.on_send(i)
                down.on_send(i)  # the echo is expected back

        async def pull() -> None:
            while down.received < total:
                down.on_receive(number_of(await session.receive()))
                faulty.changed.unpark_all()

        async def chaos() -> None:
            nonlocal kills
            seen = 0
            while kills < kills_wanted:
                # Kill only after progress on a connection accepted since the last kill,
                # so every kill cuts a live link carrying traffic.
                target = down.received + step
                while down.received < target or faulty.accepted == seen or not faulty.live:
                    await faulty.changed.park()
                seen = faulty.accepted
                kills += await faulty.kill_all()

        async with trio.open_nursery() as inner:
            inner.start_soon(chaos)
            async with trio.open_nursery() as traffic:
                traffic.start_soon(push)
                traffic.start_soon(pull)
            inner.cancel_scope.cancel()
        await session.drain()
        reconnects, resent = session.stats.reconnects, session.stats.resent
    assert kills >= kills_wanted, f"{setup.scheme}: only {kills} kills"
    assert reconnects >= kills_wanted, f"{setup.scheme}: every kill forced a reconnect ({reconnects})"
    assert resent > 0, f"{setup.scheme}: kills landed with messages in flight"
    assert up.result().exact, up.result().line(f"{setup.scheme} client -> server")
    assert down.result().exact, down.result().line(f"{setup.scheme} server -> client")


async def test_batches_larger_than_max_message_size_pass(setup: Setup) -> None:
    """The session's writer puts many messages in one send_all: more bytes than
    max_message_size, which a message-based transport must still carry."""
    limit, count = 100_000, 40
    async with (
        serving(setup, echo, max_message_size=limit) as (server, _),
        reliablelink.connect(
            server.url, client_id="agent-1", key=KEY, max_message_size=limit, **setup.client_options
        ) as session,
    ):
        await session.send_many(numbered(i, 90_000) for i in range(count))
        got = [number_of(await session.receive()) for _ in range(count)]
    assert got == list(range(count))


async def test_blackholed_connection_is_detected_by_heartbeats_and_replaced(setup: Setup) -> None:
    async with (
        serving(setup, echo, **SERVER_FAST) as (server, faulty),
        reliablelink.connect(server.url, client_id="agent-1", key=KEY, **setup.client_options, **FAST) as session,
    ):
        await session.send(b"before")
        assert await session.receive() == b"before"
        assert faulty.blackhole_all() == 1
        pulled_at = trio.current_time()
        assert await session.wait_link_change() is LinkState.RECONNECTING
        detected = trio.current_time() - pulled_at
        # Nothing tells the client (no FIN, no RST): only its heartbeat rule can, after
        # dead_after (0.6 s) of silence; the last byte arrived just before the blackhole.
        assert 0.3 <= detected <= 5, f"dead link declared after {detected:.2f} s (dead_after 0.6)"
        await session.send(b"during")
        assert await session.receive() == b"during", "delivered over the new connection"
        assert session.stats.reconnects >= 1


async def test_close_from_either_end(setup: Setup) -> None:
    got: list[int] = []
    client_closed = trio.Event()

    async def handler(session: reliablelink.Session) -> None:
        async for data in session:
            if data == b"close, please":
                await session.send(b"bye")
                return  # the server closes the session
            got.append(number_of(data))
        client_closed.set()

    async with serving(setup, handler) as (server, _):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **setup.client_options) as session:
            for i in range(100):
                await session.send(numbered(i))
        await client_closed.wait()  # leaving the block drained and closed the session
        assert got == list(range(100))

        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **setup.client_options) as session:
            await session.send(b"close, please")
            assert [data async for data in session] == [b"bye"], "async for ends when the server closes"
            with pytest.raises(reliablelink.SessionClosed):
                await session.receive()


async def test_garbage_ends_that_connection_and_the_server_keeps_serving(setup: Setup) -> None:
    async with serving(setup, echo) as (server, _):
        transport, parts = get_transport(server.url)
        # Through the transport (TLS and WebSocket done right), bytes that are not the protocol.
        stream = await transport.open_stream(parts, setup.stream_options())
        try:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await read_until_closed(stream)
        finally:
            await trio.aclose_forcefully(stream)
        assert ERROR_BYTE in answer, "the server says why before closing"
        await exchange(setup, server.url)


# -- below the session: bytes that are not TLS, not HTTP, not WebSocket --------------------


@pytest.mark.parametrize(
    "garbage",
    # Complete at once: an incomplete HTTP request would just wait for the handshake timeout.
    [b"\x00\xff" * 300, b"GET /rl HTTP/1.1\r\nHost: x\r\n\r\n"],
    ids=["binary", "http"],
)
async def test_raw_garbage_is_refused_below_the_session(layered_setup: Setup, garbage: bytes) -> None:
    setup, scheme = layered_setup, layered_setup.scheme
    async with serving(setup, echo) as (server, faulty):
        parts = urlsplit(server.url)
        assert parts.hostname is not None and parts.port is not None
        raw = await trio.open_tcp_stream(parts.hostname, parts.port)
        try:
            await raw.send_all(garbage)
            answer = await read_until_closed(raw)
        finally:
            await raw.aclose()
        if scheme == "ws":
            assert answer.startswith(b"HTTP/1.1 400"), answer[:60]
        if scheme != "tls":
            # TLS hands the stream over before its handshake (so that the server's admission
            # limits cover TLS handshakes too); the failed handshake then ends it there.
            assert faulty.accepted == 0, "refused before the session layer saw it"
        assert b"RLNK" not in answer, "no session preface for a client that never spoke TLS"
        await exchange(setup, server.url)


async def test_tls_handshake_that_stalls_does_not_hold_up_others(tls_setup: Setup) -> None:
    async with serving(tls_setup, echo) as (server, _):
        parts = urlsplit(server.url)
        assert parts.hostname is not None and parts.port is not None
        async with await trio.open_tcp_stream(parts.hostname, parts.port):
            # This client never says a word; others connect meanwhile.
            await exchange(tls_setup, server.url)


# -- certificates --------------------------------------------------------------------------


async def _refused(
    setup: Setup, url: str, context: ssl.SSLContext | None, connect_timeout: float = 0.3
) -> BaseException:
    """Connect with ``context``; return the ConnectionFailed, checking it came in time."""
    options = {**setup.client_options, "ssl_context": context, "connect_timeout": connect_timeout}
    started = trio.current_time()
    with pytest.raises(reliablelink.ConnectionFailed) as info:
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, **options):
            pass
    assert trio.current_time() - started < connect_timeout + 2, "gave up within connect_timeout"
    return info.value


async def test_valid_certificate_works_and_the_link_is_encrypted(tls_setup: Setup, tls: TLSMaterial) -> None:
    async with serving(tls_setup, echo) as (server, _):
        transport, parts = get_transport(server.url)
        stream = await transport.open_stream(parts, tls_setup.stream_options())
        try:
            under: Any = stream
            if not isinstance(under, trio.SSLStream):
                under = under.transport_stream  # the TLS stream under the WebSocket
            assert isinstance(under, trio.SSLStream)
            assert under.version() in ("TLSv1.2", "TLSv1.3")
        finally:
            await trio.aclose_forcefully(stream)
        await exchange(tls_setup, server.url)


async def test_wrong_ca_is_refused_with_a_clear_error(tls_setup: Setup, tls: TLSMaterial) -> None:
    async with serving(tls_setup, echo) as (server, _):
        transport, parts = get_transport(server.url)
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await transport.open_stream(parts, StreamOptions(ssl_context=tls.other_ca_client))
        error = await _refused(tls_setup, server.url, tls.other_ca_client)
        assert server.url in str(error)
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError), f"chained to {error.__cause__!r}"
        await exchange(tls_setup, server.url)  # a failed handshake closed only its connection


async def test_verification_is_on_by_default(tls_setup: Setup) -> None:
    """No ssl_context on the client: the system's CAs, which never heard of the test CA."""
    async with serving(tls_setup, echo) as (server, _):
        transport, parts = get_transport(server.url)
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await transport.open_stream(parts, StreamOptions())


async def test_certificate_for_another_host_is_refused(tls_setup: Setup, tls: TLSMaterial) -> None:
    tls_setup.server_options["ssl_context"] = tls.other_host_server
    async with serving(tls_setup, echo) as (server, _):
        transport, parts = get_transport(server.url)
        with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
            await transport.open_stream(parts, tls_setup.stream_options())
        error = await _refused(tls_setup, server.url, tls.client)
        assert isinstance(error.__cause__, ssl.SSLCertVerificationError), f"chained to {error.__cause__!r}"
        assert "mismatch" in str(error)


async def test_server_without_ssl_context_says_what_is_missing(tls_setup: Setup) -> None:
    with pytest.raises(ValueError, match=f"serving {tls_setup.scheme}:// needs ssl_context"):
        await serve_fails(tls_setup.listen)


# -- WebSocket -----------------------------------------------------------------------------


@asynccontextmanager
async def ws_transport_server(
    handler: StreamHandler, options: StreamOptions | None = None
) -> AsyncIterator[tuple[Transport, str]]:
    """The ws:// transport alone (no session layer), serving ``handler`` on /rl."""
    transport, parts = get_transport("ws://127.0.0.1:0/rl")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(transport.serve, parts, handler, options or StreamOptions())
            yield transport, url
            nursery.cancel_scope.cancel()


async def raw_upgrade(stream: trio.abc.Stream, host: str, target: str, **request: Any) -> tuple[Any, Any]:
    """Upgrade ``stream`` by hand with wsproto: (connection, the server's AcceptConnection)."""
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=host, target=target, **request)))
    while True:
        ws.receive_data(bytes(await stream.receive_some(65536)))
        for event in ws.events():
            assert isinstance(event, AcceptConnection), event
            return ws, event


async def raw_websocket(url: str, **request: Any) -> tuple[trio.SocketStream, Any, Any]:
    """A hand-driven wsproto client: (stream, connection, the server's AcceptConnection)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    ws, accept = await raw_upgrade(stream, parts.netloc, parts.path, **request)
    return stream, ws, accept


async def raw_events(stream: trio.SocketStream, ws: Any) -> list[Any]:
    """Events from the server until it closes the connection."""
    events: list[Any] = []
    with trio.fail_after(10):
        with contextlib.suppress(trio.BrokenResourceError):
            while data := await stream.receive_some(65536):
                ws.receive_data(data)
                events.extend(ws.events())
    return events


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_path_is_honoured() -> None:
    async def hello(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"hello")
        await stream.aclose()

    async with ws_transport_server(hello) as (transport, url):
        assert url.endswith("/rl")
        stream = await transport.open_stream(urlsplit(url), StreamOptions())
        try:
            assert await stream.receive_some() == b"hello"
        finally:
            await stream.aclose()
        with pytest.raises(ConnectionRefusedError, match="HTTP 404"):
            await transport.open_stream(urlsplit(url.replace("/rl", "/other")), StreamOptions())


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_sends_are_split_into_messages_of_at_most_64_kib() -> None:
    async def big(stream: trio.abc.Stream) -> None:
        await stream.send_all(b"x" * 300_000)
        await stream.aclose()

    async with ws_transport_server(big) as (_, url):
        stream, ws, _accept = await raw_websocket(url)
        async with stream:
            events = await raw_events(stream, ws)
    sizes, current = [], 0
    for event in events:
        if isinstance(event, BytesMessage):
            current += len(event.data)
            if event.message_finished:
                sizes.append(current)
                current = 0
    assert sum(sizes) == 300_000
    assert max(sizes) <= 64 * 1024, f"message sizes {sizes}"


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_message_over_the_limit_is_refused_with_1009() -> None:
    failures: list[BaseException] = []

    async def reader(stream: trio.abc.Stream) -> None:
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError as exc:
            failures.append(exc)
        await stream.aclose()

    limit = 1000 + 64 * 1024  # max_message_size plus the headroom for framing
    async with ws_transport_server(reader, StreamOptions(max_message_size=1000)) as (_, url):
        stream, ws, _accept = await raw_websocket(url)
        async with stream:
            await stream.send_all(ws.send(BytesMessage(data=b"y" * limit)))  # at the limit: fine
            await stream.send_all(ws.send(BytesMessage(data=b"z" * (limit + 1))))
            events = await raw_events(stream, ws)
    closes = [e for e in events if isinstance(e, CloseConnection)]
    assert closes and closes[0].code == 1009, events
    assert failures and "1009" in str(failures[0])


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_text_and_bad_frames_close_the_connection() -> None:
    async def reader(stream: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some():
                pass
        await stream.aclose()

    async with ws_transport_server(reader) as (_, url):
        stream, ws, _accept = await raw_websocket(url)
        async with stream:
            await stream.send_all(ws.send(TextMessage(data="hello")))
            events = await raw_events(stream, ws)
        assert [e.code for e in events if isinstance(e, CloseConnection)] == [1003], events

        stream, ws, _accept = await raw_websocket(url)
        async with stream:
            await stream.send_all(b"\x82\x05hello")  # an unmasked client frame breaks RFC 6455
            events = await raw_events(stream, ws)
        assert [e.code for e in events if isinstance(e, CloseConnection)] == [1002], events


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_answers_pings_and_permessage_deflate_is_never_negotiated() -> None:
    async def quiet(stream: trio.abc.Stream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.receive_some()
        await stream.aclose()

    async with ws_transport_server(quiet) as (_, url):
        stream, ws, accept = await raw_websocket(url, extensions=[PerMessageDeflate()])
        async with stream:
            assert accept.extensions == [], "compression refused"
            await stream.send_all(ws.send(Ping(payload=b"are you there")))
            with trio.fail_after(10):
                pong = None
                while pong is None:
                    ws.receive_data(await stream.receive_some(65536))
                    pong = next((e for e in ws.events() if isinstance(e, Pong)), None)
            assert pong.payload == b"are you there"


async def ws_pair(
    make_pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]],
) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A client and a server WebSocket stream over an in-memory stream pair."""
    left, right = make_pair()
    accepted: list[trio.abc.Stream | None] = []
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            accepted.append(await _WebSocketStream.accept(right, "/", 1 << 20, "test"))

        nursery.start_soon(accept)
        client = await _WebSocketStream.connect(left, "test", "/", 1 << 20)
    assert accepted[0] is not None
    return client, accepted[0]


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_stream_passes_trios_stream_conformance_checks() -> None:
    with trio.fail_after(30):
        await trio.testing.check_two_way_stream(
            functools.partial(ws_pair, trio.testing.memory_stream_pair),
            functools.partial(ws_pair, trio.testing.lockstep_stream_pair),
        )


@pytest.mark.usefixtures("needs_ws")
async def test_websocket_pong_never_blocks_the_reader_behind_a_send() -> None:
    """While the writer is stuck in send_all, a ping is answered after that send, and the
    reader goes on reading (waiting for the writer instead could deadlock two peers that
    both stopped reading)."""
    client_end, server_end = trio.testing.lockstep_stream_pair()  # every send waits for its reader
    accepted: list[Any] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                accepted.append(await _WebSocketStream.accept(server_end, "/", 1 << 20, "test"))

            nursery.start_soon(accept)
            ws, _accept = await raw_upgrade(client_end, "test", "/")
        server = accepted[0]
        got: list[bytes | bytearray] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.send_all, b"d" * 1000)  # stuck: the client is not reading

            async def read_one() -> None:
                got.append(await server.receive_some())

            nursery.start_soon(read_one)
            await trio.testing.wait_all_tasks_blocked()
            await client_end.send_all(ws.send(Ping(payload=b"p")))
            await client_end.send_all(ws.send(BytesMessage(data=b"x")))  # needs the reader to be reading
            await trio.testing.wait_all_tasks_blocked()
            assert got == [b"x"], "the reader kept reading while the writer was stuck"
            events: list[Any] = []
            while not any(isinstance(event, Pong) for event in events):
                ws.receive_data(await client_end.receive_some(65536))
                events.extend(ws.events())
        data = b"".join(event.data for event in events if isinstance(event, BytesMessage))
        assert data == b"d" * 1000 and isinstance(events[-1], Pong), "the pong follows the message in progress"
        await trio.aclose_forcefully(server)


def test_import_reliablelink_without_the_ws_extra() -> None:
    """Without wsproto, reliablelink imports, and a ws:// URL says which extra to install."""
    code = """
import sys
sys.modules["wsproto"] = None  # as if it were not installed
import trio, reliablelink
async def main():
    async with reliablelink.connect("ws://127.0.0.1:9/x", client_id="a", key=b"k" * 32):
        pass
try:
    trio.run(main)
except ImportError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'reliablelink[ws]'" in done.stdout, done.stdout + done.stderr


# -- Unix domain sockets -------------------------------------------------------------------


@pytest.fixture
def unix_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return make_setup("unix", request, tmp_path)


def _socket_file(setup: Setup) -> str:
    return setup.listen.removeprefix("unix://")


async def test_unix_socket_file_is_removed_when_the_server_stops(unix_setup: Setup) -> None:
    path = _socket_file(unix_setup)
    async with serving(unix_setup, echo):
        assert await trio.Path(path).is_socket()
    assert not await trio.Path(path).exists(), "removed at exit"


async def test_unix_stale_socket_file_is_replaced(unix_setup: Setup) -> None:
    path = _socket_file(unix_setup)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as crashed:
        crashed.bind(path)  # a server that died without removing its file
    assert await trio.Path(path).is_socket()
    async with serving(unix_setup, echo) as (server, _):
        await exchange(unix_setup, server.url)


async def test_unix_path_in_use_or_not_a_socket_is_left_alone(unix_setup: Setup) -> None:
    path = _socket_file(unix_setup)
    async with serving(unix_setup, echo):
        with pytest.raises(OSError, match="in use by a running server"):
            await serve_fails(unix_setup.listen)
    await trio.Path(path).write_text("not a socket")
    with pytest.raises(FileExistsError, match="not a socket"):
        await serve_fails(unix_setup.listen)
    assert await trio.Path(path).read_text() == "not a socket"


@pytest.mark.parametrize("url", ["unix://relative/path", "unix://host/abs/path"])
async def test_unix_url_must_be_an_absolute_path(url: str) -> None:
    with pytest.raises(ValueError, match="absolute path"):
        async with reliablelink.connect(url, client_id="agent-1", key=KEY):
            pass


@pytest.fixture
def plain_tls_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Setup:
    return make_setup("tls", request, tmp_path)


async def test_tls_handshakes_count_against_the_per_address_limit(plain_tls_setup: Setup) -> None:
    """A flood of TCP connections that never finish TLS is capped like any other unauthenticated one.

    (The WebSocket upgrade still runs in the transport, before the server's admission limits.)
    """
    tls_setup = plain_tls_setup
    async with serving(tls_setup, echo, max_connections_per_address=5, handshake_timeout=30) as (server, _):
        parts = urlsplit(server.url)
        assert parts.hostname is not None and parts.port is not None
        flood = [await trio.open_tcp_stream(parts.hostname, parts.port) for _ in range(12)]
        closed = [False] * len(flood)

        async def probe(i: int) -> None:
            closed[i] = await flood[i].receive_some(1) == b""  # closed at once, before any TLS

        with trio.move_on_after(1):
            async with trio.open_nursery() as probes:
                for i in range(len(flood)):
                    probes.start_soon(probe, i)
        refused = sum(closed)
        assert refused == 12 - 5, f"{closed}: {refused} of 12 stalled TLS connections refused (limit 5 per address)"
        for stream in flood:
            await stream.aclose()
        await exchange(tls_setup, server.url)
