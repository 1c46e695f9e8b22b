"""The command line around the demos: subcommands, key arguments, errors."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from reliablelink import generate_key
from reliablelink._cli import _read_key, run


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
