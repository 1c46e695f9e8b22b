"""The plain-socket fast paths (TCP, Unix), under faults, over real loopback sockets.

On a plain socket a session writes from ``send()`` when the writer task is idle, reads from
a waiting ``receive()`` while the reader task steps aside, and writes large payloads with
scatter/gather ``sendmsg`` without copying them. These tests force the awkward cases:
partial and refused writes, large messages through a throttled and resetting link, and a
``receive()`` cancelled while it holds the socket. Every ledger is checked message by
message: number, payload and order.
"""

from __future__ import annotations

import os
import random
import struct
from typing import Any

import pytest
import trio

import reliablelink
from reliablelink.testing import ChaosProxy
from tests.helpers import FAST, KEY, SERVER_FAST, RunServer, echo


def payload(n: int, size: int) -> bytes:
    """Message ``n``: its number, then ``size - 8`` bytes that depend on ``n``."""
    return struct.pack(">Q", n) + random.Random(n).randbytes(size - 8)


def check(got: list[bytes], sizes: list[int]) -> None:
    assert [struct.unpack_from(">Q", m)[0] for m in got] == list(range(len(sizes))), "exactly once, in order"
    for n, message in enumerate(got):
        assert message == payload(n, sizes[n]), f"message {n} arrived with other bytes"


async def ping_pong(url: str, sizes: list[int], **options: Any) -> list[bytes]:
    """Request/response: each message waits for its echo (the pattern the fast paths serve)."""
    got: list[bytes] = []
    async with reliablelink.connect(url, client_id="agent-1", key=KEY, **FAST, **options) as session:
        for n, size in enumerate(sizes):
            await session.send(payload(n, size))
            got.append(await session.receive())
        await session.drain()
    return got


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_partial_and_refused_direct_writes_keep_every_byte_in_order(
    seed: int, monkeypatch: pytest.MonkeyPatch, run_server: RunServer
) -> None:
    """The socket takes only part of each direct write, or none of it (EAGAIN): the rest
    goes to the writer task ahead of anything queued later."""
    rng = random.Random(seed)
    calls = {"partial": 0, "refused": 0}

    real_write = os.write

    def stingy_write(fd: int, data: Any) -> int:
        if rng.random() < 0.3:
            calls["refused"] += 1
            raise BlockingIOError
        data = memoryview(data)
        take = rng.randint(1, len(data))
        calls["partial"] += take < len(data)
        return real_write(fd, data[:take])

    def stingy_writev(fd: int, buffers: list[Any]) -> int:
        return stingy_write(fd, b"".join(buffers))

    # os.write is patched for the whole process (the driver calls it through the os module);
    # the stingy version calls the real one, taken before the patch (calling os.write from
    # inside it would recurse and never write a byte).
    monkeypatch.setattr(os, "write", stingy_write)
    monkeypatch.setattr(os, "writev", stingy_writev)
    sizes = [rng.choice([1 + 8, 100, 5_000, 20_000, 70_000]) for _ in range(150)]
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
        got = await ping_pong(server.url, sizes)
    check(got, sizes)
    assert calls["partial"] > 10 and calls["refused"] > 10, f"seed {seed}: the faults must be exercised: {calls}"


@pytest.mark.parametrize("seed", [1, 2])
async def test_large_messages_through_a_throttled_resetting_link(
    seed: int, run_server: RunServer, nursery: trio.Nursery
) -> None:
    """Large payloads (scatter/gather writes, joined once on receipt) both ways while the
    link is slow, sliced and reset every 600 kB: partial sendmsg() calls and frames split
    across many reads and across reconnects."""
    rng = random.Random(seed)
    sizes = [rng.choice([16 * 1024, 16 * 1024 + 1, 100_000, 300_000]) for _ in range(40)]
    received: list[bytes] = []
    with trio.fail_after(90):
        server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
        proxy = ChaosProxy(server.url, seed=seed)
        url = await nursery.start(proxy.run)
        for toxic in ("bandwidth=20000000", f"segment={rng.choice([1000, 70_000])}", "reset_after=600000"):
            proxy.toxics.set(toxic)
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, **FAST) as session:

            async def push() -> None:
                for n, size in enumerate(sizes):
                    await session.send(payload(n, size))

            nursery.start_soon(push)
            while len(received) < len(sizes):
                received.append(await session.receive())
            reconnects = session.stats.reconnects
    check(received, sizes)
    assert reconnects >= 3, f"seed {seed}: the link must have been reset several times ({reconnects})"


async def test_a_cancelled_receive_hands_the_socket_back_to_the_reader(run_server: RunServer) -> None:
    """A receive() waiting on the socket is cancelled; the session must keep reading (ACKs,
    replies) while nobody calls receive(): drain() completes and the messages wait."""
    replies = 20
    with trio.fail_after(30):
        server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **FAST) as session:
            for _ in range(3):
                with trio.move_on_after(0.05) as scope:
                    await session.receive()  # nothing was sent: it waits on the socket
                assert scope.cancelled_caught
            for n in range(replies):
                await session.send(payload(n, 64))
            with trio.fail_after(5):
                await session.drain()  # only the reader task is there to read the ACKs
            got = [await session.receive() for _ in range(replies)]
            # A reader left waiting would get the link declared dead (nothing read for
            # dead_after) and drain() would only finish after a reconnect.
            assert session.stats.reconnects == 0
    check(got, [64] * replies)


async def test_unix_socket_request_response(tmp_path: Any, run_server: RunServer) -> None:
    sizes = [9, 1000, 20_000, 9, 70_000] * 20
    with trio.fail_after(30):
        server = await run_server(echo, f"unix://{tmp_path / 'rl.sock'}", **SERVER_FAST)
        got = await ping_pong(server.url, sizes)
    check(got, sizes)


@pytest.mark.parametrize("seed", [1, 2])
async def test_reads_by_the_reader_and_by_receive_reach_the_core_in_socket_order(
    seed: int, run_server: RunServer
) -> None:
    """A stream of messages of mixed sizes, read now by the reader task and now by a
    waiting ``receive()`` with the reader's turn lent to it: whoever reads must feed the
    bytes to the core before anyone else reads, or frames cut across reads are spliced
    from the wrong bytes (a message with its own number and another's payload)."""
    rng = random.Random(seed)
    sizes = [rng.choice((8, 64, 1500, 9000, 70_000)) for _ in range(1500)]
    got: list[bytes] = []
    done = trio.Event()

    async def collect(session: reliablelink.Session) -> None:
        async for data in session:
            got.append(data)
            if len(got) == len(sizes):
                done.set()

    server = await run_server(collect, "tcp://127.0.0.1:0", **SERVER_FAST)
    async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **FAST) as session:
        for n, size in enumerate(sizes):
            await session.send(payload(n, size))
        await session.drain()
    await done.wait()
    check(got, sizes)
