"""``reliablelink demo-server`` and two ``demo-agent`` processes, one of them through a chaos
proxy whose connection is killed midway: every visitor message answered exactly once."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from pathlib import Path

import trio

from reliablelink import generate_key
from reliablelink.testing import ChaosProxy
from tests.demo.process_output import start_reliablelink

SERVER_LEDGER = re.compile(r"ledger: sent (\d+), delivered (\d+), unanswered 0, duplicated 0, reordered 0")
AGENT_LEDGER = re.compile(r"ledger: received (\d+), answered (\d+), lost 0, duplicated 0, reordered 0")
AGENT_LINK = re.compile(r"link: sessions 1, expired 0, reconnects (\d+), resent (\d+)")


async def test_server_and_agents_in_separate_processes_survive_a_killed_connection(tmp_path: Path) -> None:
    keys = tmp_path / "agents.keys"
    keys.write_text(f"agent-1 {generate_key().hex()}\nagent-2 {generate_key().hex()}\n")

    def is_answer_of(agent: str) -> Callable[[str], bool]:
        pattern = re.compile(rf"\[\s*[\d.]+s\] \[c\d+ #\d+\] {agent}: ")
        return lambda line: bool(pattern.match(line))

    with trio.fail_after(60):
        # The output pumps live in this nursery: its exit gives them a last turn before the
        # checks below read the processes' lines.
        async with trio.open_nursery() as nursery:
            server = await start_reliablelink(
                nursery,
                "demo-server",
                *("demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(keys)),
                *("--visitors", "4", "--seed", "3", "--heartbeat", "0.5"),
            )
            first = await server.wait_for_line("its URL", bool)
            assert first.startswith("listening on tcp://127.0.0.1:"), server.text
            url = first.removeprefix("listening on ")
            proxy = ChaosProxy(url)
            proxy_url = await nursery.start(proxy.run)
            common = ("--key", f"@{keys}", "--heartbeat", "0.5")
            agent1 = await start_reliablelink(
                nursery, "agent-1", "demo-agent", "--connect", url, "--id", "agent-1", *common
            )
            agent2 = await start_reliablelink(
                nursery, "agent-2", "demo-agent", "--connect", proxy_url, "--id", "agent-2", *common
            )
            answered = is_answer_of("agent-2")
            await agent2.wait_for("3 answers", lambda lines: sum(map(answered, lines)) >= 3)
            assert proxy.kill_all() == 1, "agent-2's one connection goes through the proxy"
            before = agent2.count(answered)
            await agent2.wait_for_line("the reconnect", lambda line: "back online after" in line)
            await agent2.wait_for("3 more answers", lambda lines: sum(map(answered, lines)) >= before + 3)
            await agent1.wait_for("an answer", lambda lines: any(map(is_answer_of("agent-1"), lines)))
            server.process.send_signal(signal.SIGINT)
            # The server closes the agents' sessions; all three processes end by themselves.
            await server.process.wait()
            await agent1.process.wait()
            await agent2.process.wait()
            nursery.cancel_scope.cancel()

    outputs = "\n\n".join(f"--- {p.name} (exit {p.process.returncode}):\n{p.text}" for p in (server, agent1, agent2))
    assert (server.process.returncode, agent1.process.returncode, agent2.process.returncode) == (0, 0, 0), outputs
    final = SERVER_LEDGER.fullmatch(server.lines[-1])
    assert final is not None and final[1] == final[2] and int(final[1]) > 0, outputs
    answered_total = 0
    for agent in (agent1, agent2):
        ledger = AGENT_LEDGER.fullmatch(agent.lines[-2])
        assert ledger is not None and ledger[1] == ledger[2], outputs
        answered_total += int(ledger[2])
        assert "the server closed the session" in agent.text, outputs
    # Nothing expired, so every answer the agents sent is one the server counted.
    assert answered_total == int(final[2]), outputs
    link2 = AGENT_LINK.fullmatch(agent2.lines[-1])
    assert link2 is not None and int(link2[1]) >= 1, outputs
    assert re.search(
        r"^agent-2: routed \d+, answered \d+, handed over 0; sessions 1, expired 0, reconnects [1-9]", server.text, re.M
    ), outputs
