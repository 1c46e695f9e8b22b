"""The store write of a durable session (``reliablelink._durable``), under concurrency."""

from __future__ import annotations

import trio
import trio.testing

from reliablelink._carrier import Carrier
from reliablelink._core import LinkParams, SessionCore
from reliablelink.stores import MemoryStore, SessionRecord


async def test_a_write_that_finds_nothing_missing_waits_for_the_write_storing_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two tasks persist while one write is under way and has taken both messages: the second
    must not return (``send()`` would report its message accepted) before the store holds it."""
    store = MemoryStore(clock=trio.current_time, delay=1.0)
    await store.create(SessionRecord("s", b"\x01" * 16, "agent-1", b"t"))
    core = SessionCore(LinkParams())
    carrier = Carrier(core, close_timeout=1.0)
    carrier.use_store(store, "s", 1)
    assert core.try_send(b"first") and core.try_send(b"second")
    start = trio.current_time()
    returned: dict[str, float] = {}

    async def persist(name: str) -> None:
        await carrier.persist()
        returned[name] = trio.current_time() - start

    async with trio.open_nursery() as nursery:
        nursery.start_soon(persist, "takes both")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(persist, "finds nothing missing")
    # The store takes 1 s per write: neither may return before the write holding both ended.
    assert returned["takes both"] >= 1.0, returned
    assert returned["finds nothing missing"] >= 1.0, returned
