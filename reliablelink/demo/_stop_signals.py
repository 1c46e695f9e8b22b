"""Ctrl-C (and SIGTERM) for the demo processes: the first asks for a clean stop, the second forces it."""

from __future__ import annotations

import signal
from collections.abc import Callable

import trio

__all__ = ["stop_on_signals"]


async def stop_on_signals(
    stop: Callable[[], None],
    force: trio.CancelScope,
    say: Callable[[str], None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call ``stop()`` on the first SIGINT or SIGTERM and cancel ``force`` on the second.

    Start it with ``nursery.start`` so the handlers are installed when it returns; cancel
    it when the program ends.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        count = 0
        async for signum in signals:
            count += 1
            if count == 1:
                say(f"{signal.Signals(signum).name}: stopping cleanly (again to force)")
                stop()
            else:
                say(f"{signal.Signals(signum).name}: stopping now")
                force.cancel()
