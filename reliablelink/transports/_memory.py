"""``memory://name``: an in-process transport with bounded buffers and fault controls.

Streams here behave like TCP where it matters to the session layer: bytes arrive in order,
writes wait when the peer's buffer is full (so backpressure is real), and each connection
can be cut the ways a network cuts: reset (both ends see an error), blackholed (bytes vanish
silently, no FIN, no RST, the way a pulled cable looks) or clogged (bytes held, then released).
Links can also be degraded: latency with seeded jitter, a bandwidth cap, reads cut into
small segments, a reset after N bytes; and a listener can refuse or delay new connections.
It runs on any Trio clock, including ``trio.testing.MockClock``.

The fault names (``blackhole``, ``segment``, ``reset_after``, directions ``to_server`` and
``to_client``) are those of :class:`~reliablelink.testing.ChaosProxy` and of the fault
schedules too (``docs/chaos.md``); ``drop_after`` is a deprecated alias of ``reset_after``.
"""

from __future__ import annotations

import itertools
import random
import warnings
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import SplitResult

import trio

from ._base import StreamHandler, StreamOptions

__all__ = ["MemoryConnection", "MemoryStream", "MemoryTransport"]

DEFAULT_BUFFER = 256 * 1024
#: Through a bandwidth cap, bytes arrive in pieces of at most this size (a TCP segment on
#: Ethernet), each when it has passed the cap: a slow link trickles, it does not go silent
#: for the time a whole write takes.
CAPPED_SEGMENT = 1460


def _warn_renamed(old: str, new: str) -> None:
    warnings.warn(
        f"{old} is deprecated and will be removed in the next release; use {new}", DeprecationWarning, stacklevel=3
    )


class _Pipe:
    """One direction of a connection: a bounded byte queue with faults.

    Bytes are queued with the time they become readable (``latency``); the queue holds at
    most ``limit`` bytes, so a writer waits like on a full socket buffer.
    """

    def __init__(self, limit: int) -> None:
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.queued = 0
        self.limit = limit
        self.eof = False  # the writer closed its end
        self.broken = False  # reset
        self.blackhole = False  # bytes vanish
        self.held = False  # bytes wait (clogged)
        self.latency = 0.0  # seconds before written bytes can be read
        self.jitter = 0.0  # up to this many seconds more, per write (seeded, order kept)
        self.rng = random.Random(0)
        self.bandwidth: float | None = None  # bytes per second through the link
        self.free_at = 0.0  # when the bandwidth-capped link has sent what is queued
        self.last_due = 0.0
        self.segment: int | None = None  # most bytes one read returns (1: byte by byte)
        self.reset_after: int | None = None  # reset the connection once this many bytes have passed
        self.bytes_passed = 0
        self.lot = trio.lowlevel.ParkingLot()
        self.peer: _Pipe | None = None  # the other direction, reset along with this one

    @property
    def drop_after(self) -> int | None:
        """Deprecated alias of ``reset_after``."""
        _warn_renamed("drop_after", "reset_after")
        return self.reset_after

    @drop_after.setter
    def drop_after(self, value: int | None) -> None:
        _warn_renamed("drop_after", "reset_after")
        self.reset_after = value

    def reset(self) -> None:
        """Break this direction: its writer and its reader see ``BrokenResourceError``."""
        self.broken = True
        self.clear()
        self.changed()

    @property
    def buf(self) -> bytes:
        """Everything queued (for inspection)."""
        return b"".join(chunk for _, chunk in self.chunks)

    def clear(self) -> None:
        self.chunks.clear()
        self.queued = 0

    def changed(self) -> None:
        self.lot.unpark_all()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(data)
        while view:
            if self.broken:
                raise trio.BrokenResourceError("connection reset")
            if self.blackhole:
                break
            room = self.limit - self.queued
            if self.reset_after is not None:
                room = min(room, self.reset_after - self.bytes_passed)
                if room <= 0:
                    # The connection dies mid-stream, wherever the frame boundaries are,
                    # both ways (an RST), like MemoryConnection.reset().
                    self.reset()
                    if self.peer is not None:
                        self.peer.reset()
                    continue
            if room > 0:
                piece = bytes(view[:room])
                if self.bandwidth is None:
                    self.chunks.append((self._due(len(piece)), piece))
                else:
                    for start in range(0, len(piece), CAPPED_SEGMENT):
                        part = piece[start : start + CAPPED_SEGMENT]
                        self.chunks.append((self._due(len(part)), part))
                self.queued += len(piece)
                self.bytes_passed += len(piece)
                view = view[len(piece) :]
                self.changed()
                continue
            await self.lot.park()
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _due(self, size: int) -> float:
        """When ``size`` bytes written now can be read: after the bytes ahead of them have
        gone through the bandwidth cap, plus latency and jitter. Never earlier than the
        bytes before them (a byte stream does not reorder)."""
        now = trio.current_time()
        sent = now
        if self.bandwidth is not None:
            sent = self.free_at = max(now, self.free_at) + size / self.bandwidth
        due = sent + self.latency
        if self.jitter:
            due += self.rng.uniform(0.0, self.jitter)
        self.last_due = due = max(due, self.last_due)
        return due

    async def read(self, max_bytes: int) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            if self.broken:
                raise trio.BrokenResourceError("connection reset")
            if self.chunks and not self.held:
                due, chunk = self.chunks[0]
                if due <= trio.current_time():
                    n = min(max_bytes, self.segment or max_bytes, len(chunk))
                    if n == len(chunk):
                        self.chunks.popleft()
                    else:
                        self.chunks[0] = (due, chunk[n:])
                    self.queued -= n
                    self.changed()
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return chunk[:n]
                with trio.move_on_at(due):
                    await self.lot.park()
                continue
            if self.eof and not self.chunks:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            await self.lot.park()


class MemoryStream(trio.abc.Stream):
    """One end of a :class:`MemoryConnection`."""

    def __init__(self, outgoing: _Pipe, incoming: _Pipe) -> None:
        self._out = outgoing
        self._in = incoming
        self._closed = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data`` (waits while the peer's buffer is full)."""
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        await self._out.write(data)

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until the peer's buffer has room."""
        while self._out.queued >= self._out.limit and not self._out.broken:
            await self._out.lot.park()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Read up to ``max_bytes`` (``b""`` at end of stream)."""
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        return await self._in.read(max_bytes or 65536)

    async def aclose(self) -> None:
        """Close this end: the peer reads what was sent, then end of stream."""
        if not self._closed:
            self._closed = True
            self._out.eof = True
            self._out.changed()
            self._in.broken = True
            self._in.changed()
        await trio.lowlevel.checkpoint()


@dataclass(eq=False)
class MemoryConnection:
    """A connection between a client and a server stream, with fault controls."""

    name: str
    to_server: _Pipe
    to_client: _Pipe
    client: MemoryStream = field(init=False)
    server: MemoryStream = field(init=False)

    def __post_init__(self) -> None:
        self.client = MemoryStream(self.to_server, self.to_client)
        self.server = MemoryStream(self.to_client, self.to_server)
        self.to_server.peer = self.to_client
        self.to_client.peer = self.to_server

    def _pipes(self, direction: str) -> list[_Pipe]:
        return {"both": [self.to_server, self.to_client], "to_server": [self.to_server], "to_client": [self.to_client]}[
            direction
        ]

    def reset(self) -> None:
        """Both ends see ``BrokenResourceError`` on their next read or write (like a TCP RST)."""
        for pipe in self._pipes("both"):
            pipe.reset()

    def blackhole(self, direction: str = "both") -> None:
        """Bytes in flight and bytes sent from now on vanish; neither end is told (a pulled cable).

        Args:
            direction: ``"both"``, ``"to_server"`` or ``"to_client"``.
        """
        for pipe in self._pipes(direction):
            pipe.blackhole = True
            pipe.clear()
            pipe.changed()

    def clog(self, direction: str = "both") -> None:
        """Hold bytes (they are kept, not delivered) until :meth:`unclog`."""
        for pipe in self._pipes(direction):
            pipe.held = True

    def unclog(self, direction: str = "both") -> None:
        """Deliver held bytes."""
        for pipe in self._pipes(direction):
            pipe.held = False
            pipe.changed()

    def degrade(
        self,
        direction: str = "both",
        *,
        latency: float | None = None,
        jitter: float | None = None,
        bandwidth: float | None = None,
        segment: int | None = None,
        reset_after: int | None = None,
        seed: int = 0,
        drop_after: int | None = None,
    ) -> None:
        """Make the link slow or fragile without cutting it. Affects bytes written from now on.

        Args:
            direction: ``"both"``, ``"to_server"`` or ``"to_client"``.
            latency: seconds before written bytes can be read.
            jitter: up to this many seconds more per write, drawn from ``random.Random(seed)``;
                bytes still arrive in order (a late write holds back the ones after it).
            bandwidth: bytes per second; ``0`` or less removes the cap.
            segment: most bytes a single read returns (1 delivers byte by byte).
            reset_after: reset the connection, both ways (like :meth:`reset`), once this many
                more bytes have passed in ``direction`` (each direction counts its own).
            seed: seeds the jitter.
            drop_after: deprecated alias of ``reset_after``.
        """
        if drop_after is not None:
            _warn_renamed("degrade(drop_after=...)", "degrade(reset_after=...)")
            reset_after = drop_after
        if (latency is not None and latency < 0) or (jitter is not None and jitter < 0):
            raise ValueError("latency and jitter must be >= 0")
        for pipe in self._pipes(direction):
            if latency is not None:
                pipe.latency = latency
            if jitter is not None:
                pipe.jitter = jitter
                # Each direction its own sequence, still fixed by the seed.
                pipe.rng = random.Random(f"{seed}:{'to_client' if pipe is self.to_client else 'to_server'}")
            if bandwidth is not None:
                pipe.bandwidth = bandwidth if bandwidth > 0 else None
            if segment is not None:
                pipe.segment = segment
            if reset_after is not None:
                pipe.reset_after = pipe.bytes_passed + reset_after

    @property
    def closed(self) -> bool:
        """Whether both ends are closed or the connection was reset."""
        return (self.client._closed and self.server._closed) or self.to_server.broken


@dataclass(eq=False)
class _Listener:
    handler: StreamHandler
    nursery: trio.Nursery
    refuse: bool = False
    connect_delay: float = 0.0


class MemoryTransport:
    """The ``memory://`` transport. URLs name a listener: ``memory://echo``.

    ``memory://`` or ``memory://0`` in ``serve`` picks a fresh unique name. Every connection
    made is kept in :attr:`connections` (those with both ends closed are pruned on each new
    connection) so a test can cut it, or check that every end was closed.
    """

    def __init__(self, buffer_size: int = DEFAULT_BUFFER) -> None:
        self._listeners: dict[str, _Listener] = {}
        self._names = itertools.count(1)
        self.buffer_size = buffer_size
        self.connections: list[MemoryConnection] = []

    def refuse(self, name: str, refuse: bool = True) -> None:
        """Make new connections to listener ``name`` fail with ``ConnectionRefusedError``."""
        self._listeners[name].refuse = refuse

    def delay_connect(self, name: str, delay: float) -> None:
        """Make new connections to listener ``name`` take ``delay`` seconds to open (a lossy
        path retransmitting SYNs, a slow load balancer); ``0`` restores instant connects."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self._listeners[name].connect_delay = delay

    def connections_to(self, name: str) -> list[MemoryConnection]:
        """Open connections to listener ``name``."""
        return [c for c in self.connections if c.name == name and not c.closed]

    async def open_stream(self, url: SplitResult, options: StreamOptions) -> trio.abc.Stream:
        """Connect to the listener named by ``url``."""
        await trio.lowlevel.checkpoint()
        name = url.netloc
        listener = self._listeners.get(name)
        if listener is not None and listener.connect_delay:
            await trio.sleep(listener.connect_delay)
            # The listener may have gone away, or started refusing, meanwhile.
            listener = self._listeners.get(name)
        if listener is None or listener.refuse:
            raise ConnectionRefusedError(f"nothing listens on memory://{name}")
        conn = MemoryConnection(name, _Pipe(self.buffer_size), _Pipe(self.buffer_size))
        # Pruned once both ends are closed (not merely reset), so a test can find an end that
        # was never closed: a leak.
        self.connections = [c for c in self.connections if not (c.client._closed and c.server._closed)]
        self.connections.append(conn)
        listener.nursery.start_soon(listener.handler, conn.server)
        return conn.client

    async def serve(
        self,
        url: SplitResult,
        handler: StreamHandler,
        options: StreamOptions,
        *,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Register the listener; report ``memory://name``."""
        name = url.netloc
        if name in ("", "0"):
            name = f"listener-{next(self._names)}"
        if name in self._listeners:
            raise OSError(f"memory://{name} is already in use")
        try:
            async with trio.open_nursery() as nursery:
                self._listeners[name] = _Listener(handler, nursery)
                task_status.started(f"memory://{name}")
                await trio.sleep_forever()
        finally:
            self._listeners.pop(name, None)
