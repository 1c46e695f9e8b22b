"""Hypothesis-generated fault schedules on the simulated network, in simulated time.

Each example runs a whole client/server exchange under MockClock with a schedule of resets,
pulled cables (both ways and one way), clogs, latency, byte-by-byte delivery, resets after
N bytes and refused reconnects. Checked after each: the ledger of both directions is exact,
no queue outgrew the window, the link came back, and no task was left behind.
"""

from __future__ import annotations

import functools
import os

import trio
import trio.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import reliablelink
from reliablelink.testing import Ledger, number_of, numbered
from reliablelink.testing.strategies import Fault, fault_schedules, run_schedule
from tests.conftest import KEY, KEYS, memory

WINDOW = 32
OPTIONS = {"heartbeat_interval": 1.0, "dead_after": 3.0, "max_inflight": WINDOW, "max_inflight_bytes": 32 * 1024}
TOTAL = 150


async def scenario(schedule: list[Fault], sizes: list[int], seed: int) -> None:
    up, down = Ledger(), Ledger()
    peak_queue = 0

    async def push(session: reliablelink.Session, ledger: Ledger) -> None:
        for i in range(TOTAL):
            await session.send(numbered(i, sizes[i % len(sizes)]))
            ledger.on_send(i)
            await trio.sleep(0.05)  # traffic spread over ~7.5 s of simulated time

    async def pull(session: reliablelink.Session, ledger: Ledger) -> None:
        nonlocal peak_queue
        while ledger.received < TOTAL:
            ledger.on_receive(number_of(await session.receive()))
            peak_queue = max(peak_queue, session.stats.queued, session.stats.in_flight)

    async def handler(session: reliablelink.Session) -> None:
        async with trio.open_nursery() as traffic:
            traffic.start_soon(push, session, down)
            traffic.start_soon(pull, session, up)
        await session.drain()

    # Traffic takes ~8 s and faults end by ~18 s of simulated time: a run still going after
    # 120 s is stuck, and fails fast instead of spinning through reconnects.
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(reliablelink.serve, handler, "memory://", keys=KEYS, session_ttl=600, **OPTIONS)
            )
            listener = server.url.removeprefix("memory://")
            nursery.start_soon(run_schedule, schedule, memory(), listener)
            async with reliablelink.connect(
                server.url,
                client_id="agent-1",
                key=KEY,
                reconnect_backoff=reliablelink.Backoff(0.1, 2.0, seed=seed),
                connect_timeout=60,
                **OPTIONS,
            ) as session:
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(push, session, up)
                    traffic.start_soon(pull, session, down)
                await session.drain()
            nursery.cancel_scope.cancel()
    for name, ledger in (("client -> server", up), ("server -> client", down)):
        result = ledger.result()
        assert result.exact, f"{result.line(name)} under schedule {schedule}"
    assert peak_queue <= WINDOW, f"a queue grew to {peak_queue} > window {WINDOW}"


@settings(
    max_examples=int(os.environ.get("RELIABLELINK_SCHEDULES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No shrinking: a failing run costs up to 120 simulated seconds of reconnects, and
    # shrinking would replay hundreds of them. Schedules are short enough to read as found.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    report_multiple_bugs=False,
)
@given(
    schedule=fault_schedules(),
    sizes=st.lists(st.integers(8, 3000), min_size=1, max_size=5),
    seed=st.integers(0, 2**16),
)
def test_any_fault_schedule_keeps_both_ledgers_exact(schedule: list[Fault], sizes: list[int], seed: int) -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(scenario, schedule, sizes, seed, clock=clock)
