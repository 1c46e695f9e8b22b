"""The command line around the demos: subcommands, key arguments, errors."""

from __future__ import annotations

import base64
import functools
import importlib.metadata
import io
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from reliablelink import Session, generate_key, serve
from reliablelink._cli import _read_key, run
from reliablelink.demo.server import DemoServerSettings, run_demo_server
from reliablelink.demo.views import TimedPrinter


def test_echo_demo_keeps_the_old_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["echo-demo", "--messages", "300", "--cuts", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "ledger: sent 600, delivered 600, lost 0, duplicated 0, reordered 0"


def test_key_in_hex_base64_or_a_file(tmp_path: Path) -> None:
    key, other = generate_key(), generate_key()
    assert _read_key(key.hex(), "agent-1") == key
    assert _read_key("base64:" + base64.b64encode(key).decode(), "agent-1") == key
    keys = tmp_path / "agents.keys"
    keys.write_text(f"# agents\nagent-1 {key.hex()}\nagent-2 {other.hex()}\n")
    assert _read_key(f"@{keys}", "agent-2") == other
    single = tmp_path / "agent-1.key"
    single.write_text(key.hex() + "\n")
    assert _read_key(f"@{single}", "agent-1") == key
    with pytest.raises(ValueError, match="no key for 'agent-3'"):
        _read_key(f"@{keys}", "agent-3")


def test_bad_arguments_exit_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo-agent", "--connect", "tcp://127.0.0.1:1", "--id", "a", "--key", "zz"]) == 2
    assert "bad --key" in capsys.readouterr().err
    empty = tmp_path / "empty.keys"
    empty.write_text("# nobody\n")
    assert run(["demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(empty)]) == 2
    assert "no keys" in capsys.readouterr().err
    assert run(["demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        run(["demo", "--duration", "1"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"reliablelink {importlib.metadata.version('reliablelink')}\n"


def test_echo_demo_help_describes_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["echo-demo", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "streams numbered messages to an echo server" in out, out
    assert "resets the connection --cuts times" in out, out


def test_echo_demo_refuses_messages_below_8_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["echo-demo", "--size", "7"])
    assert exit_info.value.code == 2
    assert "argument --size: must be at least 8, got 7" in capsys.readouterr().err


async def test_demo_server_calls_messages_nobody_answered_unanswered_not_lost() -> None:
    """No agent ever comes: every visitor message stays unanswered, and the ledger says so."""
    out = io.StringIO()
    settings = DemoServerSettings(
        listen="tcp://127.0.0.1:0", keys={"agent-1": generate_key()}, duration=1.0, drain_timeout=0.2
    )
    with trio.fail_after(30):
        status = await run_demo_server(settings, TimedPrinter(out))
    lines = out.getvalue().splitlines()
    final = re.fullmatch(r"ledger: sent (\d+), delivered 0, unanswered (\d+), duplicated 0, reordered 0", lines[-1])
    assert final is not None and final[1] == final[2] and int(final[1]) > 0, out.getvalue()
    assert " lost " not in out.getvalue(), out.getvalue()
    assert status == 1


@pytest.fixture
def agents_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "agents.keys"
    keys.write_text(f"agent-1 {generate_key().hex()}\n")
    return keys


def _one_line(err: str, command: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"reliablelink {command}: "), err
    return lines[0]


def test_bad_url_is_one_line(agents_keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["demo-server", "--listen", "http://127.0.0.1:7600", "--keys", str(agents_keys)]) == 2
    line = _one_line(capsys.readouterr().err, "demo-server")
    assert "no transport for URL 'http://127.0.0.1:7600'" in line and "(--listen http://127.0.0.1:7600)" in line


def test_port_in_use_is_one_line_naming_the_address(agents_keys: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        assert run(["demo-server", "--listen", url, "--keys", str(agents_keys), "--duration", "5"]) == 2
    line = _one_line(capsys.readouterr().err, "demo-server")
    assert "Address already in use" in line and f"(--listen {url})" in line, line


async def test_wrong_key_is_one_line() -> None:
    async def idle(session: Session) -> None:
        await trio.sleep_forever()

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve, idle, "tcp://127.0.0.1:0", keys={"agent-1": generate_key()})
            )
            result = await trio.run_process(
                [
                    *(sys.executable, "-m", "reliablelink", "demo-agent", "--connect", server.url),
                    *("--id", "agent-1", "--key", generate_key().hex(), "--duration", "10"),
                ],
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    err = result.stderr.decode()
    assert result.returncode == 2, f"exit status {result.returncode}\n{result.stdout.decode()}\n{err}"
    line = _one_line(err, "demo-agent")
    assert "authentication failed" in line and f"(--id agent-1, --connect {server.url})" in line, line
