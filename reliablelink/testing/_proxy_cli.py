"""``reliablelink chaos-proxy``: the chaos proxy as a command, for testing any deployment."""

from __future__ import annotations

import functools
import signal
import sys
import warnings
from collections.abc import AsyncIterator

import trio

from ._proxy import ChaosProxy, Toxics


def parse_toxics(specs: list[str]) -> Toxics:
    """The :class:`Toxics` that ``--toxic`` options ask for.

    A deprecated toxic name still works: its warning goes to stderr, one line each.

    Args:
        specs: the ``name=value`` strings.

    Raises:
        ValueError: an unknown toxic or a bad value.
    """
    toxics = Toxics()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        for spec in specs:
            toxics.set(spec)
    for warning in caught:
        print(f"reliablelink chaos-proxy: warning: {warning.message}", file=sys.stderr, flush=True)
    return toxics


def chaos_proxy_command(
    listen: str, upstream: str, specs: list[str], kill_every: float | None, duration: float | None
) -> int:
    """Run the command: parse the toxics, run the proxy; return the exit status.

    Args:
        listen: ``tcp://host:port`` to listen on.
        upstream: ``tcp://host:port`` of the real server.
        specs: the ``--toxic`` options.
        kill_every: reset every connection this often (seconds), if given.
        duration: stop after this many seconds (default: on Ctrl-C).

    Returns:
        0 when the proxy ran until ``duration`` or Ctrl-C, 2 for a bad toxic.
    """
    try:
        toxics = parse_toxics(specs)
    except ValueError as exc:
        print(f"reliablelink chaos-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(run_proxy, listen, upstream, toxics, kill_every, duration)
    except (KeyboardInterrupt, BaseExceptionGroup) as exc:
        # Only before run_proxy listens for SIGINT itself (at startup), or after.
        if isinstance(exc, BaseExceptionGroup) and exc.split(KeyboardInterrupt)[1] is not None:
            raise
        return 0


async def run_proxy(
    listen: str, upstream: str, toxics: Toxics, kill_every: float | None, duration: float | None
) -> int:
    """Run a :class:`ChaosProxy` until Ctrl-C (SIGINT) or ``duration``; print what it does.

    Ctrl-C stops it like the end of ``duration`` does: it prints its summary line and
    returns 0.

    Args:
        listen: ``tcp://host:port`` to listen on.
        upstream: ``tcp://host:port`` of the real server.
        toxics: what to do to the forwarded bytes.
        kill_every: reset every connection this often (seconds), if given.
        duration: stop after this many seconds (default: on Ctrl-C).

    Returns:
        The exit status, 0.
    """
    proxy = ChaosProxy(upstream, listen)
    proxy.toxics = toxics
    with (
        trio.open_signal_receiver(signal.SIGINT) as interrupts,
        trio.move_on_after(duration if duration is not None else float("inf")),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on, interrupts, nursery.cancel_scope)
            url = await nursery.start(proxy.run)
            print(f"chaos proxy {url} -> {upstream}; toxics: {proxy.toxics}", flush=True)
            if kill_every:
                nursery.start_soon(functools.partial(_kill_every, proxy, kill_every))
            nursery.start_soon(_report, proxy)
    print(f"connections: {proxy.connections_made}, resets: {proxy.kills}", flush=True)
    return 0


async def _stop_on(interrupts: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in interrupts:
        scope.cancel()


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
