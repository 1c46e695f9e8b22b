"""The store cursor: what a durable session's store lacks, when a delivery commit is due."""

from __future__ import annotations

import math

from reliablelink._core import LinkParams, PendingCommit, SessionCore, StoreCursor
from tests.corepair import attached_pair, drain_inbox, pump

SMALL = LinkParams(max_inflight=8, max_inflight_bytes=4096)


def _durable_pair() -> tuple[SessionCore, StoreCursor, SessionCore, StoreCursor]:
    a, b = attached_pair(SMALL)
    return a, StoreCursor(a), b, StoreCursor(b)


def _commit(cursor: StoreCursor, token: bytes | None = None) -> PendingCommit | None:
    change = cursor.take_change(token)
    if change is not None:
        cursor.committed(change)
    return change


def test_a_cursor_makes_the_core_durable_and_starts_at_its_positions() -> None:
    core = SessionCore(SMALL)
    core.restore(next_seq=4, acked=2, delivered=7, unacked=[(3, b"c")])
    cursor = StoreCursor(core)
    assert core.durable
    assert cursor.handled == 7 and cursor.commit_at == math.inf
    assert cursor.take_change() is None, "the store already holds what the core was loaded from"


def test_messages_go_on_the_wire_only_once_committed() -> None:
    a, ca, b, _ = _durable_pair()
    assert a.try_send(b"one") == 1 and a.try_send(b"two") == 2
    pump(a, b)
    assert not b.inbox, "not on the wire before the store holds it"
    change = ca.take_change()
    assert change == PendingCommit([(1, b"one"), (2, b"two")], next_seq=3, acked=0, delivered=0, token=None, upto=2)
    assert ca.take_change() is None, "recorded as saved at once: a concurrent caller does not append it again"
    ca.committed(change)
    pump(a, b)
    assert drain_inbox(b) == [b"one", b"two"]
    a.try_send(b"three")
    change = ca.take_change()
    assert change is not None and change.appended == [(3, b"three")], "only what was appended since"


def test_a_token_alone_makes_a_change() -> None:
    _, ca, _, _ = _durable_pair()
    change = ca.take_change(token=b"t" * 32)
    assert change is not None and change.appended == [] and change.token == b"t" * 32


def test_acknowledgements_follow_committed_deliveries() -> None:
    a, ca, b, cb = _durable_pair()
    a.try_send(b"one")
    _commit(ca)
    pump(a, b)
    assert drain_inbox(b) == [b"one"]
    assert cb.mark_handled(now=5.0) == 5.0 + b.ack_delay, "fewer than a quarter window: batched like an ACK"
    assert cb.mark_handled(now=5.001) is None, "already scheduled"
    b.handle_timer(b.next_deadline())
    pump(a, b)
    assert a.acked == 0, "no ACK for a delivery the store does not hold"
    change = _commit(cb)
    assert change is not None and change.delivered == 1 and cb.commit_at == math.inf
    pump(a, b)
    assert a.acked == 1, "acknowledged once stored"
    change = _commit(ca)
    assert change is not None and change.acked == 1, "the sender's store learns the ACK"


def test_a_quarter_window_of_handled_messages_commits_at_once() -> None:
    a, ca, b, cb = _durable_pair()
    for i in range(SMALL.max_inflight // 4):
        a.try_send(bytes([i]))
    _commit(ca)
    pump(a, b)
    drain_inbox(b)
    assert b.ack_every == SMALL.max_inflight // 4
    assert cb.mark_handled(now=2.0) == 2.0


def test_nothing_handled_schedules_nothing() -> None:
    _, _, _, cb = _durable_pair()
    assert cb.mark_handled(now=1.0) is None and cb.commit_at == math.inf


def test_handle_all_covers_what_was_delivered_but_not_handed_back() -> None:
    a, ca, b, cb = _durable_pair()
    a.try_send(b"last")
    _commit(ca)
    pump(a, b)
    drain_inbox(b)
    assert cb.handled == 0, "receive() has not been called again"
    cb.handle_all()
    change = _commit(cb)
    assert change is not None and change.delivered == 1
