"""``tls://host:port``: TCP with TLS on top (:class:`trio.SSLStream`).

The client verifies the server by default (``ssl.create_default_context()``, checking the
certificate chain and that it names the URL's host). The server needs an ``ssl_context``
holding its certificate and key. Handshakes are done eagerly: a client learns of a bad
certificate in ``open_stream``, as an :class:`ssl.SSLError`, not later on its first read;
a server does each handshake in that connection's own task, so a client that fails (or
stalls) its handshake costs only its own connection.
"""

from __future__ import annotations

import functools
import logging
import ssl
from typing import final
from urllib.parse import SplitResult

import trio

from ._base import StreamHandler, StreamOptions
from ._tcp import open_listeners, tune_socket

__all__ = ["TLSTransport"]

log = logging.getLogger("reliablelink.transports")


def host_port(url: SplitResult, default_port: int | None = None) -> tuple[str, int]:
    """The host and port of ``url``; ``ValueError`` naming the URL when either is missing."""
    port = url.port if url.port is not None else default_port
    if not url.hostname or port is None:
        raise ValueError(f"a {url.scheme}:// URL needs a host and a port, got {url.geturl()!r}")
    return url.hostname, port


def shown_host(host: str) -> str:
    """``host`` as written in a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host else host


def peer_of(stream: trio.SocketStream) -> str:
    """The peer's address, for log lines."""
    try:
        return str(stream.socket.getpeername())
    except OSError:
        return "?"


@functools.cache
def _default_client_context() -> ssl.SSLContext:
    # Loading the system's CA store takes milliseconds; one context serves every connection.
    return ssl.create_default_context()


async def tls_connect(
    tcp: trio.SocketStream, context: ssl.SSLContext | None, host: str, *, https_compatible: bool
) -> trio.SSLStream[trio.SocketStream]:
    """Run the client side of a TLS handshake over ``tcp`` and return the encrypted stream.

    Raises:
        ssl.SSLCertVerificationError: the server's certificate is not trusted by
            ``context`` or does not name ``host``.
        ssl.SSLError: any other TLS failure (no common protocol version or cipher, ...).
        trio.BrokenResourceError: the connection broke during the handshake.
    """
    stream = trio.SSLStream(
        tcp,
        context if context is not None else _default_client_context(),
        server_hostname=host,
        https_compatible=https_compatible,
    )
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            # Trio wraps the SSL error; the caller (and the reconnect loop's message) should
            # see the SSL error itself: it says what is wrong (unknown CA, wrong hostname,
            # expired certificate), and it is an OSError like other connect failures.
            raise cause from None
        raise
    return stream


async def tls_accept(
    tcp: trio.SocketStream, context: ssl.SSLContext, *, https_compatible: bool
) -> trio.SSLStream[trio.SocketStream] | None:
    """Run the server side of a TLS handshake; ``None`` (and a log line) if it fails.

    The caller bounds it in time (``StreamOptions.handshake_timeout``) and closes ``tcp``
    when this returns ``None``.
    """
    stream = trio.SSLStream(tcp, context, server_side=True, https_compatible=https_compatible)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            # A client with the wrong CA or a non-TLS client: worth one line for the operator.
            log.info("TLS handshake with %s failed: %s", peer_of(tcp), cause)
        else:
            log.debug("TLS handshake with %s failed: %r", peer_of(tcp), cause or exc)
        return None
    return stream


@final
class TLSTransport:
    """The ``tls://`` transport: TCP (with the socket options of ``tcp://``) and TLS on top.

    ``StreamOptions.ssl_context`` is the TLS configuration: on the client, ``None`` means
    ``ssl.create_default_context()`` (the system's trusted CAs, hostname checked against the
    URL's host); on the server it is required and must hold the certificate chain and key.
    """

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """Connect and complete the TLS handshake.

        Raises:
            ssl.SSLCertVerificationError: the server's certificate is not trusted or does not
                name the URL's host.
            ssl.SSLError: another TLS failure.
            OSError: the TCP connection failed.
        """
        host, port = host_port(url)
        tcp = await trio.open_tcp_stream(host, port)
        try:
            tune_socket(tcp.socket, options.dead_after)
            return await tls_connect(tcp, options.ssl_context, host, https_compatible=False)
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
        """Listen on every address of the host; report ``tls://host:port`` with the real port.

        Each accepted connection is handed over as a ``trio.SSLStream`` whose handshake runs
        on its first send or receive (a failed handshake raises ``trio.BrokenResourceError``
        there).

        Raises:
            ValueError: no ``ssl_context`` (a TLS server needs a certificate), or a bad URL.
        """
        host, port = host_port(url)
        context = options.ssl_context
        if context is None:
            raise ValueError(
                "serving tls:// needs ssl_context: pass serve(..., ssl_context=ctx) with a context that "
                "holds the server's certificate, e.g. ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH); "
                "ctx.load_cert_chain('cert.pem', 'key.pem')"
            )
        listeners = await open_listeners(host, port)

        async def secured(tcp: trio.SocketStream) -> None:
            try:
                tune_socket(tcp.socket, options.dead_after)
            except OSError:
                await trio.aclose_forcefully(tcp)
                return
            # The TLS handshake is left to the stream's first use, inside the handler: there
            # the server's per-address limits and handshake_timeout already apply, so a flood
            # of stalled TLS handshakes is capped like any other unauthenticated connection.
            await handler(trio.SSLStream(tcp, context, server_side=True, https_compatible=False))

        bound_port = listeners[0].socket.getsockname()[1]
        task_status.started(f"tls://{shown_host(host)}:{bound_port}")
        await trio.serve_listeners(secured, listeners)
