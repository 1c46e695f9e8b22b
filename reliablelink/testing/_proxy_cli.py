"""``reliablelink chaos-proxy``: the chaos proxy as a command, for testing any deployment."""

from __future__ import annotations

import functools
import os
import signal
import sys
import warnings
from collections.abc import AsyncIterator

import trio

from .._util import why_unreachable
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


async def run_proxy(
    listen: str,
    upstream: str,
    toxics: Toxics,
    kill_every: float | None,
    duration: float | None,
    *,
    keys: bool = False,
) -> int:
    """Run a :class:`ChaosProxy` until Ctrl-C (SIGINT) or ``duration``; print what it does.

    While it runs, SIGUSR1 pulls the cable (the open connections go silent, new ones are
    refused) and SIGUSR2 restores it (new connections are accepted; the silent ones stay
    dead, so their clients reconnect once they notice). With ``keys`` (standard input is a
    terminal) the keys ``p`` (pull), ``r`` (restore), ``k`` (reset every connection) and
    ``q`` (quit) do the same. Ctrl-C stops it like the end of ``duration`` does: it prints
    its summary and returns 0.

    Args:
        listen: ``tcp://host:port`` to listen on.
        upstream: ``tcp://host:port`` of the real server.
        toxics: what to do to the forwarded bytes.
        kill_every: reset every connection this often (seconds), if given.
        duration: stop after this many seconds (default: on Ctrl-C).
        keys: read control keys from standard input (a terminal).

    Returns:
        The exit status, 0.
    """
    proxy = ChaosProxy(upstream, listen)
    proxy.toxics = toxics
    cable = _Cable(proxy)
    signals = [signal.SIGINT, *_CONTROL_SIGNALS]
    with (
        trio.open_signal_receiver(*signals) as received,
        trio.move_on_after(duration if duration is not None else float("inf")),
    ):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, received, cable, nursery.cancel_scope)
            url = await nursery.start(proxy.run)
            print(f"chaos proxy {url} -> {upstream}; toxics: {proxy.toxics}", flush=True)
            if keys:  # the terminal reads single keys before the line that offers them
                await nursery.start(_read_keys, cable, nursery.cancel_scope)
            print(_controls_line(keys), flush=True)
            if kill_every:
                nursery.start_soon(functools.partial(_kill_every, proxy, kill_every))
            nursery.start_soon(_report, proxy, upstream)
    if cable.pulls:
        print(f"cable pulled {cable.pulls} time(s), {cable.offline():.1f} s in all", flush=True)
    print(f"connections: {proxy.connections_made}, resets: {proxy.kills}", flush=True)
    return 0


# SIGUSR1 pulls the cable, SIGUSR2 restores it (where the platform has them).
_CONTROL_SIGNALS = [sig for sig in (getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None)) if sig]


def _controls_line(keys: bool) -> str:
    line = f"pull the cable: kill -USR1 {os.getpid()}; restore it: kill -USR2 {os.getpid()}"
    if keys:
        line += "; keys: p pull, r restore, k reset connections, q quit"
    return line


def keys_available() -> bool:
    """Standard input is a terminal and this process is in its foreground (in the background,
    changing the terminal's mode would stop the process with SIGTTOU)."""
    try:
        return sys.stdin.isatty() and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError, AttributeError):
        return False


class _Cable:
    """Pulls and restores the proxy's cable, and counts the pulls."""

    def __init__(self, proxy: ChaosProxy) -> None:
        self.proxy = proxy
        self.pulls = 0
        self._refuse_normally = proxy.refuse
        self._pulled_at: float | None = None
        self._offline = 0.0

    def pull(self) -> None:
        if self._pulled_at is not None:
            print("the cable is already pulled", flush=True)
            return
        self._pulled_at = trio.current_time()
        self.pulls += 1
        self.proxy.refuse = True
        silenced = self.proxy.blackhole_all()
        print(f"cable pulled: {silenced} connection(s) go silent, new connections are refused", flush=True)

    def restore(self) -> None:
        if self._pulled_at is None:
            print("the cable is not pulled", flush=True)
            return
        offline = trio.current_time() - self._pulled_at
        self._offline += offline
        self._pulled_at = None
        self.proxy.refuse = self._refuse_normally
        print(f"cable back after {offline:.1f} s: new connections are accepted", flush=True)

    def reset(self) -> None:
        print(f"reset {self.proxy.kill_all()} connection(s)", flush=True)

    def offline(self) -> float:
        """Seconds pulled in all, the current pull included."""
        now = trio.current_time()
        return self._offline + (0.0 if self._pulled_at is None else now - self._pulled_at)


async def _on_signals(received: AsyncIterator[int], cable: _Cable, scope: trio.CancelScope) -> None:
    async for signum in received:
        if signum == getattr(signal, "SIGUSR1", None):
            cable.pull()
        elif signum == getattr(signal, "SIGUSR2", None):
            cable.restore()
        else:
            scope.cancel()


async def _read_keys(
    cable: _Cable, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Act on keys typed on the terminal (no Enter needed); the terminal is put back as it was."""
    import termios  # noqa: PLC0415 (Unix only; imported only when standard input is a terminal)
    import tty  # noqa: PLC0415

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        task_status.started()
        while True:
            data = await trio.to_thread.run_sync(os.read, fd, 1, abandon_on_cancel=True)
            key = data.decode(errors="replace").lower()
            if not data or key == "q":
                scope.cancel()
                return
            action = {"p": cable.pull, "r": cable.restore, "k": cable.reset}.get(key)
            if action is not None:
                action()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _kill_every(proxy: ChaosProxy, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        if killed := proxy.kill_all():
            print(f"reset {killed} connection(s)", flush=True)


async def _report(proxy: ChaosProxy, upstream: str) -> None:
    seen = -1
    failures = 0
    while True:
        await trio.sleep(1)
        if proxy.connections_made != seen:
            seen = proxy.connections_made
            print(f"connections made {seen}, open {proxy.live_connections}, resets {proxy.kills}", flush=True)
        if proxy.upstream_failures != failures and proxy.upstream_error is not None:
            failures = proxy.upstream_failures
            reason = why_unreachable(proxy.upstream_error)
            print(
                f"cannot reach the upstream {upstream} ({reason}): {failures} client connection(s) closed so far; "
                "is the server running?",
                flush=True,
            )
