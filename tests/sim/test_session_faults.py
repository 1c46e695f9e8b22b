"""Sessions over the in-memory transport on Trio's MockClock: faults in simulated time."""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
import trio
import trio.testing

import reliablelink
from reliablelink import LinkState
from reliablelink.testing import Ledger, number_of, numbered
from tests.helpers import KEY, KEYS, RunServer, echo, memory, memory_connections, recording_echo

# Not tests.helpers.FAST (0.2 s, for real sockets): these checks count 1 s heartbeats.
SIM_FAST: dict[str, Any] = {"heartbeat_interval": 1.0, "dead_after": 3.0}
# A hang in simulated time (heartbeats keep the clock moving forever) fails fast.
VIRTUAL_LIMIT = 3600


async def test_silent_peer_is_detected_within_dead_after_plus_a_heartbeat(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(echo, **SIM_FAST)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            await session.send(b"hello")
            assert await session.receive() == b"hello"
            (conn,) = memory_connections(server)
            name = server.url.removeprefix("memory://")
            conn.blackhole()  # the cable is pulled: no FIN, no RST, just silence
            memory().refuse(name)  # ... and stays pulled for a while
            pulled_at = trio.current_time()
            assert await session.wait_link_change() is LinkState.RECONNECTING
            detected = trio.current_time() - pulled_at
            assert detected <= 3.0 + 1.0, f"dead link detected after {detected:.2f} s (dead_after 3 + heartbeat 1)"
            assert detected >= 2.0, f"declared dead after only {detected:.2f} s of silence"
            await trio.sleep(10)
            memory().refuse(name, False)  # cable back
            restored_at = trio.current_time()
            assert await session.wait_link_change() is LinkState.CONNECTED
            recovery = trio.current_time() - restored_at
            assert recovery <= 5.0, f"reconnected {recovery:.2f} s after the link came back (backoff cap 5 s)"
            await session.send(b"after")
            assert await session.receive() == b"after"
            assert session.stats.reconnects == 1
            assert session.stats.offline_seconds >= 10, session.stats
            assert session.stats.received == 2


async def test_slow_application_is_backpressure_not_a_dead_link(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    release = trio.Event()
    got: list[bytes] = []

    async def stalled(session: reliablelink.Session) -> None:
        await release.wait()
        async for data in session:
            got.append(data)

    opts = {**SIM_FAST, "max_inflight": 32, "max_inflight_bytes": 1 << 20}
    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(stalled, **opts)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **opts) as session:
            sent = 0

            async def sender() -> None:
                nonlocal sent
                for i in range(200):
                    await session.send(numbered(i))
                    sent += 1

            async with trio.open_nursery() as inner:
                inner.start_soon(sender)
                await trio.sleep(60)  # a minute of simulated time with the reader stalled
                assert sent == 32, f"send() must wait once the window (32) is full, {sent} accepted"
                assert session.stats.in_flight == 32
                (server_session,) = server.sessions.values()
                assert server_session.stats.queued <= 32, "the receiver's queue is bounded by the window"
                assert session.stats.reconnects == 0, "a stalled reader must not look like a dead link"
                release.set()
            await session.drain()
            assert [number_of(m) for m in got] == list(range(200))


async def test_expired_session_is_reported_not_silently_replaced(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    seen: list[BaseException] = []

    async def handler(session: reliablelink.Session) -> None:
        try:
            async for _ in session:
                pass
        except reliablelink.SessionExpired as exc:
            seen.append(exc)
            raise

    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, session_ttl=10, **SIM_FAST)
        name = server.url.removeprefix("memory://")
        with pytest.raises(reliablelink.SessionExpired):
            async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
                await session.send(b"x")
                await session.drain()
                memory().refuse(name)
                for conn in memory_connections(server):
                    conn.blackhole()
                await trio.sleep(30)  # offline for longer than session_ttl
                memory().refuse(name, False)
                await session.receive()
        assert seen, "the server's handler saw SessionExpired"
        assert not server.sessions


async def test_close_from_client_ends_the_handler_and_from_server_ends_async_for(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    ended = trio.Event()

    async def handler(session: reliablelink.Session) -> None:
        async for data in session:
            if data == b"bye":
                return  # returning closes the session from the server side
            await session.send(data)
        ended.set()

    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, **SIM_FAST)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            await session.send(b"a")
            await session.send(b"bye")
            assert [m async for m in session] == [b"a"], "async for ends when the server closes"
            with pytest.raises(reliablelink.SessionClosed):
                await session.receive()
            with pytest.raises(reliablelink.SessionClosed):
                await session.send(b"late")
            assert session.link_state is LinkState.CLOSED
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            await session.send(b"x")
            assert await session.receive() == b"x"
        with trio.fail_after(5):
            await ended.wait()
        assert not server.sessions, "closed sessions are forgotten"


async def test_handler_runs_once_per_session_across_reconnects(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    calls = 0

    async def handler(session: reliablelink.Session) -> None:
        nonlocal calls
        calls += 1
        await echo(session)

    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, **SIM_FAST)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            for i in range(10):
                await session.send(numbered(i))
                for conn in memory_connections(server):
                    conn.reset()
                assert number_of(await session.receive()) == i
            assert session.stats.reconnects >= 10
        assert calls == 1


async def test_one_way_blackhole_replaces_the_half_dead_connection(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    ledger = Ledger()

    async def handler(session: reliablelink.Session) -> None:
        async for data in session:
            ledger.on_receive(number_of(data))

    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, heartbeat_interval=1.0, dead_after=30.0)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            for i in range(50):
                await session.send(numbered(i))
                ledger.on_send(i)
            await session.drain()
            (conn,) = memory_connections(server)
            # Server -> client goes silent; the server still sees the client's pings and
            # believes the old connection is fine when the client comes back on a new one.
            conn.blackhole("to_client")
            for i in range(50, 100):
                await session.send(numbered(i))
                ledger.on_send(i)
            await session.drain()
            assert session.stats.reconnects == 1
            (server_session,) = server.sessions.values()
            assert server_session.link_state is LinkState.CONNECTED
            assert len(memory_connections(server)) == 1, "the newer attach closed the older connection"
        assert ledger.result().exact, ledger.result().line()


async def test_wrong_key_fails_at_once_without_retrying(
    autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(echo)
        start = trio.current_time()
        with pytest.raises(reliablelink.AuthenticationError):
            async with reliablelink.connect(server.url, client_id="agent-1", key=b"wrong" * 8):
                pass
        with pytest.raises(reliablelink.AuthenticationError):
            async with reliablelink.connect(server.url, client_id="nobody", key=KEY):
                pass
        assert trio.current_time() - start < 0.001, "no backoff, no retry"


async def test_first_connect_gives_up_after_connect_timeout(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    with pytest.raises(reliablelink.ConnectionFailed, match="within 5"):
        async with reliablelink.connect("memory://nobody-here", client_id="agent-1", key=KEY, connect_timeout=5):
            pass
    assert trio.current_time() - start == pytest.approx(5, abs=0.01)


async def test_message_too_large_and_bad_options(autojump_clock: trio.testing.MockClock, run_server: RunServer) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(echo, max_message_size=4096)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            with pytest.raises(reliablelink.MessageTooLarge, match="5000 bytes > max_message_size 4096"):
                await session.send(b"x" * 5000)
            await session.send(b"x" * 4096)
            assert len(await session.receive()) == 4096
        with pytest.raises(TypeError, match="heartbeat_intervall"):
            async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, heartbeat_intervall=1):  # type: ignore[call-arg]
                pass
        with pytest.raises(ValueError, match="no transport"):
            async with reliablelink.connect("carrier-pigeon://x", client_id="agent-1", key=KEY):
                pass


async def test_batch_forms(autojump_clock: trio.testing.MockClock, run_server: RunServer) -> None:
    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(echo)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, max_inflight=64) as session:
            got: list[int] = []
            with trio.fail_after(60):
                async with trio.open_nursery() as inner:
                    # More than the window: send_many waits for ACKs between messages.
                    inner.start_soon(session.send_many, [numbered(i) for i in range(1000)])
                    while len(got) < 1000:
                        batch = await session.receive_many(max_count=100)
                        assert 1 <= len(batch) <= 100
                        got += [number_of(m) for m in batch]
            assert got == list(range(1000))
            with pytest.raises(ValueError, match="max_count"):
                await session.receive_many(0)


@pytest.mark.parametrize("seed", range(int(os.environ.get("RELIABLELINK_SEEDS", "20"))))
async def test_random_resets_and_blackholes_keep_the_ledger_exact(
    seed: int, autojump_clock: trio.testing.MockClock, run_server: RunServer
) -> None:
    """Traffic both ways while connections are reset or blackholed at random times (seeded)."""
    server_rng, client_rng, chaos_rng = (random.Random(f"{seed}-{role}") for role in ("server", "client", "chaos"))
    up, down = Ledger(), Ledger()
    total = 400

    async def push(session: reliablelink.Session, ledger: Ledger, rng: random.Random) -> None:
        for i in range(total):
            await session.send(numbered(i, rng.randrange(8, 3000)))
            ledger.on_send(i)
            await trio.sleep(rng.expovariate(50))  # spread traffic over simulated time

    async def pull(session: reliablelink.Session, ledger: Ledger) -> None:
        while ledger.received < total:
            ledger.on_receive(number_of(await session.receive()))

    async def handler(session: reliablelink.Session) -> None:
        async with trio.open_nursery() as traffic:
            traffic.start_soon(push, session, down, server_rng)
            traffic.start_soon(pull, session, up)
        await session.drain()

    opts: dict[str, Any] = {**SIM_FAST, "max_inflight": 64, "max_inflight_bytes": 64 * 1024}
    backoff = reliablelink.Backoff(0.1, 5.0, seed=seed)
    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, **opts)
        async with reliablelink.connect(
            server.url, client_id="agent-1", key=KEY, reconnect_backoff=backoff, **opts
        ) as session:

            async def chaos() -> None:
                while True:  # until the traffic is done
                    await trio.sleep(chaos_rng.uniform(0.05, 1.0))
                    for conn in memory_connections(server):
                        fault = chaos_rng.choice(["reset", "blackhole", "blackhole to_server"])
                        if fault == "reset":
                            conn.reset()
                        else:
                            conn.blackhole(*fault.split()[1:])

            async with trio.open_nursery() as inner:
                inner.start_soon(chaos)
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(push, session, up, client_rng)
                    traffic.start_soon(pull, session, down)
                inner.cancel_scope.cancel()
            await session.drain()
            reconnects = session.stats.reconnects
    assert reconnects >= 3, f"seed {seed}: only {reconnects} reconnects: the faults missed the traffic"
    for name, ledger in (("client -> server", up), ("server -> client", down)):
        result = ledger.result()
        assert result.exact, f"seed {seed}: {result.line(name)}"


async def test_an_hour_long_outage_within_session_ttl_loses_nothing(
    autojump_clock: trio.testing.MockClock, run_server: RunServer, nursery: trio.Nursery
) -> None:
    """The cable stays out for an hour of simulated time (the laptop slept) while both
    sides keep sending: on return, both ledgers are exact."""
    up, down = Ledger(), Ledger()
    outage = 3600.0

    async def pull(session: reliablelink.Session) -> None:
        while down.received < 300:
            down.on_receive(number_of(await session.receive()))

    with trio.fail_after(3 * outage):
        # The echoes are the server -> client traffic.
        server = await run_server(recording_echo(up), session_ttl=2 * outage, **SIM_FAST)
        name = server.url.removeprefix("memory://")
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            nursery.start_soon(pull, session)
            for i in range(300):
                if i == 100:
                    memory().refuse(name)
                    for conn in memory_connections(server):
                        conn.blackhole()
                    pulled_at = trio.current_time()
                if i == 200:
                    memory().refuse(name, False)  # cable back after an hour
                    assert trio.current_time() - pulled_at >= outage
                await session.send(numbered(i))
                up.on_send(i)
                down.on_send(i)
                await trio.sleep(outage / 100 if 100 <= i < 200 else 0.01)
            await session.drain()
            while down.received < 300:  # noqa: ASYNC110 - the pull task's ledger is all there is
                await trio.sleep(0.1)
            # Offline from detection (at most dead_after + a heartbeat after the pull)
            # until the reconnect.
            assert session.stats.offline_seconds >= outage - 4.0, session.stats
            assert session.stats.reconnects >= 1
    for direction, ledger in (("client -> server", up), ("server -> client", down)):
        assert ledger.result().exact, ledger.result().line(direction)


async def test_each_detached_session_expires_on_its_own_clock(
    autojump_clock: trio.testing.MockClock, run_server: RunServer, nursery: trio.Nursery
) -> None:
    """The server expires a session detached for longer than session_ttl, and only that one:
    a session that came back in time, went away again and came back again lives on."""
    ttl = 10.0
    expired: dict[str, float] = {}
    start = trio.current_time()
    gone_scope = trio.CancelScope()

    async def handler(session: reliablelink.Session) -> None:
        try:
            async for data in session:
                await session.send(data)
        except reliablelink.SessionExpired:
            expired[session.client_id] = trio.current_time() - start
            raise

    async def vanishing_client(url: str, task_status: trio.TaskStatus[reliablelink.Session]) -> None:
        with gone_scope:
            async with reliablelink.connect(url, client_id="agent-2", key=KEYS["agent-2"], **SIM_FAST) as session:
                task_status.started(session)
                await trio.sleep_forever()

    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, session_ttl=ttl, **SIM_FAST)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as back_soon:
            gone = await nursery.start(vanishing_client, server.url)
            for s in (back_soon, gone):
                assert await _echo(s, b"hi") == b"hi"
            for conn in memory_connections(server):
                conn.blackhole()  # both cables pulled
            gone_scope.cancel()  # ... and agent-2's process is gone for good
            await trio.sleep(8)
            assert back_soon.stats.reconnects == 1
            # agent-1 goes away again after coming back, this time for a while: it is
            # detached (from about 11 s) across the time its first absence would have
            # expired (about 13 s), and must not be expired for it.
            name = server.url.removeprefix("memory://")
            memory().refuse(name)
            for conn in memory_connections(server):
                conn.blackhole()
            await trio.sleep(6)
            memory().refuse(name, False)
            await trio.sleep(30 - 14)
            assert await _echo(back_soon, b"still here") == b"still here"
            assert back_soon.stats.reconnects == 2
            assert list(expired) == ["agent-2"], expired
            # Detached at once (its end closed) or after dead_after (3 s), then expired
            # session_ttl (10 s) later.
            assert ttl <= expired["agent-2"] <= 3.0 + ttl + 1.0, expired
            assert [s.client_id for s in server.sessions.values()] == ["agent-1"]


async def _echo(session: reliablelink.Session, data: bytes) -> bytes:
    await session.send(data)
    return await session.receive()


async def test_a_slow_link_is_not_a_dead_link(autojump_clock: trio.testing.MockClock, run_server: RunServer) -> None:
    """A link capped at 4 kB/s both ways carries 16 KiB messages (4 s each, longer than
    dead_after): bytes keep trickling, so neither side declares the link dead."""
    got: list[int] = []

    async def handler(session: reliablelink.Session) -> None:
        async for data in session:
            got.append(number_of(data))

    with trio.fail_after(VIRTUAL_LIMIT):
        server = await run_server(handler, **SIM_FAST)
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **SIM_FAST) as session:
            for conn in memory_connections(server):
                conn.degrade(bandwidth=4_000)
            for i in range(5):
                await session.send(numbered(i, 16 * 1024))
            await session.drain()
            assert session.stats.reconnects == 0, session.stats
    assert got == list(range(5))
