"""The tutorial's code blocks, put together, are a program that runs and ends with an exact ledger."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio

TUTORIAL = Path(__file__).parents[2] / "docs" / "tutorial.md"


async def test_tutorial_program_runs(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", TUTORIAL.read_text(encoding="utf-8"), re.S)
    program = tmp_path / "helpdesk.py"
    program.write_text("\n\n".join(blocks), encoding="utf-8")
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(program)],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = result.stdout.decode()
    report = f"exit status {result.returncode}\n{out}\nstderr:\n{result.stderr.decode()}"
    assert result.returncode == 0, report
    assert out.splitlines()[-1] == "ledger: sent 48, delivered 48, lost 0, duplicated 0, reordered 0", report
    assert "server: agent-2's session expired" in out and "handed over from agent-2" in out, report
