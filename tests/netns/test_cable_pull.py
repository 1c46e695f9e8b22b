"""Real cable pulls: server and client in two network namespaces joined by a veth pair.

The cable is pulled with ``ip link set DEV down`` while both ends stream numbered messages;
each end's ledger must be exact. One test pulls it for 1 s and then beyond ``dead_after``;
the other restarts the server process (SIGTERM or SIGKILL) while the cable is out, with the
sessions in a SQLite store, and checks the ledgers itself from the files the ends write.
Skipped, with the reason, without root or ``ip``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.netns.peer import OPTIONS, digest, payload

PEER = Path(__file__).with_name("peer.py")
COUNT = 2000


@dataclass
class Cable:
    server_ns: str
    client_ns: str
    client_dev: str
    server_ip: str = "10.77.0.1"
    client_ip: str = "10.77.0.2"

    def set(self, up: bool) -> None:
        _ip("netns", "exec", self.client_ns, "ip", "link", "set", self.client_dev, "up" if up else "down")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def cable() -> Iterator[Cable]:
    if os.geteuid() != 0:
        pytest.skip("cable-pull tests need root to create network namespaces")
    if shutil.which("ip") is None:
        pytest.skip("cable-pull tests need the 'ip' command (iproute2)")
    tag = secrets.token_hex(3)
    c = Cable(f"rls{tag}", f"rlc{tag}", f"vc{tag}")
    server_dev = f"vs{tag}"
    try:
        _ip("netns", "add", c.server_ns)
        _ip("netns", "add", c.client_ns)
        _ip("link", "add", server_dev, "type", "veth", "peer", "name", c.client_dev)
        _ip("link", "set", server_dev, "netns", c.server_ns)
        _ip("link", "set", c.client_dev, "netns", c.client_ns)
        for ns, dev, addr in ((c.server_ns, server_dev, c.server_ip), (c.client_ns, c.client_dev, c.client_ip)):
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{addr}/30", "dev", dev)
            _ip("netns", "exec", ns, "ip", "link", "set", dev, "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
    except subprocess.CalledProcessError as exc:
        for ns in (c.server_ns, c.client_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        pytest.skip(f"cannot create network namespaces here: {exc.stderr.strip()}")
    try:
        yield c
    finally:
        for ns in (c.server_ns, c.client_ns):
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


class PeerExited(Exception):
    """A peer's output ended before the line a test waited for."""


@dataclass
class Peer:
    name: str
    process: trio.Process
    lines: list[tuple[float, str]] = field(default_factory=list)
    changed: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)
    ended: bool = False

    async def read(self) -> None:
        assert self.process.stdout is not None
        buf = b""
        try:
            async for chunk in self.process.stdout:
                buf += chunk
                *done, buf = buf.split(b"\n")
                for line in done:
                    self.lines.append((trio.current_time(), line.decode()))
                self.changed.unpark_all()
        finally:
            self.ended = True
            self.changed.unpark_all()

    async def wait_for(self, pattern: str, after: float = 0.0) -> tuple[float, str]:
        while True:
            for when, line in self.lines:
                if when >= after and re.search(pattern, line):
                    return when, line
            if self.ended:
                raise PeerExited(f"{self.name} exited before printing {pattern!r}")
            await self.changed.park()

    def received(self) -> int:
        for _, line in reversed(self.lines):
            if m := re.match(r"progress sent=\d+ received=(\d+)", line):
                return int(m.group(1))
        return 0

    async def wait_received(self, n: int) -> None:
        while self.received() < n:
            if self.ended:
                raise PeerExited(f"{self.name} exited after receiving {self.received()} of the {n} awaited")
            await self.changed.park()


async def _start(nursery: trio.Nursery, name: str, ns: str, *args: str) -> Peer:
    cmd = ["ip", "netns", "exec", ns, sys.executable, str(PEER), *args]
    process = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peer = Peer(name, process)
    nursery.start_soon(peer.read)
    return peer


async def test_cable_pulled_briefly_and_beyond_dead_after_with_traffic_both_ways(cable: Cable) -> None:
    address = f"{cable.server_ip}:7701"
    with trio.fail_after(90):
        # The peers' output readers live in this nursery: its exit gives them a last turn
        # before the checks below read their lines.
        async with trio.open_nursery() as nursery:
            server = await _start(nursery, "server", cable.server_ns, "server", address, str(COUNT))
            await server.wait_for("listening")
            client = await _start(nursery, "client", cable.client_ns, "client", address, str(COUNT))
            try:
                # A short pull (1 s, less than dead_after 1.5 s): TCP rides it out.
                await client.wait_received(COUNT // 5)
                cable.set(up=False)
                await trio.sleep(1.0)
                cable.set(up=True)
                # A long pull (4 s): the dead link is detected, the session reconnects and resumes.
                await client.wait_received(COUNT // 2)
                cable.set(up=False)
                pulled = trio.current_time()
                detected, _ = await client.wait_for("link reconnecting", after=pulled)
                await trio.sleep(max(0.0, 4.0 - (trio.current_time() - pulled)))
                cable.set(up=True)
                restored = trio.current_time()
                reconnected, _ = await client.wait_for("link connected", after=restored)
                for peer in (client, server):
                    with trio.fail_after(60):
                        await peer.process.wait()
            finally:
                for peer in (client, server):
                    if peer.process.returncode is None:
                        peer.process.kill()
            nursery.cancel_scope.cancel()
    output = "\n".join(f"[{p.name}] {line}" for p in (server, client) for _, line in p.lines)
    print(output)
    print(
        f"dead link detected {detected - pulled:.2f} s after the pull; reconnected {reconnected - restored:.2f} s after"
    )
    assert client.process.returncode == 0 and server.process.returncode == 0, output
    for peer in (client, server):
        assert any(
            re.search(rf"received: sent {COUNT}, delivered {COUNT}, lost 0, duplicated 0, reordered 0", line)
            for _, line in peer.lines
        ), f"{peer.name} ledger not exact:\n{output}"
    assert detected - pulled <= 1.5 + 0.5 + 1.0, "detected within dead_after plus a heartbeat (plus scheduling slack)"


RESTART_COUNT = 1500
OUTAGE = 4.0  # seconds the cable stays out: well beyond dead_after (1.5 s)


def _records(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_cable_pulled_across_a_server_restart(cable: Cable, tmp_path: Path, stop: str) -> None:
    """Pull the cable, stop the server (gracefully, or with SIGKILL) and start a new server
    process with the same SQLite store while the cable is out, for longer than ``dead_after``;
    plug it back. The client (no store, never killed) must resume the same session on the new
    process, and both directions must be exact, checked here from the files the ends write:
    the client's received messages, and the server's effects (the exactly-once recipe: a
    restarted server skips the redelivered messages it had already applied)."""
    address = f"{cable.server_ip}:7702"
    effects, skips, received = tmp_path / "effects", tmp_path / "skips", tmp_path / "received"
    server_args = ["server", address, str(RESTART_COUNT), "--store", str(tmp_path / "server.db")]
    server_args += ["--effects", str(effects), "--skips", str(skips)]
    client_args = ["client", address, str(RESTART_COUNT), "--received", str(received)]
    peers: list[Peer] = []

    def output() -> str:
        """Each end's lines, progress only every second (it is printed every 0.1 s)."""
        shown = []
        for p in peers:
            progress = [i for i, (_, line) in enumerate(p.lines) if line.startswith("progress ")]
            keep = set(progress[::10] + progress[-1:])
            shown += [f"[{p.name}] {line}" for i, (_, line) in enumerate(p.lines) if i in keep or i not in progress]
        return "\n".join(shown)

    async def start(nursery: trio.Nursery, name: str, ns: str, *args: str) -> Peer:
        peer = await _start(nursery, name, ns, *args)
        peers.append(peer)
        return peer

    problem = ""
    try:
        with trio.fail_after(40):
            # As above: the output readers get a last turn before the checks.
            async with trio.open_nursery() as nursery:
                try:
                    first = await start(nursery, "server-1", cable.server_ns, *server_args)
                    await first.wait_for("listening")
                    client = await start(nursery, "client", cable.client_ns, *client_args)
                    await client.wait_received(RESTART_COUNT // 4)
                    cable.set(up=False)
                    pulled = trio.current_time()
                    first.process.send_signal(signal.SIGTERM if stop == "sigterm" else signal.SIGKILL)
                    stopping = trio.current_time()
                    await first.process.wait()
                    second = await start(nursery, "server-2", cable.server_ns, *server_args)
                    listening, _ = await second.wait_for("listening")
                    detected, _ = await client.wait_for("link reconnecting", after=pulled)
                    await trio.sleep(max(0.0, pulled + OUTAGE - trio.current_time()))
                    cable.set(up=True)
                    restored = trio.current_time()
                    reconnected, _ = await client.wait_for("link connected", after=restored)
                    await client.process.wait()
                    with trio.move_on_after(10):  # the server finishes once the client closed
                        await second.process.wait()
                except PeerExited as exc:
                    problem = str(exc)
                finally:
                    for peer in peers:
                        if peer.process.returncode is None:
                            peer.process.kill()
                nursery.cancel_scope.cancel()
    except trio.TooSlowError:
        problem = "the run did not finish within 40 s"
    log = output()
    print(log)
    if problem:
        pytest.fail(f"{stop}: {problem}:\n{log}", pytrace=False)
    skipped = _records(skips)
    print(
        f"{stop}: server down {listening - stopping:.2f} s (signal to listening), cable out {restored - pulled:.2f} s, "
        f"dead link detected {detected - pulled:.2f} s after the pull, reconnected {reconnected - restored:.2f} s "
        f"after the cable came back, {len(skipped)} redelivered message(s) skipped"
    )

    # The same session, resumed on the new process: never expired, never a new session.
    assert client.process.returncode == 0, f"the client failed:\n{log}"
    assert second.process.returncode == 0, f"the restarted server failed:\n{log}"
    assert "SessionExpired" not in log and "session error" not in log, log
    connected = [line for _, line in client.lines if line.startswith("connected session=")]
    assert connected, log
    session_id = connected[0].split("=")[1]
    starts = [line for p in (first, second) for _, line in p.lines if line.startswith("session ")]
    assert len(starts) == 2, f"expected one handler start per server process:\n{log}"
    assert starts[0].startswith(f"session {session_id} restored=0 "), log
    assert starts[1].startswith(f"session {session_id} restored=1 "), f"not the same session, restored:\n{log}"
    at_restart = {k: int(v) for k, v in (item.split("=") for item in starts[1].split()[2:])}
    assert at_restart["sent"] > 0 and at_restart["applied"] > 0, f"traffic must flow both ways before:\n{log}"
    if stop == "sigterm":
        assert first.process.returncode == 0 and any(line == "stopped" for _, line in first.lines), log

    # server -> client: every message once, in order, with its content.
    got = _records(received)
    assert [int(n) for n, _ in got] == list(range(RESTART_COUNT)), f"client ledger not exact:\n{log}"
    assert all(d == digest(payload("server", int(n))) for n, d in got), f"client got wrong payloads:\n{log}"
    # client -> server: each message applied exactly once, in order, with its content.
    applied = _records(effects)
    assert [int(s) for s, _, _ in applied] == list(range(1, RESTART_COUNT + 1)), f"effects not exact:\n{log}"
    assert all(int(n) == int(s) - 1 and d == digest(payload("client", int(n))) for s, n, d in applied), log
    # Skipped: only true redeliveries (the same number and payload as the applied message),
    # exactly those between the stored delivery position and the last applied message.
    assert all(record in applied for record in skipped), f"skipped a message that was never applied:\n{log}"
    redelivered = list(range(at_restart["received"] + 1, at_restart["applied"] + 1))
    assert [int(s) for s, _, _ in skipped] == redelivered, (
        f"skipped {len(skipped)} messages, expected the {len(redelivered)} between stored and applied:\n{log}"
    )

    assert listening < restored, "the new server must be up before the cable comes back"
    assert restored - pulled > OPTIONS["dead_after"], "the cable must stay out longer than dead_after"
    assert detected - pulled <= 1.5 + 0.5 + 1.0, "detected within dead_after plus a heartbeat (plus scheduling slack)"
    if stop == "sigterm":
        assert not skipped, f"a graceful restart must repeat nothing, but {len(skipped)} were redelivered:\n{log}"
