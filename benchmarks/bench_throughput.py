"""One-way throughput and 64 B echo latency: reliablelink against raw Trio over loopback.

Sender and receiver (client and echo server) run in two separate worker processes started
with the ``spawn`` context; this process only hands out jobs and collects the results. The
receiving worker listens (TCP port 0, or a fresh Unix socket file) and sends its address
back through its pipe before the sending worker is told to connect.

Transports (``--transports``; default ``tcp``; ``all`` = tcp, tls, ws, wss, unix), each
measured with reliablelink and with the plain Trio way of sending messages over the same
transport:

* ``tcp``: Trio ``SocketStream``; ``tls``: ``trio.SSLStream`` over TCP; ``unix``: a Trio
  ``SocketStream`` on a Unix socket. Raw: 4-byte big-endian length + payload, one
  ``send_all`` per message; the receiver splits frames out of ``receive_some(65536)``.
* ``ws`` / ``wss``: raw is trio-websocket (``open_websocket_url`` / ``serve_websocket``,
  one binary ``send_message`` per message, ``get_message`` on the receiver).

TLS uses a throwaway CA and a certificate for 127.0.0.1 made with ``trustme`` at start.

Throughput cases (each message carries a big-endian u64 counter in its first 8 bytes):

* ``raw``: the raw baseline of the transport, one send per message.
* ``send``: reliablelink, ``await session.send(msg)`` per message.
* ``send_many``: reliablelink, ``await session.send_many(batch)`` with batches of 256.

Every receiver (reliablelink: a ``serve()`` handler looping on ``receive_many(4096)``)
checks that it got exactly N messages whose counters run 0..N-1 in order, and the payload
byte total; any other outcome is a failure, reported loudly, and the exit status is 1.

Timing is taken on the receiver with ``time.perf_counter``: from the arrival of the first
chunk/batch to the arrival of message N; the messages of the first chunk/batch are not
counted, so the rate is ``(N - first) / (t_last - t_first)``.

Usage::

    python benchmarks/bench_throughput.py [--quick] [--out benchmarks/results]
    python benchmarks/bench_throughput.py --transports all [--sizes 64,1024,16384]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import multiprocessing
import os
import shlex
import shutil
import socket
import ssl
import statistics
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import trio
from bench_common import (
    CLIENT_ID,
    DASH,
    HOST,
    KEY,
    NOISY,
    NoiseGuard,
    machine_info,
    noise_summary,
    package_version,
    percentile,
    process_cpu,
    ratio_text,
    rotated,
    size_label,
    write_atomically,
)

import reliablelink

# -- parameters ------------------------------------------------------------------------

SIZES: Final = (64, 1024, 16 * 1024, 256 * 1024)
#: Sizes measured when --transports is given and --sizes is not.
PER_TRANSPORT_SIZES: Final = (1024,)
TRANSPORTS: Final = ("tcp", "tls", "ws", "wss", "unix")
DEFAULT_TRANSPORTS: Final = ("tcp",)
TLS_TRANSPORTS: Final = frozenset({"tls", "wss"})
WS_TRANSPORTS: Final = frozenset({"ws", "wss"})
WS_PATH: Final = "/bench"
THROUGHPUT_CASES: Final = ("raw", "coalesce", "send", "send_many")
#: Transports without a byte-stream raw baseline have no coalescing case.
STREAM_TRANSPORTS: Final = frozenset({"tcp", "tls", "unix"})
LATENCY_CASES: Final = ("raw", "reliablelink")
CASE_LABELS: Final = {
    "send": "reliablelink send()",
    "send_many": "reliablelink send_many(256)",
}
RAW_LABELS: Final = {
    "tcp": "raw Trio, one send_all per message",
    "tls": "raw trio.SSLStream, one send_all per message",
    "unix": "raw Trio Unix socket, one send_all per message",
    "ws": "raw trio-websocket, one send_message per message",
    "wss": "raw trio-websocket over TLS, one send_message per message",
}
COALESCE_LABELS: Final = {
    "tcp": "raw Trio, coalescing writes",
    "tls": "raw trio.SSLStream, coalescing writes",
    "unix": "raw Trio Unix socket, coalescing writes",
}
LATENCY_LABELS: Final = {"reliablelink": "reliablelink send() + receive()"}
RAW_LATENCY_LABELS: Final = {
    "tcp": "raw Trio (same framing)",
    "tls": "raw trio.SSLStream (same framing)",
    "unix": "raw Trio Unix socket (same framing)",
    "ws": "raw trio-websocket",
    "wss": "raw trio-websocket over TLS",
}
#: The raw baseline in a few words, for the ratio table.
RAW_SHORT: Final = {
    "tcp": "trio.SocketStream (TCP)",
    "tls": "trio.SSLStream over TCP",
    "unix": "trio.SocketStream (Unix socket)",
    "ws": "trio-websocket",
    "wss": "trio-websocket over TLS",
}
#: What each raw baseline is, for the JSON.
RAW_BASELINES: Final = {
    "tcp": "trio.open_tcp_stream / trio.open_tcp_listeners (SocketStream); 4-byte length prefix; "
    "one send_all per message; receive_some(262144)",
    "tls": "trio.SSLStream over a TCP SocketStream, same contexts as reliablelink; 4-byte length prefix; "
    "one send_all per message; receive_some(262144)",
    "unix": "trio.open_unix_socket / a SocketListener on a Unix socket; 4-byte length prefix; "
    "one send_all per message; receive_some(262144)",
    "ws": "trio-websocket open_websocket_url / serve_websocket with default options; "
    "one binary send_message per message; get_message per message",
    "wss": "trio-websocket over TLS (same contexts as reliablelink), default options; "
    "one binary send_message per message; get_message per message",
}

#: Messages per throughput sample in full mode, per (case, size), for TCP: fixed numbers
#: chosen so that each sample takes about 1-2 s on a small 2-core VM (the fast cases get
#: more messages, so that no sample is too short to time well). Other transports scale
#: them by COUNT_FACTORS. ``--quick`` divides them by QUICK_DIVISOR; ``--scale``
#: multiplies them.
FULL_COUNTS: Final = {
    ("raw", 64): 120_000,
    ("send", 64): 800_000,
    ("send_many", 64): 1_500_000,
    ("raw", 1024): 120_000,
    ("send", 1024): 600_000,
    ("send_many", 1024): 1_000_000,
    ("raw", 16 * 1024): 80_000,
    ("raw", 256 * 1024): 10_000,
    ("coalesce", 64): 2_000_000,
    ("coalesce", 1024): 1_200_000,
    ("coalesce", 16 * 1024): 100_000,
    ("coalesce", 256 * 1024): 10_000,
    ("send", 256 * 1024): 6_000,
    ("send_many", 256 * 1024): 6_000,
    ("send", 16 * 1024): 100_000,
    ("send_many", 16 * 1024): 100_000,
}
#: (transport, case) -> factor on FULL_COUNTS, so that slower transports keep samples at
#: about 1-2 s too (1.0 where missing).
COUNT_FACTORS: Final = {
    ("tls", "raw"): 0.5,
    ("tls", "coalesce"): 0.5,
    ("tls", "send"): 0.5,
    ("tls", "send_many"): 0.5,
    ("ws", "raw"): 0.25,
    ("ws", "send"): 0.5,
    ("ws", "send_many"): 0.4,
    ("wss", "raw"): 0.2,
    ("wss", "send"): 0.35,
    ("wss", "send_many"): 0.3,
}
QUICK_DIVISOR: Final = 5
FULL_REPEATS: Final = 5
QUICK_REPEATS: Final = 3
FULL_ROUND_TRIPS: Final = 2000
QUICK_ROUND_TRIPS: Final = 500
LATENCY_WARMUP: Final = 200
LATENCY_SIZE: Final = 64
WARMUP_COUNT: Final = 5_000
#: ... and at most this many payload bytes per warm-up run (so 256 KiB warms up on 1000).
WARMUP_BYTES: Final = 32 * 1024 * 1024

BATCH: Final = 256
RECEIVE_MANY: Final = 4096
#: The raw receivers' receive_some size: the same as reliablelink's reader.
RAW_READ: Final = 256 * 1024
#: The coalescing raw sender calls send_all once this many bytes are buffered, or ...
COALESCE_BYTES: Final = 64 * 1024
#: ... once this many messages are buffered, whichever comes first.
COALESCE_COUNT: Final = 256
JOB_TIMEOUT: Final = 60.0
#: Seconds in all to spend waiting for an idle machine and retaking disturbed samples.
FULL_MAX_WAIT: Final = 120.0
QUICK_MAX_WAIT: Final = 20.0

#: In the working directory the parent creates: the trustme CA and the server's key + chain.
CA_FILE: Final = "ca.pem"
SERVER_FILE: Final = "server.pem"

LENGTH = struct.Struct(">I")
SEQ = struct.Struct(">Q")
#: A raw frame's head: the length prefix, then the payload's own counter.
RAW_HEAD = struct.Struct(">IQ")
#: Ends a raw stream that cannot half-close (TLS): a zero-length frame. No message is empty.
END_FRAME: Final = LENGTH.pack(0)

Role = Literal["receive", "send", "echo_server", "echo_client"]
Report = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Job:
    """One half of a measurement, run by one worker process."""

    role: Role
    transport: str
    case: str
    size: int
    count: int
    #: The parent's scratch directory: TLS files, Unix socket files.
    workdir: str
    #: Where the receiver listens, as a URL (filled in for the sending side).
    address: str = ""
    warmup: int = 0


class BenchFailure(Exception):
    """A job failed or a receiver did not get exactly what was sent."""


def case_label(transport: str, case: str) -> str:
    if case == "raw":
        return RAW_LABELS[transport]
    if case == "coalesce":
        return COALESCE_LABELS[transport]
    return CASE_LABELS[case]


def warmup_count(size: int) -> int:
    return max(1000, min(WARMUP_COUNT, WARMUP_BYTES // size))


def cases_for(transport: str) -> tuple[str, ...]:
    """The throughput cases measured over ``transport`` (no coalescing case for WebSocket)."""
    return tuple(c for c in THROUGHPUT_CASES if c != "coalesce" or transport in STREAM_TRANSPORTS)


def latency_label(transport: str, case: str) -> str:
    return RAW_LATENCY_LABELS[transport] if case == "raw" else LATENCY_LABELS[case]


# -- receiving-side bookkeeping --------------------------------------------------------


class Tally:
    """Counts received messages, checks their counters, and times first to N-th."""

    def __init__(self, expected: int, size: int) -> None:
        self.expected = expected
        self.size = size
        self.received = 0
        self.payload_bytes = 0
        self.batches = 0
        self.first_at = 0.0
        self.first_cpu = 0.0
        self.first_count = 0
        self.last_at = 0.0
        self.last_cpu = 0.0
        self.errors: list[str] = []

    def add(self, batch: list[bytes]) -> None:
        now = time.perf_counter()
        n = len(batch)
        if not n:
            return
        start = self.received
        unpack = SEQ.unpack_from
        seqs = [unpack(m)[0] for m in batch]
        if seqs != list(range(start, start + n)):
            bad = next(i for i, s in enumerate(seqs) if s != start + i)
            if len(self.errors) < 5:
                self.errors.append(f"message #{start + bad} carries counter {seqs[bad]}")
        self.payload_bytes += sum(map(len, batch))
        if self.batches == 0:
            self.first_at = now
            self.first_cpu = time.process_time()
            self.first_count = n
        self.batches += 1
        self.received = start + n
        if start < self.expected <= self.received:
            self.last_at = now
            self.last_cpu = time.process_time()

    def result(self) -> dict[str, Any]:
        errors = list(self.errors)
        if self.received != self.expected:
            errors.append(f"received {self.received} messages, expected exactly {self.expected}")
        if self.payload_bytes != self.received * self.size:
            errors.append(f"received {self.payload_bytes} payload bytes, expected {self.received * self.size}")
        timed = self.expected - self.first_count
        elapsed = self.last_at - self.first_at
        if not errors and (timed <= 0 or elapsed <= 0):
            errors.append(f"too few messages to time ({self.batches} batches): raise the count")
        return {
            "received": self.received,
            "batches": self.batches,
            "first_batch": self.first_count,
            "timed_messages": timed,
            "elapsed_s": elapsed,
            "cpu_s": self.last_cpu - self.first_cpu,
            "errors": errors,
        }


def split_frames(data: bytes | bytearray) -> tuple[list[bytes], int]:
    """Split length-prefixed frames; return the payloads (``bytes``) and the bytes consumed."""
    out: list[bytes] = []
    pos = 0
    end = len(data)
    unpack = LENGTH.unpack_from
    with memoryview(data) as view:
        while end - pos >= 4:
            (length,) = unpack(data, pos)
            stop = pos + 4 + length
            if stop > end:
                break
            out.append(bytes(view[pos + 4 : stop]))
            pos = stop
    return out, pos


class FrameBuffer:
    """Accumulates received chunks and splits complete frames out of them.

    A chunk that holds only whole frames is split in place; an incomplete frame's bytes
    are kept in a ``bytearray`` that later chunks are appended to (no quadratic copying
    for frames larger than one read).
    """

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self.buf
        if buf:
            buf += data
            msgs, used = split_frames(buf)
            del buf[:used]
            return msgs
        msgs, used = split_frames(data)
        if used < len(data):
            buf += data[used:]
        return msgs

    def __len__(self) -> int:
        return len(self.buf)


def payload(i: int, filler: bytes) -> bytes:
    return SEQ.pack(i) + filler


def fillers(size: int) -> bytes:
    if size < SEQ.size:
        raise ValueError(f"messages must hold the {SEQ.size}-byte counter, got size {size}")
    return b"\xa5" * (size - SEQ.size)


# -- transports: TLS contexts, raw streams, reliablelink URLs ---------------------------


def make_certificates(workdir: Path) -> dict[str, Any]:
    """A throwaway CA and a server certificate for HOST (an IP address SAN), as PEM files."""
    try:
        import trustme  # noqa: PLC0415 - needed only for tls:// and wss://
    except ImportError as exc:
        raise SystemExit(f"tls and wss need trustme in the environment: pip install trustme ({exc})") from None
    ca = trustme.CA()
    leaf = ca.issue_cert(HOST)
    ca.cert_pem.write_to_path(str(workdir / CA_FILE))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(workdir / SERVER_FILE))
    return {"made_with": "trustme", "key_type": "ECDSA, trustme's default", "identity": HOST}


@functools.cache
def server_context(workdir: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.path.join(workdir, SERVER_FILE))
    return context


@functools.cache
def client_context(workdir: str) -> ssl.SSLContext:
    # Trusts the benchmark's CA only; the hostname (the IP address) is checked as usual.
    return ssl.create_default_context(cafile=os.path.join(workdir, CA_FILE))


_socket_names = itertools.count()


def unix_path(job: Job) -> str:
    return os.path.join(job.workdir, f"{job.case}-{os.getpid()}-{next(_socket_names)}.sock")


async def raw_accept(job: Job, report: Report) -> trio.abc.Stream:
    """Listen, report the address, accept one connection (and do the TLS handshake)."""
    path = ""
    if job.transport == "unix":
        path = unix_path(job)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(1)
        listener = trio.SocketListener(sock)
        address = f"unix://{path}"
    else:
        listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
        address = f"{job.transport}://{HOST}:{listener.socket.getsockname()[1]}"
    report(address)
    async with listener:
        stream: trio.abc.Stream = await listener.accept()
    if path:
        os.unlink(path)
    if job.transport == "tls":
        tls = trio.SSLStream(stream, server_context(job.workdir), server_side=True)
        await tls.do_handshake()
        stream = tls
    return stream


async def raw_connect(job: Job) -> trio.abc.Stream:
    """Connect to the raw receiver (and do the TLS handshake)."""
    parts = urlsplit(job.address)
    if job.transport == "unix":
        return await trio.open_unix_socket(parts.path)
    if parts.hostname is None or parts.port is None:
        raise BenchFailure(f"bad address {job.address!r}")
    tcp = await trio.open_tcp_stream(parts.hostname, parts.port)
    if job.transport != "tls":
        return tcp
    tls = trio.SSLStream(tcp, client_context(job.workdir), server_hostname=parts.hostname)
    await tls.do_handshake()
    return tls


async def raw_finish(stream: trio.abc.Stream) -> None:
    """Tell the peer that nothing more comes, then wait until it has closed.

    A half-closeable stream (TCP, Unix) sends EOF; TLS cannot half-close, so it sends the
    zero-length END_FRAME and the receiver closes when it sees it.
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    else:
        await stream.send_all(END_FRAME)
    while await stream.receive_some(RAW_READ):
        pass


def tls_info(stream: trio.abc.Stream) -> dict[str, Any]:
    if isinstance(stream, trio.SSLStream):
        cipher = stream.cipher()
        return {"tls_version": stream.version(), "tls_cipher": cipher[0] if cipher else None}
    return {}


def rl_listen_url(job: Job) -> str:
    if job.transport == "unix":
        return f"unix://{unix_path(job)}"
    return f"{job.transport}://{HOST}:0{WS_PATH if job.transport in WS_TRANSPORTS else ''}"


def rl_server_options(job: Job) -> dict[str, Any]:
    return {"ssl_context": server_context(job.workdir)} if job.transport in TLS_TRANSPORTS else {}


def rl_client_options(job: Job) -> dict[str, Any]:
    return {"ssl_context": client_context(job.workdir)} if job.transport in TLS_TRANSPORTS else {}


def ws_client_context(job: Job) -> ssl.SSLContext | None:
    return client_context(job.workdir) if job.transport == "wss" else None


def ws_server_context(job: Job) -> ssl.SSLContext | None:
    return server_context(job.workdir) if job.transport == "wss" else None


# -- throughput: receivers -------------------------------------------------------------


async def raw_receiver(job: Job, report: Report) -> dict[str, Any]:
    stream = await raw_accept(job, report)
    tally = Tally(job.count, job.size)
    frames = FrameBuffer()
    ended = False
    async with stream:
        while not ended:
            data = cast("bytes", await stream.receive_some(RAW_READ))  # SocketStream, SSLStream: bytes
            if not data:
                break
            msgs = frames.feed(data)
            if msgs and not msgs[-1]:  # END_FRAME: no message is empty
                msgs.pop()
                ended = True
            tally.add(msgs)
    result = tally.result()
    if frames:
        result["errors"].append(f"{len(frames)} bytes of an incomplete frame (or after the end) at the end")
    return result


async def ws_raw_receiver(job: Job, report: Report) -> dict[str, Any]:
    import trio_websocket  # noqa: PLC0415 - optional, needed only for ws:// and wss://

    tally = Tally(job.count, job.size)
    done = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        try:
            ws = await request.accept()
            add = tally.add
            while True:
                message = await ws.get_message()
                if not isinstance(message, bytes):
                    raise BenchFailure("got a text message")
                add([message])
        except trio_websocket.ConnectionClosed:
            pass
        except Exception as exc:
            tally.errors.append(f"handler: {exc!r}")
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_websocket.serve_websocket, handler, HOST, 0, ws_server_context(job))
        )
        report(f"{job.transport}://{HOST}:{server.port}{WS_PATH}")
        await done.wait()
        nursery.cancel_scope.cancel()
    return tally.result()


async def rl_receiver(job: Job, report: Report) -> dict[str, Any]:
    tally = Tally(job.count, job.size)
    done = trio.Event()

    async def handler(session: reliablelink.Session) -> None:
        try:
            while True:
                tally.add(await session.receive_many(max_count=RECEIVE_MANY))
        except reliablelink.SessionClosed:
            pass
        except Exception as exc:
            tally.errors.append(f"handler: {exc!r}")
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                reliablelink.serve, handler, rl_listen_url(job), keys={CLIENT_ID: KEY}, **rl_server_options(job)
            )
        )
        report(server.url)
        await done.wait()
        # Let the session finish (its CLOSE reply flushed) before the server is cancelled.
        await wait_sessions_gone(server)
        nursery.cancel_scope.cancel()
    return tally.result()


async def wait_sessions_gone(server: reliablelink.Server) -> None:
    with trio.move_on_after(5):
        while server.sessions:  # noqa: ASYNC110 - the Server offers nothing to wait on
            await trio.sleep(0.001)


# -- throughput: senders ---------------------------------------------------------------


async def raw_sender(job: Job) -> dict[str, Any]:
    filler = fillers(job.size)
    pack = RAW_HEAD.pack
    stream = await raw_connect(job)
    async with stream:
        began = time.perf_counter()
        cpu = time.process_time()
        send_all = stream.send_all
        for i in range(job.count):
            await send_all(pack(job.size, i) + filler)
        sent = time.perf_counter()
        cpu = time.process_time() - cpu
        await raw_finish(stream)
        info = tls_info(stream)
    return {"send_s": sent - began, "send_cpu_s": cpu, "total_s": time.perf_counter() - began, **info}


async def raw_coalescing_sender(job: Job) -> dict[str, Any]:
    """Frames appended to one buffer; one send_all per COALESCE_BYTES or COALESCE_COUNT messages."""
    filler = fillers(job.size)
    pack = RAW_HEAD.pack
    stream = await raw_connect(job)
    writes = 0
    async with stream:
        began = time.perf_counter()
        cpu = time.process_time()
        send_all = stream.send_all
        buf = bytearray()
        pending = 0
        for i in range(job.count):
            buf += pack(job.size, i)
            buf += filler
            pending += 1
            if pending >= COALESCE_COUNT or len(buf) >= COALESCE_BYTES:
                await send_all(buf)
                writes += 1
                buf.clear()
                pending = 0
        if buf:
            await send_all(buf)
            writes += 1
        sent = time.perf_counter()
        cpu = time.process_time() - cpu
        await raw_finish(stream)
        info = tls_info(stream)
    return {"send_s": sent - began, "send_cpu_s": cpu, "total_s": time.perf_counter() - began, "writes": writes, **info}


async def ws_raw_sender(job: Job) -> dict[str, Any]:
    import trio_websocket  # noqa: PLC0415 - optional, needed only for ws:// and wss://

    filler = fillers(job.size)
    pack = SEQ.pack
    async with trio_websocket.open_websocket_url(job.address, ssl_context=ws_client_context(job)) as ws:
        began = time.perf_counter()
        cpu = time.process_time()
        send = ws.send_message
        for i in range(job.count):
            await send(pack(i) + filler)
        sent = time.perf_counter()
        cpu = time.process_time() - cpu
    # Leaving the block did the WebSocket closing handshake: the receiver has read everything.
    return {"send_s": sent - began, "send_cpu_s": cpu, "total_s": time.perf_counter() - began}


async def rl_sender(job: Job) -> dict[str, Any]:
    filler = fillers(job.size)
    pack = SEQ.pack
    async with reliablelink.connect(job.address, client_id=CLIENT_ID, key=KEY, **rl_client_options(job)) as session:
        began = time.perf_counter()
        cpu = time.process_time()
        if job.case == "send":
            send = session.send
            for i in range(job.count):
                await send(pack(i) + filler)
        else:
            for start in range(0, job.count, BATCH):
                await session.send_many([pack(i) + filler for i in range(start, min(job.count, start + BATCH))])
        sent = time.perf_counter()
        cpu = time.process_time() - cpu
        await session.drain()
        drained = time.perf_counter()
        stats = session.stats
    closed = time.perf_counter()
    return {
        "send_s": sent - began,
        "send_cpu_s": cpu,
        "drain_s": drained - sent,
        "close_s": closed - drained,
        "total_s": closed - began,
        "stats": {"sent": stats.sent, "acked": stats.acked, "resent": stats.resent, "reconnects": stats.reconnects},
    }


# -- latency ---------------------------------------------------------------------------


async def raw_echo_server(job: Job, report: Report) -> dict[str, Any]:
    stream = await raw_accept(job, report)
    echoed = 0
    frames = FrameBuffer()
    ended = False
    async with stream:
        while not ended:
            data = cast("bytes", await stream.receive_some(RAW_READ))  # SocketStream, SSLStream: bytes
            if not data:
                break
            msgs = frames.feed(data)
            if msgs and not msgs[-1]:  # END_FRAME
                msgs.pop()
                ended = True
            for m in msgs:
                await stream.send_all(LENGTH.pack(len(m)) + m)
            echoed += len(msgs)
    errors = [] if echoed == job.count else [f"echoed {echoed} messages, expected {job.count}"]
    return {"echoed": echoed, "errors": errors}


async def ws_raw_echo_server(job: Job, report: Report) -> dict[str, Any]:
    import trio_websocket  # noqa: PLC0415 - optional, needed only for ws:// and wss://

    echoed = 0
    errors: list[str] = []
    done = trio.Event()

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        nonlocal echoed
        try:
            ws = await request.accept()
            while True:
                await ws.send_message(await ws.get_message())
                echoed += 1
        except trio_websocket.ConnectionClosed:
            pass
        except Exception as exc:
            errors.append(f"handler: {exc!r}")
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_websocket.serve_websocket, handler, HOST, 0, ws_server_context(job))
        )
        report(f"{job.transport}://{HOST}:{server.port}{WS_PATH}")
        await done.wait()
        nursery.cancel_scope.cancel()
    if echoed != job.count:
        errors.append(f"echoed {echoed} messages, expected {job.count}")
    return {"echoed": echoed, "errors": errors}


async def rl_echo_server(job: Job, report: Report) -> dict[str, Any]:
    echoed = 0
    errors: list[str] = []
    done = trio.Event()

    async def handler(session: reliablelink.Session) -> None:
        nonlocal echoed
        try:
            async for msg in session:
                await session.send(msg)
                echoed += 1
        except Exception as exc:
            errors.append(f"handler: {exc!r}")
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                reliablelink.serve, handler, rl_listen_url(job), keys={CLIENT_ID: KEY}, **rl_server_options(job)
            )
        )
        report(server.url)
        await done.wait()
        await wait_sessions_gone(server)
        nursery.cancel_scope.cancel()
    if echoed != job.count:
        errors.append(f"echoed {echoed} messages, expected {job.count}")
    return {"echoed": echoed, "errors": errors}


async def raw_echo_client(job: Job) -> dict[str, Any]:
    filler = fillers(job.size)
    rtts: list[float] = []
    errors: list[str] = []
    stream = await raw_connect(job)
    async with stream:
        frames = FrameBuffer()
        for i in range(job.count):
            frame = RAW_HEAD.pack(job.size, i) + filler
            began = time.perf_counter_ns()
            await stream.send_all(frame)
            msgs: list[bytes] = []
            while not msgs:
                data = cast("bytes", await stream.receive_some(RAW_READ))  # SocketStream, SSLStream: bytes
                if not data:
                    raise BenchFailure("the echo server closed the connection")
                msgs = frames.feed(data)
            ended = time.perf_counter_ns()
            if len(msgs) != 1 or frames or msgs[0] != frame[4:]:
                errors.append(f"round trip {i}: wrong echo")
                break
            if i >= job.warmup:
                rtts.append((ended - began) / 1000)
        await raw_finish(stream)
    return {"rtts_us": rtts, "errors": errors}


async def ws_raw_echo_client(job: Job) -> dict[str, Any]:
    import trio_websocket  # noqa: PLC0415 - optional, needed only for ws:// and wss://

    filler = fillers(job.size)
    rtts: list[float] = []
    errors: list[str] = []
    async with trio_websocket.open_websocket_url(job.address, ssl_context=ws_client_context(job)) as ws:
        for i in range(job.count):
            msg = payload(i, filler)
            began = time.perf_counter_ns()
            await ws.send_message(msg)
            reply = await ws.get_message()
            ended = time.perf_counter_ns()
            if reply != msg:
                errors.append(f"round trip {i}: wrong echo")
                break
            if i >= job.warmup:
                rtts.append((ended - began) / 1000)
    return {"rtts_us": rtts, "errors": errors}


async def rl_echo_client(job: Job) -> dict[str, Any]:
    filler = fillers(job.size)
    rtts: list[float] = []
    errors: list[str] = []
    async with reliablelink.connect(job.address, client_id=CLIENT_ID, key=KEY, **rl_client_options(job)) as session:
        for i in range(job.count):
            msg = payload(i, filler)
            began = time.perf_counter_ns()
            await session.send(msg)
            reply = await session.receive()
            ended = time.perf_counter_ns()
            if reply != msg:
                errors.append(f"round trip {i}: wrong echo")
                break
            if i >= job.warmup:
                rtts.append((ended - began) / 1000)
    return {"rtts_us": rtts, "errors": errors}


# -- worker processes ------------------------------------------------------------------

#: (role, implementation) -> job function; the implementation is "rl" for reliablelink
#: cases, "ws" for the raw case over ws/wss (trio-websocket), "raw" for the other raw cases.
RECEIVERS: Final[dict[tuple[Role, str], Callable[[Job, Report], Awaitable[dict[str, Any]]]]] = {
    ("receive", "raw"): raw_receiver,
    ("receive", "coalesce"): raw_receiver,
    ("receive", "ws"): ws_raw_receiver,
    ("receive", "rl"): rl_receiver,
    ("echo_server", "raw"): raw_echo_server,
    ("echo_server", "ws"): ws_raw_echo_server,
    ("echo_server", "rl"): rl_echo_server,
}
SENDERS: Final[dict[tuple[Role, str], Callable[[Job], Awaitable[dict[str, Any]]]]] = {
    ("send", "raw"): raw_sender,
    ("send", "coalesce"): raw_coalescing_sender,
    ("send", "ws"): ws_raw_sender,
    ("send", "rl"): rl_sender,
    ("echo_client", "raw"): raw_echo_client,
    ("echo_client", "ws"): ws_raw_echo_client,
    ("echo_client", "rl"): rl_echo_client,
}


def implementation(job: Job) -> str:
    if job.case == "coalesce":
        return "coalesce"
    if job.case != "raw":
        return "rl"
    return "ws" if job.transport in WS_TRANSPORTS else "raw"


async def run_job(job: Job, conn: Connection) -> dict[str, Any]:
    with trio.fail_after(JOB_TIMEOUT):
        key = (job.role, implementation(job))
        if key in RECEIVERS:
            return await RECEIVERS[key](job, lambda address: conn.send(("address", address)))
        return await SENDERS[key](job)


def worker_main(conn: Connection) -> None:
    """Run jobs from the parent until it sends ``None``; answer each with ("ok" | "error", ...)."""
    while True:
        job = conn.recv()
        if job is None:
            return
        gc.collect()
        try:
            result = trio.run(run_job, job, conn)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", result))


class Worker:
    """A spawned worker process and the parent's end of its pipe."""

    def __init__(self, name: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child,), name=name, daemon=True)
        self.process.start()
        child.close()

    def submit(self, job: Job) -> None:
        self.conn.send(job)

    def receive(self, timeout: float) -> tuple[str, Any]:
        if not self.conn.poll(timeout):
            raise BenchFailure(f"worker {self.process.name} sent nothing for {timeout:.0f} s")
        try:
            message: tuple[str, Any] = self.conn.recv()
        except EOFError as exc:
            raise BenchFailure(f"worker {self.process.name} died (exit code {self.process.exitcode})") from exc
        return message

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.conn.close()


class Pair:
    """The receiving (server) worker and the sending (client) worker."""

    def __init__(self) -> None:
        self.rx, self.tx = self._spawn()

    @staticmethod
    def _spawn() -> tuple[Worker, Worker]:
        return Worker("bench-receiver"), Worker("bench-sender")

    def run(self, server_job: Job, client_job: Job) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run one measurement; on any failure restart both workers and raise BenchFailure."""
        try:
            self.rx.submit(server_job)
            kind, value = self.rx.receive(JOB_TIMEOUT)
            if kind != "address":
                raise BenchFailure(f"receiver failed before listening:\n{value}")
            self.tx.submit(replace(client_job, address=value))
            tx_kind, tx_value = self.tx.receive(JOB_TIMEOUT + 10)
            if tx_kind != "ok":
                # The receiver may wait for a connection until its timeout: restart it now.
                raise BenchFailure(f"sender failed:\n{tx_value}")
            rx_kind, rx_value = self.rx.receive(JOB_TIMEOUT + 10)
            if rx_kind != "ok":
                raise BenchFailure(f"receiver failed:\n{rx_value}")
            return rx_value, tx_value
        except BenchFailure:
            self.restart()
            raise

    def restart(self) -> None:
        for w in (self.rx, self.tx):
            w.process.terminate()
            w.stop()
        self.rx, self.tx = self._spawn()

    def stop(self) -> None:
        self.rx.stop()
        self.tx.stop()

    def cpu(self) -> float | None:
        """CPU seconds used so far by both workers (Linux), or ``None``."""
        rx, tx = process_cpu(self.rx.process.pid), process_cpu(self.tx.process.pid)
        return None if rx is None or tx is None else rx + tx


# -- measurements ----------------------------------------------------------------------


def fail_loudly(what: str, errors: Iterable[str]) -> str:
    text = f"{what}: " + "; ".join(errors)
    print(f"\n!!!!!! BENCHMARK FAILURE !!!!!! {text}\n", file=sys.stderr, flush=True)
    return text


def measure_throughput(pair: Pair, workdir: str, *, transport: str, case: str, size: int, count: int) -> dict[str, Any]:
    sample: dict[str, Any] = {"transport": transport, "case": case, "size": size, "messages": count, "ok": False}
    what = f"{transport} {case} {size} B"
    try:
        rx, tx = pair.run(
            Job("receive", transport, case, size, count, workdir), Job("send", transport, case, size, count, workdir)
        )
    except BenchFailure as exc:
        sample["error"] = fail_loudly(what, [str(exc)])
        return sample
    sample["receiver"] = rx
    sample["sender"] = tx
    errors = list(rx["errors"])
    stats = tx.get("stats")
    if stats and (stats["sent"] != count or stats["acked"] != count):
        errors.append(f"sender stats {stats}, expected {count} sent and acknowledged")
    if errors:
        sample["error"] = fail_loudly(what, errors)
        return sample
    rate = rx["timed_messages"] / rx["elapsed_s"]
    sample.update(
        ok=True,
        msgs_per_s=rate,
        mb_per_s=rate * size / 1e6,
        elapsed_s=rx["elapsed_s"],
        receiver_cpu=rx["cpu_s"] / rx["elapsed_s"],
        sender_cpu=tx["send_cpu_s"] / tx["send_s"],
    )
    return sample


def measure_latency(pair: Pair, workdir: str, *, transport: str, case: str, rounds: int, warmup: int) -> dict[str, Any]:
    total = rounds + warmup
    sample: dict[str, Any] = {
        "transport": transport,
        "case": case,
        "size": LATENCY_SIZE,
        "round_trips": rounds,
        "ok": False,
    }
    what = f"latency {transport} {case}"
    try:
        rx, tx = pair.run(
            Job("echo_server", transport, case, LATENCY_SIZE, total, workdir),
            Job("echo_client", transport, case, LATENCY_SIZE, total, workdir, warmup=warmup),
        )
    except BenchFailure as exc:
        sample["error"] = fail_loudly(what, [str(exc)])
        return sample
    errors = rx["errors"] + tx["errors"]
    rtts: list[float] = tx["rtts_us"]
    if not errors and len(rtts) != rounds:
        errors.append(f"{len(rtts)} round trips timed, expected {rounds}")
    if errors:
        sample["error"] = fail_loudly(what, errors)
        return sample
    ordered = sorted(rtts)
    sample.update(
        ok=True,
        p50_us=percentile(ordered, 50),
        p99_us=percentile(ordered, 99),
        p999_us=percentile(ordered, 99.9),
        mean_us=statistics.fmean(rtts),
        rtts_us=[round(r, 2) for r in rtts],
    )
    return sample


# -- summaries and output --------------------------------------------------------------


def summarize(
    samples: list[dict[str, Any]], latency: list[dict[str, Any]], transports: Sequence[str], sizes: Sequence[int]
) -> dict[str, Any]:
    """Medians and ratios; every ratio is against the raw case of the same transport (and size)."""
    throughput: list[dict[str, Any]] = []
    for transport in transports:
        for size in sizes:
            base: float | None = None
            coalesced: float | None = None
            for case in cases_for(transport):
                mine = [s for s in samples if s["transport"] == transport and s["case"] == case and s["size"] == size]
                ok = [s for s in mine if s["ok"]]
                row: dict[str, Any] = {
                    "transport": transport,
                    "case": case,
                    "size": size,
                    "samples": len(ok),
                    "failed": len(mine) - len(ok),
                }
                if ok:
                    rates = [s["msgs_per_s"] for s in ok]
                    row.update(
                        messages=ok[0]["messages"],
                        median_msgs_per_s=statistics.median(rates),
                        median_mb_per_s=statistics.median(rates) * size / 1e6,
                        min_msgs_per_s=min(rates),
                        max_msgs_per_s=max(rates),
                        median_receiver_cpu=statistics.median(s["receiver_cpu"] for s in ok),
                        median_sender_cpu=statistics.median(s["sender_cpu"] for s in ok),
                    )
                    if case == "raw":
                        base = row["median_msgs_per_s"]
                    elif case == "coalesce":
                        coalesced = row["median_msgs_per_s"]
                    row["ratio_vs_raw"] = row["median_msgs_per_s"] / base if base else None
                    row["ratio_vs_coalesce"] = row["median_msgs_per_s"] / coalesced if coalesced else None
                throughput.append(row)
    lat: list[dict[str, Any]] = []
    for transport in transports:
        base_p50: float | None = None
        base_p99: float | None = None
        base_p999: float | None = None
        for case in LATENCY_CASES:
            mine = [s for s in latency if s["transport"] == transport and s["case"] == case]
            ok = [s for s in mine if s["ok"]]
            row = {
                "transport": transport,
                "case": case,
                "size": LATENCY_SIZE,
                "samples": len(ok),
                "failed": len(mine) - len(ok),
            }
            if ok:
                pooled = sorted(r for s in ok for r in s["rtts_us"])
                p50s = [s["p50_us"] for s in ok]
                row.update(
                    round_trips=len(pooled),
                    p50_us=percentile(pooled, 50),
                    p99_us=percentile(pooled, 99),
                    p999_us=percentile(pooled, 99.9),
                    min_p50_us=min(p50s),
                    max_p50_us=max(p50s),
                )
                if case == "raw":
                    base_p50, base_p99, base_p999 = row["p50_us"], row["p99_us"], row["p999_us"]
                row["p50_ratio_vs_raw"] = row["p50_us"] / base_p50 if base_p50 else None
                row["p99_ratio_vs_raw"] = row["p99_us"] / base_p99 if base_p99 else None
                row["p999_ratio_vs_raw"] = row["p999_us"] / base_p999 if base_p999 else None
            lat.append(row)
    return {"throughput": throughput, "latency": lat}


def markdown(summary: dict[str, Any], info: dict[str, Any], config: dict[str, Any]) -> str:
    """The report. The default run (TCP only) keeps its original layout; a --transports
    run gets a transport column, a ratio summary first, and the packages used."""
    per_transport: bool = config["per_transport"]
    col = "| transport " if per_transport else ""
    sep = "|---" if per_transport else ""
    lines: list[str] = []
    if per_transport:
        lines += ratio_table(summary, config)
        where = "loopback TCP; unix: a Unix socket"
        lines.append(f"## Throughput per transport (one way, {where}; sender and receiver in separate processes)")
    else:
        lines.append("## Throughput (one way, loopback TCP, sender and receiver in separate processes)")
    vs = "vs raw (same transport)" if per_transport else "vs raw Trio"
    lines += [
        "",
        f"{config['repeats']} samples per row, cases and sizes interleaved. Rates are measured on the receiver, "
        "first to last message; MB = 10^6 payload bytes. CPU = share of one core used by the receiving / "
        "sending process while the messages flowed.",
        "",
        f"{col}| case | size | median msgs/s | median MB/s | min\u2013max msgs/s | {vs} | vs coalescing "
        "| msgs/sample | CPU recv / send |",
        f"{sep}|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["throughput"]:
        first = f"| {row['transport']} " if per_transport else ""
        label = case_label(row["transport"], row["case"])
        if "median_msgs_per_s" not in row:
            lines.append(f"{first}| {label} | {size_label(row['size'])} | FAILED | | | | | | |")
            continue
        lines.append(
            f"{first}| {label} | {size_label(row['size'])} | {row['median_msgs_per_s']:,.0f} "
            f"| {row['median_mb_per_s']:,.1f} "
            f"| {row['min_msgs_per_s']:,.0f}{DASH}{row['max_msgs_per_s']:,.0f} | {ratio_text(row['ratio_vs_raw'])} "
            f"| {ratio_text(row.get('ratio_vs_coalesce'))} | {row['messages']:,} "
            f"| {row['median_receiver_cpu']:.0%} / {row['median_sender_cpu']:.0%} |"
        )
    vs = "raw (same transport)" if per_transport else "raw Trio"
    lines += [
        "",
        f"## Echo latency ({LATENCY_SIZE} B, one message in flight, client and echo server in separate processes)",
        "",
        f"{config['repeats']} runs of {config['round_trips']:,} round trips each (after {LATENCY_WARMUP} warm-up "
        "round trips per run), pooled.",
        "",
        f"{col}| case | round trips | p50 \u00b5s | p99 \u00b5s | p99.9 \u00b5s | p50 min\u2013max over runs "
        f"| p50 vs {vs} | p99 vs {vs} | p99.9 vs {vs} |",
        f"{sep}|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary["latency"]:
        first = f"| {row['transport']} " if per_transport else ""
        label = latency_label(row["transport"], row["case"])
        if "p50_us" not in row:
            lines.append(f"{first}| {label} | FAILED | | | | | | | |")
            continue
        lines.append(
            f"{first}| {label} | {row['round_trips']:,} | {row['p50_us']:.1f} | {row['p99_us']:.1f} "
            f"| {row['p999_us']:.1f} | {row['min_p50_us']:.1f}{DASH}{row['max_p50_us']:.1f} "
            f"| {ratio_text(row['p50_ratio_vs_raw'])} | {ratio_text(row['p99_ratio_vs_raw'])} "
            f"| {ratio_text(row['p999_ratio_vs_raw'])} |"
        )
    lines += [
        "",
        f"Machine: {info['platform']}, {info['cpu_count']} CPUs, Python {info['python']}, Trio {info['trio']}, "
        f"reliablelink {info['reliablelink']} ({info['git']}).",
    ]
    if per_transport:
        packages = ", ".join(f"{name} {version or 'not installed'}" for name, version in info["packages"].items())
        lines.append(f"Also: {packages}; {info['openssl']}.")
        tls = config.get("tls")
        if tls:
            negotiated = tls.get("negotiated") or "not recorded"
            lines.append(
                f"TLS (tls and wss, raw and reliablelink alike): a certificate for {tls['identity']} "
                f"({tls['key_type']}) from a throwaway {tls['made_with']} CA, default client and server contexts; "
                f"negotiated {negotiated}."
            )
    lines.append(
        f"Mode: {'quick' if config['quick'] else 'full'}; started {info['started']}, took {info['duration_s']:.0f} s. "
        f"Command: `{config['command']}`."
    )
    noise = info["noise"]
    if noise["max_background_cores"] is None:
        lines.append("CPU use by other processes was not measured (needs Linux /proc).")
    else:
        lines.append(
            f"Other processes' CPU use during the kept samples: median {noise['median_background_cores']:.0%}, "
            f"max {noise['max_background_cores']:.0%} of a core; {noise['discarded']} noisy sample(s) retaken, "
            f"{noise['waited_s']:.0f} s spent waiting for an idle machine."
        )
        if noise["noisy_kept"]:
            lines += [
                "",
                f"**Warning: {noise['noisy_kept']} of {noise['kept']} samples were taken while other processes used "
                f"more than {NOISY:.0%} of a core; those numbers are disturbed. Rerun on a quiet machine.**",
            ]
    return "\n".join(lines) + "\n"


def ratio_table(summary: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """One row per transport: reliablelink against that transport's raw baseline."""
    sizes: list[int] = config["sizes"]
    head = "| transport | raw baseline |"
    rule = "|---|---|"
    for size in sizes:
        head += f" send() {size_label(size)} | send_many {size_label(size)} |"
        rule += "---:|---:|"
    head += " p50 latency | p99 latency |"
    rule += "---:|---:|"
    lines = [
        "## reliablelink vs raw, per transport",
        "",
        "Throughput: reliablelink's median msgs/s \u00f7 the raw baseline's, same transport and size "
        "(above 1: reliablelink faster). Latency: reliablelink's 64 B echo p50 / p99 \u00f7 the raw "
        "baseline's (above 1: reliablelink slower). Details below.",
        "",
        head,
        rule,
    ]
    rows = {(r["transport"], r["case"], r["size"]): r for r in summary["throughput"]}
    lat = {(r["transport"], r["case"]): r for r in summary["latency"]}
    for transport in config["transports"]:
        line = f"| {transport} | {RAW_SHORT[transport]} |"
        for size in sizes:
            for case in ("send", "send_many"):
                line += f" {ratio_text(rows.get((transport, case, size), {}).get('ratio_vs_raw'))} |"
        rl = lat.get((transport, "reliablelink"), {})
        raw = lat.get((transport, "raw"), {})
        for q in ("p50", "p99"):
            if f"{q}_us" in rl and f"{q}_us" in raw:
                line += (
                    f" {ratio_text(rl[f'{q}_ratio_vs_raw'])} ({rl[f'{q}_us']:.0f} vs {raw[f'{q}_us']:.0f} \u00b5s) |"
                )
            else:
                line += " n/a |"
        lines.append(line)
    return [*lines, ""]


# -- main ------------------------------------------------------------------------------


def parse_transports(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of transports, in the canonical order."""
    names = {t.strip().lower() for t in text.split(",") if t.strip()}
    if "all" in names:
        return TRANSPORTS
    unknown = names - set(TRANSPORTS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown transport(s) {', '.join(sorted(unknown)) or '(none)'}; choose from {', '.join(TRANSPORTS)} or all"
        )
    return tuple(t for t in TRANSPORTS if t in names)


def parse_sizes(text: str) -> tuple[int, ...]:
    """A comma-separated list of message sizes among SIZES: ``64,1024,16384`` or ``64B,1KiB,16KiB``."""
    sizes: set[int] = set()
    for part in text.split(","):
        word = part.strip().lower().replace(" ", "")
        factor = 1
        for suffix, scale in (("kib", 1024), ("k", 1024), ("b", 1)):
            if word.endswith(suffix):
                word, factor = word.removesuffix(suffix), scale
                break
        try:
            size = int(word) * factor
        except ValueError:
            size = -1
        if size not in SIZES:
            choices = ", ".join(size_label(s) for s in SIZES)
            raise argparse.ArgumentTypeError(f"unsupported size {part.strip()!r}; choose from {choices}")
        sizes.add(size)
    return tuple(sorted(sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and repeats (well under a minute)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output directory"
    )
    parser.add_argument(
        "--transports",
        type=parse_transports,
        help="comma-separated transports among tcp, tls, ws, wss, unix, or 'all'. Without this option the "
        "benchmark runs over TCP only and writes throughput.{json,md}; with it, it compares each transport "
        "with its raw baseline and writes transports.{json,md}",
    )
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        help="comma-separated throughput message sizes among 64, 1024 (1KiB), 16384 (16KiB), 262144 (256KiB); "
        "default all four, "
        "or 1 KiB only with --transports",
    )
    parser.add_argument("--repeats", type=int, help="samples per case (default 5, or 3 with --quick; at least 3)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the message counts by this factor")
    parser.add_argument(
        "--retries", type=int, default=3, help="times a sample disturbed by other processes is taken again (default 3)"
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        help="seconds in all to spend waiting for an idle machine and retaking disturbed samples "
        "(default 120, or 20 with --quick)",
    )
    args = parser.parse_args(argv)

    per_transport = args.transports is not None
    transports: tuple[str, ...] = args.transports or DEFAULT_TRANSPORTS
    sizes: tuple[int, ...] = args.sizes or (PER_TRANSPORT_SIZES if per_transport else SIZES)
    stem = "transports" if per_transport else "throughput"
    repeats = args.repeats or (QUICK_REPEATS if args.quick else FULL_REPEATS)
    if repeats < 3:
        parser.error("--repeats must be at least 3")
    if WS_TRANSPORTS & set(transports) and package_version("trio-websocket") is None:
        parser.error("the raw ws/wss baseline needs trio-websocket: pip install trio-websocket")
    if WS_TRANSPORTS & set(transports) and package_version("wsproto") is None:
        parser.error("ws:// and wss:// need reliablelink's [ws] extra: pip install 'reliablelink[ws]'")
    divisor = QUICK_DIVISOR if args.quick else 1
    counts = {
        (t, c, z): max(1000, int(n * COUNT_FACTORS.get((t, c), 1.0) * args.scale) // divisor)
        for t in transports
        for (c, z), n in FULL_COUNTS.items()
        if z in sizes
    }
    rounds = QUICK_ROUND_TRIPS if args.quick else FULL_ROUND_TRIPS
    max_wait = args.max_wait if args.max_wait is not None else (QUICK_MAX_WAIT if args.quick else FULL_MAX_WAIT)
    workdir = Path(tempfile.mkdtemp(prefix="rlbench-"))
    config: dict[str, Any] = {
        "quick": args.quick,
        "per_transport": per_transport,
        "transports": list(transports),
        "sizes": list(sizes),
        "repeats": repeats,
        "counts": [{"transport": t, "case": c, "size": z, "messages": n} for (t, c, z), n in counts.items()],
        "round_trips": rounds,
        "latency_warmup": LATENCY_WARMUP,
        "send_many_batch": BATCH,
        "receive_many_max_count": RECEIVE_MANY,
        "raw_receive_some": RAW_READ,
        "raw_baselines": {t: RAW_BASELINES[t] for t in transports},
        "noise_retries": args.retries,
        "noise_max_wait_s": max_wait,
        "command": shlex.join(["python", *sys.argv]),
    }
    info = machine_info()
    if info["loadavg_before"] and info["loadavg_before"][0] > NOISY * 5:
        print(f"note: load average is {info['loadavg_before'][0]:.2f}; the machine may not be idle", file=sys.stderr)
    began = time.perf_counter()
    samples: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    warmup_failures: list[str] = []
    guard = NoiseGuard(max_wait, args.retries)
    discarded: list[dict[str, Any]] = []
    pair: Pair | None = None
    work = str(workdir)
    try:
        if TLS_TRANSPORTS & set(transports):
            config["tls"] = make_certificates(workdir)
        pair = Pair()
        print(
            f"warming up ({len(sizes) * sum(len(cases_for(t)) for t in transports)} short runs, discarded)...",
            flush=True,
        )
        for transport in transports:
            for size in sizes:
                for case in cases_for(transport):
                    s = measure_throughput(
                        pair, work, transport=transport, case=case, size=size, count=warmup_count(size)
                    )
                    if not s["ok"]:
                        warmup_failures.append(s["error"])
                    elif "tls_version" in s["sender"]:
                        config["tls"]["negotiated"] = f"{s['sender']['tls_version']} {s['sender']['tls_cipher']}"
        for rep in range(repeats):
            # Rotate every order each round, so no transport, size or case always runs first or
            # right after another.
            for transport in rotated(transports, rep):
                name = f"{transport} " if per_transport else ""
                for size in rotated(sizes, rep):
                    for case in rotated(cases_for(transport), rep):
                        count = counts[transport, case, size]
                        s, noisy = guard.run(
                            pair,
                            functools.partial(
                                measure_throughput, pair, work, transport=transport, case=case, size=size, count=count
                            ),
                        )
                        s["repeat"] = rep
                        samples.append(s)
                        discarded += noisy
                        shown = f"{s['msgs_per_s']:>12,.0f} msgs/s {s['mb_per_s']:>9,.1f} MB/s" if s["ok"] else "FAILED"
                        label = name + case_label(transport, case)
                        print(f"[{rep + 1}/{repeats}] {label:<60} {size_label(size):>6}: {shown}", flush=True)
                for case in rotated(LATENCY_CASES, rep):
                    s, noisy = guard.run(
                        pair,
                        functools.partial(
                            measure_latency,
                            pair,
                            work,
                            transport=transport,
                            case=case,
                            rounds=rounds,
                            warmup=LATENCY_WARMUP,
                        ),
                    )
                    s["repeat"] = rep
                    latency.append(s)
                    discarded += noisy
                    shown = f"p50 {s['p50_us']:7.1f} us  p99 {s['p99_us']:7.1f} us" if s["ok"] else "FAILED"
                    label = name + latency_label(transport, case)
                    print(f"[{rep + 1}/{repeats}] latency {label:<52}: {shown}", flush=True)
    finally:
        if pair is not None:
            pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    info["duration_s"] = time.perf_counter() - began
    info["noise"] = noise_summary(samples + latency, discarded, guard)
    info["loadavg_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    summary = summarize(samples, latency, transports, sizes)
    failures = warmup_failures + [s["error"] for s in samples + latency if not s["ok"]]
    table = markdown(summary, info, config)
    if failures:
        table += "\n**FAILURES:**\n\n" + "".join(f"- {f}\n" for f in failures)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        "machine": info,
        "config": config,
        "summary": summary,
        "throughput_samples": samples,
        "latency_samples": latency,
        "discarded_noisy_samples": discarded,
        "failures": failures,
    }
    title = (
        "# reliablelink throughput and latency per transport"
        if per_transport
        else "# reliablelink throughput benchmark"
    )
    json_path, md_path = args.out / f"{stem}.json", args.out / f"{stem}.md"
    write_atomically(json_path, json.dumps(document, indent=1) + "\n")
    write_atomically(md_path, f"{title}\n\n{table}")
    print()
    print(table, end="")
    print(f"\nwrote {json_path} and {md_path}")
    if info["noise"]["noisy_kept"]:
        print(f"\nwarning: {info['noise']['noisy_kept']} sample(s) disturbed by other processes", file=sys.stderr)
    if failures:
        print(f"\n!!!!!! {len(failures)} FAILURE(S); see above !!!!!!", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
