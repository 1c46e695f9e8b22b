"""One connection carrying a session: the one place where bytes are written to it and read from it.

A session is carried by one connection at a time. :func:`open_link` wraps that connection's
stream in a :class:`Link`, which offers exactly two ways to write and two ways to read:

* :meth:`Link.write` (waits until everything is written) is what the session's writer task
  uses; :meth:`Link.try_write` (never waits) writes what the socket takes *now*, from whatever
  task calls it, and returns the rest.
* :meth:`Link.read` is the reader task's read; :meth:`Link.read_lent` is a ``receive()``
  call's read, for which the reader task lends its turn on the socket.

There are two kinds of link. A :class:`SocketLink` wraps a plain socket (TCP, Unix): it can
write and read without waiting, straight from the calling task, with the same system calls
a ``trio.SocketStream`` makes (``sendmsg``/``writev`` for several buffers, so large payloads
are not copied). A :class:`StreamLink` wraps any other stream (TLS, WebSocket, memory): its
``try_write`` writes nothing and it never lends reads, so everything goes through the writer
and reader tasks.

Who may write when (the safety argument)
----------------------------------------
Bytes must reach the wire in the order the core queued them, and two writes must never
interleave. The writer task is the connection's only writer, except at one moment: while it
is parked in :meth:`Link.wait_for_work` with nothing queued (:attr:`Link.writer_idle` is truthy). Only
then may another task call :meth:`Link.try_write`, and that call is synchronous: it cannot
be interleaved with anything. What the socket does not take goes back to the front of the
core's queue and the writer is woken for it; waking it makes ``writer_idle`` falsy at once
(the task leaves the parking lot when it is unparked, not when it next runs), so no later
``try_write`` can overtake those bytes. Hence one writer at a time, in order.

A cancelled write
-----------------
A ``send_all`` that is cancelled may have written some, all or none of its bytes. The
writer's write is cancelled only when the link itself is being dropped (its scope is
cancelled by :meth:`Link.fail`), so a torn frame is never followed by another one on the
same connection: the connection is closed, and on the next one each side states what it
holds and the other resends the rest. ``try_write`` never blocks, so it cannot be cancelled
half-way. An ``OSError`` from either fails the link the same way.

Who may read when
-----------------
Trio lets one task wait for a socket to become readable at a time. The reader task holds
that turn; a ``receive()`` call that would otherwise wait for the reader task to read a
message and wake it (a pass of the scheduler per message of a request/response exchange)
borrows the turn with :meth:`Link.read_lent`: the reader task's wait is cancelled (Trio
aborts it at once, with nothing read) and it parks until the turn is handed back, which
happens as soon as that one read returns. Whoever reads feeds the bytes to the core before
its next await, so bytes are parsed in the order they arrived.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import trio

__all__ = ["LINK_ERRORS", "Link", "LinkLost", "Replaced", "SocketLink", "StreamLink", "open_link"]

# What a failing connection raises; every one of them means "this connection is gone".
LINK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_RECEIVE_SIZE = 256 * 1024
# At most this many buffers per sendmsg()/writev() call (Linux's IOV_MAX is 1024).
_IOV_MAX = 512

Buffer = bytes | bytearray | memoryview


class LinkLost(Exception):
    """Why a connection ended (kept for logs and tests; never raised to users)."""


class Replaced(LinkLost):
    """A newer connection took over the session (the old one is told SESSION_REPLACED)."""


class Link:
    """Driver state of one attached connection, and its only way in and out.

    Attributes:
        stream: the connection.
        scope: cancelled to drop the connection (every task of the link runs inside it).
        reason: why the link failed (``None`` while it works).
        done: set once the link's tasks have ended and the stream is being closed.
    """

    #: Whether :meth:`try_write` can write without waiting (see the module docstring).
    writes_directly = False

    @property
    def lends_reads(self) -> bool:
        """Whether a ``receive()`` call may read now with :meth:`read_lent` (a plain socket
        whose turn is not lent to another call already)."""
        return False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.scope = trio.CancelScope()
        self.reason: BaseException | None = None
        self.done = trio.Event()
        # A parking lot rather than a property over one: flush() tests it on every send().
        self.writer_idle = trio.lowlevel.ParkingLot()
        """Truthy exactly while the writer task is parked with nothing to write (the one
        moment another task may write, see the module docstring)."""
        self.timer_at = math.inf
        self.timer_scope: trio.CancelScope | None = None

    def fail(self, reason: BaseException) -> None:
        """Drop the connection: remember the first reason and cancel the link's tasks."""
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()

    # -- writing -----------------------------------------------------------------------

    def wake_writer(self) -> None:
        """Have the writer task take what the core queued."""
        self.writer_idle.unpark()

    async def wait_for_work(self) -> None:
        """The writer task's wait until :meth:`wake_writer`."""
        await self.writer_idle.park()

    def try_write(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        """Write what can be written without waiting; return what is left, in order.

        Call only while :attr:`writer_idle` is truthy. An ``OSError`` fails the link and returns
        nothing (the connection is being dropped; the session resends on the next one).
        """
        return list(buffers)

    async def write(self, buffers: Sequence[Buffer]) -> None:
        """Write every buffer, in order, waiting as needed (the writer task's write)."""
        await self.stream.send_all(buffers[0] if len(buffers) == 1 else b"".join(buffers))

    # -- reading -----------------------------------------------------------------------

    async def read(self) -> bytes:
        """The reader task's read: the next bytes, ``b""`` when the peer closed the connection."""
        data = await self.stream.receive_some(_RECEIVE_SIZE)
        return data if type(data) is bytes else bytes(data)

    async def read_lent(self) -> bytes:
        """A ``receive()`` call's read, with the reader task's turn lent to it (only when
        :attr:`lends_reads`)."""
        raise NotImplementedError

    # -- the timer task's deadline -----------------------------------------------------

    def rearm_timer(self, deadline: float) -> None:
        """Make the timer task wake exactly at ``deadline``, the earliest thing now due:
        moving a deadline costs a heap entry, waking the task early would cost a task switch."""
        if deadline != self.timer_at:
            self.timer_at = deadline
            if self.timer_scope is not None:
                self.timer_scope.deadline = deadline

    def wake_timer_by(self, deadline: float) -> None:
        """Make the timer task wake no later than ``deadline``."""
        if deadline < self.timer_at:
            self.rearm_timer(deadline)


class StreamLink(Link):
    """A link over a stream that only the writer and reader tasks use (TLS, WebSocket, memory)."""


class SocketLink(Link):
    """A link over a plain socket (TCP, Unix), written and read from the calling task."""

    writes_directly = True

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self._sock = stream.socket
        self._fd = stream.socket.fileno()
        self._lent = False
        self._wait_scope: trio.CancelScope | None = None
        self._reader_lot = trio.lowlevel.ParkingLot()

    @property
    def lends_reads(self) -> bool:
        return not self._lent and self.reason is None

    def try_write(self, buffers: Sequence[Buffer]) -> list[Buffer]:
        try:
            # write() for the usual lone buffer: a little cheaper per call than writev().
            sent = os.write(self._fd, buffers[0]) if len(buffers) == 1 else os.writev(self._fd, buffers[:_IOV_MAX])
        except BlockingIOError:
            return list(buffers)
        except OSError as exc:
            self.fail(exc)
            return []
        return _advance(buffers, sent)

    async def write(self, buffers: Sequence[Buffer]) -> None:
        # Scatter/gather: a large payload goes to the kernel without being copied into one
        # buffer first.
        rest: Sequence[Buffer] = buffers
        while rest:
            sent = await self._sock.sendmsg(rest[:_IOV_MAX])
            rest = _advance(rest, sent)

    def _try_read(self) -> bytes | None:
        try:
            return os.read(self._fd, _RECEIVE_SIZE)
        except BlockingIOError:
            return None

    async def read(self) -> bytes:
        # As receive_some would, yield once per read so that a steady stream cannot starve
        # the other tasks; but yield *before* reading, never between reading and returning:
        # a receive() call could borrow the turn in that gap, read later bytes and feed
        # them to the core first (see "Who may read when").
        await trio.lowlevel.cancel_shielded_checkpoint()
        while True:
            if self._lent:
                await self._reader_lot.park()
                continue
            data = self._try_read()
            if data is not None:
                return data
            # Waited for outside the except block: a coroutine suspended in one keeps the
            # exception, its traceback and their frames alive, per idle session.
            self._wait_scope = scope = trio.CancelScope()
            with scope:
                await trio.lowlevel.wait_readable(self._fd)
            self._wait_scope = None

    async def read_lent(self) -> bytes:
        self._lent = True
        if self._wait_scope is not None:
            self._wait_scope.cancel()
        try:
            while (data := self._try_read()) is None:
                await trio.lowlevel.wait_readable(self._fd)
            return data
        finally:
            self._lent = False
            self._reader_lot.unpark()


def open_link(stream: trio.abc.Stream) -> Link:
    """The link for ``stream``: a :class:`SocketLink` for a plain socket stream, else a
    :class:`StreamLink`."""
    if type(stream) is trio.SocketStream:
        return SocketLink(stream)
    return StreamLink(stream)


def _advance(buffers: Sequence[Buffer], sent: int) -> list[Buffer]:
    """What is left of ``buffers`` once their first ``sent`` bytes were written."""
    for i, buf in enumerate(buffers):
        n = len(buf)
        if sent < n:
            return [memoryview(buf)[sent:], *buffers[i + 1 :]]
        sent -= n
    return []
