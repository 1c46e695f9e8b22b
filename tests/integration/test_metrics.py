"""``reliablelink.metrics``: after ``register(registry)`` and real sessions over ``memory://``,
``prometheus_client.generate_latest(registry)`` shows exactly what happened.

The counters are per process and other tests in this worker ran sessions too, so every
check compares two scrapes: the numbers before the traffic and after it.
"""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
from typing import Any

import prometheus_client
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import reliablelink
from reliablelink import LinkState
from reliablelink.stores import MemoryStore
from tests.helpers import KEY, KEYS, echo, memory, memory_connections, start_server

SIM: dict[str, Any] = {"heartbeat_interval": 1.0, "dead_after": 3.0}
CLIENT_SIM: dict[str, Any] = {**SIM, "reconnect_backoff": (0.1, 0.5)}
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: prometheus_client.CollectorRegistry) -> Scrape:
    """Every sample of ``generate_latest(registry)``, by name and labels."""
    gc.collect()  # sessions of earlier tests that are garbage go to the running totals
    text = prometheus_client.generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    """How much the sample ``name{labels}`` grew between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    assert key in after, f"{name}{labels} is exposed"
    return after[key] - before.get(key, 0.0)


def fresh_registry() -> prometheus_client.CollectorRegistry:
    registry = prometheus_client.CollectorRegistry()
    reliablelink.metrics.register(registry)
    return registry


async def test_one_sessions_traffic_a_cut_and_refused_handshakes_are_counted_exactly(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    registry = fresh_registry()
    before = scrape(registry)
    server = await start_server(nursery, echo, "memory://", **SIM)
    name = server.url.removeprefix("memory://")
    payload = b"m" * 100
    with trio.fail_after(600):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **CLIENT_SIM) as session:
            for _ in range(10):
                await session.send(payload)
            for _ in range(10):
                assert await session.receive() == payload
            await trio.sleep(1)  # acknowledgements settle: nothing in flight either way
            attached = scrape(registry)
            for role in ("client", "server"):
                assert delta(attached, before, "reliablelink_sessions", role=role, state="attached") == 1
                assert delta(attached, before, "reliablelink_inflight_messages", role=role) == 0
            # Pull the cable with a message on it, then cut the connection and keep it cut.
            (conn,) = memory_connections(server)
            conn.blackhole()
            await session.send(payload)  # written, lost with the connection: resent on resume
            memory().refuse(name)
            conn.reset()
            assert await session.wait_link_change() is LinkState.RECONNECTING
            await trio.sleep(2)
            detached = scrape(registry)
            for role in ("client", "server"):
                assert delta(detached, before, "reliablelink_sessions", role=role, state="detached") == 1, role
                assert delta(detached, before, "reliablelink_sessions", role=role, state="attached") == 0, role
            assert delta(detached, before, "reliablelink_inflight_messages", role="client") == 1
            memory().refuse(name, False)
            assert await session.wait_link_change() is LinkState.CONNECTED
            assert await session.receive() == payload
        with pytest.raises(reliablelink.AuthenticationError):
            async with reliablelink.connect(server.url, client_id="agent-1", key=b"w" * 32, **CLIENT_SIM):
                pass
        with pytest.raises(reliablelink.AuthenticationError):
            async with reliablelink.connect(server.url, client_id="nobody", key=KEY, **CLIENT_SIM):
                pass
        while server.sessions:  # noqa: ASYNC110 - the server's registry is all there is
            await trio.sleep(0.1)
    after = scrape(registry)

    def grew(metric: str, **labels: str) -> float:
        return delta(after, before, metric, **labels)

    for role in ("client", "server"):
        assert grew("reliablelink_messages_sent_total", role=role) == 11, role
        assert grew("reliablelink_messages_received_total", role=role) == 11, role
        assert grew("reliablelink_payload_sent_bytes_total", role=role) == 1100, role
        assert grew("reliablelink_payload_received_bytes_total", role=role) == 1100, role
        assert grew("reliablelink_reconnects_total", role=role) == 1, role
        assert grew("reliablelink_sessions_opened_total", role=role) == 1, role
        assert grew("reliablelink_sessions_ended_total", role=role, reason="closed") == 1, role
        assert grew("reliablelink_reconnect_seconds_count", role=role) == 1, role
        assert grew("reliablelink_reconnect_seconds_sum", role=role) >= 2, f"{role}: offline at least 2 s"
        assert grew("reliablelink_session_offline_seconds_count", role=role) == 1, role
        assert grew("reliablelink_sessions", role=role, state="attached") == 0, role
        assert grew("reliablelink_sessions", role=role, state="detached") == 0, role
    assert grew("reliablelink_messages_resent_total", role="client") == 1, "the message lost in the cut"
    assert grew("reliablelink_messages_resent_total", role="server") == 0
    assert grew("reliablelink_handshakes_total", outcome="ok") == 2, "the first connection and the resume"
    assert grew("reliablelink_handshakes_total", outcome="wrong_key") == 1
    assert grew("reliablelink_handshakes_total", outcome="unknown_client") == 1
    assert grew("reliablelink_handshakes_total", outcome="timeout") == 0
    assert grew("reliablelink_resumes_total") == 1
    assert grew("reliablelink_connect_attempts_total", outcome="ok") == 2
    assert grew("reliablelink_connect_attempts_total", outcome="auth_failed") == 2
    assert grew("reliablelink_connect_attempts_total", outcome="failed") >= 1, "attempts while the cable was out"
    text = prometheus_client.generate_latest(registry).decode()
    assert "session_id" not in text and "agent-1" not in text, "no session or client id as a label"


async def test_the_window_fill_is_a_gauge(autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    registry = fresh_registry()
    before = scrape(registry)
    release = trio.Event()

    async def stalled(session: reliablelink.Session) -> None:
        await release.wait()
        async for data in session:
            await session.send(data)

    server = await start_server(nursery, stalled, "memory://", **SIM)
    with trio.fail_after(600):
        async with reliablelink.connect(
            server.url, client_id="agent-1", key=KEY, max_inflight=4, **CLIENT_SIM
        ) as session:
            for i in range(4):
                await session.send(b"%d" % i)
            await trio.sleep(1)
            full = scrape(registry)
            assert delta(full, before, "reliablelink_inflight_messages", role="client") == 4
            assert delta(full, before, "reliablelink_inflight_bytes", role="client") == 4
            assert delta(full, before, "reliablelink_window_limit_messages", role="client") == 4
            assert delta(full, before, "reliablelink_window_full_sessions", role="client") == 1
            release.set()
            for i in range(4):
                assert await session.receive() == b"%d" % i
            await session.drain()
            drained = scrape(registry)
            assert delta(drained, before, "reliablelink_inflight_messages", role="client") == 0
            assert delta(drained, before, "reliablelink_window_full_sessions", role="client") == 0


async def test_a_session_taken_over_from_the_store_counts_as_a_move_and_store_operations_are_timed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    registry = fresh_registry()
    before = scrape(registry)
    store = MemoryStore(clock=trio.current_time)
    url = "memory://metrics-move"
    serve = functools.partial(reliablelink.serve, echo, url, keys=KEYS, store=store, **SIM)
    first = trio.CancelScope()

    async def first_server(task_status: trio.TaskStatus[reliablelink.Server]) -> None:
        with first:
            await serve(task_status=task_status)

    with trio.fail_after(600):
        await nursery.start(first_server)
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, **CLIENT_SIM) as session:
            await session.send(b"before")
            assert await session.receive() == b"before"
            first.cancel()  # this node stops; another one, sharing the store, takes over
            await trio.sleep(0.5)
            second: reliablelink.Server = await nursery.start(serve)
            await session.send(b"after")
            assert await session.receive() == b"after"
            assert list(second.sessions) == [session.session_id]
    after = scrape(registry)
    assert delta(after, before, "reliablelink_session_moves_total", direction="in") == 1
    for op in ("create", "commit", "load", "take_over", "claim"):
        assert delta(after, before, "reliablelink_store_operation_seconds_count", op=op) >= 1, op


def test_register_is_opt_in_idempotent_and_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys, reliablelink\n"
        "assert 'prometheus_client' not in sys.modules, 'importing reliablelink imports prometheus_client'\n"
        "import prometheus_client\n"
        "assert b'reliablelink_' not in prometheus_client.generate_latest(), 'registered on import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    registry = prometheus_client.CollectorRegistry(auto_describe=True)
    collector = reliablelink.metrics.register(registry)
    assert reliablelink.metrics.register(registry) is collector, "registering twice returns the same collector"
    names = {spec.name for spec in reliablelink.metrics.METRICS}
    exposed = {
        family.name for family in text_string_to_metric_families(prometheus_client.generate_latest(registry).decode())
    }
    assert names == exposed, "every metric defined is exposed"
    registry.unregister(collector)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"reliablelink\[prometheus\]"):
        reliablelink.metrics.register(prometheus_client.CollectorRegistry())
