"""``reliablelink chaos-proxy``: the chaos proxy as a command, for testing any deployment."""

from __future__ import annotations

import functools

import trio

from ._proxy import ChaosProxy


async def run_proxy(
    listen: str, upstream: str, toxics: list[str], kill_every: float | None, duration: float | None
) -> int:
    """Run a :class:`ChaosProxy` until interrupted (or ``duration``); print what it does."""
    proxy = ChaosProxy(upstream, listen)
    for spec in toxics:
        proxy.toxics.set(spec)
    with trio.move_on_after(duration if duration is not None else float("inf")):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(proxy.run)
            print(f"chaos proxy {url} -> {upstream}; toxics: {proxy.toxics}", flush=True)
            if kill_every:
                nursery.start_soon(functools.partial(_kill_every, proxy, kill_every))
            nursery.start_soon(_report, proxy)
    print(f"connections: {proxy.connections_made}, resets: {proxy.kills}", flush=True)
    return 0


async def _kill_every(proxy: ChaosProxy, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        if killed := proxy.kill_all():
            print(f"reset {killed} connection(s)", flush=True)


async def _report(proxy: ChaosProxy) -> None:
    seen = -1
    while True:
        await trio.sleep(1)
        if proxy.connections_made != seen:
            seen = proxy.connections_made
            print(f"connections made {seen}, open {proxy.live_connections}, resets {proxy.kills}", flush=True)
