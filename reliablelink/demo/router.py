"""The demo server's application: conversations, the agents online, routing and handover.

:meth:`Router.handle_agent` is the :func:`reliablelink.serve` handler: it runs once per agent
session. Each visitor conversation belongs to one agent session at a time; the router sends
it the conversation's messages in order and reads the answers back. When an agent's session
ends (it expired, or the agent closed it) the router *hands over* its conversations that
still have unanswered messages: another agent gets them again, from the first unanswered
one (see :mod:`reliablelink.demo.chat` for how they are counted).

:func:`run_visitors` simulates the visitors: each chats in one conversation after another
until told to stop.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .. import LinkState, ReliableLinkError, Session, SessionExpired
from .chat import VISITOR_NAMES, ChatLedger, LinkCounts, LinkTally, VisitorMessage, decode_answer, visitor_lines

__all__ = ["MAX_UNANSWERED", "AgentLink", "Conversation", "Router", "run_visitors"]

log = logging.getLogger("reliablelink.demo")


@dataclass(eq=False)
class Conversation:
    """One visitor's chat, as the server holds it.

    Attributes:
        id: the conversation id.
        visitor: the visitor's name.
        texts: the visitor's messages; message ``seq`` is ``texts[seq - 1]``.
        owner: the agent session it is routed to, or ``None`` while it waits for one.
        routed: the highest ``seq`` sent to the owner's session.
        answered: the highest ``seq`` answered.
        ended: the visitor has left (answers may still be due).
        handover_from: the agent whose session ended with messages of this conversation unanswered.
        handover_upto: the messages up to this ``seq`` are re-deliveries (sent as ``handover``).
    """

    id: str
    visitor: str
    texts: list[str] = field(default_factory=list)
    owner: AgentLink | None = None
    routed: int = 0
    answered: int = 0
    ended: bool = False
    handover_from: str | None = None
    handover_upto: int = 0

    @property
    def unanswered(self) -> int:
        """Messages still waiting for an answer."""
        return len(self.texts) - self.answered


@dataclass(eq=False)
class AgentLink:
    """One agent session on the server and the conversations routed to it."""

    session: Session
    conversations: list[Conversation] = field(default_factory=list)
    wake: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)

    @property
    def agent(self) -> str:
        """The agent's client id."""
        return self.session.client_id

    def next_to_route(self) -> Conversation | None:
        """A conversation of this agent with a message not sent yet."""
        for conv in self.conversations:
            if conv.routed < len(conv.texts):
                return conv
        return None


class Router:
    """Routes visitor conversations to agent sessions and hands them over when a session ends.

    Args:
        ledger: where every event is recorded.
        say: prints a line about something worth seeing (an agent joined, a handover).

    Attributes:
        handovers: times an ended session's conversations were handed over.
        handed_over: messages taken back from ended sessions (sent to them, not answered there)
            to be sent again, to another agent or to the same agent's next session.
    """

    def __init__(self, ledger: ChatLedger, say: Callable[[str], None] = print) -> None:
        self.ledger = ledger
        self.say = say
        self.agents: list[AgentLink] = []
        self.conversations: dict[str, Conversation] = {}
        self.handovers = 0
        self.handed_over = 0
        self.tallies: dict[str, LinkTally] = {}
        self._waiting: list[Conversation] = []
        self._changed = trio.lowlevel.ParkingLot()
        self._handlers = 0
        self._closing = False

    # -- visitors ------------------------------------------------------------------------

    def open_conversation(self, visitor: str) -> Conversation:
        """Start a conversation for ``visitor``."""
        conv = Conversation(f"c{len(self.conversations) + 1}", visitor)
        self.conversations[conv.id] = conv
        return conv

    def visitor_says(self, conv: Conversation, text: str) -> int:
        """Take the visitor's next message; return its ``seq``."""
        conv.texts.append(text)
        seq = len(conv.texts)
        self.ledger.visitor_sent(conv.id, seq)
        if conv.owner is None:
            self._assign(conv)
        else:
            conv.owner.wake.unpark_all()
        return seq

    def end_conversation(self, conv: Conversation) -> None:
        """The visitor left ``conv``."""
        conv.ended = True
        self._drop_if_done(conv)

    # -- waiting -------------------------------------------------------------------------

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds; it is checked after every routing change."""
        while not predicate():
            await self._changed.park()

    def all_answered(self) -> bool:
        """Every visitor message has its answer."""
        return all(conv.unanswered == 0 for conv in self.conversations.values())

    def nothing_to_wait_for(self) -> bool:
        """Every visitor message has its answer, or no agent session is left to answer it."""
        return not self.agents or self.all_answered()

    def waiting(self) -> int:
        """Unanswered visitor messages of conversations that no agent session holds (they
        wait for an agent to come online)."""
        return sum(conv.unanswered for conv in self.conversations.values() if conv.owner is None)

    @property
    def messages(self) -> tuple[int, int]:
        """``(visitor messages, answered)`` so far."""
        convs = self.conversations.values()
        return sum(len(c.texts) for c in convs), sum(c.answered for c in convs)

    def counts(self, agent: str) -> LinkCounts | None:
        """Server-side counters of ``agent``'s sessions, or ``None`` if it never connected."""
        tally = self.tallies.get(agent)
        return None if tally is None else tally.counts()

    def expired(self, agent: str) -> int:
        """How many of ``agent``'s sessions expired so far."""
        tally = self.tallies.get(agent)
        return 0 if tally is None else tally.expired

    def expiry_watch(self, agent: str) -> Callable[[], Awaitable[None]]:
        """An async function that returns once another of ``agent``'s sessions has expired
        (counting from this call)."""
        before = self.expired(agent)

        async def wait() -> None:
            await self.wait_until(lambda: self.expired(agent) > before)

        return wait

    def conversations_of(self, agent: str) -> int:
        """How many open conversations ``agent`` holds now."""
        return sum(len(link.conversations) for link in self.agents if link.agent == agent)

    async def shutdown(self) -> None:
        """Close every agent session (drained, then CLOSE) and wait until their handlers end."""
        self._closing = True
        for link in self.agents:
            link.scope.cancel()
        await self.wait_until(lambda: self._handlers == 0)

    # -- agents --------------------------------------------------------------------------

    async def handle_agent(self, session: Session) -> None:
        """The :func:`reliablelink.serve` handler: one call per agent session."""
        self._handlers += 1
        try:
            await self._carry(session)
        finally:
            self._handlers -= 1
            self._changed.unpark_all()

    async def _carry(self, session: Session) -> None:
        if self._closing:
            await session.aclose()
            return
        link = AgentLink(session)
        tally = self.tallies.setdefault(link.agent, LinkTally())
        tally.start(session)
        self.agents.append(link)
        self.say(f"{link.agent} joined (session {session.session_id[:8]})")
        for conv in list(self._waiting):
            self._assign(conv)
        self._changed.unpark_all()
        ended: ReliableLinkError | None = None
        try:
            with link.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._feed, link)
                    ended = await self._read_answers(link)
                    nursery.cancel_scope.cancel()
        finally:
            expired = isinstance(ended, SessionExpired)
            tally.end(session, expired=expired)
            self._release(link, "its session expired" if expired else "its session ended")
        if ended is None:
            await session.aclose()

    async def _feed(self, link: AgentLink) -> None:
        """Send each conversation's messages to the agent, in order."""
        session = link.session
        try:
            while True:
                conv = link.next_to_route()
                if conv is None:
                    await link.wake.park()
                    continue
                seq = conv.routed + 1
                handover = conv.handover_from if seq <= conv.handover_upto else None
                message = VisitorMessage(conv.id, seq, conv.visitor, conv.texts[seq - 1], handover)
                await session.send(message.encode())
                # Still ours: a conversation moves only in _release, after this task has ended.
                conv.routed = seq
                self.ledger.routed(conv.id, seq, session.session_id, link.agent)
        except ReliableLinkError:
            return  # the reader sees the same end and reports it

    async def _read_answers(self, link: AgentLink) -> ReliableLinkError | None:
        """Read answers until the session ends; return why (``None``: closed cleanly)."""
        session = link.session
        try:
            async for data in session:
                answer = decode_answer(data)
                self.ledger.answer_received(answer.conv, answer.seq, session.session_id, link.agent)
                conv = self.conversations.get(answer.conv)
                if conv is None:
                    log.warning("%s answered unknown conversation %r", link.agent, answer.conv)
                    continue
                conv.answered = max(conv.answered, answer.seq)
                self._drop_if_done(conv)
                self._changed.unpark_all()
        except ReliableLinkError as exc:
            return exc
        return None

    # -- routing -------------------------------------------------------------------------

    def _assign(self, conv: Conversation, avoid: str | None = None) -> None:
        """Give ``conv`` to the least busy agent (not ``avoid`` if another is online)."""
        candidates = [link for link in self.agents if link.agent != avoid] or self.agents
        if not candidates or self._closing:
            if conv not in self._waiting:
                self._waiting.append(conv)
            return
        # Prefer agents whose link is up now, then the fewest conversations.
        link = min(candidates, key=lambda c: (c.session.link_state is not LinkState.CONNECTED, len(c.conversations)))
        if conv in self._waiting:
            self._waiting.remove(conv)
        conv.owner = link
        link.conversations.append(conv)
        link.wake.unpark_all()

    def _drop_if_done(self, conv: Conversation) -> None:
        if conv.ended and conv.unanswered == 0 and conv.owner is not None:
            conv.owner.conversations.remove(conv)
            conv.owner = None

    def _release(self, link: AgentLink, why: str) -> None:
        """``link``'s session ended: hand its unanswered conversations to other agents."""
        self.agents.remove(link)
        conversations, link.conversations = link.conversations, []
        for conv in conversations:
            conv.owner = None
        self._changed.unpark_all()
        if self._closing:
            return  # nobody to hand over to: what is unanswered stays unanswered (and is reported)
        moved: list[Conversation] = []
        for conv in conversations:
            # Settled up to the last answer; the rest is re-delivered, marked as handed over.
            self.ledger.handed_over(conv.id, link.session.session_id, link.agent, conv.answered)
            if conv.routed > conv.answered:
                conv.handover_from, conv.handover_upto = link.agent, conv.routed
                self.handed_over += conv.routed - conv.answered
            conv.routed = conv.answered
            if conv.unanswered:
                moved.append(conv)
        if not moved:
            self.say(f"{link.agent}: {why}; nothing unanswered to hand over")
            return
        for conv in moved:
            self._assign(conv, avoid=link.agent)
        self.handovers += 1
        owners = sorted({c.owner.agent if c.owner else "the waiting list" for c in moved})
        unanswered = sum(c.unanswered for c in moved)
        self.say(
            f"{link.agent}: {why}; {len(moved)} conversations with {unanswered} unanswered messages "
            f"handed over to {', '.join(owners)}"
        )


# -- visitors ----------------------------------------------------------------------------

# A visitor stops typing while this many of its messages wait for an answer (a person
# would too), so a pulled agent cable builds up a bounded backlog, never an endless one.
MAX_UNANSWERED = 4


async def run_visitors(
    router: Router,
    count: int,
    stop: trio.Event,
    *,
    seed: int,
    pause: tuple[float, float] = (0.05, 0.5),
) -> None:
    """Run ``count`` visitors until ``stop`` is set.

    Each visitor opens a conversation, sends its lines with a random ``pause`` (seconds)
    between them, waits for the last answer, leaves, and starts another conversation.
    Stopping leaves the current conversations open: their answers are still due.
    """
    async with trio.open_nursery() as nursery:
        for i in range(count):
            name = VISITOR_NAMES[i % len(VISITOR_NAMES)] + ("" if i < len(VISITOR_NAMES) else f" {i}")
            nursery.start_soon(_visitor, router, name, random.Random(f"{seed}/{i}"), pause)
        await stop.wait()
        nursery.cancel_scope.cancel()


async def _visitor(router: Router, name: str, rng: random.Random, pause: tuple[float, float]) -> None:
    await trio.sleep(rng.uniform(0, pause[1]))
    while True:
        conv = router.open_conversation(name)

        def below_cap(conv: Conversation = conv) -> bool:
            return conv.unanswered < MAX_UNANSWERED

        def all_answered(conv: Conversation = conv) -> bool:
            return conv.unanswered == 0

        for text in visitor_lines(rng):
            await trio.sleep(rng.uniform(*pause))
            await router.wait_until(below_cap)
            router.visitor_says(conv, text)
        await router.wait_until(all_answered)
        router.end_conversation(conv)
