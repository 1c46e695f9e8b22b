"""Hypothesis strategies for fault schedules on the in-memory network.

Requires ``hypothesis`` (the ``test`` extra). A schedule is a list of :class:`Fault` at
times relative to the start of a run; :func:`run_schedule` applies it to the connections of
one ``memory://`` listener, in simulated time if the run uses ``trio.testing.MockClock``::

    @given(schedule=fault_schedules())
    def test_my_app(schedule):
        trio.run(scenario, schedule, clock=trio.testing.MockClock(autojump_threshold=0))

When a property fails, hypothesis prints the schedule that reproduces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from hypothesis import strategies as st

from ..transports._memory import MemoryTransport

__all__ = ["FAULT_KINDS", "Fault", "fault_schedules", "run_schedule"]

#: Every fault a schedule can hold.
FAULT_KINDS = (
    "reset",  # RST both ways
    "pull",  # cable pulled: blackhole both ways (silence, no FIN/RST)
    "pull_to_server",  # one direction silent
    "pull_to_client",
    "clog",  # bytes held for `duration`, then released
    "latency",  # `value` seconds added to every byte, from now on
    "segment",  # reads return at most `value` bytes (1: byte by byte)
    "drop_after",  # reset after `value` more bytes
    "refuse",  # new connections refused for `duration`
)


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` (see :data:`FAULT_KINDS`) at ``at`` seconds, lasting ``duration``
    where that applies, with a ``value`` where that applies."""

    at: float
    kind: str
    duration: float = 0.0
    value: float = 0.0


def _fault() -> st.SearchStrategy[Fault]:
    return st.one_of(
        st.builds(
            Fault, at=st.floats(0, 10), kind=st.sampled_from(["reset", "pull", "pull_to_server", "pull_to_client"])
        ),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("clog"), duration=st.floats(0.01, 5)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("refuse"), duration=st.floats(0.01, 8)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("latency"), value=st.floats(0, 0.5)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("segment"), value=st.integers(1, 2000).map(float)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("drop_after"), value=st.integers(0, 50_000).map(float)),
    )


def fault_schedules(max_faults: int = 10) -> st.SearchStrategy[list[Fault]]:
    """Lists of up to ``max_faults`` faults in the first 10 seconds, sorted by time."""
    return st.lists(_fault(), max_size=max_faults).map(lambda faults: sorted(faults, key=lambda f: f.at))


async def run_schedule(schedule: list[Fault], transport: MemoryTransport, listener: str) -> None:
    """Apply ``schedule`` to the connections to ``memory://listener`` (run it in a task)."""
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for fault in schedule:
            await trio.sleep_until(start + fault.at)
            if fault.kind == "refuse":
                nursery.start_soon(_refuse_for, transport, listener, fault.duration)
                continue
            for conn in transport.connections_to(listener):
                if fault.kind == "reset":
                    conn.reset()
                elif fault.kind.startswith("pull"):
                    conn.blackhole(fault.kind.removeprefix("pull_") if "_" in fault.kind else "both")
                elif fault.kind == "clog":
                    conn.clog()
                    nursery.start_soon(_unclog_after, conn, fault.duration)
                elif fault.kind == "latency":
                    conn.degrade(latency=fault.value)
                elif fault.kind == "segment":
                    conn.degrade(segment=int(fault.value))
                elif fault.kind == "drop_after":
                    conn.degrade(drop_after=int(fault.value))


async def _refuse_for(transport: MemoryTransport, listener: str, duration: float) -> None:
    transport.refuse(listener, True)
    await trio.sleep(duration)
    transport.refuse(listener, False)


async def _unclog_after(conn: object, duration: float) -> None:
    await trio.sleep(duration)
    conn.unclog()  # type: ignore[attr-defined]
