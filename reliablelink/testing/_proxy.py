"""A TCP proxy for Trio with "toxics": latency, bandwidth, slicing, blackholes, resets.

Point a client at the proxy instead of the server and make the network misbehave, from
Python (``proxy.toxics.latency = 0.2``, ``proxy.kill_all()``) or from the command line
(``reliablelink chaos-proxy``). Changing a field of ``proxy.toxics`` affects connections
already open and new ones; assigning a new ``Toxics`` object affects new connections only.
"""

from __future__ import annotations

import contextlib
import functools
import math
import random
import socket
import struct
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

from ..transports._tcp import open_listeners
from ._forward import CHUNK, splice
from ._renames import TOXIC_DIRECTION_RENAMES, TOXIC_RENAMES, warn_renamed

__all__ = ["ChaosProxy", "Toxics"]

_QUEUE = 64  # chunks in flight per direction inside the proxy (bounded: backpressure holds)


@dataclass(init=False)
class Toxics:
    """What the proxy does to the bytes it forwards. Change the fields at any time.

    The names are those of every fault tool in :mod:`reliablelink.testing` (see
    ``docs/chaos.md``); ``slice_size``, ``blackhole_up`` and ``blackhole_down`` are
    deprecated aliases of ``segment``, ``blackhole_to_server`` and ``blackhole_to_client``.

    Attributes:
        latency: seconds added to every chunk, each direction (chunks stay pipelined).
        jitter: up to this many seconds more, uniformly at random (order is kept).
        bandwidth: bytes per second, each direction (``None``: unlimited).
        segment: forward at most this many bytes per write, so the receiver reads pieces
            of at most this size (1 delivers byte by byte).
        blackhole_to_server: silently drop client -> server bytes.
        blackhole_to_client: silently drop server -> client bytes.
        reset_after: reset a connection (RST both ways) once it forwarded this many bytes,
            both directions counted together.
        slow_close: seconds to wait before passing an end of stream on.
        refuse: close new connections as soon as they are accepted.
    """

    latency: float
    jitter: float
    bandwidth: float | None
    segment: int | None
    blackhole_to_server: bool
    blackhole_to_client: bool
    reset_after: int | None
    slow_close: float
    refuse: bool

    def __init__(  # noqa: PLR0917 (positional, like the dataclass's own __init__ was)
        self,
        latency: float = 0.0,
        jitter: float = 0.0,
        bandwidth: float | None = None,
        segment: int | None = None,
        blackhole_to_server: bool = False,
        blackhole_to_client: bool = False,
        reset_after: int | None = None,
        slow_close: float = 0.0,
        refuse: bool = False,
        *,
        slice_size: int | None = None,
        blackhole_up: bool | None = None,
        blackhole_down: bool | None = None,
    ) -> None:
        """Set the toxics; every field defaults to "no fault".

        Args:
            latency: see the class attributes.
            jitter: see the class attributes.
            bandwidth: see the class attributes.
            segment: see the class attributes.
            blackhole_to_server: see the class attributes.
            blackhole_to_client: see the class attributes.
            reset_after: see the class attributes.
            slow_close: see the class attributes.
            refuse: see the class attributes.
            slice_size: deprecated alias of ``segment``.
            blackhole_up: deprecated alias of ``blackhole_to_server``.
            blackhole_down: deprecated alias of ``blackhole_to_client``.
        """
        self.latency = latency
        self.jitter = jitter
        self.bandwidth = bandwidth
        self.segment = segment
        self.blackhole_to_server = blackhole_to_server
        self.blackhole_to_client = blackhole_to_client
        self.reset_after = reset_after
        self.slow_close = slow_close
        self.refuse = refuse
        if slice_size is not None:
            warn_renamed("Toxics(slice_size=...)", "Toxics(segment=...)")
            self.segment = slice_size
        if blackhole_up is not None:
            warn_renamed("Toxics(blackhole_up=...)", "Toxics(blackhole_to_server=...)")
            self.blackhole_to_server = blackhole_up
        if blackhole_down is not None:
            warn_renamed("Toxics(blackhole_down=...)", "Toxics(blackhole_to_client=...)")
            self.blackhole_to_client = blackhole_down

    @property
    def slice_size(self) -> int | None:
        """Deprecated alias of :attr:`segment`."""
        warn_renamed("Toxics.slice_size", "Toxics.segment")
        return self.segment

    @slice_size.setter
    def slice_size(self, value: int | None) -> None:
        warn_renamed("Toxics.slice_size", "Toxics.segment")
        self.segment = value

    @property
    def blackhole_up(self) -> bool:
        """Deprecated alias of :attr:`blackhole_to_server`."""
        warn_renamed("Toxics.blackhole_up", "Toxics.blackhole_to_server")
        return self.blackhole_to_server

    @blackhole_up.setter
    def blackhole_up(self, value: bool) -> None:
        warn_renamed("Toxics.blackhole_up", "Toxics.blackhole_to_server")
        self.blackhole_to_server = value

    @property
    def blackhole_down(self) -> bool:
        """Deprecated alias of :attr:`blackhole_to_client`."""
        warn_renamed("Toxics.blackhole_down", "Toxics.blackhole_to_client")
        return self.blackhole_to_client

    @blackhole_down.setter
    def blackhole_down(self, value: bool) -> None:
        warn_renamed("Toxics.blackhole_down", "Toxics.blackhole_to_client")
        self.blackhole_to_client = value

    def set(self, spec: str) -> None:
        """Apply one ``name=value`` (the command line's ``--toxic``).

        For example ``latency=0.1``, ``segment=1``, ``reset_after=20000``, ``refuse=1``,
        ``blackhole=to_server``, ``blackhole=to_client`` or ``blackhole=both``. The old
        names (``slice_size``, ``blackhole_up``, ``blackhole_down``, ``blackhole=up``,
        ``blackhole=down``) still work and emit a ``DeprecationWarning``.

        Args:
            spec: ``name=value``; ``-`` in the name reads as ``_``.

        Raises:
            ValueError: an unknown toxic name or ``blackhole`` direction, or a bad value.
        """
        name, _, value = spec.partition("=")
        name = name.strip().replace("-", "_")
        value = value.strip()
        if name == "blackhole":
            if value in TOXIC_DIRECTION_RENAMES:
                warn_renamed(f"blackhole={value}", f"blackhole={TOXIC_DIRECTION_RENAMES[value]}")
                value = TOXIC_DIRECTION_RENAMES[value]
            if value not in ("to_server", "to_client", "both"):
                raise ValueError(f"blackhole={value!r}: the direction is to_server, to_client or both")
            self.blackhole_to_server = value in ("to_server", "both")
            self.blackhole_to_client = value in ("to_client", "both")
            return
        if name in TOXIC_RENAMES:
            warn_renamed(f"toxic {name}", TOXIC_RENAMES[name])
            name = TOXIC_RENAMES[name]
        if name not in Toxics.__dataclass_fields__:
            raise ValueError(f"unknown toxic {name!r}; known: {', '.join(Toxics.__dataclass_fields__)}, blackhole")
        current = getattr(self, name)
        if isinstance(current, bool):
            setattr(self, name, value.lower() in ("1", "true", "yes", "on"))
        elif name in ("segment", "reset_after"):
            setattr(self, name, int(value) if value else None)
        elif name == "bandwidth":
            setattr(self, name, float(value) if value else None)
        else:
            setattr(self, name, float(value))


@dataclass(eq=False)
class _Proxied:
    client: trio.SocketStream
    upstream: trio.SocketStream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    blackholed: bool = False
    forwarded: int = 0

    def kill(self) -> None:
        # SO_LINGER 0 makes close() send RST: both ends learn at once, as when a NAT or a
        # firewall drops the connection state, or a peer process dies.
        for stream in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.scope.cancel()


class ChaosProxy:
    """Forward TCP connections to ``upstream`` and misbehave on demand.

    Start it with ``url = await nursery.start(proxy.run)`` and point clients at ``url``.

    Args:
        upstream: ``tcp://host:port`` of the real server.
        listen: ``tcp://host:port`` to listen on (port 0 picks a free port).
        seed: seed for the jitter's random numbers.
    """

    def __init__(self, upstream: str, listen: str = "tcp://127.0.0.1:0", *, seed: int | None = None) -> None:
        up = urlsplit(upstream)
        here = urlsplit(listen)
        if up.hostname is None or up.port is None or here.hostname is None or here.port is None:
            raise ValueError("upstream and listen must be tcp://host:port URLs")
        self._upstream = (up.hostname, up.port)
        self._listen = (here.hostname, here.port)
        self._live: set[_Proxied] = set()
        self._rng = random.Random(seed)
        self.toxics = Toxics()
        self.url = ""
        self.connections_made = 0
        self.kills = 0
        self.upstream_failures = 0
        self.upstream_error: OSError | None = None

    @property
    def refuse(self) -> bool:
        """When true, new connections are closed as soon as they are accepted."""
        return self.toxics.refuse

    @refuse.setter
    def refuse(self, value: bool) -> None:
        self.toxics.refuse = value

    @property
    def live_connections(self) -> int:
        """Connections currently forwarded."""
        return len(self._live)

    def kill_all(self) -> int:
        """Reset every forwarded connection (RST to both ends); return how many."""
        n = 0
        for conn in list(self._live):
            conn.kill()
            n += 1
        self.kills += n
        return n

    def blackhole_all(self) -> int:
        """Silently drop everything on the current connections, both ways, for good (a pulled
        cable; new connections are not affected)."""
        for conn in self._live:
            conn.blackholed = True
        return len(self._live)

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and forward until cancelled; reports the URL to connect to."""
        listeners = await open_listeners(self._listen[0], self._listen[1])
        port = listeners[0].socket.getsockname()[1]
        self.url = f"tcp://{self._listen[0]}:{port}"
        task_status.started(self.url)
        await trio.serve_listeners(self._forward, listeners)

    async def _forward(self, client: trio.SocketStream) -> None:
        if self.toxics.refuse:
            await trio.aclose_forcefully(client)
            return
        try:
            upstream = await trio.open_tcp_stream(*self._upstream)
        except OSError as exc:
            self.upstream_failures += 1
            self.upstream_error = exc
            await trio.aclose_forcefully(client)
            return
        conn = _Proxied(client, upstream)
        self._live.add(conn)
        self.connections_made += 1
        try:
            with conn.scope:
                await splice(client, upstream, functools.partial(self._direction, conn))
        finally:
            self._live.discard(conn)  # splice closed both streams

    async def _direction(
        self, conn: _Proxied, source: trio.SocketStream, sink: trio.SocketStream, to_server: bool
    ) -> None:
        # A reader stamps each chunk with its due time; a writer delivers it then. Latency
        # delays the data without serializing it, and the bounded queue keeps backpressure.
        send, receive = trio.open_memory_channel[tuple[float, bytes]](_QUEUE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_side, conn, source, send, to_server)
            nursery.start_soon(self._write_side, conn, sink, receive)

    async def _read_side(
        self,
        conn: _Proxied,
        source: trio.SocketStream,
        send: trio.MemorySendChannel[tuple[float, bytes]],
        to_server: bool,
    ) -> None:
        toxics = self.toxics
        async with send:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                while data := await source.receive_some(CHUNK):
                    if conn.blackholed or (toxics.blackhole_to_server if to_server else toxics.blackhole_to_client):
                        continue
                    delay = toxics.latency + (self._rng.uniform(0, toxics.jitter) if toxics.jitter else 0.0)
                    await send.send((trio.current_time() + delay, data))
            if toxics.slow_close:
                await trio.sleep(toxics.slow_close)

    async def _write_side(
        self, conn: _Proxied, sink: trio.SocketStream, receive: trio.MemoryReceiveChannel[tuple[float, bytes]]
    ) -> None:
        toxics = self.toxics
        last_due = -math.inf
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            async for due, data in receive:
                last_due = max(last_due, due)  # jitter never reorders bytes
                await trio.sleep_until(last_due)
                step = toxics.segment or len(data)
                for i in range(0, len(data), step):
                    piece = data[i : i + step]
                    if toxics.reset_after is not None and conn.forwarded + len(piece) > toxics.reset_after:
                        # Deliver up to the limit, then reset: a connection that dies mid-frame.
                        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                            await sink.send_all(piece[: max(0, toxics.reset_after - conn.forwarded)])
                        conn.kill()
                        self.kills += 1
                        return
                    await sink.send_all(piece)
                    conn.forwarded += len(piece)
                    if toxics.bandwidth:
                        await trio.sleep(len(piece) / toxics.bandwidth)
                    elif toxics.segment:
                        await trio.lowlevel.checkpoint()
            with contextlib.suppress(OSError, trio.ClosedResourceError):
                await sink.send_eof()
