"""Two sans-I/O cores driven through a link model that delays, splits, cuts and reconnects.

After every step: what each application received is exactly a prefix of what the other side
sent (nothing lost, duplicated or reordered so far), and no buffer exceeds the window. At
the end, after the link settles, everything sent has been received.

Each end sends one message at a time (``try_send``) or in batches (``send_many``), takes
one or many, writes whole or partially (``buffers_to_send`` then ``unsend`` of the rest),
and may be durable: a :class:`StoreCursor` whose commits (the "store") release messages to
the wire and let deliveries be acknowledged.
"""

from __future__ import annotations

import os

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reliablelink._core import LinkDead, LinkParams, SessionCore, StoreCursor

PARAMS = LinkParams(
    heartbeat_interval=1.0, dead_after=3.0, max_message_size=512, max_inflight=16, max_inflight_bytes=2048
)


class _End:
    def __init__(self, name: str) -> None:
        self.name = name
        self.core = SessionCore(PARAMS, ack_delay=0.05)
        self.cursor: StoreCursor | None = None
        self.sent: list[bytes] = []
        self.got: list[bytes] = []
        self.counter = 0

    def payload(self, size: int) -> bytes:
        label = f"{self.name}{self.counter}:".encode()
        self.counter += 1
        return label.ljust(size, b".")[: max(size, len(label))][: PARAMS.max_message_size]

    def commit(self) -> None:
        """The store takes what it lacks (at once, in this model)."""
        if self.cursor is not None:
            change = self.cursor.take_change()
            if change is not None:
                self.cursor.committed(change)


class LinkModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.a, self.b = _End("a"), _End("b")
        # Bytes in flight on the current connection, per direction, as the sender wrote them.
        self.wire: dict[str, bytearray] = {"a": bytearray(), "b": bytearray()}
        self.connected = False

    @initialize(durable_a=st.booleans(), durable_b=st.booleans())
    def start(self, durable_a: bool, durable_b: bool) -> None:
        for end, durable in ((self.a, durable_a), (self.b, durable_b)):
            if durable:
                end.cursor = StoreCursor(end.core)
        self.connect()

    def ends(self, name: str) -> tuple[_End, _End]:
        return (self.a, self.b) if name == "a" else (self.b, self.a)

    def connect(self) -> None:
        """What a reconnect does: each side states what it received, the other replays."""
        a, b = self.a.core, self.b.core
        a.detach()
        b.detach()
        self.wire = {"a": bytearray(), "b": bytearray()}
        a_received, b_received = a.received, b.received
        a.attach(PARAMS, b_received, self.now)
        b.attach(PARAMS, a_received, self.now)
        self.connected = True

    @rule(side=st.sampled_from("ab"), size=st.integers(0, 600))
    def send(self, side: str, size: int) -> None:
        me, _ = self.ends(side)
        payload = me.payload(size)
        if me.core.try_send(payload):
            me.sent.append(payload)
        # else: the window is full; the driver would make send() wait here

    @rule(side=st.sampled_from("ab"), sizes=st.lists(st.integers(0, 600), min_size=1, max_size=24))
    def send_many(self, side: str, sizes: list[int]) -> None:
        me, _ = self.ends(side)
        payloads = [me.payload(size) for size in sizes]
        accepted = me.core.send_many(payloads)
        me.sent.extend(payloads[:accepted])

    @rule(side=st.sampled_from("ab"))
    def commit(self, side: str) -> None:
        """A durable end's store write completes."""
        me, _ = self.ends(side)
        me.commit()

    @precondition(lambda self: self.connected)
    @rule(side=st.sampled_from("ab"))
    def write(self, side: str) -> None:
        me, _ = self.ends(side)
        self.wire[side] += me.core.data_to_send(self.now)

    @precondition(lambda self: self.connected)
    @rule(side=st.sampled_from("ab"), fraction=st.floats(0, 1), size_between=st.none() | st.integers(0, 600))
    def write_partially(self, side: str, fraction: float, size_between: int | None) -> None:
        """A scatter/gather write that the socket takes only part of; the rest is put back,
        in front of a message sent while the write was under way."""
        me, _ = self.ends(side)
        buffers = me.core.buffers_to_send(self.now)
        if size_between is not None:
            self.send(side, size_between)
        total = sum(map(len, buffers))
        written = int(total * fraction)
        rest: list[bytes | bytearray | memoryview] = []
        for buf in buffers:
            if written >= len(buf):
                self.wire[side] += buf
                written -= len(buf)
            else:
                self.wire[side] += buf[:written]
                rest.append(memoryview(buf)[written:])
                written = 0
        me.core.unsend(rest)

    @precondition(lambda self: self.connected)
    @rule(side=st.sampled_from("ab"), fraction=st.floats(0, 1))
    def deliver(self, side: str, fraction: float) -> None:
        """The network delivers some prefix of the bytes in flight (any split, even mid-frame)."""
        _, peer = self.ends(side)
        buf = self.wire[side]
        n = int(len(buf) * fraction)
        if n:
            chunk = bytes(buf[:n])
            del buf[:n]
            peer.core.receive_data(chunk, self.now)

    @rule(side=st.sampled_from("ab"), count=st.integers(1, 20))
    def consume(self, side: str, count: int) -> None:
        me, _ = self.ends(side)
        for _ in range(count):
            if me.cursor is not None:
                me.cursor.mark_handled(self.now)  # receive() is called again
            if not me.core.inbox:
                break
            me.got.append(me.core.take())

    @rule(side=st.sampled_from("ab"), max_count=st.integers(1, 20))
    def consume_many(self, side: str, max_count: int) -> None:
        me, _ = self.ends(side)
        if me.cursor is not None:
            me.cursor.mark_handled(self.now)
        if me.core.inbox:
            me.got.extend(me.core.take_many(max_count))

    @rule(fraction=st.floats(0, 1))
    def cut_and_reconnect(self, fraction: float) -> None:
        """The connection dies with bytes in flight (a prefix of them got through); reconnect."""
        if self.connected:
            self.deliver("a", fraction)
            self.deliver("b", fraction)
        self.connect()

    @rule(dt=st.floats(0.01, 2.0))
    def tick(self, dt: float) -> None:
        self.now += dt
        for end in (self.a, self.b):
            if not self.connected:
                return
            cursor = end.cursor
            if cursor is not None and self.now >= cursor.commit_at:
                end.commit()
            events = end.core.handle_timer(self.now)
            if any(isinstance(e, LinkDead) for e in events):
                self.connect()

    @invariant()
    def exactly_once_in_order_so_far(self) -> None:
        for me, peer in ((self.a, self.b), (self.b, self.a)):
            assert me.got == peer.sent[: len(me.got)], (
                f"{me.name} received something other than a prefix of what {peer.name} sent"
            )

    @invariant()
    def buffers_stay_within_the_window(self) -> None:
        for end in (self.a, self.b):
            core = end.core
            assert len(core.unacked) <= PARAMS.max_inflight, "unacked beyond max_inflight"
            assert len(core.unacked) <= 1 or core.unacked_bytes <= PARAMS.max_inflight_bytes
            assert len(core.inbox) <= PARAMS.max_inflight, "inbox beyond the window"

    @invariant()
    def nothing_unstored_is_on_the_wire_or_acknowledged(self) -> None:
        for end in (self.a, self.b):
            core = end.core
            if end.cursor is not None:
                assert core.released <= end.cursor._saved_seq, "released before the store holds it"
                assert core.ack_sent <= core.committed, "acknowledged a delivery the store does not hold"

    def teardown(self) -> None:
        # Settle: a clean connection, every byte delivered, every message consumed.
        self.connect()
        for _ in range(1000):
            progressed = False
            for side in "ab":
                me, peer = self.ends(side)
                me.commit()
                data = me.core.data_to_send(self.now)
                if data:
                    peer.core.receive_data(bytes(data), self.now)
                    progressed = True
                while peer.core.inbox:
                    peer.got.append(peer.core.take())
                    progressed = True
                if peer.cursor is not None:
                    peer.cursor.handle_all()
            self.now += 0.1
            self.a.core.handle_timer(self.now)
            self.b.core.handle_timer(self.now)
            if not progressed and not self.a.core.unacked and not self.b.core.unacked:
                break
        assert self.b.got == self.a.sent, "a -> b: every message sent was received exactly once, in order"
        assert self.a.got == self.b.sent, "b -> a: every message sent was received exactly once, in order"
        assert not self.a.core.unacked and not self.b.core.unacked, "everything acknowledged after settling"


LinkModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("RELIABLELINK_EXAMPLES", "300")), stateful_step_count=60, deadline=None
)
TestLinkModel = LinkModel.TestCase
