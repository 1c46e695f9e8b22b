"""The one-process demo with a single agent: after its session expires, its conversations
wait for its new session; nothing is dropped."""

from __future__ import annotations

import io

import trio

from reliablelink.demo.run import run_customer_service
from reliablelink.demo.views import PlainView


async def test_single_agent_gets_its_conversations_back_on_a_new_session() -> None:
    out = io.StringIO()
    with trio.fail_after(60):
        report = await run_customer_service(PlainView(out), duration=4, agents=1, visitors=3, seed=11)
    text = out.getvalue() + "\n".join(report.lines())
    assert report.ok, text
    assert report.expired == 1 and report.handovers == 1, text
    assert "handed over to the waiting list" in text or "handed over to agent-1" in text, text
    (agent,) = report.agents
    assert agent.total.exact, text
    # The long pull expired the session while visitors kept writing, so messages sent to it
    # were still unanswered: the router took them back (for agent-1's next session), and the
    # ledger's count of them agrees with the router's.
    assert agent.handed_over == report.handed_over > 0, text
    # They came back to agent-1: every visitor message was settled there exactly once.
    assert agent.to_agent.sent == agent.to_agent.delivered == report.to_agent.sent > 0, text
    assert report.lines()[-1] == report.total.line("ledger")
