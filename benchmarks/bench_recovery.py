"""Recovery: how fast a pulled cable is noticed, and how fast a restored one carries data again.

Real loopback TCP through :class:`reliablelink.testing.ChaosProxy`, server and client in two
separate processes (the proxy runs in the client's process, so the pull, the restore and the
client's link state share one clock; the server stamps arrivals with ``time.monotonic``,
which on Linux is the same system-wide clock in every process).

One session per settings profile, all open at once in the client, each through its own
proxy; the rounds alternate the profiles (rotated each round). One sample (one pull) of a
profile:

1. Wait a random fraction of a heartbeat interval (a real cable is pulled at any phase of
   the heartbeat), with every message sent so far acknowledged.
2. **Pull the cable**: the proxy silently drops everything on the live connection, both
   ways, for good (``blackhole_all``), and refuses new connections (``refuse``).
3. Send 10 marker messages: they go into the dead connection and are lost there, so they
   can only reach the server as replays.
4. **Dead link detected** when the client's ``session.link_state`` leaves ``CONNECTED``
   (watched with ``wait_link_change``). *detection = detected - pulled*.
5. Keep the cable out for ``hold`` more seconds (the client retries with its backoff),
   then **restore** it (the proxy accepts connections again).
6. The client reconnects, resumes and replays the markers. *recovery = first marker
   delivered to the server's handler - restored*; it includes what is left of the
   client's backoff wait when the cable comes back, the TCP and HMAC handshake, and the
   replay.

Profiles: ``default`` (heartbeat 3 s, dead_after 9 s, backoff 0.1 s to 5 s, hold 2 s) and
``aggressive`` (heartbeat 0.1 s, dead_after 0.3 s, backoff 0.05 s to 0.5 s, hold 1 s).

Usage::

    python benchmarks/bench_recovery.py [--quick] [--samples N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import struct
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import trio
from bench_common import (
    HOST,
    KEY,
    Child,
    loadavg,
    machine_info,
    median_spread,
    rotated,
    spread_text,
    write_atomically,
)

import reliablelink
from reliablelink.testing import ChaosProxy

PROFILES: Final = {
    "default": {
        "heartbeat_interval": 3.0,
        "dead_after": 9.0,
        "backoff": (0.1, 5.0),
        "hold_s": 2.0,
    },
    "aggressive": {
        "heartbeat_interval": 0.1,
        "dead_after": 0.3,
        "backoff": (0.05, 0.5),
        "hold_s": 1.0,
    },
}
FULL_SAMPLES: Final = 5
#: --quick: the default profile costs about 10-15 s per sample, so it gets fewer.
QUICK_SAMPLES: Final = {"default": 2, "aggressive": 5}
MARKERS: Final = 10
SIZE: Final = 64
COUNTER = struct.Struct(">Q")
SEED: Final = 20261125


def client_id(profile: str) -> str:
    return f"recovery-{profile}"


# -- server process ----------------------------------------------------------------------


def server_main(conn: Connection) -> dict[str, Any]:
    """Serve with default settings; stamp every message's arrival; stop when told."""
    return trio.run(_server, conn)


async def _server(conn: Connection) -> dict[str, Any]:
    arrivals: dict[str, list[tuple[int, float]]] = {client_id(p): [] for p in PROFILES}

    async def handler(session: reliablelink.Session) -> None:
        mine = arrivals[session.client_id]
        async for message in session:
            mine.append((COUNTER.unpack_from(message)[0], time.monotonic()))

    keys = {client_id(p): KEY for p in PROFILES}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(reliablelink.serve, handler, f"tcp://{HOST}:0", keys=keys))
        conn.send(("address", server.url))
        await trio.to_thread.run_sync(conn.recv)  # the parent's "stop"
        nursery.cancel_scope.cancel()
    return {"arrivals": arrivals}


# -- client process ----------------------------------------------------------------------


def client_main(conn: Connection, url: str, samples: dict[str, int]) -> dict[str, Any]:
    return trio.run(_client, url, samples)


class _Profile:
    """One profile's proxy, session and message counter in the client process."""

    def __init__(self, name: str, proxy: ChaosProxy, session: reliablelink.Session) -> None:
        self.name = name
        self.proxy = proxy
        self.session = session
        self.counter = 0

    async def send(self, n: int) -> int:
        first = self.counter
        for _ in range(n):
            await self.session.send(COUNTER.pack(self.counter) + bytes(SIZE - COUNTER.size))
            self.counter += 1
        return first

    async def wait_state(self, leave: reliablelink.LinkState | None, reach: reliablelink.LinkState | None) -> float:
        session = self.session
        while (leave is not None and session.link_state is leave) or (
            reach is not None and session.link_state is not reach
        ):
            await session.wait_link_change()
        return time.monotonic()

    async def sample(self, rng: random.Random) -> dict[str, Any]:
        settings = PROFILES[self.name]
        session, proxy = self.session, self.proxy
        connected = reliablelink.LinkState.CONNECTED
        await self.wait_state(None, connected)
        await session.drain()
        await trio.sleep(rng.uniform(0, settings["heartbeat_interval"]))
        resent_before = session.stats.resent
        pulled = time.monotonic()
        proxy.refuse = True
        proxy.blackhole_all()
        first_marker = await self.send(MARKERS)
        with trio.fail_after(settings["dead_after"] * 3 + 10):
            detected = await self.wait_state(connected, None)
        await trio.sleep(settings["hold_s"])
        restored = time.monotonic()
        proxy.refuse = False
        with trio.fail_after(30):
            reconnected = await self.wait_state(None, connected)
            await session.drain()
        drained = time.monotonic()
        return {
            "profile": self.name,
            "pulled": pulled,
            "detected": detected,
            "restored": restored,
            "reconnected": reconnected,
            "drained": drained,
            "first_marker": first_marker,
            "resent": session.stats.resent - resent_before,
            "detection_s": detected - pulled,
            "reconnect_s": reconnected - restored,
        }


async def _client(url: str, samples: dict[str, int]) -> dict[str, Any]:
    rng = random.Random(SEED)
    results: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:
        profiles: dict[str, _Profile] = {}
        async with trio.open_nursery() as sessions:
            ready = trio.Event()
            done = trio.Event()

            async def open_profile(name: str) -> None:
                settings = PROFILES[name]
                proxy = ChaosProxy(url)
                proxy_url = await nursery.start(proxy.run)
                async with reliablelink.connect(
                    proxy_url,
                    client_id=client_id(name),
                    key=KEY,
                    heartbeat_interval=settings["heartbeat_interval"],
                    dead_after=settings["dead_after"],
                    reconnect_backoff=settings["backoff"],
                ) as session:
                    profiles[name] = _Profile(name, proxy, session)
                    if len(profiles) == len(samples):
                        ready.set()
                    await done.wait()
                    await session.drain()

            for name in samples:
                sessions.start_soon(open_profile, name)
            await ready.wait()
            order = list(samples)
            for rnd in range(max(samples.values())):
                for name in rotated(order, rnd):
                    if rnd < samples[name]:
                        results.append({"round": rnd, **await profiles[name].sample(rng)})
            stats = {name: _stats(p.session) for name, p in profiles.items()}
            done.set()
        nursery.cancel_scope.cancel()
    return {"samples": results, "stats": stats}


def _stats(session: reliablelink.Session) -> dict[str, Any]:
    s = session.stats
    return {"sent": s.sent, "acked": s.acked, "resent": s.resent, "reconnects": s.reconnects}


# -- the measurement -----------------------------------------------------------------------


def run(*, quick: bool = False, samples: int | None = None) -> dict[str, Any]:
    """Run the recovery benchmark; return the result document (config, samples, summary)."""
    per_profile = {p: samples or (QUICK_SAMPLES[p] if quick else FULL_SAMPLES) for p in PROFILES}
    config = {
        "quick": quick,
        "samples": per_profile,
        "profiles": PROFILES,
        "markers_per_sample": MARKERS,
        "message_size": SIZE,
        "server": "reliablelink.serve with default options (heartbeat 3 s, dead_after 9 s); the smaller "
        "heartbeat a client proposes wins",
        "pull": "ChaosProxy.blackhole_all() (live connection silently dropped both ways) + refuse new connections",
        "restore": "ChaosProxy accepts connections again",
        "note": "--quick takes fewer samples of the default profile (about 10-15 s each)" if quick else "",
    }
    began = time.perf_counter()
    load_before = loadavg()
    server = Child("recovery-server", server_main)
    errors: list[str] = []
    client_result: dict[str, Any] = {"samples": [], "stats": {}}
    server_result: dict[str, Any] = {"arrivals": {}}
    try:
        url = server.expect("address", 30)
        client = Child("recovery-client", client_main, url, per_profile)
        try:
            timeout = sum(
                n * (PROFILES[p]["dead_after"] + PROFILES[p]["heartbeat_interval"] + 25) for p, n in per_profile.items()
            )
            client_result = client.result(timeout + 30)
        except RuntimeError as exc:
            errors.append(str(exc))
        finally:
            client.stop()
        server.send("stop")
        server_result = server.result(30)
    except RuntimeError as exc:
        errors.append(str(exc))
    finally:
        server.stop()
    rows = []
    for s in client_result["samples"]:
        arrivals = server_result["arrivals"].get(client_id(s["profile"]), [])
        delivered = next((t for c, t in arrivals if c == s["first_marker"]), None)
        row = dict(s)
        if delivered is None:
            errors.append(f"{s['profile']} round {s['round']}: the first marker never reached the server")
        else:
            row["delivered"] = delivered
            row["recovery_s"] = delivered - s["restored"]
        if s["resent"] < 1:
            errors.append(f"{s['profile']} round {s['round']}: nothing was resent, so nothing was replayed")
        rows.append(row)
    for name, stats in client_result["stats"].items():
        counters = [c for c, _ in server_result["arrivals"].get(client_id(name), [])]
        if counters != list(range(stats["sent"])):
            errors.append(
                f"{name}: the server got {len(counters)} messages, not exactly 0..{stats['sent'] - 1} in order"
            )
    summary = {}
    for name in PROFILES:
        mine = [r for r in rows if r["profile"] == name]
        summary[name] = {
            "detection_s": median_spread([r["detection_s"] for r in mine]),
            "recovery_s": median_spread([r["recovery_s"] for r in mine if "recovery_s" in r]),
            "reconnect_s": median_spread([r["reconnect_s"] for r in mine]),
        }
    return {
        "config": config,
        "summary": summary,
        "samples": rows,
        "client_stats": client_result["stats"],
        "errors": errors,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "duration_s": time.perf_counter() - began,
    }


def markdown(result: dict[str, Any]) -> str:
    config = result["config"]
    lines = [
        "## Recovery (loopback TCP through ChaosProxy; server and client in separate processes)",
        "",
        "*detection*: cable pulled (live connection silently blackholed both ways) until the client's "
        "`link_state` leaves CONNECTED. *recovery*: cable restored until the first replayed message is delivered "
        "to the server's handler (includes the rest of the client's backoff wait). Median (min\u2013max, n).",
        "",
        "| settings | heartbeat / dead_after | backoff | cable out after detection | detection s | recovery s "
        "| restored \u2192 reconnected s |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for name, s in result["summary"].items():
        p = config["profiles"][name]
        lines.append(
            f"| {name} | {p['heartbeat_interval']:g} s / {p['dead_after']:g} s | {p['backoff'][0]:g}\u2013"
            f"{p['backoff'][1]:g} s | {p['hold_s']:g} s | {spread_text(s['detection_s'])} "
            f"| {spread_text(s['recovery_s'])} | {spread_text(s['reconnect_s'])} |"
        )
    if config.get("note"):
        lines += ["", f"Note: {config['note']}: {config['samples']} samples."]
    if result["errors"]:
        lines += ["", "**FAILURES:**", "", *[f"- {e}" for e in result["errors"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"default profile: {QUICK_SAMPLES['default']} samples")
    parser.add_argument("--samples", type=int, help=f"samples per profile (default {FULL_SAMPLES})")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    info = machine_info()
    result = run(quick=args.quick, samples=args.samples)
    result["machine"] = info
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "recovery.json", json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write_atomically(args.out / "recovery.md", "# reliablelink recovery benchmark\n\n" + text)
    print(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
