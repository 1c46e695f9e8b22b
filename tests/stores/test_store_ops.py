"""The store interface, against each backend: create, commit, fencing, take-over, expiry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

import reliablelink
from reliablelink.stores import (
    MemoryStore,
    RedisStore,
    SessionChange,
    SessionRecord,
    SessionStore,
    SQLiteStore,
    StoreFenced,
)
from reliablelink.testing import ChaosProxy, LoadBalancer
from tests.helpers import KEY, Handler, RunServer


class FakeClock:
    # Starts at the real time: Redis applies the expiry times with its own clock.
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store_and_clock(
    request: pytest.FixtureRequest, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[tuple[SessionStore, FakeClock]]:
    clock = FakeClock()
    store: SessionStore
    if request.param == "memory":
        store = MemoryStore(clock=clock)
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "s.db", clock=clock)
    else:
        store = RedisStore(request.getfixturevalue("redis_server"), prefix=redis_prefix, clock=clock)
    yield store, clock
    await store.aclose()


def record(key: str = "k", expires_at: float | None = None) -> SessionRecord:
    return SessionRecord(key, b"s" * 16, "alice", b"t" * 32, expires_at=expires_at)


async def test_commit_append_ack_and_load(store_and_clock: tuple[SessionStore, FakeClock]) -> None:
    store, _ = store_and_clock
    await store.create(record())
    await store.commit("k", 1, SessionChange([(1, b"a"), (2, b"b"), (3, b"c")], next_seq=4, acked=0, delivered=5))
    await store.commit("k", 1, SessionChange([], next_seq=4, acked=2, delivered=7, token=b"n" * 32))
    got = await store.load("k")
    assert got is not None
    assert (got.next_seq, got.acked, got.delivered, got.unacked, got.token) == (4, 2, 7, [(3, b"c")], b"n" * 32)
    assert await store.load("missing") is None


async def test_concurrent_commits_are_batched_and_ordered(store_and_clock: tuple[SessionStore, FakeClock]) -> None:
    store, _ = store_and_clock
    await store.create(record())
    submitted: list[int] = []

    async def one(seq: int) -> None:
        # Each change states its submission index as the delivery position: the stored value
        # shows which change was applied last.
        submitted.append(seq)
        change = SessionChange([(seq, b"%d" % seq)], next_seq=201, acked=0, delivered=len(submitted))
        await store.commit("k", 1, change)

    async with trio.open_nursery() as nursery:
        for seq in range(1, 201):
            nursery.start_soon(one, seq)
    got = await store.load("k")
    assert got is not None
    assert sorted(s for s, _ in got.unacked) == list(range(1, 201))
    assert got.delivered == 200  # applied in the order submitted


async def test_take_over_fences_the_previous_owner(store_and_clock: tuple[SessionStore, FakeClock]) -> None:
    store, _ = store_and_clock
    await store.create(record())
    await store.commit("k", 1, SessionChange([(1, b"a")], next_seq=2, acked=0, delivered=0))
    taken = await store.take_over("k", 1)
    assert taken is not None
    assert (taken.epoch, taken.unacked) == (2, [(1, b"a")])
    with pytest.raises(StoreFenced):
        await store.commit("k", 1, SessionChange([(2, b"late")], next_seq=3, acked=0, delivered=0))
    assert await store.take_over("k", 1) is None  # a second taker with the old epoch loses
    assert not await store.claim("k", 1, b"x" * 32, b"", None)
    await store.delete("k", 1)  # the old owner cannot delete it either
    after = await store.load("k")
    assert after is not None
    assert (after.epoch, after.unacked) == (2, [(1, b"a")])


async def test_expired_sessions_are_gone(store_and_clock: tuple[SessionStore, FakeClock]) -> None:
    store, clock = store_and_clock
    await store.create(record("old", expires_at=clock.now + 10))
    await store.create(record("kept", expires_at=clock.now + 10))
    await store.renew([("kept", 1)], clock.now + 100)
    clock.now += 20
    assert await store.load("old") is None
    assert await store.load("kept") is not None


async def test_a_stale_node_is_fenced_and_the_new_node_delivers(
    tmp_path: Path, redis_server: str, redis_prefix: str, run_server: RunServer, nursery: trio.Nursery
) -> None:
    """Node A keeps its (blackholed) connection and a copy of the session; the client resumes
    on node B. A's next send is refused with SessionMoved and never reaches the client; what
    A had accepted before the move is delivered from B."""
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    sessions: dict[str, reliablelink.Session] = {}
    resumed_on_b = trio.Event()
    on_a = trio.Event()
    options: dict[str, Any] = {"heartbeat_interval": 0.1, "dead_after": 0.3}

    def handler_for(node: str) -> Handler:
        async def handler(session: reliablelink.Session) -> None:
            sessions[node] = session
            (resumed_on_b if node == "b" else on_a).set()
            async for message in session:
                got[node].append(message)

        return handler

    servers = []
    for node in ("a", "b"):
        store = RedisStore(redis_server, prefix=redis_prefix)
        servers.append(await run_server(handler_for(node), "tcp://127.0.0.1:0", store=store, **options))
    proxy_a = ChaosProxy(servers[0].url)
    await nursery.start(proxy_a.run)
    balancer = LoadBalancer([proxy_a.url, servers[1].url])
    balancer.pinned = 0
    await nursery.start(balancer.run)
    async with reliablelink.connect(balancer.url, client_id="agent-1", key=KEY, **options) as client:
        for i in range(5):
            await client.send(b"c%d" % i)
        await on_a.wait()
        await sessions["a"].send(b"a-before")
        assert await client.receive() == b"a-before"
        balancer.pinned = 1
        proxy_a.blackhole_all()  # A keeps its connection; the client finds the link dead
        with trio.fail_after(10):
            await resumed_on_b.wait()
        assert sessions["b"].restored
        with pytest.raises(reliablelink.SessionMoved):
            await sessions["a"].send(b"from-stale-a")
        await sessions["b"].send(b"b-after")
        assert await client.receive() == b"b-after"
        for i in range(5, 10):
            await client.send(b"c%d" % i)
        await client.drain()
    # What A delivered and stored as handled, then B from the stored position: every message
    # once, in order (B repeats only what A had not yet marked handled).
    position = len(got["a"]) - (len(got["a"]) + len(got["b"]) - 10)
    assert got["a"][:position] + got["b"] == [b"c%d" % i for i in range(10)], got
