"""``reliablelink demo`` end to end, as a user runs it (plain output: stdout is a pipe)."""

from __future__ import annotations

import re
import subprocess
import sys

import trio

LEDGER = re.compile(r"ledger: sent (\d+), delivered (\d+), lost 0, duplicated 0, reordered 0")
AGENT_LINE = re.compile(r"agent-\d: sent (\d+), delivered (\d+), lost 0, duplicated 0, reordered 0 \(.*\)")


async def test_demo_pulls_cables_expires_a_session_and_ends_with_an_exact_ledger() -> None:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-m", "reliablelink", "demo", "--duration", "4", "--seed", "7"],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    report = f"exit status {result.returncode}\n{out}\nstderr:\n{result.stderr.decode()}"
    assert result.returncode == 0, report
    lines = out.splitlines()
    final = LEDGER.fullmatch(lines[-1])
    assert final is not None, report
    assert final[1] == final[2] and int(final[1]) > 0, report
    # One ledger line per agent before it, each exact.
    assert sum(bool(AGENT_LINE.fullmatch(line)) for line in lines) == 3, report
    # The run pulled cables, expired a session and handed its conversations over.
    assert "connection reset" in out and "cable pulled silently" in out, report
    assert "the session will expire" in out, report
    assert re.search(r"agent-\d: its session expired; \d+ conversations with \d+ unanswered messages handed", out), (
        report
    )
    assert re.search(r"agent-\d: the server forgot the session \(expired\); starting a new session", out), report
    assert re.search(r"back online after [\d.]+ s, session resumed", out), report
    # Plain progress lines about once a second, no terminal escapes.
    assert sum(line.endswith("waiting") and "visitors:" in line for line in lines) >= 3, report
    assert "\x1b" not in out, report
