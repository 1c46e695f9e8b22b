"""Real cable pulls: server and client in two network namespaces joined by a veth pair.

The cable is pulled with ``ip link set DEV down`` while both ends stream numbered messages;
each end's ledger must be exact. Skipped, with the reason, without root or ``ip``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

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


@dataclass
class Peer:
    name: str
    process: trio.Process
    lines: list[tuple[float, str]] = field(default_factory=list)
    changed: trio.lowlevel.ParkingLot = field(default_factory=trio.lowlevel.ParkingLot)

    async def read(self) -> None:
        assert self.process.stdout is not None
        buf = b""
        async for chunk in self.process.stdout:
            buf += chunk
            *done, buf = buf.split(b"\n")
            for line in done:
                self.lines.append((trio.current_time(), line.decode()))
            self.changed.unpark_all()

    async def wait_for(self, pattern: str, after: float = 0.0) -> tuple[float, str]:
        while True:
            for when, line in self.lines:
                if when >= after and re.search(pattern, line):
                    return when, line
            await self.changed.park()

    def received(self) -> int:
        for _, line in reversed(self.lines):
            if m := re.match(r"progress sent=\d+ received=(\d+)", line):
                return int(m.group(1))
        return 0

    async def wait_received(self, n: int) -> None:
        while self.received() < n:
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
