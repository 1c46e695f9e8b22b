"""One fault vocabulary across the testing tools, and the old names as deprecated aliases.

The old names (``Toxics.slice_size``/``blackhole_up``/``blackhole_down``, ``--toxic
blackhole=up|down``, ``MemoryConnection.degrade(drop_after=...)``, schedule kinds ``pull``,
``pull_to_server``, ``pull_to_client`` and ``drop_after``) keep working for one release and
warn, naming the new name. Also: ``reliablelink chaos-proxy`` stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from typing import Any, get_args

import pytest
import trio
import trio.testing

from reliablelink.testing import MemoryTransport, Toxics
from reliablelink.testing._proxy_cli import parse_toxics
from reliablelink.testing.strategies import FAULT_KINDS, Fault, FaultKind
from tests.helpers import memory_pair


@pytest.mark.parametrize(
    ("old", "new"),
    [("slice_size", "segment"), ("blackhole_up", "blackhole_to_server"), ("blackhole_down", "blackhole_to_client")],
)
def test_old_toxics_attributes_still_work_and_warn(old: str, new: str) -> None:
    value: Any = 7 if new == "segment" else True
    t = Toxics()
    with pytest.warns(DeprecationWarning, match=f"use Toxics.{new}"):
        setattr(t, old, value)
    assert getattr(t, new) == value
    with pytest.warns(DeprecationWarning, match=f"use Toxics.{new}"):
        assert getattr(t, old) == value
    with pytest.warns(DeprecationWarning, match=f"use Toxics\\({new}="):
        made = Toxics(**{old: value})
    assert made == t


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("slice_size=3", "use segment", "segment"),
        ("blackhole_up=1", "use blackhole_to_server", "blackhole_to_server"),
        ("blackhole_down=1", "use blackhole_to_client", "blackhole_to_client"),
        ("blackhole=up", "use blackhole=to_server", "blackhole_to_server"),
        ("blackhole=down", "use blackhole=to_client", "blackhole_to_client"),
    ],
)
def test_old_toxic_specs_still_work_and_warn(old: str, new: str, field: str) -> None:
    t = Toxics()
    with pytest.warns(DeprecationWarning, match=new):
        t.set(old)
    assert getattr(t, field) == (3 if field == "segment" else True)
    other = "blackhole_to_client" if field == "blackhole_to_server" else "blackhole_to_server"
    assert not getattr(t, other)


def test_new_toxic_specs_do_not_warn_and_bad_directions_are_refused() -> None:
    t = Toxics()  # filterwarnings = error: a warning here fails the test
    for spec in ("segment=1", "blackhole=to_server", "blackhole_to_client=1", "reset_after=5"):
        t.set(spec)
    assert (t.segment, t.blackhole_to_server, t.blackhole_to_client, t.reset_after) == (1, True, True, 5)
    with pytest.raises(ValueError, match="to_server, to_client or both"):
        t.set("blackhole=sideways")


def test_command_line_reports_old_toxic_names_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    toxics = parse_toxics(["slice_size=2", "blackhole=down", "latency=0.1"])
    assert (toxics.segment, toxics.blackhole_to_client, toxics.latency) == (2, True, 0.1)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "toxic slice_size is deprecated" in err[0] and "use segment" in err[0]
    assert "blackhole=down is deprecated" in err[1] and "use blackhole=to_client" in err[1]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("pull", "blackhole"),
        ("pull_to_server", "blackhole_to_server"),
        ("pull_to_client", "blackhole_to_client"),
        ("drop_after", "reset_after"),
    ],
)
def test_old_schedule_kinds_are_mapped_and_warn(old: str, new: str) -> None:
    with pytest.warns(DeprecationWarning, match=f"use '{new}'"):
        fault = Fault(at=1.0, kind=old, value=5.0)  # type: ignore[arg-type]
    assert fault == Fault(at=1.0, kind=new, value=5.0)  # type: ignore[arg-type]


def test_schedule_kinds_are_a_literal_and_unknown_kinds_are_refused() -> None:
    assert get_args(FaultKind) == FAULT_KINDS
    assert {"blackhole", "blackhole_to_server", "blackhole_to_client", "segment", "reset_after"} <= set(FAULT_KINDS)
    with pytest.raises(ValueError, match="unknown fault kind 'lag'"):
        Fault(at=0.0, kind="lag")  # type: ignore[arg-type]


async def test_memory_drop_after_still_works_and_warns(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    client, _server, conn = await memory_pair(MemoryTransport(), nursery)
    with pytest.warns(DeprecationWarning, match=r"use degrade\(reset_after=...\)"):
        conn.degrade("to_server", drop_after=10)
    assert conn.to_server.reset_after == 10
    with pytest.warns(DeprecationWarning, match="use reset_after"):
        assert conn.to_server.drop_after == 10
    with pytest.warns(DeprecationWarning, match="use reset_after"):
        conn.to_server.drop_after = 4
    assert conn.to_server.reset_after == 4
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"x" * 5)


async def test_memory_reset_after_resets_both_ways_like_the_proxy(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    # reset_after means the same as the proxy's: the connection is reset (RST both ways),
    # so the end that only reads from the other direction learns too.
    client, server, conn = await memory_pair(MemoryTransport(), nursery)
    await server.send_all(b"in flight to the client")
    conn.degrade("to_server", reset_after=3)
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"abcd")
    with pytest.raises(trio.BrokenResourceError):
        await client.receive_some(100)
    with pytest.raises(trio.BrokenResourceError):
        await server.send_all(b"late")
    assert conn.closed


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
def test_chaos_proxy_command_stops_cleanly_on_ctrl_c() -> None:
    """SIGINT (Ctrl-C) ends ``reliablelink chaos-proxy`` with status 0 and its summary line,
    and no traceback. Old toxic names work, with one warning line each on stderr."""
    cmd = [
        sys.executable, "-m", "reliablelink", "chaos-proxy",
        "--listen", "tcp://127.0.0.1:0", "--upstream", "tcp://127.0.0.1:1",
        "--toxic", "slice_size=1", "--toxic", "blackhole=up",
    ]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("chaos proxy tcp://127.0.0.1:"), first
        assert "segment=1" in first and "blackhole_to_server=True" in first, first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130), (proc.returncode, err)
    assert out.splitlines()[-1] == "connections: 0, resets: 0", out
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    warnings = err.splitlines()
    assert len(warnings) == 2, err
    assert all(line.startswith("reliablelink chaos-proxy: warning: ") for line in warnings), err
