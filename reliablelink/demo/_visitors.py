"""Simulated visitors: each chats in one conversation after another until told to stop."""

from __future__ import annotations

import random

import trio

from ._chat_script import VISITOR_NAMES, visitor_lines
from ._router import Conversation, Router

__all__ = ["run_visitors"]

# A visitor stops typing while this many of its messages wait for an answer (a person
# would too), so a pulled agent cable builds up a bounded backlog, never an endless one.
MAX_UNANSWERED = 4


async def run_visitors(
    router: Router,
    count: int,
    stop: trio.Event,
    *,
    seed: int,
    pause: tuple[float, float] = (0.05, 0.5),
) -> None:
    """Run ``count`` visitors until ``stop`` is set.

    Each visitor opens a conversation, sends its lines with a random ``pause`` (seconds)
    between them, waits for the last answer, leaves, and starts another conversation.
    Stopping leaves the current conversations open: their answers are still due.
    """
    async with trio.open_nursery() as nursery:
        for i in range(count):
            name = VISITOR_NAMES[i % len(VISITOR_NAMES)] + ("" if i < len(VISITOR_NAMES) else f" {i}")
            nursery.start_soon(_visitor, router, name, random.Random(f"{seed}/{i}"), pause)
        await stop.wait()
        nursery.cancel_scope.cancel()


async def _visitor(router: Router, name: str, rng: random.Random, pause: tuple[float, float]) -> None:
    await trio.sleep(rng.uniform(0, pause[1]))
    while True:
        conv = router.open_conversation(name)

        def below_cap(conv: Conversation = conv) -> bool:
            return conv.unanswered < MAX_UNANSWERED

        def all_answered(conv: Conversation = conv) -> bool:
            return conv.unanswered == 0

        for text in visitor_lines(rng):
            await trio.sleep(rng.uniform(*pause))
            await router.wait_until(below_cap)
            router.visitor_says(conv, text)
        await router.wait_until(all_answered)
        router.end_conversation(conv)
