"""``reliablelink demo-server``: the customer-service server as a process of its own.

It listens for agents (``reliablelink demo-agent``), simulates visitors and routes their
conversations to the agents online. Its first line is ``listening on URL`` (the real port
when port 0 was asked for). It runs until Ctrl-C (or SIGTERM) or ``--duration``, then stops
the visitors, waits for the last answers, closes every agent session (the agents then end
too) and prints, per agent, what it routed and what came back, and last the round-trip
ledger: *sent* are visitor messages, *delivered* those whose answer came back, *waiting for
an agent* those of conversations no agent held at the end (every agent had left: nobody could
answer them, and nothing was lost), *unanswered* the rest (see :mod:`reliablelink.demo.chat`).
Exit status 0 only if nothing is unanswered, duplicated or reordered; a run in which no
answer came back at all proves nothing and fails with :class:`~reliablelink.demo.chat.NothingChecked`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from .. import serve
from ..testing import LedgerResult
from .chat import ChatLedger, NothingChecked
from .router import Router, run_visitors
from .views import TimedPrinter, stop_on_signals

__all__ = ["DemoServerSettings", "round_trip_line", "run_demo_server"]


@dataclass(frozen=True, slots=True)
class DemoServerSettings:
    """How the demo server runs.

    Attributes:
        listen: the URL to listen on.
        keys: agent id -> key.
        visitors: simulated visitors chatting at once.
        duration: seconds before stopping by itself (``math.inf``: until Ctrl-C).
        seed: seed of the visitors' chats.
        heartbeat_interval: heartbeat (``dead_after`` is three of them).
        session_ttl: seconds a detached agent session is kept.
        drain_timeout: seconds to wait for the last answers when stopping.
        status_every: seconds between status lines.
    """

    listen: str
    keys: Mapping[str, bytes]
    visitors: int = 3
    duration: float = math.inf
    seed: int = 0
    heartbeat_interval: float = 1.0
    session_ttl: float = 30.0
    drain_timeout: float = 10.0
    status_every: float = 2.0


async def run_demo_server(settings: DemoServerSettings, say: TimedPrinter | None = None) -> int:
    """Run the server until stopped; return the exit status (0: the ledger is exact).

    Raises:
        NothingChecked: no answer came back (no agent came, or none stayed long enough).
    """
    say = say or TimedPrinter()
    ledger = ChatLedger()
    router = Router(ledger, say=say)
    stop = trio.Event()
    with trio.CancelScope() as force:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    serve,
                    router.handle_agent,
                    settings.listen,
                    keys=dict(settings.keys),
                    heartbeat_interval=settings.heartbeat_interval,
                    dead_after=3 * settings.heartbeat_interval,
                    session_ttl=settings.session_ttl,
                    close_timeout=3.0,
                )
            )
            say.plain(f"listening on {server.url}")
            await nursery.start(stop_on_signals, stop.set, force, say)
            say(
                f"agents: {', '.join(sorted(settings.keys))}; {settings.visitors} visitors; "
                f"heartbeat {settings.heartbeat_interval:g} s, session_ttl {settings.session_ttl:g} s"
            )
            nursery.start_soon(_status, router, say, settings.status_every)
            if settings.duration < math.inf:
                nursery.start_soon(_stop_after, settings.duration, stop)
            await run_visitors(router, settings.visitors, stop, seed=settings.seed)
            sent, answered = router.messages
            if router.agents:
                say(f"visitors stop: {sent} messages sent, {answered} answered; waiting for the last answers")
            else:
                say(f"visitors stop: {sent} messages sent, {answered} answered; no agent online to answer the rest")
            with trio.move_on_after(settings.drain_timeout):
                await router.wait_until(router.nothing_to_wait_for)
            waiting = router.waiting()
            await router.shutdown()
            say("all agent sessions closed")
            nursery.cancel_scope.cancel()
    for line in _report(router, ledger, waiting):
        say.plain(line)
    result = ledger.round_trip()
    if result.delivered == 0:
        raise NothingChecked(
            "no agent answered a visitor message, so nothing was checked; start agents with "
            "'reliablelink demo-agent --connect URL --id ID --key @KEYFILE' and let them run"
        )
    unanswered = max(0, result.lost - waiting)
    return 0 if (unanswered, result.duplicated, result.reordered, result.unexpected) == (0, 0, 0, 0) else 1


async def _stop_after(seconds: float, stop: trio.Event) -> None:
    await trio.sleep(seconds)
    stop.set()


async def _status(router: Router, say: Callable[[str], None], every: float) -> None:
    while True:
        await trio.sleep(every)
        sent, answered = router.messages
        parts = [f"visitors: {sent} messages sent, {answered} answered"]
        for agent in sorted(router.tallies):
            counts = router.counts(agent)
            if counts is None:
                continue
            parts.append(
                f"{agent} {counts.link_state.value}, {router.conversations_of(agent)} conversations, "
                f"reconnects {counts.reconnects}, resent {counts.resent}, in flight {counts.in_flight}"
            )
        say(" | ".join(parts))


def _report(router: Router, ledger: ChatLedger, waiting: int) -> list[str]:
    lines = []
    for tally in ledger.by_agent():
        counts = router.counts(tally.agent)
        link = ""
        if counts is not None:
            link = (
                f"; sessions {counts.sessions}, expired {counts.expired}, "
                f"reconnects {counts.reconnects}, resent {counts.resent}"
            )
        lines.append(
            f"{tally.agent}: routed {tally.to_agent.sent}, answered {tally.answered}, "
            f"handed over {tally.handed_over}{link}"
        )
    lines.append(round_trip_line(ledger.round_trip(), waiting))
    return lines


def round_trip_line(result: LedgerResult, waiting: int = 0) -> str:
    """``ledger: sent N, delivered N, unanswered 0, duplicated 0, reordered 0``.

    *sent* are visitor messages, *delivered* those whose answer came back. A message without
    an answer is *unanswered*, not lost: the server cannot tell a lost message from one that
    an agent did not answer in time. The ``waiting`` messages (of conversations no agent
    held at the end: the agents had left) are counted apart, as ``waiting for an agent N``.
    """
    extra = f", unexpected {result.unexpected}" if result.unexpected else ""
    if waiting:
        extra += f", waiting for an agent {waiting}"
    return (
        f"ledger: sent {result.sent}, delivered {result.delivered}, unanswered {max(0, result.lost - waiting)}, "
        f"duplicated {result.duplicated}, reordered {result.reordered}{extra}"
    )
