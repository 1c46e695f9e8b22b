"""``reliablelink demo-agent``: one agent desk as a process of its own.

It connects to ``reliablelink demo-server``, shows each visitor message and answers it:
typed answers when standard input is a terminal (an empty line sends the scripted one),
scripted answers otherwise. It runs until Ctrl-C (or SIGTERM), ``--duration``, or until the
server closes the session; then it closes cleanly and prints what it can check alone
(:class:`~reliablelink.demo._chat_ledger.ArrivalCheck`)::

    ledger: received N, answered N, lost 0, duplicated 0, reordered 0
    link: sessions 1, expired 0, reconnects 1, resent 2

Exit status 0 only if nothing was missing, duplicated or reordered, and every message was
answered (or left with an expired session, which the server hands to another agent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import trio

from .. import Backoff, Session
from ._agent_desk import AgentDesk, Answerer, DeskEvents, ScriptedAnswerer, TypedAnswerer
from ._chat_protocol import Answer, VisitorMessage
from ._stop_signals import stop_on_signals
from ._views import TimedPrinter

__all__ = ["DemoAgentSettings", "run_demo_agent"]


@dataclass(frozen=True, slots=True)
class DemoAgentSettings:
    """How the demo agent runs.

    Attributes:
        url: the server's URL.
        agent: the agent's id.
        key: the agent's key.
        interactive: read answers from standard input.
        duration: seconds before stopping by itself (``math.inf``: until stopped).
        heartbeat_interval: heartbeat (``dead_after`` is three of them).
    """

    url: str
    agent: str
    key: bytes
    interactive: bool = False
    duration: float = math.inf
    heartbeat_interval: float = 1.0


class _Printer(DeskEvents):
    def __init__(self, say: TimedPrinter) -> None:
        self._say = say

    def note(self, desk: AgentDesk, text: str) -> None:
        self._say(f"{desk.agent}: {text}")

    def session_started(self, desk: AgentDesk, session: Session) -> None:
        self._say(f"{desk.agent}: online, session {session.session_id[:8]}")

    def message(self, desk: AgentDesk, message: VisitorMessage) -> None:
        handover = f" (handed over from {message.handover})" if message.handover else ""
        self._say(f"[{message.conv} #{message.seq}] {message.visitor}: {message.text}{handover}")

    def answered(self, desk: AgentDesk, answer: Answer) -> None:
        self._say(f"[{answer.conv} #{answer.seq}] {desk.agent}: {answer.text}")


async def run_demo_agent(settings: DemoAgentSettings, say: TimedPrinter | None = None) -> int:
    """Run the agent until stopped; return the exit status.

    Raises:
        AuthenticationError: the server does not know this agent's id and key.
    """
    say = say or TimedPrinter()
    answerer: Answerer = TypedAnswerer() if settings.interactive else ScriptedAnswerer((0.05, 0.3))
    desk = AgentDesk(
        settings.url,
        settings.agent,
        settings.key,
        answerer=answerer,
        events=_Printer(say),
        options={
            "heartbeat_interval": settings.heartbeat_interval,
            "dead_after": 3 * settings.heartbeat_interval,
            "reconnect_backoff": Backoff(0.1, 2.0),
            "close_timeout": 3.0,
        },
    )
    say(f"{settings.agent}: connecting to {settings.url}" + (" (type your answers)" if settings.interactive else ""))
    with trio.CancelScope() as force:
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signals, desk.stop, force, say)
            if settings.duration < math.inf:
                nursery.start_soon(_stop_after, settings.duration, desk)
            await desk.run()
            nursery.cancel_scope.cancel()
    counts = desk.tally.counts()
    say.plain(desk.check.line())
    say.plain(
        f"link: sessions {counts.sessions}, expired {counts.expired}, "
        f"reconnects {counts.reconnects}, resent {counts.resent}"
    )
    return 0 if desk.check.exact else 1


async def _stop_after(seconds: float, desk: AgentDesk) -> None:
    await trio.sleep(seconds)
    desk.stop()
