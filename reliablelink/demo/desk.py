"""The agent desk: a client that stays online all day and answers visitors.

One session at a time, through :func:`reliablelink.connect`, which reconnects by itself.
The desk adds only what the transport cannot do: when the server has forgotten the session
(``SessionExpired``), it starts a new one; the server has meanwhile handed the old
session's unanswered conversations to other agents.

``reliablelink demo-agent`` (:func:`run_demo_agent`) runs one desk as a process of its own.
It connects to ``reliablelink demo-server``, shows each visitor message and answers it:
typed answers when standard input is a terminal (an empty line sends the scripted one),
scripted answers otherwise. It runs until Ctrl-C (or SIGTERM), ``--duration``, or until the
server closes the session; then it closes cleanly and prints what it can check alone
(:class:`~reliablelink.demo.chat.ArrivalCheck`)::

    ledger: received N, answered N, lost 0, duplicated 0, reordered 0
    link: sessions 1, expired 0, reconnects 1, resent 2

Exit status 0 only if nothing was missing, duplicated or reordered, and every message was
answered (or left with an expired session, which the server hands to another agent).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .. import Backoff, ConnectionFailed, LinkState, ReliableLinkError, Session, SessionExpired, connect
from .._util import why_unreachable
from .chat import (
    Answer,
    ArrivalCheck,
    ChatLedger,
    LinkTally,
    NothingChecked,
    VisitorMessage,
    decode_visitor_message,
    scripted_answer,
)
from .views import TimedPrinter, stop_on_signals

__all__ = [
    "AgentDesk",
    "Answerer",
    "DemoAgentSettings",
    "DeskEvents",
    "ScriptedAnswerer",
    "TypedAnswerer",
    "run_demo_agent",
]

_QUEUE = 64  # received messages waiting for their answer (bounded: backpressure to the server)


class Answerer(Protocol):
    """Writes the answer to a visitor message."""

    async def answer(self, message: VisitorMessage) -> str:
        """The answer to ``message``."""
        ...


class ScriptedAnswerer:
    """Canned answers after a short random "typing" delay.

    Args:
        delay: ``(low, high)`` seconds of typing per answer.
        seed: seed of the delays.
    """

    def __init__(self, delay: tuple[float, float] = (0.0, 0.0), seed: int | str | None = None) -> None:
        self._delay = delay
        self._rng = random.Random(seed)

    async def answer(self, message: VisitorMessage) -> str:
        """A scripted answer that fits the message."""
        await trio.sleep(self._rng.uniform(*self._delay))
        return scripted_answer(message.text)


class TypedAnswerer:
    """Answers typed on standard input, one line per message (an empty line: the scripted
    answer; after the end of input, every answer is scripted)."""

    def __init__(self) -> None:
        self._ended = False

    async def answer(self, message: VisitorMessage) -> str:
        """Prompt for the answer to ``message`` and read it."""
        if self._ended:
            return scripted_answer(message.text)
        print(f"  your answer to {message.visitor} [{message.conv} #{message.seq}] > ", end="", flush=True)
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        self._ended = not line
        return line.strip() or scripted_answer(message.text)


class DeskEvents:
    """What an :class:`AgentDesk` reports; override the methods of interest (all do nothing here)."""

    def state_changed(self, desk: AgentDesk) -> None:
        """``desk.state`` changed."""

    def note(self, desk: AgentDesk, text: str) -> None:
        """Something worth telling (a reconnect, an expiry)."""

    def session_started(self, desk: AgentDesk, session: Session) -> None:
        """The desk is online with a new session (the first one, or one after an expiry)."""

    def message(self, desk: AgentDesk, message: VisitorMessage) -> None:
        """A visitor message arrived."""

    def answered(self, desk: AgentDesk, answer: Answer) -> None:
        """An answer was sent (``send`` accepted it)."""


class AgentDesk:
    """One agent: connects, answers every visitor message in order, starts a new session after an expiry.

    Args:
        url: the server.
        agent: the agent's client id.
        key: the agent's key.
        answerer: writes the answers.
        events: told about what happens.
        ledger: in the one-process demo, the shared ledger to record receipts and answers in.
        options: passed to :func:`reliablelink.connect` (its ``connect_timeout`` bounds each
            try, so a server out of reach is reported that often).
        give_up_after: seconds of failed tries in a row before :meth:`run` raises
            ``ConnectionFailed`` (default: never give up).
    """

    def __init__(
        self,
        url: str,
        agent: str,
        key: bytes,
        *,
        answerer: Answerer,
        events: DeskEvents | None = None,
        ledger: ChatLedger | None = None,
        options: Mapping[str, Any] | None = None,
        give_up_after: float = math.inf,
    ) -> None:
        self.url = url
        self.agent = agent
        self._key = key
        self._answerer = answerer
        self._events = events or DeskEvents()
        self._ledger = ledger
        self._options = dict(options or {})
        self.state = "connecting"
        self.state_since = trio.current_time()
        self.tally = LinkTally()
        self.check = ArrivalCheck()
        self.closed_by_server = False
        self.give_up_after = give_up_after
        self.unreachable: ConnectionFailed | None = None  # the last failed try, until a session starts
        self._stopping = False
        self._run_scope = trio.CancelScope()
        self._session_scope: trio.CancelScope | None = None

    def stop(self) -> None:
        """End the desk: the current session is drained and closed, then :meth:`run` returns."""
        self._stopping = True
        if self._session_scope is not None:
            self._session_scope.cancel()
        else:
            self._run_scope.cancel()

    async def run(self) -> None:
        """Serve visitors until :meth:`stop` or until the server closes the session.

        Raises:
            AuthenticationError: the server does not accept this agent's id and key.
            ConnectionFailed: the server was out of reach for ``give_up_after`` seconds.
        """
        with self._run_scope:
            failing_since: float | None = None
            while not self._stopping:
                options = dict(self._options)
                if failing_since is not None and self.give_up_after < math.inf:
                    # The last try ends about when the time to give up comes.
                    left = failing_since + self.give_up_after - trio.current_time()
                    options["connect_timeout"] = max(1.0, min(options.get("connect_timeout", left), left))
                began = trio.current_time()
                try:
                    async with connect(self.url, client_id=self.agent, key=self._key, **options) as session:
                        self.unreachable, failing_since = None, None
                        ended = await self._serve(session)
                except ConnectionFailed as exc:
                    self.unreachable = exc
                    now = trio.current_time()
                    failing_since = began if failing_since is None else failing_since
                    reason = why_unreachable(exc)
                    if now - failing_since >= self.give_up_after:
                        raise ConnectionFailed(
                            f"cannot reach {self.url} within {self.give_up_after:g} s ({reason})"
                        ) from exc
                    self._events.note(self, f"cannot reach {self.url} ({reason}), retrying")
                    self._set_state("connecting")
                    continue
                if isinstance(ended, SessionExpired):
                    self._events.note(self, "the server forgot the session (expired); starting a new session")
                    self._set_state("new session")
                    continue
                if ended is None and not self._stopping:
                    self.closed_by_server = True
                    self._events.note(self, "the server closed the session")
                break
        self._set_state("closed")

    async def _serve(self, session: Session) -> ReliableLinkError | None:
        """Carry one session; return why it ended (``None``: closed by the server or stopped)."""
        self.tally.start(session)
        self._set_state("online")
        self._events.session_started(self, session)
        answered_before, received_before = self.check.answered, self.check.received
        ended: ReliableLinkError | None = None
        send, receive = trio.open_memory_channel[VisitorMessage](_QUEUE)
        with trio.CancelScope() as scope:
            self._session_scope = scope
            if self._stopping:
                scope.cancel()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_link, session)
                nursery.start_soon(self._answer, session, receive)
                ended = await self._receive(session, send)
                nursery.cancel_scope.cancel()
        self._session_scope = None
        unanswered = (self.check.received - received_before) - (self.check.answered - answered_before)
        if unanswered:  # the server hands them to another agent
            self.check.on_abandon(unanswered)
        self.tally.end(session, expired=isinstance(ended, SessionExpired))
        return ended

    async def _receive(
        self, session: Session, send: trio.MemorySendChannel[VisitorMessage]
    ) -> ReliableLinkError | None:
        try:
            async for data in session:
                message = decode_visitor_message(data)
                self.check.on_receive(session.session_id, message.conv, message.seq)
                if self._ledger is not None:
                    self._ledger.agent_received(message.conv, message.seq, session.session_id, self.agent)
                self._events.message(self, message)
                await send.send(message)
        except SessionExpired as exc:
            return exc
        except ReliableLinkError as exc:
            self._events.note(self, f"session ended: {exc}")
            return exc
        return None

    async def _answer(self, session: Session, receive: trio.MemoryReceiveChannel[VisitorMessage]) -> None:
        async for message in receive:
            answer = Answer(message.conv, message.seq, await self._answerer.answer(message))
            try:
                await session.send(answer.encode())
            except ReliableLinkError:
                return  # the receiver sees the same end
            self.check.on_answer()
            if self._ledger is not None:
                self._ledger.answer_sent(answer.conv, answer.seq, session.session_id, self.agent)
            self._events.answered(self, answer)

    async def _watch_link(self, session: Session) -> None:
        offline_since = math.nan
        while True:
            state = await session.wait_link_change()
            now = trio.current_time()
            if state is LinkState.RECONNECTING:
                offline_since = now
                self._set_state("reconnecting")
                self._events.note(self, "link lost, reconnecting")
            elif state is LinkState.CONNECTED:
                stats = session.stats
                self._set_state("online")
                self._events.note(
                    self,
                    f"back online after {now - offline_since:.1f} s, session resumed "
                    f"(reconnect {stats.reconnects}, {stats.resent} messages resent so far)",
                )
            else:
                return

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.state_since = trio.current_time()
            self._events.state_changed(self)


# -- reliablelink demo-agent -------------------------------------------------------------


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
        connect_timeout: seconds of failed tries in a row before giving up.
        retry_report: seconds between "cannot reach" lines while the server is out of reach
            (each try is bounded by it).
    """

    url: str
    agent: str
    key: bytes
    interactive: bool = False
    duration: float = math.inf
    heartbeat_interval: float = 1.0
    connect_timeout: float = 30.0
    retry_report: float = 3.0


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
    """Run the agent until stopped; return the exit status (0: the ledger is exact, 1: not).

    Raises:
        AuthenticationError: the server does not know this agent's id and key.
        ConnectionFailed: the server was out of reach for ``connect_timeout`` seconds, or
            until the run ended.
        NothingChecked: the run ended before any visitor message arrived.
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
            "connect_timeout": min(settings.retry_report, settings.connect_timeout),
        },
        give_up_after=settings.connect_timeout,
    )
    say(f"{settings.agent}: connecting to {settings.url}" + (" (type your answers)" if settings.interactive else ""))
    with trio.CancelScope() as force:
        async with trio.open_nursery() as nursery:
            await nursery.start(stop_on_signals, desk.stop, force, say)
            if settings.duration < math.inf:
                nursery.start_soon(_stop_after, settings.duration, desk)
            try:
                await desk.run()
            finally:
                nursery.cancel_scope.cancel()
                _report(desk, say)
    if desk.tally.counts().sessions == 0 and not desk.closed_by_server:
        reason = "" if desk.unreachable is None else f" ({why_unreachable(desk.unreachable)})"
        raise ConnectionFailed(f"the run ended before the agent reached {settings.url}{reason}")
    if desk.check.received == 0:
        raise NothingChecked("no visitor message arrived, so nothing was checked; run it longer (--duration)")
    return 0 if desk.check.exact else 1


def _report(desk: AgentDesk, say: TimedPrinter) -> None:
    if desk.tally.counts().sessions == 0:
        return  # never connected: nothing to report
    counts = desk.tally.counts()
    say.plain(desk.check.line())
    say.plain(
        f"link: sessions {counts.sessions}, expired {counts.expired}, "
        f"reconnects {counts.reconnects}, resent {counts.resent}"
    )


async def _stop_after(seconds: float, desk: AgentDesk) -> None:
    await trio.sleep(seconds)
    desk.stop()
