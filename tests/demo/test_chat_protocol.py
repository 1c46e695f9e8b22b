"""The demo's JSON messages."""

from __future__ import annotations

import pytest

from reliablelink.demo.chat import Answer, VisitorMessage, decode_answer, decode_visitor_message


def test_round_trips() -> None:
    plain = VisitorMessage("c7", 4, "Chloé", "Où est mon colis ?")
    handed = VisitorMessage("c7", 5, "Chloé", "Hello?", handover="agent-2")
    answer = Answer("c7", 4, "Tomorrow.")
    assert decode_visitor_message(plain.encode()) == plain
    assert decode_visitor_message(handed.encode()) == handed
    assert b'"handover"' not in plain.encode()
    assert decode_answer(answer.encode()) == answer


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"\xff",
        b"[]",
        b'{"kind": "answer", "conv": "c1", "seq": 1, "text": "x"}',
        b'{"kind": "visitor", "conv": "c1", "seq": "1", "visitor": "A", "text": "x"}',
        b'{"kind": "visitor", "conv": "c1", "seq": true, "visitor": "A", "text": "x"}',
        b'{"kind": "visitor", "conv": "c1", "seq": 1, "visitor": "A", "text": "x", "handover": 3}',
    ],
)
def test_bad_visitor_messages_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_visitor_message(data)


def test_bad_answer_is_refused() -> None:
    with pytest.raises(ValueError):
        decode_answer(VisitorMessage("c1", 1, "A", "x").encode())
