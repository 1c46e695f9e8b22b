"""Hypothesis strategies for fault schedules on the in-memory network.

Requires ``hypothesis`` (the ``test`` extra). A schedule is a list of :class:`Fault` at
times relative to the start of a run; :func:`run_schedule` applies it to the connections of
one ``memory://`` listener, in simulated time if the run uses ``trio.testing.MockClock``::

    @given(schedule=fault_schedules())
    def test_my_app(schedule):
        trio.run(scenario, schedule, clock=trio.testing.MockClock(autojump_threshold=0))

When a property fails, hypothesis prints the schedule that reproduces it.

Server restarts are drawn only when asked for (``fault_schedules(restarts=True)``), and
:func:`run_schedule` then needs a ``restart`` function that stops the server and starts it
again: what survives is whatever the server's store keeps (see
:class:`~reliablelink.stores.MemoryStore`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, get_args

import trio
from hypothesis import strategies as st

from ..transports._memory import MemoryConnection, MemoryTransport
from ._renames import KIND_RENAMES, warn_renamed

__all__ = ["FAULT_KINDS", "Fault", "FaultKind", "fault_schedules", "run_schedule"]

#: The kind of a :class:`Fault`. The names are those of the other fault tools too
#: (``MemoryConnection.blackhole()``/``degrade()``, ``Toxics``; see ``docs/chaos.md``).
FaultKind = Literal[
    "reset",  # RST both ways
    "blackhole",  # cable pulled: bytes vanish both ways (silence, no FIN/RST)
    "blackhole_to_server",  # one direction silent
    "blackhole_to_client",
    "clog",  # bytes held for `duration`, then released
    "latency",  # `value` seconds added to every byte, from now on
    "jitter",  # up to `value` seconds more per write, from now on (order kept)
    "bandwidth",  # at most `value` bytes per second, from now on
    "segment",  # reads return at most `value` bytes (1: byte by byte)
    "reset_after",  # reset (both ways) after `value` more bytes
    "refuse",  # new connections refused for `duration`
    "slow_connect",  # new connections take `value` seconds to open, for `duration`
    "restart",  # the server process stops gracefully, is down for `duration`, starts again
    "crash",  # the same, but killed: its last writes to the store are lost (fault_schedules(restarts=True))
]

#: Every fault a schedule can hold (the values of :data:`FaultKind`).
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` at ``at`` seconds, lasting ``duration`` where that applies, with a
    ``value`` where that applies.

    The kinds of earlier releases (``"pull"``, ``"pull_to_server"``, ``"pull_to_client"``,
    ``"drop_after"``) are deprecated: they are mapped to the new kind with a
    ``DeprecationWarning``.

    Attributes:
        at: seconds from the start of the run.
        kind: which fault (see :data:`FaultKind`).
        duration: how long it lasts, for ``clog``, ``refuse``, ``slow_connect``,
            ``restart`` and ``crash``.
        value: its size, for ``latency``, ``jitter``, ``bandwidth``, ``segment``,
            ``reset_after`` and ``slow_connect``.

    Raises:
        ValueError: an unknown ``kind``.
    """

    at: float
    kind: FaultKind
    duration: float = 0.0
    value: float = 0.0

    def __post_init__(self) -> None:
        kind: str = self.kind
        if kind in KIND_RENAMES:
            warn_renamed(f"fault kind {kind!r}", repr(KIND_RENAMES[kind]), stacklevel=4)
            object.__setattr__(self, "kind", KIND_RENAMES[kind])
        elif kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")


def _fault(restarts: bool) -> st.SearchStrategy[Fault]:
    kinds = [
        st.builds(
            Fault,
            at=st.floats(0, 10),
            kind=st.sampled_from(["reset", "blackhole", "blackhole_to_server", "blackhole_to_client"]),
        ),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("clog"), duration=st.floats(0.01, 5)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("refuse"), duration=st.floats(0.01, 8)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("latency"), value=st.floats(0, 0.5)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("jitter"), value=st.floats(0, 0.3)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("bandwidth"), value=st.floats(20_000, 1_000_000)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("segment"), value=st.integers(1, 2000).map(float)),
        st.builds(Fault, at=st.floats(0, 10), kind=st.just("reset_after"), value=st.integers(0, 50_000).map(float)),
        st.builds(
            Fault, at=st.floats(0, 10), kind=st.just("slow_connect"), duration=st.floats(0.01, 8), value=st.floats(0, 3)
        ),
    ]
    if restarts:
        kinds.append(
            st.builds(Fault, at=st.floats(0, 10), kind=st.sampled_from(["restart", "crash"]), duration=st.floats(0, 5))
        )
    return st.one_of(kinds)


def fault_schedules(max_faults: int = 10, *, restarts: bool = False) -> st.SearchStrategy[list[Fault]]:
    """Lists of up to ``max_faults`` faults in the first 10 seconds, sorted by time.

    Args:
        max_faults: the longest schedule.
        restarts: also draw ``"restart"`` and ``"crash"`` faults (then :func:`run_schedule`
            needs ``restart``).
    """
    return st.lists(_fault(restarts), max_size=max_faults).map(lambda faults: sorted(faults, key=lambda f: f.at))


async def run_schedule(
    schedule: list[Fault],
    transport: MemoryTransport,
    listener: str,
    *,
    restart: Callable[[float, bool], Awaitable[object]] | None = None,
) -> None:
    """Apply ``schedule`` to the connections to ``memory://listener`` (run it in a task).

    Args:
        schedule: the faults, sorted by time.
        transport: the ``memory://`` transport the server listens on.
        listener: the listener's name (``server.url`` without ``memory://``).
        restart: for ``"restart"`` and ``"crash"`` faults: ``await restart(downtime, crash)``
            stops the server, waits ``downtime`` seconds and starts it again on the same
            listener name. With ``crash`` true the new server must get the store as it was
            when the old one stopped, without what the old one wrote while shutting down
            (:meth:`~reliablelink.stores.MemoryStore.snapshot`). The schedule runs on
            while it does.

    Overlapping ``"refuse"`` faults refuse until the last one ends, and overlapping
    ``"slow_connect"`` faults delay new connections by the longest delay in force; both
    apply to a restarted server's listener too, once ``restart`` returns.

    Raises:
        ValueError: a ``"restart"`` or ``"crash"`` fault and no ``restart`` function.
    """
    if restart is None and any(f.kind in ("restart", "crash") for f in schedule):
        raise ValueError("the schedule restarts the server: pass run_schedule(..., restart=...)")
    start = trio.current_time()
    listener_faults = _ListenerFaults(transport, listener)
    async with trio.open_nursery() as nursery:
        for fault in schedule:
            await trio.sleep_until(start + fault.at)
            if fault.kind == "refuse":
                nursery.start_soon(listener_faults.refuse_for, fault.duration)
                continue
            if fault.kind == "slow_connect":
                nursery.start_soon(listener_faults.slow_connect_for, fault.value, fault.duration)
                continue
            if fault.kind in ("restart", "crash"):
                assert restart is not None
                nursery.start_soon(listener_faults.restart, restart, fault.duration, fault.kind == "crash")
                continue
            for conn in transport.connections_to(listener):
                _cut(conn, fault, nursery)


def _cut(conn: MemoryConnection, fault: Fault, nursery: trio.Nursery) -> None:
    """Apply a fault to one connection."""
    kind = fault.kind
    if kind == "reset":
        conn.reset()
    elif kind == "blackhole":
        conn.blackhole("both")
    elif kind == "blackhole_to_server":
        conn.blackhole("to_server")
    elif kind == "blackhole_to_client":
        conn.blackhole("to_client")
    elif kind == "clog":
        conn.clog()
        nursery.start_soon(_unclog_after, conn, fault.duration)
    else:
        _degrade(conn, fault)


def _degrade(conn: MemoryConnection, fault: Fault) -> None:
    kind, value = fault.kind, fault.value
    if kind == "latency":
        conn.degrade(latency=value)
    elif kind == "jitter":
        # Seeded from the schedule, so a schedule replays the same delays.
        conn.degrade(jitter=value, seed=int(fault.at * 1000))
    elif kind == "bandwidth":
        conn.degrade(bandwidth=value)
    elif kind == "segment":
        conn.degrade(segment=int(value))
    elif kind == "reset_after":
        conn.degrade(reset_after=int(value))
    else:
        raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")


class _ListenerFaults:
    """The refusals and connect delays in force on one listener. They may overlap: the
    listener refuses while any refusal lasts, and delays new connections by the longest
    delay in force, so the first of two overlapping faults to end does not end both."""

    def __init__(self, transport: MemoryTransport, listener: str) -> None:
        self.transport = transport
        self.listener = listener
        self.refusals = 0
        self.delays: list[float] = []

    def _set(self, refuse: bool | None, delay: float | None) -> None:
        # While a restarted server is down its listener does not exist (connections are
        # refused anyway), and the one it comes back with starts fresh.
        with contextlib.suppress(KeyError):
            if refuse is not None:
                self.transport.refuse(self.listener, refuse)
            if delay is not None:
                self.transport.delay_connect(self.listener, delay)

    async def restart(self, restart: Callable[[float, bool], Awaitable[object]], downtime: float, crash: bool) -> None:
        await restart(downtime, crash)
        # The restarted server listens afresh; the network's faults in force still hold.
        self._set(True if self.refusals else None, max(self.delays) if self.delays else None)

    async def refuse_for(self, duration: float) -> None:
        self.refusals += 1
        self._set(True, None)
        try:
            await trio.sleep(duration)
        finally:
            self.refusals -= 1
            if not self.refusals:
                self._set(False, None)

    async def slow_connect_for(self, delay: float, duration: float) -> None:
        self.delays.append(delay)
        self._set(None, max(self.delays))
        try:
            await trio.sleep(duration)
        finally:
            self.delays.remove(delay)
            self._set(None, max(self.delays, default=0.0))


async def _unclog_after(conn: MemoryConnection, duration: float) -> None:
    await trio.sleep(duration)
    conn.unclog()
