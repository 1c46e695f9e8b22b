"""The demo's accounting: handovers after an expiry are re-deliveries, never loss or duplicates."""

from __future__ import annotations

from reliablelink.demo.chat import ArrivalCheck, ChatLedger


def chat(ledger: ChatLedger, conv: str, seqs: range, session: str, agent: str, *, answered: bool = True) -> None:
    """Route ``seqs`` to ``session``; the agent receives them (and answers them, which arrive)."""
    for seq in seqs:
        ledger.routed(conv, seq, session, agent)
        ledger.agent_received(conv, seq, session, agent)
        if answered:
            ledger.answer_sent(conv, seq, session, agent)
            ledger.answer_received(conv, seq, session, agent)


def test_messages_handed_over_after_an_expiry_count_once() -> None:
    ledger = ChatLedger()
    for seq in range(1, 7):
        ledger.visitor_sent("c1", seq)
    chat(ledger, "c1", range(1, 3), "A", "agent-1")  # 1, 2 answered by agent-1
    chat(ledger, "c1", range(3, 4), "A", "agent-1", answered=False)  # 3 received, not answered
    ledger.answer_sent("c1", 3, "A", "agent-1")  # accepted by send(), never delivered: the session expired
    ledger.routed("c1", 4, "A", "agent-1")  # in flight when the session expired
    ledger.handed_over("c1", "A", "agent-1", settled=2)
    chat(ledger, "c1", range(3, 7), "B", "agent-2")  # 3..6 again, on agent-2

    to_agent, to_visitor = ledger.legs()
    assert to_agent.exact and to_agent.sent == 6, to_agent
    assert to_visitor.exact and to_visitor.sent == 6, to_visitor
    assert ledger.total().line() == "ledger: sent 12, delivered 12, lost 0, duplicated 0, reordered 0"
    assert ledger.round_trip().exact
    one, two = ledger.by_agent()
    assert (one.agent, one.to_agent.sent, one.to_agent.delivered, one.handed_over, one.answered) == (
        "agent-1",
        2,
        2,
        2,
        2,
    )
    assert one.total.exact and two.total.exact
    assert (two.agent, two.to_agent.sent, two.to_visitor.delivered, two.handed_over) == ("agent-2", 4, 4, 0)


def test_a_second_receipt_without_handover_is_a_duplicate() -> None:
    ledger = ChatLedger()
    for seq in (1, 2):
        ledger.visitor_sent("c1", seq)
    chat(ledger, "c1", range(1, 3), "A", "agent-1")
    chat(ledger, "c1", range(2, 3), "B", "agent-2")  # no handover: agent-2 should never have had it
    to_agent, to_visitor = ledger.legs()
    assert to_agent.duplicated == 1 and to_visitor.duplicated == 1
    assert not ledger.total().exact


def test_loss_and_reordering_are_per_conversation() -> None:
    ledger = ChatLedger()
    for conv in ("c1", "c2"):
        for seq in (1, 2, 3):
            ledger.visitor_sent(conv, seq)
    chat(ledger, "c1", range(3, 0, -1), "A", "agent-1")  # 3, 2, 1: two arrive late
    chat(ledger, "c2", range(1, 3), "A", "agent-1")  # 3 never arrives
    to_agent, to_visitor = ledger.legs()
    assert (to_agent.sent, to_agent.delivered, to_agent.lost, to_agent.reordered) == (6, 5, 1, 2)
    assert to_visitor.lost == 0 and to_visitor.reordered == 2
    assert ledger.round_trip().lost == 1


def test_unrouted_messages_are_lost_in_the_conversation_ledger() -> None:
    ledger = ChatLedger()
    ledger.visitor_sent("c1", 1)
    assert ledger.total().lost == 1
    assert ledger.by_agent() == []


def test_arrival_check_per_session_and_conversation() -> None:
    check = ArrivalCheck()
    for seq in (1, 2, 3):
        check.on_receive("s1", "c1", seq)
        check.on_answer()
    check.on_receive("s2", "c1", 5)  # a handed-over conversation may start anywhere
    check.on_receive("s2", "c1", 6)
    check.on_abandon(2)  # s2 ended before answering
    assert check.exact, check.line()
    assert check.line() == (
        "ledger: received 5, answered 3, left with ended sessions 2, lost 0, duplicated 0, reordered 0"
    )
    check.on_receive("s2", "c1", 6)
    check.on_receive("s2", "c1", 9)
    check.on_receive("s2", "c1", 8)
    assert (check.duplicated, check.reordered, check.lost) == (1, 1, 1)
    assert not check.exact
