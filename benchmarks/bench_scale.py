"""Scale: N idle sessions on one server process (memory per session, handshake rate, heartbeat CPU).

One server process (``reliablelink.serve`` on loopback TCP with its admission limits raised
to N: ``max_connections_per_address``, ``max_pending_handshakes``,
``max_sessions_per_client``) and one client process opening N sessions with
``reliablelink.connect``, at most ``CONCURRENCY`` handshakes at a time. Both raise
``RLIMIT_NOFILE`` to the hard limit. Default link settings (heartbeat 3 s, dead_after 9 s).

The server runs with Python's default garbage-collector thresholds, or (the ``gc`` cases)
with the tuning docs/deployment.md recommends for thousands of sessions
(``gc.set_threshold(*TUNED_GC)``). The client process always runs tuned: it stands in for
N separate agents, and its collector must not take the cores the server is measured on.

For each sample, fresh processes:

1. The server starts and settles; its RSS is read (``rss_before``).
2. The client opens N sessions. *handshake rate* = N / (time from the first connect to
   the N-th session open), taken in the client.
3. After a short settle, the server's RSS is read again: *RSS per session* =
   (``rss_after`` - ``rss_before``) / N.
4. *heartbeat CPU*: the server's (and the client's) CPU seconds per wall second while the
   N sessions sit idle for ``window`` seconds (only heartbeats and their replies flow).

Cases: 1,000 and 10,000 sessions with the default collector, and 10,000 tuned
(``--quick``: 1,000 only, fewer samples and a shorter window), the samples interleaved.

Usage::

    python benchmarks/bench_scale.py [--quick] [--cases 1000,10000,10000gc] [--repeats N]
"""

from __future__ import annotations

import argparse
import functools
import gc
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

#: A case: (sessions, whether the server's garbage collector is tuned).
Case = tuple[int, bool]
FULL_CASES: Final[tuple[Case, ...]] = ((1_000, False), (10_000, False), (10_000, True))
QUICK_CASES: Final[tuple[Case, ...]] = ((1_000, False),)
FULL_REPEATS: Final = 5
#: Samples with BIG sessions or more at most: each takes about a minute on 2 cores.
BIG_REPEATS: Final = 3
BIG: Final = 10_000
DEFAULT_HEARTBEAT: Final = 3.0
#: gc.set_threshold() for many sessions (docs/deployment.md). Python's default first
#: threshold (700 net allocations) makes the young collections run so often that the
#: objects of every waiting heartbeat are caught alive and promoted; the full collections
#: that follow walk ~150 objects per session. With 10,000 idle sessions at the default
#: heartbeat they took about half the server's CPU.
TUNED_GC: Final = (100_000, 50, 10)
QUICK_REPEATS: Final = 2
FULL_WINDOW: Final = 12.0
QUICK_WINDOW: Final = 6.0
CONCURRENCY: Final = 256
SETTLE: Final = 1.0
CLIENT_ID: Final = "scale"
#: Target of the issue: 10,000 sessions under 1 GiB of server RSS.
TARGET_BYTES: Final = 1024**3


# -- server process ------------------------------------------------------------------------


def case_key(case: Case) -> str:
    n, tuned = case
    return f"{n}gc" if tuned else str(n)


def case_label(case: Case) -> str:
    n, tuned = case
    return f"{n:,}, gc tuned" if tuned else f"{n:,}"


def parse_cases(text: str) -> tuple[Case, ...]:
    cases = []
    for raw in text.replace("_", "").split(","):
        item = raw.strip().lower()
        if item:
            cases.append((int(item.removesuffix("gc")), item.endswith("gc")))
    return tuple(cases)


def server_main(conn: Connection, n: int, tuned_gc: bool) -> dict[str, Any]:
    nofile = raise_nofile()
    if tuned_gc:
        gc.set_threshold(*TUNED_GC)
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
                heartbeat_interval=DEFAULT_HEARTBEAT,
                dead_after=3 * DEFAULT_HEARTBEAT,
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
    gc.set_threshold(*TUNED_GC)
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
                heartbeat_interval=DEFAULT_HEARTBEAT,
                dead_after=3 * DEFAULT_HEARTBEAT,
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


def measure(case: Case, window: float) -> dict[str, Any]:
    """One sample of a case, in fresh server and client processes."""
    n, tuned = case
    sample: dict[str, Any] = {
        "case": case_key(case),
        "sessions": n,
        "server_gc": list(TUNED_GC) if tuned else list(gc.get_threshold()),
        "heartbeat_s": DEFAULT_HEARTBEAT,
        "ok": False,
        "loadavg_before": loadavg(),
    }
    server = Child(f"scale-server-{case_key(case)}", server_main, n, tuned)
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


def run(*, quick: bool = False, cases: tuple[Case, ...] | None = None, repeats: int | None = None) -> dict[str, Any]:
    chosen = cases or (QUICK_CASES if quick else FULL_CASES)
    repeats = repeats or (QUICK_REPEATS if quick else FULL_REPEATS)
    window = QUICK_WINDOW if quick else FULL_WINDOW
    big_repeats = min(repeats, BIG_REPEATS)
    config = {
        "quick": quick,
        "cases": [case_key(c) for c in chosen],
        "repeats": repeats,
        "repeats_from_10000_sessions": big_repeats,
        "heartbeat_window_s": window,
        "concurrency": CONCURRENCY,
        "settle_s": SETTLE,
        "link_settings": f"heartbeat {DEFAULT_HEARTBEAT:g} s (the default), dead_after 3 heartbeats",
        "gc": f"server: Python's default thresholds {gc.get_threshold()}, or gc.set_threshold{TUNED_GC} in the "
        f"'gc tuned' cases; client process: always gc.set_threshold{TUNED_GC}",
        "server_limits": "max_connections_per_address, max_pending_handshakes, max_sessions_per_client = N + 64",
        "note": f"--quick measures {', '.join(case_label(c) for c in chosen)} sessions only, {repeats} samples, "
        f"a {window:g} s heartbeat window"
        if quick
        else f"{big_repeats} samples with {BIG:,} sessions, {repeats} with fewer",
    }
    began = time.perf_counter()
    samples: list[dict[str, Any]] = []
    for rep in range(repeats):
        for case in rotated(list(chosen), rep):
            if case[0] >= BIG and rep >= big_repeats:
                continue
            s = measure(case, window)
            s["repeat"] = rep
            samples.append(s)
            if s["ok"]:
                print(
                    f"[{rep + 1}/{repeats}] scale {case_label(case):>15} sessions: "
                    f"{s['rss_per_session'] / 1024:6.1f} KiB/session, "
                    f"{s['handshake_rate']:7,.0f} sessions/s, server heartbeat CPU {s['server_cpu_per_s']:.1%}",
                    flush=True,
                )
            else:
                print(f"[{rep + 1}/{repeats}] scale {case_label(case)} sessions: FAILED {s.get('error')}", flush=True)
    summary = {}
    for case in chosen:
        ok = [s for s in samples if s["case"] == case_key(case) and s["ok"]]
        summary[case_key(case)] = {
            "sessions": case[0],
            "label": case_label(case),
            "server_gc": f"gc.set_threshold{TUNED_GC}" if case[1] else "default",
            "samples": len(ok),
            "rss_per_session_bytes": median_spread([s["rss_per_session"] for s in ok]),
            "server_rss_bytes": median_spread([s["rss_after"] for s in ok]),
            "handshake_rate": median_spread([s["handshake_rate"] for s in ok]),
            "heartbeat_s": DEFAULT_HEARTBEAT,
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
        f"Heartbeat {DEFAULT_HEARTBEAT:g} s (the default) in every case. *server gc*: Python's default collector "
        f"thresholds, or gc.set_threshold{TUNED_GC} as docs/deployment.md recommends for thousands of sessions "
        "(the client process, standing in for N separate agents, always runs tuned). *RSS/session*: growth of "
        "the server's RSS from before the "
        "first connection to after the N-th session opened, divided by N. *handshake rate*: N sessions opened "
        f"(at most {result['config']['concurrency']} handshakes at a time) divided by the time it took. "
        "*heartbeat CPU*: CPU seconds per wall second while the sessions sit idle "
        f"({result['config']['heartbeat_window_s']:g} s window). Median (min\u2013max, n).",
        "",
        "| sessions | server gc | server RSS/session KiB | server RSS MiB | handshakes/s | server heartbeat CPU "
        "| client heartbeat CPU |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in result["summary"].values():
        rss = {
            k: (v / 1024 if isinstance(v, float | int) and k != "n" else v)
            for k, v in s["rss_per_session_bytes"].items()
        }
        total = {
            k: (mib(v) if isinstance(v, float | int) and k != "n" else v) for k, v in s["server_rss_bytes"].items()
        }
        lines.append(
            f"| {s['sessions']:,} | {s['server_gc']} | {spread_text(rss, '{:.1f}')} | {spread_text(total, '{:.0f}')} "
            f"| {spread_text(s['handshake_rate'], '{:,.0f}')} | {spread_text(s['server_cpu_per_s'], '{:.1%}')} "
            f"| {spread_text(s['client_cpu_per_s'], '{:.1%}')} |"
        )
    note = result["config"].get("note")
    if note:
        lines += ["", f"Note: {note}."]
    if result["errors"]:
        lines += ["", "**FAILURES:**", "", *[f"- {e}" for e in result["errors"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 sessions only, 2 samples, 6 s window")
    parser.add_argument(
        "--cases", type=parse_cases, help="comma-separated session counts, 'gc' appended for a tuned server collector"
    )
    parser.add_argument("--repeats", type=int, help=f"samples per count (default {FULL_REPEATS})")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    raise_nofile()
    info = machine_info()
    result = run(quick=args.quick, cases=args.cases, repeats=args.repeats)
    result["machine"] = info
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "scale.json", json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write_atomically(args.out / "scale.md", "# reliablelink scale benchmark\n\n" + text)
    print(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
