"""The customer-service demo's application protocol, carried in reliablelink messages.

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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Answer", "VisitorMessage", "decode_answer", "decode_visitor_message"]

_T = TypeVar("_T")


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
