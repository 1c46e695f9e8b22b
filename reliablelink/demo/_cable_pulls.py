"""The demo's timing and its seeded schedule of pulled cables.

Each agent's link runs through its own :class:`~reliablelink.testing.ChaosProxy`, so one
agent's cable can be pulled alone. Three kinds of pulls:

* ``reset``: the connection is reset (RST both ways, as when a NAT or a firewall drops it)
  and new connections are refused for a moment; both ends notice at once.
* ``silent``: the bytes vanish, no FIN, no RST (a pulled cable); both ends notice only
  after ``dead_after`` without hearing anything, then the agent reconnects and resumes.
* ``long``: a silent pull that lasts longer than ``dead_after + session_ttl``: the server
  expires the session, hands the agent's unanswered conversations to another agent, and
  the agent starts a new session when its cable is back.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from ..testing import ChaosProxy

__all__ = ["DemoTiming", "Pull", "plan_pulls", "run_pulls"]

PullKind = Literal["reset", "silent", "long"]


@dataclass(frozen=True, slots=True)
class DemoTiming:
    """Heartbeat and expiry settings, short so that every pull resolves within seconds.

    Attributes:
        heartbeat_interval: seconds of silence before a PING.
        dead_after: seconds without hearing anything before a link counts as dead.
        session_ttl: seconds the server keeps a detached session.
    """

    heartbeat_interval: float
    dead_after: float
    session_ttl: float

    @classmethod
    def for_duration(cls, duration: float) -> DemoTiming:
        """0.5 s heartbeats, ``dead_after`` 1.5 s and ``session_ttl`` 3 s for runs of 10 s or
        more; shorter runs scale them down (to 30 % at most) so a long pull still fits."""
        scale = min(1.0, max(0.3, duration / 10))
        return cls(0.5 * scale, 1.5 * scale, 3.0 * scale)

    @property
    def long_pull(self) -> float:
        """How long a pull must last for the server to expire the session, with a margin."""
        return self.dead_after + self.session_ttl + max(0.75, 0.25 * self.session_ttl)


@dataclass(frozen=True, slots=True)
class Pull:
    """One pulled cable.

    Attributes:
        at: seconds after the start.
        agent: index of the agent whose cable is pulled.
        kind: ``reset``, ``silent`` or ``long``.
        length: seconds until the cable is back (new connections are refused until then).
    """

    at: float
    agent: int
    kind: PullKind
    length: float


def plan_pulls(duration: float, agents: int, timing: DemoTiming, rng: random.Random) -> list[Pull]:
    """A schedule for a run of ``duration`` seconds: one ``long`` pull early on, and resets
    and silent pulls on the other agents (alternating), every one over before the end."""
    long_agent = rng.randrange(agents)
    long = Pull(round(0.1 * duration, 2), long_agent, "long", round(timing.long_pull, 2))
    plan = [long]
    busy: list[list[tuple[float, float]]] = [[] for _ in range(agents)]
    busy[long_agent].append((long.at - 0.2, long.at + long.length + 1.0))
    kind: PullKind = rng.choice(("reset", "silent"))
    at = 0.1 * duration + rng.uniform(0.05, 0.15) * duration
    while True:
        if kind == "reset":
            length = rng.uniform(0.1, 0.3) * timing.dead_after
            recovered = at + length + 0.5
        else:
            length = rng.uniform(0.5, 1.2) * timing.dead_after
            recovered = at + max(length, timing.dead_after) + 0.5
        if recovered > duration - 0.3:
            break
        # One pull at a time per agent, from the pull until the agent is back.
        choices = [i for i in range(agents) if all(at > end or recovered < begin for begin, end in busy[i])]
        if choices:
            agent = rng.choice(choices)
            plan.append(Pull(round(at, 2), agent, kind, round(length, 2)))
            busy[agent].append((at - 0.2, recovered + 0.2))
            kind = "silent" if kind == "reset" else "reset"
        at += rng.uniform(0.12, 0.22) * min(duration, 12.0)
    return sorted(plan, key=lambda p: p.at)


async def run_pulls(
    plan: Sequence[Pull],
    proxies: Sequence[ChaosProxy],
    names: Sequence[str],
    timing: DemoTiming,
    say: Callable[[str], None],
    *,
    start: float,
    expiry_watch: Callable[[str], Callable[[], Awaitable[None]]] | None = None,
    done: list[Pull] | None = None,
) -> None:
    """Carry out ``plan`` (times relative to ``start``, a ``trio.current_time()``), appending
    each pull to ``done`` as it happens. Every cable is back when this returns, even if cancelled.

    If ``expiry_watch(name)`` is given (it returns an async function that returns once the
    server has expired another session of that agent), a long pull lasts until the server
    has expired the session (at most 5 s more than planned): a slow machine still shows it."""
    try:
        async with trio.open_nursery() as nursery:
            for pull in plan:
                await trio.sleep_until(start + pull.at)
                proxy, name = proxies[pull.agent], names[pull.agent]
                proxy.refuse = True
                if pull.kind == "reset":
                    killed = proxy.kill_all()
                    say(f"{name}: connection reset ({killed} killed), cable back in {pull.length:.1f} s")
                elif pull.kind == "silent":
                    proxy.blackhole_all()
                    say(
                        f"{name}: cable pulled silently for {pull.length:.1f} s "
                        f"(noticed after dead_after {timing.dead_after:.1f} s)"
                    )
                else:
                    proxy.blackhole_all()
                    say(
                        f"{name}: cable pulled for {pull.length:.1f} s, longer than dead_after "
                        f"{timing.dead_after:.1f} s + session_ttl {timing.session_ttl:.1f} s: the session will expire"
                    )
                until = expiry_watch(name) if pull.kind == "long" and expiry_watch is not None else None
                nursery.start_soon(_restore, proxy, name, pull.length, say, until)
                if done is not None:
                    done.append(pull)
    finally:
        for proxy in proxies:
            proxy.refuse = False


async def _restore(
    proxy: ChaosProxy,
    name: str,
    after: float,
    say: Callable[[str], None],
    until: Callable[[], Awaitable[None]] | None,
) -> None:
    await trio.sleep(after)
    if until is not None:
        with trio.move_on_after(5.0):
            await until()
    proxy.refuse = False
    say(f"{name}: cable back")
