"""The seeded schedule of pulled cables."""

from __future__ import annotations

import itertools
import random

import pytest

from reliablelink.demo.run import DemoTiming, plan_pulls


@pytest.mark.parametrize("duration", [3.0, 4.0, 10.0, 30.0])
@pytest.mark.parametrize("agents", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", range(10))
def test_plan(duration: float, agents: int, seed: int) -> None:
    timing = DemoTiming.for_duration(duration)
    plan = plan_pulls(duration, agents, timing, random.Random(seed))
    longs = [p for p in plan if p.kind == "long"]
    assert len(longs) == 1
    assert longs[0].length > timing.dead_after + timing.session_ttl
    assert longs[0].at + longs[0].length < duration - 0.5, "the expired agent comes back before the end"
    assert [p.at for p in plan] == sorted(p.at for p in plan)
    for pull in plan:
        assert pull.at > 0 and 0 <= pull.agent < agents
        out_until = pull.at + max(pull.length, timing.dead_after if pull.kind == "silent" else 0)
        assert out_until < duration, pull
    for agent in range(agents):
        mine = [p for p in plan if p.agent == agent]
        for a, b in itertools.pairwise(mine):
            assert a.at + a.length < b.at, f"overlapping pulls on agent {agent}: {a}, {b}"
    if agents >= 2 and duration >= 4:
        assert {p.kind for p in plan} == {"reset", "silent", "long"}


def test_timing_scales_down_for_short_runs() -> None:
    assert DemoTiming.for_duration(10) == DemoTiming(0.5, 1.5, 3.0)
    assert DemoTiming.for_duration(60) == DemoTiming(0.5, 1.5, 3.0)
    short = DemoTiming.for_duration(4)
    assert short.dead_after == pytest.approx(0.6) and short.session_ttl == pytest.approx(1.2)
