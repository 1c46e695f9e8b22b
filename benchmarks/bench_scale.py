"""Scale: N idle sessions on one server process (memory per session, handshake rate, heartbeat CPU).

One server process (``reliablelink.serve`` on loopback TCP with its admission limits raised
to N: ``max_connections_per_address``, ``max_pending_handshakes``,
``max_sessions_per_client``) and one client process opening N sessions with
``reliablelink.connect``, at most ``CONCURRENCY`` handshakes at a time. Both raise
``RLIMIT_NOFILE`` to the hard limit. Default link settings (heartbeat 3 s, dead_after 9 s).

For each sample, fresh processes:

1. The server starts and settles; its RSS is read (``rss_before``).
2. The client opens N sessions. *handshake rate* = N / (time from the first connect to
   the N-th session open), taken in the client.
3. After a short settle, the server's RSS is read again: *RSS per session* =
   (``rss_after`` - ``rss_before``) / N.
4. *heartbeat CPU*: the server's (and the client's) CPU seconds per wall second while the
   N sessions sit idle for ``window`` seconds (only heartbeats and their replies flow).

N = 1,000 and 10,000 (``--quick``: 1,000 only, fewer samples and a shorter window), the
samples of the two Ns interleaved.

Usage::

    python benchmarks/bench_scale.py [--quick] [--sessions 1000,10000] [--repeats N]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
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
    machine_cpu,
    machine_info,
    median_spread,
    mib,
    process_cpu,
    raise_nofile,
    rotated,
    rss_bytes,
    spread_text,
    write_atomically,
)

import reliablelink

FULL_SESSIONS: Final = (1_000, 10_000)
QUICK_SESSIONS: Final = (1_000,)
FULL_REPEATS: Final = 5
#: Samples with BIG sessions or more at most: each takes one to two minutes on 2 cores.
BIG_REPEATS: Final = 3
BIG: Final = 10_000
#: Heartbeat of the samples with BIG sessions or more. At the default 3 s, 10,000 idle
#: sessions' heartbeats take about a full core in the server and another in the client (all
#: the client's sessions live in one process on the same 2 cores), and opening the last
#: thousand sessions took minutes; with 30 s the heartbeats stay out of the way of RSS and
#: handshake rate. The heartbeat CPU at the default is measured with fewer sessions.
BIG_HEARTBEAT: Final = 30.0
DEFAULT_HEARTBEAT: Final = 3.0
QUICK_REPEATS: Final = 2
FULL_WINDOW: Final = 12.0
QUICK_WINDOW: Final = 6.0
CONCURRENCY: Final = 256
SETTLE: Final = 1.0
CLIENT_ID: Final = "scale"
#: Target of the issue: 10,000 sessions under 1 GiB of server RSS.
TARGET_BYTES: Final = 1024**3


# -- server process ------------------------------------------------------------------------


def heartbeat_for(n: int) -> float:
    return BIG_HEARTBEAT if n >= BIG else DEFAULT_HEARTBEAT


def server_main(conn: Connection, n: int) -> dict[str, Any]:
    nofile = raise_nofile()
    return trio.run(_server, conn, n, nofile)


async def _server(conn: Connection, n: int, nofile: tuple[int, int]) -> dict[str, Any]:
    opened = 0

    async def handler(session: reliablelink.Session) -> None:
        nonlocal opened
        opened += 1
        async for _ in session:
            pass

    room = n + 64
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                reliablelink.serve,
                handler,
                f"tcp://{HOST}:0",
                keys={CLIENT_ID: KEY},
                max_connections_per_address=room,
                max_pending_handshakes=room,
                max_sessions_per_client=room,
                max_sessions=max(100_000, room),
                heartbeat_interval=heartbeat_for(n),
                dead_after=3 * heartbeat_for(n),
            )
        )
        conn.send(("address", server.url))
        await trio.to_thread.run_sync(conn.recv)  # the parent's "stop"
        live = len(server.sessions)
        nursery.cancel_scope.cancel()
    return {"handlers_started": opened, "sessions_at_stop": live, "nofile": list(nofile)}


# -- client process ------------------------------------------------------------------------


def client_main(conn: Connection, url: str, n: int) -> dict[str, Any]:
    nofile = raise_nofile()
    result: dict[str, Any] = trio.run(_client, conn, url, n)
    result["nofile"] = list(nofile)
    return result


async def _client(conn: Connection, url: str, n: int) -> dict[str, Any]:
    limiter = trio.Semaphore(CONCURRENCY)
    stop = trio.Event()
    everyone = trio.Event()
    opened = 0
    failures: list[str] = []
    handshakes: list[float] = []
    began = time.perf_counter()

    def settled() -> None:
        if opened + len(failures) >= n:
            everyone.set()

    async def one() -> None:
        nonlocal opened
        await limiter.acquire()
        holding = True
        began = time.perf_counter()
        try:
            async with reliablelink.connect(
                url,
                client_id=CLIENT_ID,
                key=KEY,
                connect_timeout=60,
                heartbeat_interval=heartbeat_for(n),
                dead_after=3 * heartbeat_for(n),
            ) as session:
                handshakes.append(time.perf_counter() - began)
                limiter.release()
                holding = False
                opened += 1
                if opened in marks:
                    marks[opened] = time.perf_counter() - began
                settled()
                await stop.wait()
                del session
        except Exception as exc:
            if len(failures) < 10:
                failures.append(repr(exc))
            else:
                failures.append("")
            settled()
        finally:
            if holding:
                limiter.release()

    marks = {max(1, n * q // 100): 0.0 for q in (10, 50, 90, 100)}
    async with trio.open_nursery() as nursery:
        began = time.perf_counter()
        for _ in range(n):
            nursery.start_soon(one)
        await everyone.wait()
        elapsed = time.perf_counter() - began
        conn.send(("ready", {"opened": opened, "failed": len(failures), "elapsed_s": elapsed}))
        await trio.to_thread.run_sync(conn.recv)  # the parent's "stop"
        nursery.cancel_scope.cancel()
    ordered = sorted(handshakes)
    return {
        "opened": opened,
        "failed": len(failures),
        "failures": [f for f in failures if f],
        "elapsed_s": elapsed,
        "handshake_rate": opened / elapsed if elapsed > 0 else None,
        "connect_p50_s": statistics.median(ordered) if ordered else None,
        "connect_max_s": ordered[-1] if ordered else None,
        "concurrency": CONCURRENCY,
        #: Seconds from the first connect until this many sessions were open.
        "opened_after_s": {str(k): v for k, v in marks.items()},
        "first_tenth_rate": max(1, n // 10) / marks[max(1, n // 10)] if marks[max(1, n // 10)] else None,
    }


# -- the measurement -------------------------------------------------------------------------


def measure(n: int, window: float) -> dict[str, Any]:
    """One sample with N sessions, in fresh server and client processes."""
    sample: dict[str, Any] = {"sessions": n, "heartbeat_s": heartbeat_for(n), "ok": False, "loadavg_before": loadavg()}
    server = Child(f"scale-server-{n}", server_main, n)
    client: Child | None = None
    try:
        url = server.expect("address", 30)
        time.sleep(SETTLE)
        sample["rss_before"] = rss_bytes(server.pid)
        client = Child(f"scale-client-{n}", client_main, url, n)
        ready = client.expect("ready", 60 + n / 25)
        time.sleep(SETTLE)
        sample["rss_after"] = rss_after = rss_bytes(server.pid)
        sample["client_rss"] = rss_bytes(client.pid)
        cpu0, ccpu0, t0, m0 = process_cpu(server.pid), process_cpu(client.pid), time.perf_counter(), machine_cpu()
        time.sleep(window)
        cpu1, ccpu1, t1, m1 = process_cpu(server.pid), process_cpu(client.pid), time.perf_counter(), machine_cpu()
        sample["rss_end"] = rss_bytes(server.pid)
        client.send("stop")
        sample["client"] = client.result(60)
        server.send("stop")
        sample["server"] = server.result(60)
        wall = t1 - t0
        if cpu0 is not None and cpu1 is not None and ccpu0 is not None and ccpu1 is not None:
            sample["server_cpu_per_s"] = (cpu1 - cpu0) / wall
            sample["client_cpu_per_s"] = (ccpu1 - ccpu0) / wall
            if m0 is not None and m1 is not None:
                # Cores used by other processes (not these two) during the window.
                sample["background_cores"] = max(0.0, (m1[0] - m0[0]) - (cpu1 - cpu0) - (ccpu1 - ccpu0)) / wall
        sample["window_s"] = wall
        sample["rss_per_session"] = (rss_after - sample["rss_before"]) / n
        sample["handshake_rate"] = sample["client"]["handshake_rate"]
        sample["ok"] = ready["opened"] == n and sample["server"]["handlers_started"] == n
        if not sample["ok"]:
            sample["error"] = (
                f"{n} sessions: client opened {ready['opened']}, failed {ready['failed']} "
                f"({sample['client']['failures'][:3]}); server started {sample['server']['handlers_started']} handlers"
            )
    except RuntimeError as exc:
        sample["error"] = f"{n} sessions: {exc}"
    finally:
        if client is not None:
            client.stop(10)
        server.stop(10)
    sample["loadavg_after"] = loadavg()
    return sample


def run(*, quick: bool = False, sessions: tuple[int, ...] | None = None, repeats: int | None = None) -> dict[str, Any]:
    sizes = sessions or (QUICK_SESSIONS if quick else FULL_SESSIONS)
    repeats = repeats or (QUICK_REPEATS if quick else FULL_REPEATS)
    window = QUICK_WINDOW if quick else FULL_WINDOW
    big_repeats = min(repeats, BIG_REPEATS)
    config = {
        "quick": quick,
        "sessions": list(sizes),
        "repeats": repeats,
        "repeats_from_10000_sessions": big_repeats,
        "heartbeat_window_s": window,
        "concurrency": CONCURRENCY,
        "settle_s": SETTLE,
        "link_settings": f"heartbeat {DEFAULT_HEARTBEAT:g} s (the default), dead_after 3 heartbeats; "
        f"{BIG_HEARTBEAT:g} s from {BIG:,} sessions on (see BIG_HEARTBEAT)",
        "server_limits": "max_connections_per_address, max_pending_handshakes, max_sessions_per_client = N + 64",
        "note": f"--quick measures {', '.join(f'{n:,}' for n in sizes)} sessions only, {repeats} samples, "
        f"a {window:g} s heartbeat window"
        if quick
        else f"{big_repeats} samples with {BIG:,} sessions, {repeats} with fewer",
    }
    began = time.perf_counter()
    samples: list[dict[str, Any]] = []
    for rep in range(repeats):
        for n in rotated(list(sizes), rep):
            if n >= BIG and rep >= big_repeats:
                continue
            s = measure(n, window)
            s["repeat"] = rep
            samples.append(s)
            if s["ok"]:
                print(
                    f"[{rep + 1}/{repeats}] scale {n:>6,} sessions: {s['rss_per_session'] / 1024:6.1f} KiB/session, "
                    f"{s['handshake_rate']:7,.0f} sessions/s, server heartbeat CPU {s['server_cpu_per_s']:.1%}",
                    flush=True,
                )
            else:
                print(f"[{rep + 1}/{repeats}] scale {n:>6,} sessions: FAILED {s.get('error')}", flush=True)
    summary = {}
    for n in sizes:
        ok = [s for s in samples if s["sessions"] == n and s["ok"]]
        summary[str(n)] = {
            "samples": len(ok),
            "rss_per_session_bytes": median_spread([s["rss_per_session"] for s in ok]),
            "server_rss_bytes": median_spread([s["rss_after"] for s in ok]),
            "handshake_rate": median_spread([s["handshake_rate"] for s in ok]),
            "heartbeat_s": heartbeat_for(n),
            "server_cpu_per_s": median_spread([s["server_cpu_per_s"] for s in ok if "server_cpu_per_s" in s]),
            "client_cpu_per_s": median_spread([s["client_cpu_per_s"] for s in ok if "client_cpu_per_s" in s]),
        }
    return {
        "config": config,
        "summary": summary,
        "samples": samples,
        "errors": [s["error"] for s in samples if not s["ok"]],
        "duration_s": time.perf_counter() - began,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "## Scale: idle sessions on one server process (loopback TCP, server and client in separate processes)",
        "",
        f"Heartbeat {DEFAULT_HEARTBEAT:g} s (the default), {BIG_HEARTBEAT:g} s with {BIG:,} sessions: at 3 s, "
        f"{BIG:,} idle sessions' heartbeats took about a core in each of the server and the client process on "
        "this 2-core machine and the last sessions opened at a few per second. *RSS/session*: growth of the "
        "server's RSS from before the "
        "first connection to after the N-th session opened, divided by N. *handshake rate*: N sessions opened "
        f"(at most {result['config']['concurrency']} handshakes at a time) divided by the time it took. "
        "*heartbeat CPU*: CPU seconds per wall second while the sessions sit idle "
        f"({result['config']['heartbeat_window_s']:g} s window). Median (min\u2013max, n).",
        "",
        "| sessions | heartbeat | server RSS/session KiB | server RSS MiB | handshakes/s | server heartbeat CPU "
        "| client heartbeat CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, s in result["summary"].items():
        rss = {
            k: (v / 1024 if isinstance(v, float | int) and k != "n" else v)
            for k, v in s["rss_per_session_bytes"].items()
        }
        total = {
            k: (mib(v) if isinstance(v, float | int) and k != "n" else v) for k, v in s["server_rss_bytes"].items()
        }
        lines.append(
            f"| {int(n):,} | {s['heartbeat_s']:g} s | {spread_text(rss, '{:.1f}')} | {spread_text(total, '{:.0f}')} "
            f"| {spread_text(s['handshake_rate'], '{:,.0f}')} | {spread_text(s['server_cpu_per_s'], '{:.1%}')} "
            f"| {spread_text(s['client_cpu_per_s'], '{:.1%}')} |"
        )
    note = result["config"].get("note")
    if note:
        lines += ["", f"Note: {note}."]
    if result["errors"]:
        lines += ["", "**FAILURES:**", "", *[f"- {e}" for e in result["errors"]]]
    return "\n".join(lines) + "\n"


def parse_sessions(text: str) -> tuple[int, ...]:
    return tuple(int(x.replace("_", "")) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sessions only, 2 samples, 6 s window")
    parser.add_argument("--sessions", type=parse_sessions, help="comma-separated session counts")
    parser.add_argument("--repeats", type=int, help=f"samples per count (default {FULL_REPEATS})")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    raise_nofile()
    info = machine_info()
    result = run(quick=args.quick, sessions=args.sessions, repeats=args.repeats)
    result["machine"] = info
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "scale.json", json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write_atomically(args.out / "scale.md", "# reliablelink scale benchmark\n\n" + text)
    print(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
