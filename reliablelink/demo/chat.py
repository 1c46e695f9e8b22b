"""The customer-service chat: its protocol, what visitors and scripted agents say, and its accounting.

**Protocol.** The customer-service demo's application protocol, carried in reliablelink messages.

Each reliablelink message holds one small JSON object (UTF-8, no whitespace). There are
two kinds, one per direction of an agent's session:

Server to agent, one per visitor message::

    {"kind": "visitor", "conv": "c7", "seq": 4, "visitor": "Ana", "text": "Where is my parcel?"}

    # re-delivered after the agent that had it lost its session:
    {"kind": "visitor", "conv": "c7", "seq": 4, "visitor": "Ana", "text": "...", "handover": "agent-2"}

Agent to server, exactly one per visitor message, in the order the messages came::

    {"kind": "answer", "conv": "c7", "seq": 4, "text": "It left the warehouse this morning."}

``conv`` names a conversation (one visitor's chat); ``seq`` numbers the visitor's messages
in it, from 1, with no gaps. An answer carries the ``seq`` of the message it answers, so
the server knows which messages are still unanswered. ``handover`` is present only when the
server hands a conversation's unanswered messages to another agent because the session of
the agent named there expired or ended: the new agent may see ``seq`` start above 1.

The transport already makes each session's stream exactly-once and in order; the protocol
only adds what the application needs on top: which conversation a message belongs to, and
which message an answer answers.

**Accounting.** Exactly-once accounting for the customer-service demo.

Every conversation is checked in both directions with :class:`reliablelink.testing.Ledger`,
one ledger per conversation and direction, messages named by their ``seq``:

* **visitor -> agent**: *sent* are the visitor's messages; *delivered* are those an agent's
  application received; *duplicated* counts a message received twice, *reordered* one
  received after a later message of the same conversation.
* **agent -> visitor**: *sent* are the answers an agent's ``send`` accepted; *delivered* are
  those that reached the visitor's conversation on the server.

The demo's final line adds both directions up.

**Handover after an expiry.** reliablelink is exactly-once for the life of a session. When a
session ends for good (the server expired it: ``SessionExpired``), the server's handler sees
the end only after it has read every answer that arrived on it. At that moment the
conversations that agent held are *settled* up to their last answered message; every later
message of theirs is handed to another agent, which gets it again (marked ``handover``) in
a new *segment* (one conversation on one session). So for each segment the ledger counts:

* messages up to the settled ``seq``: received and answered there, counted once;
* messages after it: the application's to re-deliver. The old session's receipt of one of
  them, if any, does not count (its answer could never reach the visitor), and neither does
  an answer the old agent's ``send`` had accepted but the expired session never delivered.
  The next segment counts them. They are shown per agent as *handed over*, never as lost:
  the transport lost nothing silently (it raised ``SessionExpired``), and the application
  re-routed them.

A visitor message is therefore *lost* only if no agent ever received it (or its answer never
came back), and *duplicated* only if two counted receipts (or answers) exist for it: what
the visitor would notice.

The two-process ``demo-server`` cannot see what the agents received; it uses the
:meth:`ChatLedger.round_trip` ledger instead: *sent* are visitor messages, *delivered* those
whose answer reached the conversation. It prints the rest as *unanswered*, not lost: it cannot
tell the two apart (the agents may have left early).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import LinkState, Session
from ..testing import Ledger, LedgerResult

__all__ = [
    "VISITOR_NAMES",
    "AgentTally",
    "Answer",
    "ArrivalCheck",
    "ChatLedger",
    "LinkCounts",
    "LinkTally",
    "NothingChecked",
    "VisitorMessage",
    "decode_answer",
    "decode_visitor_message",
    "scripted_answer",
    "sum_results",
    "visitor_lines",
]

_T = TypeVar("_T")

# -- the protocol ------------------------------------------------------------------------


class NothingChecked(Exception):
    """A demo run ended before any message could be checked: it proves nothing, so it fails."""


@dataclass(frozen=True, slots=True)
class VisitorMessage:
    """A visitor's message, as routed to an agent.

    Attributes:
        conv: the conversation id.
        seq: the message's number in the conversation (1, 2, ...).
        visitor: the visitor's display name.
        text: what the visitor wrote.
        handover: the agent this message was taken from after its session ended, if any.
    """

    conv: str
    seq: int
    visitor: str
    text: str
    handover: str | None = None

    def encode(self) -> bytes:
        """The message as sent over the session."""
        obj: dict[str, Any] = {
            "kind": "visitor",
            "conv": self.conv,
            "seq": self.seq,
            "visitor": self.visitor,
            "text": self.text,
        }
        if self.handover is not None:
            obj["handover"] = self.handover
        return _dump(obj)


@dataclass(frozen=True, slots=True)
class Answer:
    """An agent's answer to one visitor message.

    Attributes:
        conv: the conversation id.
        seq: the ``seq`` of the visitor message it answers.
        text: the answer.
    """

    conv: str
    seq: int
    text: str

    def encode(self) -> bytes:
        """The answer as sent over the session."""
        return _dump({"kind": "answer", "conv": self.conv, "seq": self.seq, "text": self.text})


def decode_visitor_message(data: bytes) -> VisitorMessage:
    """Parse a server-to-agent message.

    Raises:
        ValueError: not a valid ``visitor`` message.
    """
    obj = _load(data, "visitor")
    handover = obj.get("handover")
    if handover is not None and not isinstance(handover, str):
        raise ValueError(f"bad handover field in {data!r}")
    return VisitorMessage(
        _field(obj, "conv", str),
        _field(obj, "seq", int),
        _field(obj, "visitor", str),
        _field(obj, "text", str),
        handover,
    )


def decode_answer(data: bytes) -> Answer:
    """Parse an agent-to-server message.

    Raises:
        ValueError: not a valid ``answer`` message.
    """
    obj = _load(data, "answer")
    return Answer(_field(obj, "conv", str), _field(obj, "seq", int), _field(obj, "text", str))


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _load(data: bytes, kind: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a JSON message: {data[:80]!r}") from exc
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise ValueError(f"expected a {kind!r} message, got {data[:80]!r}")
    return obj


def _field(obj: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {name!r} must be {kind.__name__}, got {value!r}")
    return value


# -- the script --------------------------------------------------------------------------

VISITOR_NAMES = ("Ana", "Ben", "Chloé", "Dmitri", "Esi", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lea")

_OPENINGS = ("Hello!", "Hi there.", "Good morning.", "Hi, quick question.")
_QUESTIONS = (
    "Where is my parcel? Order {order}.",
    "Can I change the delivery address for order {order}?",
    "I was charged twice for order {order}.",
    "How do I return a pair of shoes?",
    "Is the blue jacket back in stock?",
    "My discount code does not work.",
    "Can you deliver on Saturday?",
    "The app logs me out all the time.",
)
_FOLLOW_UPS = ("OK, and how long will that take?", "Could you check again?", "Is there a tracking link?", "Hmm, fine.")
_CLOSINGS = ("Thanks a lot!", "Great, thank you.", "Perfect, bye!")

_ANSWERS = (
    ("parcel", "Your parcel left the warehouse this morning; it should arrive tomorrow."),
    ("address", "Done: the new address is on the order."),
    ("charged", "I see the second charge; it is refunded, 3-5 days to show up."),
    ("return", "Print the label from your account page and drop the box at any post office."),
    ("stock", "It is back next week; I can reserve one for you."),
    ("code", "That code expired yesterday; here is a new one: SPRING10."),
    ("saturday", "Yes, Saturday delivery is available for a small fee."),
    ("logs me out", "Please update the app; version 4.2 fixes that."),
    ("how long", "Usually one or two working days."),
    ("check again", "Checked: everything is on track."),
    ("tracking", "Yes, the tracking link is in your confirmation e-mail."),
    ("thank", "You are welcome! Anything else?"),
    ("bye", "Goodbye, have a nice day!"),
)


def visitor_lines(rng: random.Random) -> list[str]:
    """A short chat: a greeting, one or two questions with follow-ups, a closing line."""
    order = rng.randrange(10000, 99999)
    lines = [rng.choice(_OPENINGS)]
    for question in rng.sample(_QUESTIONS, rng.randint(1, 2)):
        lines.append(question.format(order=order))
        if rng.random() < 0.6:
            lines.append(rng.choice(_FOLLOW_UPS))
    lines.append(rng.choice(_CLOSINGS))
    return lines


def scripted_answer(text: str) -> str:
    """A canned answer that fits ``text`` (the agent desk's non-interactive mode)."""
    lowered = text.lower()
    for keyword, answer in _ANSWERS:
        if keyword in lowered:
            return answer
    return "Hello! How can I help you today?"


# -- the accounting ----------------------------------------------------------------------


def sum_results(results: Iterable[LedgerResult]) -> LedgerResult:
    """Add ledger results up, field by field."""
    sent = delivered = lost = duplicated = reordered = unexpected = 0
    for r in results:
        sent += r.sent
        delivered += r.delivered
        lost += r.lost
        duplicated += r.duplicated
        reordered += r.reordered
        unexpected += r.unexpected
    return LedgerResult(sent, delivered, lost, duplicated, reordered, unexpected)


def _tally(sent: Iterable[int], received: Iterable[int]) -> LedgerResult:
    """The ledger of one direction: these numbers sent, then these received, in order."""
    ledger = Ledger()
    for seq in sent:
        ledger.on_send(seq)
    for seq in received:
        ledger.on_receive(seq)
    return ledger.result()


@dataclass(eq=False)
class _Segment:
    """One conversation on one agent session."""

    agent: str
    settled: float = math.inf  # seqs above it were handed over to another segment
    routed: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    answers_sent: list[int] = field(default_factory=list)
    answers_received: list[int] = field(default_factory=list)

    def counts(self, seq: int) -> bool:
        return seq <= self.settled


@dataclass(eq=False)
class _Conversation:
    visitor_sent: list[int] = field(default_factory=list)
    # Both in the order they happened, across segments (for the reordering check).
    arrivals: list[tuple[int, _Segment]] = field(default_factory=list)
    answers_sent: list[tuple[int, _Segment]] = field(default_factory=list)
    answers_received: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AgentTally:
    """One agent's share of the traffic, over all its sessions.

    Attributes:
        agent: the agent's client id.
        to_agent: visitor messages routed to it and settled there.
        to_visitor: its answers.
        handed_over: messages it had been sent that went to another agent after its session ended.
        answered: its answers the server received (all the server can see of ``to_visitor``).
    """

    agent: str
    to_agent: LedgerResult
    to_visitor: LedgerResult
    handed_over: int
    answered: int

    @property
    def total(self) -> LedgerResult:
        """Both directions added up."""
        return sum_results((self.to_agent, self.to_visitor))


class ChatLedger:
    """Records a chat's events as they happen; classifies them at the end (see the module docstring).

    Session ids name segments: ``(conversation, session id)`` is one conversation on one
    agent session.
    """

    def __init__(self) -> None:
        self._conversations: dict[str, _Conversation] = {}
        self._segments: dict[tuple[str, str], _Segment] = {}

    def _conv(self, conv: str) -> _Conversation:
        found = self._conversations.get(conv)
        if found is None:
            found = self._conversations[conv] = _Conversation()
        return found

    def _segment(self, conv: str, session_id: str, agent: str) -> _Segment:
        key = (conv, session_id)
        found = self._segments.get(key)
        if found is None:
            found = self._segments[key] = _Segment(agent)
        return found

    # -- events --------------------------------------------------------------------------

    def visitor_sent(self, conv: str, seq: int) -> None:
        """A visitor sent message ``seq`` of ``conv`` (the server holds it)."""
        self._conv(conv).visitor_sent.append(seq)

    def routed(self, conv: str, seq: int, session_id: str, agent: str) -> None:
        """The server's ``send`` to the agent's session accepted the message."""
        self._segment(conv, session_id, agent).routed.append(seq)

    def agent_received(self, conv: str, seq: int, session_id: str, agent: str) -> None:
        """The agent's application received the message."""
        segment = self._segment(conv, session_id, agent)
        segment.received.append(seq)
        self._conv(conv).arrivals.append((seq, segment))

    def answer_sent(self, conv: str, seq: int, session_id: str, agent: str) -> None:
        """The agent's ``send`` accepted its answer to message ``seq``."""
        segment = self._segment(conv, session_id, agent)
        segment.answers_sent.append(seq)
        self._conv(conv).answers_sent.append((seq, segment))

    def answer_received(self, conv: str, seq: int, session_id: str, agent: str) -> None:
        """The server received the answer to message ``seq`` (it reached the visitor)."""
        self._segment(conv, session_id, agent).answers_received.append(seq)
        self._conv(conv).answers_received.append(seq)

    def handed_over(self, conv: str, session_id: str, agent: str, settled: int) -> None:
        """The agent's session ended; messages of ``conv`` after ``settled`` go to another agent."""
        self._segment(conv, session_id, agent).settled = settled

    # -- results -------------------------------------------------------------------------

    def legs(self) -> tuple[LedgerResult, LedgerResult]:
        """``(visitor -> agent, agent -> visitor)``, over all conversations."""
        to_agent: list[LedgerResult] = []
        to_visitor: list[LedgerResult] = []
        for conv in self._conversations.values():
            to_agent.append(_tally(conv.visitor_sent, [seq for seq, seg in conv.arrivals if seg.counts(seq)]))
            to_visitor.append(_tally([seq for seq, seg in conv.answers_sent if seg.counts(seq)], conv.answers_received))
        return sum_results(to_agent), sum_results(to_visitor)

    def total(self) -> LedgerResult:
        """Both directions added up: the demo's final ``ledger:`` line."""
        return sum_results(self.legs())

    def round_trip(self) -> LedgerResult:
        """Visitor messages against the answers that came back (all the server can see)."""
        return sum_results([_tally(conv.visitor_sent, conv.answers_received) for conv in self._conversations.values()])

    def by_agent(self) -> list[AgentTally]:
        """Each agent's share, in order of agent id."""
        parts: dict[str, tuple[list[LedgerResult], list[LedgerResult], list[int], list[int]]] = {}
        for segment in self._segments.values():
            to_agent, to_visitor, handed, answered = parts.setdefault(segment.agent, ([], [], [], []))
            counted = segment.counts
            to_agent.append(_tally(filter(counted, segment.routed), filter(counted, segment.received)))
            to_visitor.append(_tally(filter(counted, segment.answers_sent), segment.answers_received))
            handed.append(sum(1 for seq in segment.routed if not segment.counts(seq)))
            answered.append(len(set(segment.answers_received)))
        return [
            AgentTally(agent, sum_results(a), sum_results(v), sum(h), sum(n))
            for agent, (a, v, h, n) in sorted(parts.items())
        ]


class ArrivalCheck:
    """What one agent can check alone: within each session, each conversation's messages
    arrive once, in order, without gaps (a handed-over conversation may start above 1).

    ``lost`` counts gaps: a message missing below one that arrived in the same session.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], set[int]] = {}
        self._highest: dict[tuple[str, str], int] = {}
        self.received = 0
        self.answered = 0
        self.abandoned = 0
        self.duplicated = 0
        self.reordered = 0

    def on_receive(self, session_id: str, conv: str, seq: int) -> None:
        """A visitor message arrived on session ``session_id``."""
        key = (session_id, conv)
        seen = self._seen.setdefault(key, set())
        if seq in seen:
            self.duplicated += 1
            return
        self.received += 1
        seen.add(seq)
        highest = self._highest.get(key, seq)
        if seq < highest:
            self.reordered += 1
        self._highest[key] = max(highest, seq)

    def on_answer(self) -> None:
        """An answer was sent."""
        self.answered += 1

    def on_abandon(self, count: int) -> None:
        """``count`` messages went unanswered because their session ended (the server re-routes them)."""
        self.abandoned += count

    @property
    def lost(self) -> int:
        """Messages missing below the highest one of their conversation and session."""
        return sum(max(seen) - min(seen) + 1 - len(seen) for seen in self._seen.values() if seen)

    @property
    def exact(self) -> bool:
        """No gap, no duplicate, nothing reordered, and every message answered or re-routed."""
        return (self.lost, self.duplicated, self.reordered) == (0, 0, 0) and (
            self.answered + self.abandoned == self.received
        )

    def line(self) -> str:
        """``ledger: received N, answered N, lost 0, duplicated 0, reordered 0``."""
        extra = f", left with ended sessions {self.abandoned}" if self.abandoned else ""
        return (
            f"ledger: received {self.received}, answered {self.answered}{extra}, lost {self.lost}, "
            f"duplicated {self.duplicated}, reordered {self.reordered}"
        )


@dataclass(frozen=True, slots=True)
class LinkCounts:
    """Counters of all an endpoint's sessions so far.

    Attributes:
        sessions: sessions started.
        expired: sessions that ended by expiry.
        sent: messages its ``send`` accepted.
        received: messages its application received.
        resent: messages sent again after a reconnect.
        reconnects: connections after the first, per session, added up.
        in_flight: messages sent and not yet acknowledged on the current session.
        link_state: the current session's link state (``CLOSED`` between sessions).
    """

    sessions: int
    expired: int
    sent: int
    received: int
    resent: int
    reconnects: int
    in_flight: int
    link_state: LinkState


class LinkTally:
    """Adds the counters of ended sessions to those of the current one."""

    def __init__(self) -> None:
        self.current: Session | None = None
        self.sessions = 0
        self.expired = 0
        self._sent = self._received = self._resent = self._reconnects = 0

    def start(self, session: Session) -> None:
        """``session`` is now the current one."""
        self.current = session
        self.sessions += 1

    def end(self, session: Session, *, expired: bool = False) -> None:
        """``session`` ended; keep its counters."""
        stats = session.stats
        self._sent += stats.sent
        self._received += stats.received
        self._resent += stats.resent
        self._reconnects += stats.reconnects
        self.expired += expired
        if self.current is session:
            self.current = None

    def counts(self) -> LinkCounts:
        """A snapshot."""
        sent, received, resent, reconnects = self._sent, self._received, self._resent, self._reconnects
        in_flight, state = 0, LinkState.CLOSED
        if self.current is not None:
            stats = self.current.stats
            sent += stats.sent
            received += stats.received
            resent += stats.resent
            reconnects += stats.reconnects
            in_flight, state = stats.in_flight, stats.link_state
        return LinkCounts(self.sessions, self.expired, sent, received, resent, reconnects, in_flight, state)
