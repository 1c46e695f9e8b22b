"""Profile reliablelink's hot path with cProfile: 1 KiB and 256 KiB senders and receivers
(with raw Trio's one-``send_all``-per-message at 256 KiB as the baseline), the 64 B echo.

Runs the same jobs as ``bench_throughput`` (separate sender and receiver processes), each
side under ``cProfile``, and writes ``profile-tables.md`` (the top functions by own time and
by cumulative time, per side) into ``--out`` (``--keep DIR`` keeps the ``.pstats`` files).
``profile.md`` beside it is the reading of those tables. cProfile slows
Python code down (roughly 1.5-2x here), so the rates it reports are not the benchmark's;
the shares of time are what to read.

Usage::

    python benchmarks/profile_hotpath.py [--out benchmarks/results] [--count 200000] [--large-count 6000]
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import sys
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import bench_throughput as bt
import trio
from bench_common import Child, machine_info, write_atomically

TOP: Final = 25


def profiled(conn: Connection, job: bt.Job, out: str) -> dict[str, Any]:
    """Run one job under cProfile in this (child) process; dump the stats to ``out``."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        result = trio.run(bt.run_job, job, conn)
    finally:
        profiler.disable()
        profiler.dump_stats(out)
    return result


def run_pair(server_job: bt.Job, client_job: bt.Job, where: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rx_file, tx_file = where / f"profile-{name}-server.pstats", where / f"profile-{name}-client.pstats"
    rx = Child(f"{name}-server", profiled, server_job, str(rx_file))
    try:
        address = rx.expect("address", 30)
        tx = Child(f"{name}-client", profiled, dataclasses.replace(client_job, address=address), str(tx_file))
        try:
            tx_result = tx.result(300)
        finally:
            tx.stop()
        rx_result = rx.result(60)
    finally:
        rx.stop()
    return rx_result, tx_result


def table(path: Path, sort: str, top: int = TOP) -> str:
    stream = io.StringIO()
    stats = pstats.Stats(str(path), stream=stream)
    stats.strip_dirs().sort_stats(sort).print_stats(top)
    text = stream.getvalue()
    start = text.find("   ncalls")
    return text[start:].rstrip() if start >= 0 else text.rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--count", type=int, default=200_000, help="1 KiB messages to send (default 200,000)")
    parser.add_argument("--keep", type=Path, help="keep the .pstats files in this directory")
    parser.add_argument(
        "--large-count", type=int, default=6000, help="256 KiB messages to send (default 6,000; 0 skips them)"
    )
    parser.add_argument("--round-trips", type=int, default=3000, help="64 B echo round trips (default 3,000)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    sections = [
        "# Hot-path profile (cProfile)",
        "",
        f"Machine: {info['processor']}, {info['cpu_count']} CPUs, Python {info['python']}, Trio {info['trio']}, "
        f"reliablelink {info['reliablelink']} ({info['git']}); load average before: {info['loadavg_before']}.",
        "Command: `python benchmarks/profile_hotpath.py`. cProfile inflates the cost of Python calls, so read "
        "the shares, not the rates.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="rlprof-") as work:
        stats_dir = args.keep or Path(work)
        stats_dir.mkdir(parents=True, exist_ok=True)
        runs = [
            (
                "send-1KiB",
                bt.Job("receive", "tcp", "send", 1024, args.count, work),
                bt.Job("send", "tcp", "send", 1024, args.count, work),
                f"reliablelink `send()` of {args.count:,} 1 KiB messages",
            ),
            (
                "echo-64B",
                bt.Job("echo_server", "tcp", "reliablelink", 64, args.round_trips, work),
                bt.Job("echo_client", "tcp", "reliablelink", 64, args.round_trips, work, warmup=200),
                f"reliablelink 64 B echo, {args.round_trips:,} round trips",
            ),
            (
                "raw-echo-64B",
                bt.Job("echo_server", "tcp", "raw", 64, args.round_trips, work),
                bt.Job("echo_client", "tcp", "raw", 64, args.round_trips, work, warmup=200),
                f"raw Trio 64 B echo (the baseline), {args.round_trips:,} round trips",
            ),
        ]
        if args.large_count:
            big = 256 * 1024
            runs += [
                (
                    "send-256KiB",
                    bt.Job("receive", "tcp", "send", big, args.large_count, work),
                    bt.Job("send", "tcp", "send", big, args.large_count, work),
                    f"reliablelink `send()` of {args.large_count:,} 256 KiB messages",
                ),
                (
                    "raw-256KiB",
                    bt.Job("receive", "tcp", "raw", big, args.large_count, work),
                    bt.Job("send", "tcp", "raw", big, args.large_count, work),
                    f"raw Trio, one `send_all` per message, {args.large_count:,} 256 KiB messages (the baseline)",
                ),
            ]
        for name, server_job, client_job, title in runs:
            print(f"profiling {title}...", flush=True)
            rx, tx = run_pair(server_job, client_job, stats_dir, name)
            sections.append(f"## {title}")
            sections.append("")
            if "elapsed_s" in rx:
                rate = rx["timed_messages"] / rx["elapsed_s"] if rx["elapsed_s"] else 0
                sections.append(f"Rate under the profiler: {rate:,.0f} msgs/s (receiver-timed).")
            if tx.get("rtts_us"):
                ordered = sorted(tx["rtts_us"])
                sections.append(f"p50 round trip under the profiler: {ordered[len(ordered) // 2]:.0f} \u00b5s.")
            sections.append("")
            for side, role in (("server", "receiver / echo server"), ("client", "sender / echo client")):
                path = stats_dir / f"profile-{name}-{side}.pstats"
                for sort, label in (("tottime", "own time"), ("cumulative", "cumulative time")):
                    sections += [
                        f"### {role}: top {TOP} by {label}",
                        "",
                        "```",
                        table(path, sort),
                        "```",
                        "",
                    ]
    write_atomically(out / "profile-tables.md", "\n".join(sections) + "\n")
    print(f"wrote {out / 'profile-tables.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
