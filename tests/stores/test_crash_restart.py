"""Kill -9 either end mid-stream, restart it with its store, and check the whole ledger.

The peers are separate processes (``peer.py``) that log every accepted send and every
delivered message with its sequence number. The checks, per direction:

* the sender: after each restart its stored count of accepted messages is at least what it
  had logged as accepted (nothing ``send()`` accepted was lost), and it accepts 1..N once;
* the receiver: within one process lifetime messages arrive exactly once, in order, with the
  payload the sender numbered them with; after a restart delivery resumes right after the
  stored delivery position, which never exceeds what was delivered. Messages delivered to a
  process that was then killed before receiving the next one are delivered again (at least
  once across a crash of the receiver, identified by the same sequence number); the test
  counts them. A receiver that was never restarted sees 1..N exactly once.
* across nodes sharing a store: a handler whose session another node took over may log
  after the new handler's start line (the lines name their handler). What it accepted
  must be within the position the new handler started from; what it received beyond
  that position is delivered again, and counted as such.

Everything runs on real loopback TCP with real processes, so these tests use the real
clock; the kill schedule is seeded (the seed is in the test id and in any failure).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from reliablelink.testing import LoadBalancer
from tests.helpers import free_port

PEER = Path(__file__).with_name("peer.py")
COUNT = 1500


@dataclass
class Direction:
    """What the log says about one direction of the session."""

    accepted: int = 0
    delivered: int = 0
    redelivered: int = 0
    errors: list[str] = field(default_factory=list)


def check(log_lines: list[str], sender: str, receiver: str, count: int) -> Direction:
    """Check the sender's and receiver's lines of one direction (see the module docstring)."""
    d = Direction()
    next_expected = 1
    restarts_seen = 0
    holder = {sender: "", receiver: ""}  # the handler that started last, per role
    started_at = {sender: 0, receiver: 0}  # ... and the stored position it started from
    own: dict[str, int] = {}  # per handler: the last message it accepted or received
    for line in log_lines:
        tag, event, *rest = line.split()
        role = tag.split("-")[0]
        fields = dict(item.split("=") for item in rest if "=" in item)
        h = fields.get("h", "")
        stale = event in ("accepted", "got") and h != holder[role]
        if event == "start":
            holder[role] = h
            started_at[role] = own[h] = int(fields["sent" if role == sender else "received"])
        if role == sender and event == "start":
            stored = started_at[role]
            if stored < d.accepted:
                d.errors.append(f"{sender} restarted with {stored} accepted, but had logged {d.accepted}: lost")
            d.accepted = stored
        elif role == sender and event == "accepted":
            seq = int(rest[0])
            if seq != own.get(h, 0) + 1:
                d.errors.append(f"{sender} handler {h} accepted {seq} after {own.get(h, 0)}")
            own[h] = seq
            if stale:
                # A handler whose session another node took over, logging late: what it
                # accepted must be within the position the new handler started from.
                if seq > started_at[role]:
                    d.errors.append(
                        f"{sender} accepted {seq} after another handler took over at {started_at[role]}: lost"
                    )
                continue
            d.accepted = seq
        elif role == receiver and event == "start":
            stored = started_at[role]
            if restarts_seen and stored > next_expected - 1:
                d.errors.append(f"{receiver} restarted at {stored} but only {next_expected - 1} were delivered")
            restarts_seen += 1
            d.redelivered += max(0, next_expected - 1 - stored)
            next_expected = stored + 1
        elif role == receiver and event == "got":
            seq, payload = int(rest[0]), rest[1]
            if payload != f"{sender}-{seq}":
                d.errors.append(f"{receiver} got {payload!r} as message {seq}")
            if seq != own.get(h, 0) + 1:
                d.errors.append(f"{receiver} handler {h} got message {seq} after {own.get(h, 0)}")
            own[h] = seq
            if stale:
                # Handed to a handler whose session another node took over, logging late;
                # beyond the new handler's starting position it is delivered again there.
                d.redelivered += seq > started_at[role]
                continue
            if seq != next_expected:
                d.errors.append(f"{receiver} got message {seq}, expected {next_expected}")
            next_expected = seq + 1
            d.delivered = max(d.delivered, seq)
    if d.accepted != count or d.delivered != count:
        d.errors.append(f"{sender}->{receiver}: accepted {d.accepted}, delivered {d.delivered}, expected {count}")
    return d


def test_the_checker_accepts_a_late_line_from_a_replaced_handler_only_if_nothing_was_lost() -> None:
    head = ["server-0 start sent=0 received=0 restored=0 h=1.1", "server-0 accepted 1 h=1.1"]
    tail = ["server-1 accepted 2 h=2.1", "client start sent=0 received=0 restored=0 h=3.1"]
    tail += ["client got 1 server-1 h=3.1", "client got 2 server-2 h=3.1"]
    # Node 0 accepted message 1, then node 1 took over with 1 stored, then node 0's line.
    late = ["server-1 start sent=1 received=0 restored=1 h=2.1", "server-0 accepted 1 h=1.1"]
    ok = check(head[:1] + late + tail, "server", "client", 2)
    assert not ok.errors, ok.errors
    # Node 1 took over with nothing stored, yet node 0 had accepted message 1: lost.
    lost = ["server-1 start sent=0 received=0 restored=1 h=2.1", "server-0 accepted 1 h=1.1"]
    bad = check(head[:1] + lost + ["server-1 accepted 1 h=2.1", *tail], "server", "client", 2)
    assert bad.errors == ["server accepted 1 after another handler took over at 0: lost"]
    # The same loss, with node 0's late line after node 1's own accepts: still caught.
    later = ["server-1 start sent=0 received=0 restored=1 h=2.1", "server-1 accepted 1 h=2.1"]
    later += ["server-1 accepted 2 h=2.1", "server-0 accepted 1 h=1.1"]
    bad = check(head[:1] + later + tail[1:], "server", "client", 2)
    assert bad.errors == ["server accepted 1 after another handler took over at 0: lost"]
    # A replaced receiving handler's late lines keep their own order.
    mixed = ["client start sent=0 received=0 restored=0 h=3.1", "client got 1 server-1 h=3.1"]
    mixed += ["client start sent=0 received=1 restored=1 h=4.1", "client got 3 server-3 h=3.1"]
    assert check(mixed, "server", "client", 3).errors[0] == "client handler 3.1 got message 3 after 1"


class Peer:
    """One peer process, restartable."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: trio.Process | None = None
        self.starts = 0

    async def start(self, *, wait_line: bool) -> None:
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, str(PEER), *self.args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.starts += 1
        if wait_line:
            assert self.proc.stdout is not None
            buf = b""
            with trio.fail_after(30):
                while b"\n" not in buf:
                    chunk = await self.proc.stdout.receive_some(4096)
                    assert chunk, f"peer {self.args[0]} exited before it listened"
                    buf += chunk

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


def _client_drained(log: Path) -> bool:
    return any(line.split()[:2] == ["client", "drained"] for line in log.read_text().splitlines())


def _report(seed: int, log: Path, directions: dict[str, Direction]) -> None:
    errors = [e for d in directions.values() for e in d.errors]
    summary = {k: (d.accepted, d.delivered, d.redelivered) for k, d in directions.items()}
    print(f"seed {seed}: (accepted, delivered, redelivered after a receiver crash) = {summary}")
    assert not errors, f"seed {seed} (log {log}): " + "; ".join(errors[:10])


@pytest.mark.parametrize("seed", [1, 2])
async def test_kill_9_client_and_server_with_sqlite(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    url = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "events.log"
    common = ["--log", str(log), "--count", str(COUNT)]
    server = Peer(["server", url, "--db", str(tmp_path / "server.db"), *common])
    client = Peer(["client", url, "--db", str(tmp_path / "client.db"), *common])
    kills = {"client": 0, "server": 0}
    killed_when_finished = False
    await server.start(wait_line=True)
    await client.start(wait_line=False)
    with trio.fail_after(90):
        while client.running and sum(kills.values()) < 6:
            await trio.sleep(rng.uniform(0.3, 0.7))
            victim = rng.choice(["client", "server"])
            if not client.running:
                break
            peer = client if victim == "client" else server
            await peer.kill()
            kills[victim] += 1
            if victim == "client" and _client_drained(log):
                # Killed between drain() and exit: its work is done, and the session is
                # (being) closed, so a restart would rightly begin a new session.
                killed_when_finished = True
                break
            await peer.start(wait_line=victim == "server")
        assert client.proc is not None
        await client.proc.wait()
    await server.kill()
    assert client.proc.returncode == 0 or killed_when_finished, (
        f"seed {seed}: client exited with {client.proc.returncode}"
    )
    assert kills["client"] and kills["server"], f"seed {seed}: the schedule must kill both ends, got {kills}"
    lines = log.read_text().splitlines()
    directions = {
        "client->server": check(lines, "client", "server", COUNT),
        "server->client": check(lines, "server", "client", COUNT),
    }
    _report(seed, log, directions)


@pytest.mark.parametrize("seed", [7])
async def test_redis_nodes_behind_a_load_balancer(
    tmp_path: Path, seed: int, redis_server: str, redis_prefix: str, nursery: trio.Nursery
) -> None:
    """Three server processes share sessions in Redis; every reconnect lands on a random node,
    and nodes are killed with SIGKILL and restarted."""
    rng = random.Random(seed)
    log = tmp_path / "events.log"
    common = ["--log", str(log), "--count", str(COUNT)]
    urls = [f"tcp://127.0.0.1:{free_port()}" for _ in range(3)]
    nodes = [
        Peer(["server", u, "--redis", redis_server, "--prefix", redis_prefix, "--tag", f"server-{i}", *common])
        for i, u in enumerate(urls)
    ]
    balancer = LoadBalancer(urls, seed=seed)
    moves = node_kills = 0
    for node in nodes:
        await node.start(wait_line=True)
    lb_url = await nursery.start(balancer.run)
    client = Peer(["client", lb_url, "--db", str(tmp_path / "client.db"), *common])
    await client.start(wait_line=False)
    with trio.fail_after(90):
        while client.running:
            await trio.sleep(rng.uniform(0.2, 0.5))
            if rng.random() < 0.75 or node_kills >= 3:
                moves += balancer.kill_all() > 0
            else:
                node = rng.choice(nodes)
                await node.kill()
                node_kills += 1
                await node.start(wait_line=True)
        assert client.proc is not None
        await client.proc.wait()
    for node in nodes:
        await node.kill()
    assert client.proc.returncode == 0, f"seed {seed}: client exited with {client.proc.returncode}"
    used = set(balancer.choices)
    assert len(used) >= 2, f"seed {seed}: the session never moved between nodes ({balancer.choices})"
    lines = log.read_text().splitlines()
    directions = {
        "client->server": check(lines, "client", "server", COUNT),
        "server->client": check(lines, "server", "client", COUNT),
    }
    # The client process is never killed here: what it receives is exact, with no repeats.
    assert directions["server->client"].redelivered == 0, directions["server->client"]
    print(f"seed {seed}: {moves} moves, {node_kills} node kills, nodes used {sorted(used)}")
    _report(seed, log, directions)
