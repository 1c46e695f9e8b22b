"""The simulated network itself (``memory://``): each fault does what it says, in simulated
time, so that the session tests built on it test what they claim."""

from __future__ import annotations

import functools
import itertools

import pytest
import trio
import trio.testing

from reliablelink.testing import MemoryTransport
from reliablelink.testing.strategies import Fault, run_schedule
from reliablelink.transports import StreamOptions
from tests.helpers import MemoryNet, memory_pair

OPTIONS = StreamOptions()


async def _read_all(stream: trio.abc.Stream, total: int) -> list[tuple[float, bytes | bytearray]]:
    """Read ``total`` bytes; return each read with the time it returned."""
    got: list[tuple[float, bytes | bytearray]] = []
    n = 0
    while n < total:
        data = await stream.receive_some(65536)
        got.append((trio.current_time(), data))
        n += len(data)
    return got


async def test_latency_and_jitter_delay_bytes_but_keep_their_order(autojump_clock: trio.testing.MockClock) -> None:
    arrivals: list[list[tuple[float, bytes | bytearray]]] = []
    for _ in range(2):
        transport = MemoryTransport()
        # A nursery per run: each run's listener stops before the next run starts.
        async with trio.open_nursery() as nursery:
            client, server, conn = await memory_pair(transport, nursery)
            conn.degrade("to_server", latency=0.1, jitter=0.5, seed=7)
            start = trio.current_time()
            for i in range(50):
                await client.send_all(bytes([i]))
            got = await _read_all(server, 50)
            nursery.cancel_scope.cancel()
        assert b"".join(d for _, d in got) == bytes(range(50)), "jitter must not reorder a byte stream"
        delays = [t - start for t, _ in got]
        assert min(delays) >= 0.1, delays
        assert max(delays) <= 0.6 + 1e-9, delays
        assert max(delays) > 0.3, f"50 draws of up to 0.5 s jitter all small: {delays}"
        arrivals.append([(round(t - start, 9), d) for t, d in got])
    assert arrivals[0] == arrivals[1], "the same seed must give the same delays"


async def test_bandwidth_cap_spreads_bytes_over_time(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    transport = MemoryTransport(buffer_size=1 << 20)
    client, server, conn = await memory_pair(transport, nursery)
    conn.degrade("to_server", bandwidth=10_000)  # 10 kB/s
    start = trio.current_time()
    for _ in range(10):
        await client.send_all(b"x" * 5_000)
    got = await _read_all(server, 50_000)
    assert sum(len(d) for _, d in got) == 50_000
    assert got[-1][0] - start == pytest.approx(5.0), "50 kB at 10 kB/s takes 5 s"
    # A slow link trickles in segments: it is never silent for longer than one takes.
    segment = 1460 / 10_000
    assert got[0][0] - start == pytest.approx(segment), "the first segment needs 0.146 s"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(got)]
    assert max(gaps) <= segment + 1e-9, f"a capped link went silent for {max(gaps):.3f} s"
    # The other direction is not capped.
    t0 = trio.current_time()
    await server.send_all(b"y" * 5_000)
    await _read_all(client, 5_000)
    assert trio.current_time() == t0
    conn.degrade("to_server", bandwidth=0)  # cap removed
    t0 = trio.current_time()
    await client.send_all(b"z" * 5_000)
    await _read_all(server, 5_000)
    assert trio.current_time() == t0


async def test_slow_connect_delays_new_connections_only(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    transport = MemoryTransport()
    net = MemoryNet(transport, nursery)
    await net.start()
    client, server, _ = await net.connect()
    transport.delay_connect("net", 2.5)
    t0 = trio.current_time()
    await net.connect()
    assert trio.current_time() - t0 == pytest.approx(2.5)
    # The open connection is untouched.
    await client.send_all(b"still here")
    assert await server.receive_some(100) == b"still here"
    # Refused while delayed: the caller waits, then is refused.
    transport.refuse("net")
    t0 = trio.current_time()
    with pytest.raises(ConnectionRefusedError):
        await transport.open_stream(net.url, OPTIONS)
    assert trio.current_time() - t0 == pytest.approx(2.5)
    transport.refuse("net", False)
    transport.delay_connect("net", 0)
    t0 = trio.current_time()
    await net.connect()
    assert trio.current_time() == t0
    with pytest.raises(ValueError, match="delay"):
        transport.delay_connect("net", -1)


async def test_segment_and_reset_after(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    transport = MemoryTransport()
    client, server, conn = await memory_pair(transport, nursery)
    conn.degrade("to_server", segment=1)
    await client.send_all(b"abc")
    assert [await server.receive_some(100) for _ in range(3)] == [b"a", b"b", b"c"]
    conn.degrade("to_server", segment=1000, reset_after=10)
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x" * 11)
    with pytest.raises(trio.BrokenResourceError):
        await server.receive_some(100)


async def test_blackhole_is_silent_and_one_way(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    transport = MemoryTransport()
    client, server, conn = await memory_pair(transport, nursery)
    conn.blackhole("to_server")
    await client.send_all(b"into the void")  # no error: a pulled cable says nothing
    with trio.move_on_after(30) as waited:
        await server.receive_some(100)
    assert waited.cancelled_caught
    await server.send_all(b"the other way works")
    assert await client.receive_some(100) == b"the other way works"


async def test_overlapping_refusals_and_connect_delays_last_until_the_last_one_ends(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # A short fault inside a long one of the same kind must not end the long one early.
    transport = MemoryTransport()
    schedule = [
        Fault(at=0.0, kind="refuse", duration=5.0),
        Fault(at=1.0, kind="refuse", duration=1.0),
        Fault(at=10.0, kind="slow_connect", duration=6.0, value=0.5),
        Fault(at=11.0, kind="slow_connect", duration=1.0, value=2.0),
    ]

    async def connect_time() -> float:
        t0 = trio.current_time()
        await net.connect()
        return trio.current_time() - t0

    net = MemoryNet(transport, nursery)
    await net.start()
    start = trio.current_time()
    nursery.start_soon(run_schedule, schedule, transport, "net")
    for t, refused in ((0.5, True), (1.5, True), (3.0, True), (4.9, True), (5.1, False)):
        await trio.sleep_until(start + t)
        if refused:
            with pytest.raises(ConnectionRefusedError):
                await transport.open_stream(net.url, OPTIONS)
        else:
            await net.connect()
    # The longest delay in force applies; when it ends, the shorter one is back.
    await trio.sleep_until(start + 11.5)
    assert await connect_time() == pytest.approx(2.0)
    await trio.sleep_until(start + 13.0)
    assert await connect_time() == pytest.approx(0.5)
    await trio.sleep_until(start + 16.5)
    assert await connect_time() == 0


async def test_refusal_in_force_holds_for_a_restarted_listener(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # The fault models the network, not the server: a server restarted while connections
    # are refused is refused too until the fault ends.
    transport = MemoryTransport()
    schedule = [Fault(at=0.0, kind="refuse", duration=5.0), Fault(at=1.0, kind="restart", duration=1.0)]

    net = MemoryNet(transport, nursery)
    scope = trio.CancelScope()

    async def idle(stream: trio.abc.Stream) -> None:
        await trio.sleep_forever()

    async def listen(task_status: trio.TaskStatus[str]) -> None:
        with scope:
            await transport.serve(net.url, idle, OPTIONS, task_status=task_status)

    async def restart(downtime: float, crash: bool) -> None:
        nonlocal scope
        scope.cancel()
        await trio.sleep(downtime)
        scope = trio.CancelScope()
        await nursery.start(listen)

    await nursery.start(listen)
    start = trio.current_time()
    nursery.start_soon(functools.partial(run_schedule, schedule, transport, "net", restart=restart))
    for t in (2.5, 4.9):
        await trio.sleep_until(start + t)
        with pytest.raises(ConnectionRefusedError):
            await transport.open_stream(net.url, OPTIONS)
    await trio.sleep_until(start + 5.1)
    await transport.open_stream(net.url, OPTIONS)
