"""Sessions through the chaos proxy's toxics over real loopback TCP: every ledger exact."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio

import reliablelink
from reliablelink.__main__ import main
from reliablelink.testing import ChaosProxy, Ledger, Toxics, number_of, numbered
from tests.helpers import FAST, KEY, SERVER_FAST, RunServer, echo, free_port, start_server

COUNT = 300


async def run_through(
    nursery: trio.Nursery, toxify: Callable[[ChaosProxy], None], *, heal_after: int | None = None, **client: Any
) -> int:
    """Echo COUNT messages through a proxy with ``toxify`` applied, the server and the proxy
    in ``nursery``; heal it (fresh toxics) after ``heal_after`` echoes if given. Returns the
    number of reconnects."""
    echoes = Ledger()  # each message sent must come back exactly once, in order
    with trio.fail_after(60):
        server = await start_server(nursery, echo, "tcp://127.0.0.1:0", **SERVER_FAST)
        proxy = ChaosProxy(server.url, seed=1)
        url = await nursery.start(proxy.run)
        toxify(proxy)
        options: dict[str, Any] = {**FAST, **client}
        async with reliablelink.connect(url, client_id="agent-1", key=KEY, **options) as session:

            async def push() -> None:
                for i in range(COUNT):
                    await session.send(numbered(i, 100 + i % 900))
                    echoes.on_send(i)

            async with trio.open_nursery() as inner:
                inner.start_soon(push)
                while echoes.received < COUNT:
                    echoes.on_receive(number_of(await session.receive()))
                    if heal_after is not None and echoes.received == heal_after:
                        proxy.toxics = Toxics()
            await session.drain()
            reconnects = session.stats.reconnects
    assert echoes.result().exact, echoes.result().line("echoes")
    return reconnects


def _set(**fields: Any) -> Callable[[ChaosProxy], None]:
    def apply(proxy: ChaosProxy) -> None:
        for name, value in fields.items():
            setattr(proxy.toxics, name, value)

    return apply


@pytest.mark.parametrize(
    "toxics",
    [
        {"latency": 0.05, "jitter": 0.05},
        {"bandwidth": 200_000},
        {"segment": 1},
        {"slow_close": 0.3},
    ],
    ids=["latency+jitter", "bandwidth", "byte-by-byte", "slow-close"],
)
async def test_degraded_links_keep_the_ledger_exact(toxics: dict[str, Any], nursery: trio.Nursery) -> None:
    await run_through(nursery, _set(**toxics), dead_after=2.0, heartbeat_interval=0.5)


async def test_reset_after_n_bytes_again_and_again(nursery: trio.Nursery) -> None:
    # Every connection dies after 20 kB: the session must make progress across many of them.
    reconnects = await run_through(nursery, _set(reset_after=20_000))
    assert reconnects >= 5


@pytest.mark.parametrize("direction", ["to_server", "to_client", "both"])
async def test_one_way_and_two_way_blackholes_heal(
    direction: str, run_server: RunServer, nursery: trio.Nursery
) -> None:
    # A blackhole on the live connection (new ones too), healed once the client noticed.
    async def scenario() -> None:
        echoes = Ledger()
        with trio.fail_after(60):
            server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
            proxy = ChaosProxy(server.url)
            url = await nursery.start(proxy.run)
            async with reliablelink.connect(url, client_id="agent-1", key=KEY, **FAST) as session:
                for i in range(50):
                    await session.send(numbered(i))
                    echoes.on_send(i)
                for _ in range(50):
                    echoes.on_receive(number_of(await session.receive()))
                proxy.toxics.set(f"blackhole={direction}")
                for i in range(50, 100):
                    await session.send(numbered(i))
                    echoes.on_send(i)
                assert await session.wait_link_change() is reliablelink.LinkState.RECONNECTING
                proxy.toxics = Toxics()  # the cable is back
                for _ in range(50):
                    echoes.on_receive(number_of(await session.receive()))
                await session.drain()
        assert echoes.result().exact, echoes.result().line("echoes")

    await scenario()


async def test_refused_connections_until_the_server_is_reachable_again(
    run_server: RunServer, nursery: trio.Nursery
) -> None:
    server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
    proxy = ChaosProxy(server.url)
    url = await nursery.start(proxy.run)
    async with reliablelink.connect(
        url, client_id="agent-1", key=KEY, **(FAST | {"reconnect_backoff": (0.01, 0.05)})
    ) as s:
        await s.send(b"one")
        assert await s.receive() == b"one"
        proxy.refuse = True
        proxy.kill_all()
        await s.send(b"two")  # accepted while offline
        assert await s.wait_link_change() is reliablelink.LinkState.RECONNECTING
        proxy.refuse = False
        assert await s.receive() == b"two"


def test_toxic_specs() -> None:
    t = Toxics()
    for spec in ("latency=0.1", "jitter=0.02", "bandwidth=1000", "segment=1", "reset_after=10", "refuse=1"):
        t.set(spec)
    t.set("blackhole=to_client")
    assert (t.latency, t.bandwidth, t.segment, t.reset_after, t.refuse) == (0.1, 1000, 1, 10, True)
    assert t.blackhole_to_client and not t.blackhole_to_server
    with pytest.raises(ValueError, match="unknown toxic"):
        t.set("lag=1")


async def test_chaos_proxy_command_line_forwards_and_resets(run_server: RunServer) -> None:
    """``reliablelink chaos-proxy`` between a real client and server: traffic flows, resets
    happen on schedule, the ledger stays exact."""
    port = free_port()  # for the proxy to listen on
    echoes = Ledger()
    with trio.fail_after(60):
        server = await run_server(echo, "tcp://127.0.0.1:0", **SERVER_FAST)
        cmd = [
            sys.executable, "-m", "reliablelink", "chaos-proxy",
            "--listen", f"tcp://127.0.0.1:{port}", "--upstream", server.url,
            "--toxic", "latency=0.01", "--kill-every", "0.3", "--duration", "20",
        ]  # fmt: skip
        proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None
            first = await proc.stdout.receive_some(4096)
            assert b"chaos proxy tcp://127.0.0.1:" in first, first
            url = f"tcp://127.0.0.1:{port}"
            async with reliablelink.connect(url, client_id="agent-1", key=KEY, **FAST) as session:
                for i in range(200):
                    await session.send(numbered(i))
                    echoes.on_send(i)
                    echoes.on_receive(number_of(await session.receive()))
                    await trio.sleep(0.005)
                reconnects = session.stats.reconnects
        finally:
            proc.terminate()
            await proc.wait()
    assert echoes.result().exact, echoes.result().line("echoes")
    assert reconnects >= 1, "the proxy's scheduled resets reached the session"


def test_chaos_proxy_command_rejects_unknown_toxics() -> None:

    assert (
        main(["chaos-proxy", "--listen", "tcp://127.0.0.1:0", "--upstream", "tcp://127.0.0.1:1", "--toxic", "lag=1"])
        == 2
    )
