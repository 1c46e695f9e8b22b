"""The sans-I/O session core: sequence numbers, ACKs, window, resume, heartbeats, close, bad input."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reliablelink import MessageTooLarge, ProtocolError, SessionClosed
from reliablelink._core import LinkDead, LinkParams, OurSide, PeerClosed, SessionCore, SessionState, TheirSide
from reliablelink._core._frames import DATA_HEADER, HEADER, U64_FRAME, FrameType, encode_frame
from reliablelink._core._session import LARGE_PAYLOAD
from reliablelink._core._state import (
    OUR_TRANSITIONS,
    TRANSITIONS,
    SideEvent,
    Transition,
    next_our_side,
    next_state,
    next_their_side,
)
from tests.corepair import attached_pair, drain_inbox, pump, reattach

SMALL = LinkParams(
    heartbeat_interval=1.0, dead_after=3.0, max_message_size=1024, max_inflight=8, max_inflight_bytes=4096
)


def test_messages_arrive_in_order_with_sequence_numbers_from_one() -> None:
    a, b = attached_pair()
    seqs = [a.try_send(f"m{i}".encode()) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    pump(a, b)
    assert drain_inbox(b) == [f"m{i}".encode() for i in range(5)]
    assert b.received == b.delivered == 5


def test_ack_follows_delivery_not_receipt() -> None:
    a, b = attached_pair(SMALL)
    for i in range(4):
        a.try_send(bytes([i]))
    pump(a, b)
    assert a.acked == 0 and len(a.unacked) == 4, "received but not delivered: nothing acknowledged"
    b.take()
    b.take()  # a quarter of the window (8 // 4 = 2): a standalone ACK is due
    pump(a, b)
    assert a.acked == 2 and len(a.unacked) == 2


def test_delayed_ack_timer_acknowledges_a_trickle() -> None:
    a, b = attached_pair()
    a.try_send(b"x")
    pump(a, b, now=0.0)
    b.take()
    assert not b.has_data_to_send(), "one message does not trigger an immediate ACK"
    deadline = b.next_deadline()
    assert deadline == pytest.approx(0.0 + b.ack_delay)
    b.handle_timer(deadline)
    pump(a, b, now=deadline)
    assert a.acked == 1 and not a.unacked


def test_ack_is_piggybacked_on_data() -> None:
    a, b = attached_pair()
    a.try_send(b"ping")
    pump(a, b)
    b.take()
    b.try_send(b"pong")  # carries ack=1
    pump(a, b)
    assert a.acked == 1


def test_window_by_count_and_bytes() -> None:
    a, b = attached_pair(SMALL)
    for _ in range(8):
        assert a.window_open(1)
        a.try_send(b"x")
    assert not a.window_open(1), "max_inflight messages in flight: the window is shut"
    pump(a, b)
    drain_inbox(b)
    pump(a, b)
    assert a.window_open(1)
    a2, _ = attached_pair(replace(SMALL, max_message_size=8192))
    a2.try_send(b"y" * 4000)
    assert not a2.window_open(200), "bytes window: 4000 + 200 > 4096"
    assert a2.window_open(96)


def test_oversized_message_goes_alone_when_nothing_is_in_flight() -> None:
    a, _ = attached_pair(LinkParams(max_inflight_bytes=100))
    assert a.window_open(1000)
    a.try_send(b"z" * 1000)
    assert not a.window_open(1)


def test_resume_resends_exactly_what_the_peer_lacks() -> None:
    a, b = attached_pair()
    for i in range(10):
        a.try_send(bytes([i]))
    wire = bytes(a.data_to_send(0))
    b.receive_data(wire[: len(wire) // 2], 0)  # the connection dies halfway through
    got_before = drain_inbox(b)
    reattach(a, b)
    pump(a, b)
    got = got_before + drain_inbox(b)
    assert got == [bytes([i]) for i in range(10)], "every message exactly once, in order"
    assert a.stats.resent == 10 - len(got_before)


def test_resume_does_not_resend_what_waits_undelivered_in_the_peer_inbox() -> None:
    a, b = attached_pair()
    for i in range(5):
        a.try_send(bytes([i]))
    pump(a, b)
    reattach(a, b)
    pump(a, b)
    assert a.stats.resent == 0
    assert len(a.unacked) == 5, "still unacknowledged: the window still counts them"
    assert drain_inbox(b) == [bytes([i]) for i in range(5)]


def test_messages_accepted_while_detached_are_not_counted_as_resent() -> None:
    p = LinkParams()
    a, b = SessionCore(p), SessionCore(p)
    for i in range(3):
        a.try_send(bytes([i]))  # before the first connection: never on a wire
    reattach(a, b)
    pump(a, b)
    assert drain_inbox(b) == [bytes([i]) for i in range(3)]
    assert a.stats.resent == 0
    a.try_send(b"lost with the link")  # 4: queued on the first connection, which dies
    a.data_to_send(0)
    a.detach()
    b.detach()
    a.try_send(b"while detached")  # 5: first goes out on the next connection
    reattach(a, b)
    pump(a, b)
    assert drain_inbox(b) == [b"lost with the link", b"while detached"]
    assert a.stats.resent == 1, "only message 4 was on a wire before"


def test_duplicates_from_a_peer_resending_too_much_are_dropped() -> None:
    a, b = attached_pair()
    a.try_send(b"one")
    pump(a, b)
    b.detach()
    b.attach(b.params, 0, 0.0)
    # The peer resends seq 1 although we said we hold it.
    b.receive_data(DATA_HEADER.pack(17 + 3, FrameType.DATA, 1, 0) + b"one", 0.0)
    assert b.stats.duplicates_dropped == 1
    assert drain_inbox(b) == [b"one"]


def _data(seq: int, ack: int = 0, payload: bytes = b"p") -> bytes:
    return DATA_HEADER.pack(17 + len(payload), FrameType.DATA, seq, ack) + payload


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (U64_FRAME.pack(9, FrameType.ACK, 5), "never sent"),
        (_data(2), "gap"),
        (_data(1) + _data(1), "backwards"),
        (_data(1, ack=7), "never sent"),
        (encode_frame(FrameType.PING, b"1234"), "expected 8"),
        (HEADER.pack(1, 200), "unknown frame type"),
        (HEADER.pack(2**31, FrameType.DATA), "exceeds the limit"),
        (DATA_HEADER.pack(5, FrameType.DATA, 1, 0), "too short"),
        (U64_FRAME.pack(9, FrameType.CLOSE, 0) + _data(1), "after CLOSE"),
    ],
)
def test_bad_input_is_a_protocol_error_with_an_error_frame(wire: bytes, match: str) -> None:
    _, b = attached_pair()
    b.data_to_send(0)
    with pytest.raises(ProtocolError, match=match):
        b.receive_data(wire, 0.0)
    assert FrameType.ERROR in bytes(b.data_to_send(0))[4:], "the peer is told why"


def test_ack_going_backwards_is_a_protocol_error() -> None:
    a, b = attached_pair()
    a.try_send(b"1")
    a.try_send(b"2")
    pump(a, b)
    a.receive_data(U64_FRAME.pack(9, FrameType.ACK, 2), 0)
    with pytest.raises(ProtocolError, match="backwards"):
        a.receive_data(U64_FRAME.pack(9, FrameType.ACK, 1), 0)


def test_peer_exceeding_the_window_is_a_protocol_error() -> None:
    _, b = attached_pair(SMALL)
    wire = b"".join(_data(i) for i in range(1, 10))  # 9 > max_inflight 8
    with pytest.raises(ProtocolError, match="window"):
        b.receive_data(wire, 0)


def test_attach_with_impossible_positions_is_refused() -> None:
    a = SessionCore(LinkParams())
    with pytest.raises(ProtocolError, match=r"never|only 0"):
        a.attach(a.params, 3, 0)
    a2, b2 = attached_pair()
    a2.try_send(b"x")
    pump(a2, b2)
    b2.take()
    b2.handle_timer(1.0)
    pump(a2, b2, 1.0)
    assert a2.acked == 1
    a2.detach()
    with pytest.raises(ProtocolError, match="already acknowledged"):
        a2.attach(a2.params, 0, 2.0)


def test_large_message_split_across_many_reads() -> None:
    a, b = attached_pair()
    payload = bytes(range(256)) * 4000
    a.try_send(payload)
    wire = bytes(a.data_to_send(0))
    for i in range(0, len(wire), 1000):
        b.receive_data(wire[i : i + 1000], 0)
    assert drain_inbox(b) == [payload]


def test_heartbeat_ping_pong_measures_rtt_and_silence_kills_the_link() -> None:
    a, b = attached_pair(SMALL, now=0.0)
    assert a.next_deadline() == 1.0, "first deadline: a PING after one idle interval"
    assert a.handle_timer(1.0) == []
    assert a.stats.pings_sent == 1
    b.receive_data(bytes(a.data_to_send(1.0)), 1.0)
    a.receive_data(bytes(b.data_to_send(1.25)), 1.25)
    assert a.stats.rtt == pytest.approx(0.25)
    # Now b goes silent: a declares the link dead dead_after seconds after the last receipt.
    for t in (2.0, 3.0, 4.0):
        assert a.handle_timer(t) == []
    assert a.next_deadline() == pytest.approx(1.25 + 3.0)
    events = a.handle_timer(4.25)
    assert events and isinstance(events[0], LinkDead)


def test_dead_link_pings_once_per_interval_not_in_a_loop() -> None:
    a, _ = attached_pair(SMALL, now=0.0)
    a.handle_timer(1.0)
    assert a.next_deadline() == 2.0, "a PING stuck behind a full socket still counts as sent"


def test_close_handshake() -> None:
    a, b = attached_pair()
    a.try_send(b"last")
    a.close()
    with pytest.raises(SessionClosed):
        a.try_send(b"too late")
    assert a.state is SessionState.CLOSING
    data = bytes(a.data_to_send(0))
    events = b.receive_data(data, 0)
    assert any(isinstance(e, PeerClosed) for e in events)
    assert drain_inbox(b) == [b"last"], "messages before CLOSE are delivered"
    assert b.state is SessionState.CLOSED
    a.receive_data(bytes(b.data_to_send(0)), 0)
    assert state_of(a) is SessionState.CLOSED


def state_of(core: SessionCore) -> SessionState:
    """The core's state, read through a call (mypy keeps a narrowed attribute across calls
    that change it)."""
    return core.state


def our_state_of(core: SessionCore) -> OurSide:
    """As :func:`state_of`, for this side's close state."""
    return core.our_state


def test_close_while_detached_is_sent_after_the_replay() -> None:
    a, b = attached_pair()
    a.try_send(b"m")
    a.detach()
    b.detach()
    a.close()
    assert a.state is SessionState.CLOSING
    a.attach(a.params, 0, 0)
    b.attach(b.params, 0, 0)
    pump(a, b)
    assert drain_inbox(b) == [b"m"]
    assert b.peer_closed and state_of(a) is SessionState.CLOSED


def test_state_table_rejects_impossible_transitions() -> None:
    assert next_state(SessionState.DETACHED, Transition.ATTACH) is SessionState.ATTACHED
    with pytest.raises(RuntimeError, match="invalid session transition"):
        next_state(SessionState.CLOSED, Transition.ATTACH)
    finals = {SessionState.CLOSED, SessionState.EXPIRED, SessionState.FAILED}
    assert not any(state in finals for state, _ in TRANSITIONS), "no edge leaves a final state"


def test_u64_sequence_space() -> None:
    a, b = attached_pair()
    a.next_seq = 2**64 - 2
    b.received = b.delivered = b.ack_sent = 2**64 - 3
    b.detach()
    b.attach(b.params, 0, 0)
    a.try_send(b"big")
    b.receive_data(bytes(a.data_to_send(0)), 0)
    assert drain_inbox(b) == [b"big"], "sequence numbers near 2**64 still encode and decode"


def test_timer_fires_exactly_at_the_deadline_it_announced() -> None:
    """Float rounding must not leave a deadline that never fires (the timer would spin)."""
    start = next(t for t in (5.0 + i * 0.0137 for i in range(10_000)) if (t + 3.0) - t < 3.0)
    a, _ = attached_pair(SMALL, now=start)
    assert a._conn is not None
    a._conn.last_send = start + 100  # no PING due: only the dead-link deadline remains
    deadline = a.next_deadline()
    assert deadline == start + 3.0
    events = a.handle_timer(deadline)
    assert events and isinstance(events[0], LinkDead), "at the announced deadline the link is dead"


def test_messages_left_in_the_inbox_across_a_reconnect_are_still_acknowledged() -> None:
    a, b = attached_pair()
    a.try_send(b"waiting")
    pump(a, b, now=0.0)
    reattach(a, b, now=1.0)  # the application has not read it yet
    pump(a, b, now=1.0)
    assert drain_inbox(b) == [b"waiting"]
    b.handle_timer(b.next_deadline())
    pump(a, b, now=1.1)
    assert not a.unacked, "the delayed ACK covers what was delivered after the reconnect"


def test_ping_flood_queues_at_most_one_pong() -> None:
    _, b = attached_pair()
    b.data_to_send(0)
    flood = b"".join(U64_FRAME.pack(9, FrameType.PING, i) for i in range(10_000))
    b.receive_data(flood, 0.0)
    assert len(bytes(b.data_to_send(0))) == U64_FRAME.size, "one PONG, however many PINGs"


@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=30), cuts=st.lists(st.integers(1, 5000), max_size=40))
@settings(max_examples=200, deadline=None)
def test_session_parser_is_independent_of_read_boundaries(sizes: list[int], cuts: list[int]) -> None:
    a, b = attached_pair()
    sent = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    for payload in sent:
        a.try_send(payload)
    wire = bytes(a.data_to_send(0))
    pos = 0
    for cut in [*cuts, len(wire)]:
        b.receive_data(wire[pos : pos + cut], 0.0)
        pos += cut
        if pos >= len(wire):
            break
    else:
        b.receive_data(wire[pos:], 0.0)
    assert drain_inbox(b) == sent
    assert b._conn is not None
    assert not b._conn.parts and not b._conn.need, "nothing left pending once every frame is complete"


@given(
    sizes=st.lists(st.sampled_from([0, 1, 100, LARGE_PAYLOAD - 1, LARGE_PAYLOAD, 40_000]), min_size=1, max_size=12),
    cuts=st.lists(st.integers(1, 70_000), max_size=20),
    written=st.integers(0, 200_000),
)
@settings(max_examples=100, deadline=None)
def test_large_payloads_go_out_uncopied_and_arrive_whole(sizes: list[int], cuts: list[int], written: int) -> None:
    """Large payloads are separate output buffers (scatter/gather) and are joined once on the
    receiving side, whatever the read boundaries; a partial write put back with unsend()
    goes out first, in order."""
    a, b = attached_pair()
    sent = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    for payload in sent[: len(sent) // 2]:
        a.try_send(payload)
    a.send_many(sent[len(sent) // 2 :])
    buffers = a.buffers_to_send(0)
    assert any(buf is payload for buf in buffers for payload in sent if len(payload) >= LARGE_PAYLOAD) == any(
        len(p) >= LARGE_PAYLOAD for p in sent
    ), "a large payload is handed to the writer as is"
    stream = b"".join(buffers)
    # A partial write: the rest goes back in front of anything queued later (a PING and
    # one more large message here).
    written = min(written, len(stream))
    rest = [memoryview(stream)[written:]]
    a.handle_timer(a.params.heartbeat_interval)
    sent.append(b"z" * LARGE_PAYLOAD)
    a.try_send(sent[-1])
    a.unsend(rest)
    wire = stream[:written] + b"".join(a.buffers_to_send(0))
    assert wire[: len(stream)] == stream, "the unwritten bytes go out before what was queued after them"
    pos = 0
    for cut in [*cuts, len(wire)]:
        b.receive_data(wire[pos : pos + cut], 0.0)
        pos += cut
        if pos >= len(wire):
            break
    else:
        b.receive_data(wire[pos:], 0.0)
    received = drain_inbox(b)
    assert received == sent
    assert all(type(m) is bytes for m in received), "receive() hands out bytes"
    assert b._conn is not None
    assert not b._conn.parts and not b._conn.need


def test_try_send_refuses_too_large_and_returns_zero_on_a_full_window() -> None:
    a, _ = attached_pair(SMALL)
    with pytest.raises(MessageTooLarge, match="1025 bytes > max_message_size 1024"):
        a.try_send(b"x" * 1025)
    assert a.next_seq == 1 and not a.unacked
    for i in range(8):
        assert a.try_send(b"x") == i + 1
    before = (a.next_seq, len(a.unacked), a.unacked_bytes, a.stats.sent, bytes(a.data_to_send(0)))
    assert a.try_send(b"x") == 0, "full window: nothing accepted"
    assert (a.next_seq, len(a.unacked), a.unacked_bytes, a.stats.sent, bytes(a.data_to_send(0))) == (
        *before[:4],
        b"",
    ), "a refused message changes nothing and queues nothing"


def test_send_many_stops_where_the_window_shuts_and_continues_from_there() -> None:
    a, b = attached_pair(SMALL)
    payloads = [bytes([i]) for i in range(12)]
    assert a.send_many(payloads) == 8
    pump(a, b)
    drain_inbox(b)
    pump(a, b)
    assert a.send_many(payloads, 8) == 12
    pump(a, b)
    assert drain_inbox(b) == payloads[8:]


@settings(max_examples=300, deadline=None)
@given(
    in_flight=st.lists(st.integers(0, 1500), max_size=10),
    batch=st.lists(st.integers(0, 1500), max_size=12),
    max_inflight=st.integers(1, 10),
    max_bytes=st.integers(1, 5000),
)
def test_send_many_accepts_exactly_what_one_try_send_at_a_time_would(
    in_flight: list[int], batch: list[int], max_inflight: int, max_bytes: int
) -> None:
    params = LinkParams(max_message_size=2048, max_inflight=max_inflight, max_inflight_bytes=max_bytes)
    one, _ = attached_pair(params)
    many, _ = attached_pair(params)
    for size in in_flight:
        one.try_send(b"f" * size)
        many.try_send(b"f" * size)
    payloads = [bytes([i]) * size for i, size in enumerate(batch)]
    accepted = 0
    for payload in payloads:
        if not one.try_send(payload):
            break
        accepted += 1
    assert many.send_many(payloads) == accepted, "the batch window test agrees with the per-message one"
    assert list(many.unacked) == list(one.unacked) and many.unacked_bytes == one.unacked_bytes
    assert bytes(many.data_to_send(0)) == bytes(one.data_to_send(0)), "the same frames, in the same order"


def test_close_goes_after_every_message_accepted_before_it() -> None:
    a, b = attached_pair()
    a.try_send(b"one")
    a.send_many([b"two", b"three"])
    a.close()
    pump(a, b)
    assert drain_inbox(b) == [b"one", b"two", b"three"] and b.peer_closed


def test_stop_sending_refuses_new_messages_but_delivers_the_accepted_ones() -> None:
    a, b = attached_pair()
    a.try_send(b"accepted")
    a.stop_sending()
    a.stop_sending()  # idempotent
    assert a.our_state is OurSide.STOPPED and a.send_closed and not a.close_sent
    with pytest.raises(SessionClosed, match="closing or closed"):
        a.try_send(b"late")
    with pytest.raises(SessionClosed, match="closing or closed"):
        a.send_many([b"late"])
    pump(a, b)
    assert drain_inbox(b) == [b"accepted"] and not b.peer_closed, "no CLOSE until close()"
    a.close()
    a.close()  # idempotent
    assert our_state_of(a) is OurSide.CLOSE_SENT and a.state is SessionState.CLOSING
    pump(a, b)
    assert b.their_state is TheirSide.CLOSE_RECEIVED and our_state_of(b) is OurSide.CLOSE_SENT
    assert a.peer_closed and state_of(a) is SessionState.CLOSED and b.state is SessionState.CLOSED


def test_close_is_resent_on_every_attach_until_answered() -> None:
    a, b = attached_pair()
    a.close()
    a.data_to_send(0)  # lost with the connection
    reattach(a, b)
    pump(a, b)
    assert b.peer_closed and state_of(a) is SessionState.CLOSED


def test_an_ended_session_sends_nothing_more() -> None:
    a, _ = attached_pair()
    a.detach()
    a.finish(Transition.EXPIRE)
    assert a.our_state is OurSide.STOPPED and a.send_closed
    with pytest.raises(SessionClosed):
        a.try_send(b"x")
    a.close()
    assert a.state is SessionState.EXPIRED and not a.close_sent, "nobody to tell: close() only stops sending"


def test_side_tables_reject_impossible_transitions() -> None:
    assert next_our_side(OurSide.CLOSE_SENT, SideEvent.STOP_SENDING) is OurSide.CLOSE_SENT
    with pytest.raises(RuntimeError, match="our side"):
        next_our_side(OurSide.CLOSE_SENT, SideEvent.SEND_CLOSE)
    with pytest.raises(RuntimeError, match="their side"):
        next_their_side(TheirSide.CLOSE_RECEIVED, SideEvent.RECEIVE_CLOSE)
    assert not any(side is OurSide.CLOSE_SENT and to is not side for (side, _), to in OUR_TRANSITIONS.items())


def test_second_close_from_the_peer_is_a_protocol_error() -> None:
    _, b = attached_pair()
    b.receive_data(U64_FRAME.pack(9, FrameType.CLOSE, 0), 0.0)
    with pytest.raises(ProtocolError, match="twice"):
        b.receive_data(U64_FRAME.pack(9, FrameType.CLOSE, 0), 0.0)


def test_connection_state_lives_and_dies_with_the_connection() -> None:
    a, b = attached_pair(SMALL, now=2.0)
    assert a.attached and a.last_recv == a.last_send == 2.0
    a.try_send(b"x" * 100)
    b.receive_data(bytes(a.data_to_send(2.0))[:10], 2.0)  # half a frame pending
    assert b._conn is not None and b._conn.need
    b.detach()
    assert not b.attached and b._conn is None and b.next_deadline() == math.inf
    assert b.buffers_to_send(3.0) == [] and not b.has_data_to_send()
    b.attach(b.params, 0, 3.0)
    assert b._conn is not None and not b._conn.parts and not b._conn.need, "no half frame carried over"


def test_arrived_counts_queued_messages_delivered_counts_taken_ones() -> None:
    a, b = attached_pair()
    a.try_send(b"1")
    a.try_send(b"2")
    pump(a, b)
    b.take()
    assert b.stats.arrived == 2 and b.delivered == 1


def test_replay_and_release_use_the_same_frames_as_a_live_send() -> None:
    """A message's frame is the same whether sent live, replayed on attach or released by a store."""
    live_a, live_b = attached_pair()
    payloads = [b"small", b"L" * LARGE_PAYLOAD]
    for p in payloads:
        live_a.try_send(p)
    live = bytes(live_a.data_to_send(0))[U64_FRAME.size :]
    replay_a = SessionCore(LinkParams())
    for p in payloads:
        replay_a.try_send(p)
    replay_a.attach(replay_a.params, 0, 0.0)
    assert bytes(replay_a.data_to_send(0))[U64_FRAME.size :] == live
    durable_a, _ = attached_pair()
    durable_a.durable = True
    durable_a.data_to_send(0)
    for p in payloads:
        durable_a.try_send(p)
    assert not durable_a.has_data_to_send()
    durable_a.durable_done(2, 0)
    assert bytes(durable_a.data_to_send(0)) == live
    del live_b
