"""A session is a ``trio.abc.Channel[bytes]``: Trio's end-of-channel and closed-resource rules."""

from __future__ import annotations

import pytest
import trio

import reliablelink
from tests.helpers import KEY, RunServer


async def collect(channel: trio.abc.ReceiveChannel[bytes]) -> list[bytes]:
    """Code typed against Trio's channels (mypy checks that a Session is accepted here)."""
    return [data async for data in channel]


async def forward(channel: trio.abc.SendChannel[bytes], items: list[bytes]) -> None:
    for item in items:
        await channel.send(item)


async def test_a_session_is_a_trio_channel_and_async_for_ends_at_the_peers_close(run_server: RunServer) -> None:
    async def handler(session: reliablelink.Session) -> None:
        assert isinstance(session, trio.abc.Channel)
        await forward(session, [b"one", b"two", b"three"])
        # Leaving the handler closes the session: the client's loop must end quietly.

    server = await run_server(handler)
    with trio.fail_after(10):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            assert isinstance(session, trio.abc.Channel)
            assert await collect(session) == [b"one", b"two", b"three"]
            with pytest.raises(reliablelink.ClosedByPeer) as info:
                await session.receive()
    assert isinstance(info.value, reliablelink.SessionClosed), "a peer close is still a SessionClosed"
    assert isinstance(info.value, trio.EndOfChannel), "and also Trio's end of channel"
    assert not isinstance(info.value, trio.ClosedResourceError)


async def test_using_a_session_this_side_closed_says_so(run_server: RunServer) -> None:
    server = await run_server()
    with trio.fail_after(10):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            await session.send(b"x")
            assert await session.receive() == b"x"
        for attempt in (session.send(b"late"), session.receive(), session.drain()):
            with pytest.raises(reliablelink.ClosedLocally, match="this side") as info:
                await attempt
            assert isinstance(info.value, reliablelink.SessionClosed)
            assert isinstance(info.value, trio.ClosedResourceError)
            assert not isinstance(info.value, trio.EndOfChannel)
        await session.aclose()  # still idempotent


async def test_async_with_session_works_on_the_server_side(run_server: RunServer) -> None:
    handler_done = trio.Event()

    async def handler(session: reliablelink.Session) -> None:
        async with session:
            await session.send(await session.receive())
        handler_done.set()

    server = await run_server(handler)
    with trio.fail_after(10):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            await session.send(b"ping")
            assert await collect(session) == [b"ping"], "the server's async with closed the session"
        await handler_done.wait()


async def test_statistics_is_the_same_snapshot_as_stats(run_server: RunServer) -> None:
    server = await run_server()
    with trio.fail_after(10):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            for i in range(5):
                await session.send(b"%d" % i)
                await session.receive()
            await session.drain()
            snapshot = session.statistics()
            assert snapshot == session.stats
            assert (snapshot.sent, snapshot.received, snapshot.acked) == (5, 5, 5)
