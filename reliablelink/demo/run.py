"""``reliablelink demo``: a customer-service server, agent desks and visitors in one process.

The server routes visitor conversations to agents (:mod:`.router`); each agent desk
(:mod:`.desk`) reaches the server through its own chaos proxy, whose cable is pulled and
restored on a seeded schedule, including one pull long enough for the server to expire the
session and hand the agent's conversations to another agent. At the end, every message is
checked both ways (:mod:`.chat`).

**Cable pulls** (:class:`DemoTiming`, :func:`plan_pulls`, :func:`run_pulls`). Each agent's
link runs through its own :class:`~reliablelink.testing.ChaosProxy`, so one agent's cable can
be pulled alone. Three kinds of pulls:

* ``reset``: the connection is reset (RST both ways, as when a NAT or a firewall drops it)
  and new connections are refused for a moment; both ends notice at once.
* ``silent``: the bytes vanish, no FIN, no RST (a pulled cable); both ends notice only
  after ``dead_after`` without hearing anything, then the agent reconnects and resumes.
* ``long``: a silent pull that lasts longer than ``dead_after + session_ttl``: the server
  expires the session, hands the agent's unanswered conversations to another agent, and
  the agent starts a new session when its cable is back.
"""

from __future__ import annotations

import functools
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import trio

from .. import Backoff, serve
from ..testing import ChaosProxy, LedgerResult
from .chat import AgentTally, ChatLedger
from .desk import AgentDesk, DeskEvents, ScriptedAnswerer
from .router import Router, run_visitors
from .views import AgentRow, DemoView, Snapshot, stop_on_signals

__all__ = ["DemoReport", "DemoTiming", "Pull", "plan_pulls", "run_customer_service", "run_demo_command", "run_pulls"]

PullKind = Literal["reset", "silent", "long"]

_REFRESH = 0.25  # seconds between view updates
_STARTUP_LIMIT = 15.0  # seconds for every agent to come online


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What a run saw.

    Attributes:
        seed: the schedule's seed.
        agents: each agent's share.
        to_agent: visitor messages, all conversations.
        to_visitor: answers, all conversations.
        pulls: the pulls carried out.
        expired: sessions the server expired.
        handovers: times an agent's conversations were handed to others.
        handed_over: messages the router took back from ended sessions to send again (the
            ledger's ``AgentTally.handed_over``, added up, must agree).
        reconnects: agent reconnects, all sessions.
        resent: messages resent after reconnects, both ends.
        interrupted: stopped early (Ctrl-C), so the schedule may not have run to its end.
    """

    seed: int
    agents: list[AgentTally]
    to_agent: LedgerResult
    to_visitor: LedgerResult
    pulls: list[Pull]
    expired: int
    handovers: int
    handed_over: int
    reconnects: int
    resent: int
    interrupted: bool = False

    @property
    def total(self) -> LedgerResult:
        """Both directions added up."""
        a, v = self.to_agent, self.to_visitor
        return LedgerResult(
            a.sent + v.sent,
            a.delivered + v.delivered,
            a.lost + v.lost,
            a.duplicated + v.duplicated,
            a.reordered + v.reordered,
            a.unexpected + v.unexpected,
        )

    @property
    def ok(self) -> bool:
        """Exact ledger, and (unless interrupted) the run showed a pulled cable and an expiry."""
        shown = self.interrupted or (bool(self.pulls) and self.expired >= 1)
        return self.total.exact and self.total.sent > 0 and shown

    def lines(self) -> list[str]:
        """The closing report; the last line is ``ledger: sent N, delivered N, ...``."""
        out = []
        for tally in self.agents:
            to = "other agents" if len(self.agents) > 1 else "its next session"
            handed = f", {tally.handed_over} handed over to {to}" if tally.handed_over else ""
            out.append(
                f"{tally.total.line(tally.agent)} "
                f"({tally.to_agent.delivered} visitor messages, {tally.to_visitor.delivered} answers{handed})"
            )
        out.append(self.to_agent.line("visitor -> agent"))
        out.append(self.to_visitor.line("agent -> visitor"))
        kinds = {k: sum(p.kind == k for p in self.pulls) for k in ("reset", "silent", "long")}
        out.append(
            f"cables pulled: {len(self.pulls)} ({kinds['reset']} reset, {kinds['silent']} silent, "
            f"{kinds['long']} long), reconnects {self.reconnects}, messages resent {self.resent}, "
            f"sessions expired {self.expired}, handovers {self.handovers}"
        )
        if self.interrupted:
            out.append("interrupted: the chatting ended early")
        elif not self.expired:
            out.append("no session expired: the long pull did not outlast session_ttl (the demo expects one)")
        if self.total.sent == 0:
            out.append("no message was exchanged, so nothing was checked: the run proves nothing")
        out.append(self.total.line("ledger"))
        return out


class _DeskReporter(DeskEvents):
    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say

    def note(self, desk: AgentDesk, text: str) -> None:
        self._say(f"{desk.agent}: {text}")


async def run_customer_service(
    view: DemoView,
    *,
    duration: float = 10.0,
    agents: int = 3,
    visitors: int = 6,
    seed: int | None = None,
    stop: trio.Event | None = None,
) -> DemoReport:
    """Run the demo for ``duration`` seconds of chatting, then drain, close and check.

    Args:
        view: where progress goes.
        duration: seconds the visitors chat (at least 3); the last answers and the clean
            close come after.
        agents: agent desks (at least 1).
        visitors: simulated visitors chatting at once (at least 1).
        seed: seed of the schedule and of the chats (random if ``None``).
        stop: when set, the chatting ends early (then the last answers, the close and the check).
    """
    run = _DemoRun(view, duration, agents, visitors, seed)
    return await run.run(trio.Event() if stop is None else stop)


class _DemoRun:
    """One run of the demo: a server, a proxy and a desk per agent, visitors, pulls."""

    def __init__(self, view: DemoView, duration: float, agents: int, visitors: int, seed: int | None) -> None:
        if duration < 3 or agents < 1 or visitors < 1:
            raise ValueError("need duration >= 3 s, agents >= 1 and visitors >= 1")
        seed = random.randrange(1_000_000) if seed is None else seed
        self.view, self.duration, self.visitors, self.seed = view, duration, visitors, seed
        self.timing = DemoTiming.for_duration(duration)
        self.plan = plan_pulls(duration, agents, self.timing, random.Random(seed))
        self.names = [f"agent-{i + 1}" for i in range(agents)]
        self.keys = {name: os.urandom(32) for name in self.names}
        self.clock = _Clock()
        self.ledger = ChatLedger()
        self.router = Router(self.ledger, say=self.say)
        self.link_options: dict[str, Any] = {
            "heartbeat_interval": self.timing.heartbeat_interval,
            "dead_after": self.timing.dead_after,
        }
        self.proxies: list[ChaosProxy] = []
        self.desks: list[AgentDesk] = []
        self.pulled: list[Pull] = []
        self.interrupted = False

    def say(self, text: str) -> None:
        self.view.event(self.clock.elapsed(), text)

    async def run(self, stop: trio.Event) -> DemoReport:
        async with trio.open_nursery() as nursery:
            await self._start_server(nursery)
            async with trio.open_nursery() as desk_nursery:
                for desk in self.desks:
                    desk_nursery.start_soon(desk.run)
                with trio.fail_after(_STARTUP_LIMIT):
                    await self.router.wait_until(lambda: len(self.router.agents) == len(self.desks))
                self.clock.reset()
                nursery.start_soon(self._refresh)
                await self._chat(stop)
                await self._finish()
                # The server closed every session, so the desks end by themselves; the
                # nursery waits for them. A desk still running 5 s later is stopped.
                nursery.start_soon(self._stop_desks_after, 5.0)
            nursery.cancel_scope.cancel()
        self.view.update(self._snapshot())
        self.view.stop()
        return self._report()

    async def _start_server(self, nursery: trio.Nursery) -> None:
        timing = self.timing
        server = await nursery.start(
            functools.partial(
                serve,
                self.router.handle_agent,
                "tcp://127.0.0.1:0",
                keys=self.keys,
                session_ttl=timing.session_ttl,
                close_timeout=3.0,
                **self.link_options,
            )
        )
        self.proxies = [ChaosProxy(server.url) for _ in self.names]
        urls = [await nursery.start(proxy.run) for proxy in self.proxies]
        self.view.start(
            f"customer-service demo, seed {self.seed}: server {server.url}, {len(self.names)} agents each behind "
            f"a chaos proxy, {self.visitors} visitors, {self.duration:g} s; heartbeat {timing.heartbeat_interval:g} s, "
            f"dead_after {timing.dead_after:g} s, session_ttl {timing.session_ttl:g} s"
        )
        reporter = _DeskReporter(self.say)
        self.desks = [
            AgentDesk(
                url,
                name,
                self.keys[name],
                answerer=ScriptedAnswerer((0.005, 0.05), seed=f"{self.seed}/{name}"),
                events=reporter,
                ledger=self.ledger,
                options={
                    **self.link_options,
                    "reconnect_backoff": Backoff(0.05, 0.5, seed=f"{self.seed}/{name}"),
                    "close_timeout": 3.0,
                },
            )
            for url, name in zip(urls, self.names, strict=True)
        ]

    async def _chat(self, stop: trio.Event) -> None:
        """Visitors chat and cables are pulled until ``duration`` or ``stop``."""
        stop_visitors = trio.Event()
        async with trio.open_nursery() as traffic:
            traffic.start_soon(
                functools.partial(run_visitors, self.router, self.visitors, stop_visitors, seed=self.seed)
            )
            traffic.start_soon(self._pull_cables)
            with trio.move_on_at(self.clock.start + self.duration):
                await stop.wait()
            stop_visitors.set()
            if stop.is_set():
                self.interrupted = True
                traffic.cancel_scope.cancel()  # stopped early: the cables still out come back now

    async def _pull_cables(self) -> None:
        await run_pulls(
            self.plan,
            self.proxies,
            self.names,
            self.timing,
            self.say,
            start=self.clock.start,
            expiry_watch=self.router.expiry_watch,
            done=self.pulled,
        )

    async def _finish(self) -> None:
        """Wait for the last answers, then close every session."""
        router = self.router
        sent, answered = router.messages
        self.say(f"visitors stop: {sent} messages sent, {answered} answered; waiting for the last answers")
        with trio.move_on_after(self.timing.long_pull + 10):
            await router.wait_until(router.all_answered)
        await router.shutdown()
        self.say("all agent sessions closed")

    async def _stop_desks_after(self, seconds: float) -> None:
        await trio.sleep(seconds)
        for desk in self.desks:
            desk.stop()

    def _report(self) -> DemoReport:
        to_agent, to_visitor = self.ledger.legs()
        client = [desk.tally.counts() for desk in self.desks]
        servers = [c for c in map(self.router.counts, self.names) if c is not None]
        return DemoReport(
            seed=self.seed,
            agents=self.ledger.by_agent(),
            to_agent=to_agent,
            to_visitor=to_visitor,
            pulls=self.pulled,
            interrupted=self.interrupted,
            expired=sum(c.expired for c in servers),
            handovers=self.router.handovers,
            handed_over=self.router.handed_over,
            reconnects=sum(c.reconnects for c in client),
            resent=sum(c.resent for c in client) + sum(c.resent for c in servers),
        )

    async def _refresh(self) -> None:
        while True:
            self.view.update(self._snapshot())
            await trio.sleep(_REFRESH)

    def _snapshot(self) -> Snapshot:
        router = self.router
        now = trio.current_time()
        rows = []
        for desk in self.desks:
            client = desk.tally.counts()
            server = router.counts(desk.agent)
            rows.append(
                AgentRow(
                    agent=desk.agent,
                    state=desk.state,
                    since=now - desk.state_since,
                    reconnects=client.reconnects,
                    sessions=client.sessions,
                    expired=server.expired if server else 0,
                    conversations=router.conversations_of(desk.agent),
                    sent=client.sent + (server.sent if server else 0),
                    delivered=client.received + (server.received if server else 0),
                    resent=client.resent + (server.resent if server else 0),
                    in_flight=client.in_flight + (server.in_flight if server else 0),
                )
            )
        sent, answered = router.messages
        return Snapshot(min(self.clock.elapsed(), self.duration), self.duration, rows, sent, answered)


class _Clock:
    """Seconds since the visitors started (before that: since the program started)."""

    def __init__(self) -> None:
        self.start = trio.current_time()

    def reset(self) -> None:
        self.start = trio.current_time()

    def elapsed(self) -> float:
        return trio.current_time() - self.start


async def run_demo_command(
    view: DemoView, *, duration: float, agents: int, visitors: int, seed: int | None
) -> DemoReport | None:
    """:func:`run_customer_service` for the command line: Ctrl-C (or SIGTERM) ends the chatting
    early and still drains, closes and checks; a second one stops at once (``None``)."""
    run = _DemoRun(view, duration, agents, visitors, seed)
    stop = trio.Event()
    with trio.CancelScope() as force:
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signals, stop.set, force, run.say)
            report = await run.run(stop)
            nursery.cancel_scope.cancel()
        return report
    view.stop()
    return None


# -- cable pulls -------------------------------------------------------------------------


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
