"""A graceful server restart (serve() cancelled, then started again on the same store)
repeats nothing: the delivery position of every message the handler had finished with is
stored on the way down, even when the store had not caught up with it yet."""

from __future__ import annotations

import functools
import secrets
from pathlib import Path

import pytest
import trio

import reliablelink
from reliablelink.stores import SQLiteStore
from tests.helpers import KEY

FIRST = 3  # messages the first server process handles


@pytest.mark.parametrize("when", ["parked in receive", "at the receive call"])
async def test_a_graceful_restart_delivers_each_message_once(tmp_path: Path, when: str, nursery: trio.Nursery) -> None:
    url = f"memory://graceful-{secrets.token_hex(4)}"
    got: list[tuple[bool, int, bytes]] = []
    first_done = trio.Event()
    first_scope = trio.CancelScope()

    async def handler(session: reliablelink.Session) -> None:
        while True:
            if len(got) == FIRST and not session.restored:
                if when == "at the receive call":
                    first_scope.cancel()  # receive() below is cancelled at its first checkpoint
                first_done.set()
            message = await session.receive()
            got.append((session.restored, session.stats.received, message))

    async def serve(task_status: trio.TaskStatus[reliablelink.Server]) -> None:
        # ack_delay is long: without the shutdown save, the position would never be stored.
        await reliablelink.serve(
            handler,
            url,
            keys={"agent": KEY},
            store=SQLiteStore(tmp_path / "s.db"),
            ack_delay=1.0,
            task_status=task_status,
        )

    with trio.fail_after(20):
        with first_scope:
            async with trio.open_nursery() as first:
                await first.start(serve)
                session = await nursery.start(functools.partial(_client, url))
                for n in range(1, FIRST + 1):
                    await session.send(b"m%d" % n)
                await first_done.wait()
                first_scope.cancel()  # the handler is parked in receive() by now
        async with trio.open_nursery() as second:
            await second.start(serve)
            for n in range(FIRST + 1, 2 * FIRST + 1):
                await session.send(b"m%d" % n)
            await session.drain()
            while len(got) < 2 * FIRST:  # noqa: ASYNC110 - the handler's list is all there is
                await trio.sleep(0.01)
            second.cancel_scope.cancel()
    assert [m for _, _, m in got] == [b"m%d" % n for n in range(1, 2 * FIRST + 1)], f"{when}: {got}"
    assert [seq for _, seq, _ in got] == list(range(1, 2 * FIRST + 1))
    assert [restored for restored, _, _ in got] == [False] * FIRST + [True] * FIRST


async def _client(url: str, task_status: trio.TaskStatus[reliablelink.Session]) -> None:
    async with reliablelink.connect(
        url, client_id="agent", key=KEY, reconnect_backoff=(0.01, 0.05), connect_timeout=10
    ) as session:
        task_status.started(session)
        await trio.sleep_forever()
