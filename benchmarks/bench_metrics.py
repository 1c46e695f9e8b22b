"""The cost of ``reliablelink.metrics``: the hot path with and without the collector, and a scrape.

The collector reads the library's own counters at scrape time, so sending and receiving
should cost the same with it as without it; a scrape costs one pass over the open sessions,
paid in the scraping thread (which holds the GIL meanwhile). This measures both.

Hot path, over TCP loopback, sender (client) and receiver (server) in two spawned processes,
each run in one of three modes, rounds interleaved (off, registered, scraped, off, ...):

* ``off``: ``reliablelink.metrics.register()`` never called (``prometheus_client`` not even
  imported);
* ``registered``: both processes registered the collector in a registry nobody scrapes;
* ``scraped``: both registered it and a thread calls ``generate_latest()`` on it every
  ``--interval`` seconds (default 0.1 s: 150 times as often as a 15 s Prometheus scrape).

Cases: one-way ``send()`` of 64 B messages (messages per second, timed on the receiver from
its first batch to the last message) and a 64 B echo (round trips, p50 and p99).

Scrape cost: ``generate_latest()`` of a registry holding the collector, in one process with
N idle sessions open over ``memory://`` (median of 20 scrapes).

Usage::

    python benchmarks/bench_metrics.py [--quick] [--out benchmarks/results]

Writes ``metrics.json`` and ``metrics.md`` to the output directory.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio
from bench_common import CLIENT_ID, KEY, Child, machine_info, percentile, write_atomically

import reliablelink

MODES = ("off", "registered", "scraped")
SIZE = 64


def _start_metrics(mode: str, interval: float) -> tuple[threading.Event, list[float]]:
    """Register (and scrape) as ``mode`` says; return the scraper's stop event and its timings."""
    stop = threading.Event()
    timings: list[float] = []
    if mode == "off":
        return stop, timings
    import prometheus_client  # noqa: PLC0415

    registry = prometheus_client.CollectorRegistry()
    reliablelink.metrics.register(registry)
    if mode == "scraped":

        def scrape() -> None:
            while not stop.wait(interval):
                start = time.perf_counter()
                prometheus_client.generate_latest(registry)
                timings.append(time.perf_counter() - start)

        threading.Thread(target=scrape, daemon=True).start()
    return stop, timings


def receiver(conn: Connection, job: dict[str, Any]) -> dict[str, Any]:
    """Serve; the one-way case counts ``job["count"]`` messages, the echo case sends them back."""
    count = job["count"]
    stop, timings = _start_metrics(job["mode"], job["interval"])
    result: dict[str, Any] = {}

    async def handler(session: reliablelink.Session) -> None:
        first = await session.receive()
        if first == b"echo":
            async for data in session:
                await session.send(data)
            return
        got, start, first_batch = 0, 0.0, 0
        while got < count:
            batch = await session.receive_many(4096)
            if not got:
                start, first_batch = time.perf_counter(), len(batch)
            got += len(batch)
        result["rate"] = (count - first_batch) / (time.perf_counter() - start)
        await session.send(b"done")
        async for _ in session:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(reliablelink.serve, handler, "tcp://127.0.0.1:0", keys={CLIENT_ID: KEY})
            )
            conn.send(("url", server.url))
            await trio.to_thread.run_sync(conn.recv)  # the sender is done
            nursery.cancel_scope.cancel()

    trio.run(main)
    stop.set()
    result["scrapes"] = len(timings)
    result["scrape_ms"] = statistics.median(timings) * 1000 if timings else None
    return result


def sender(conn: Connection, url: str, job: dict[str, Any]) -> dict[str, Any]:
    case, count = job["case"], job["count"]
    stop, _ = _start_metrics(job["mode"], job["interval"])
    result: dict[str, Any] = {}
    message = bytes(SIZE)

    async def main() -> None:
        async with reliablelink.connect(url, client_id=CLIENT_ID, key=KEY) as session:
            if case == "echo":
                await session.send(b"echo")
                trips = []
                for _ in range(count):
                    start = time.perf_counter()
                    await session.send(message)
                    await session.receive()
                    trips.append(time.perf_counter() - start)
                trips.sort()
                result["p50_us"] = percentile(trips, 50) * 1e6
                result["p99_us"] = percentile(trips, 99) * 1e6
            else:
                await session.send(b"go")
                for _ in range(count):
                    await session.send(message)
                assert await session.receive() == b"done"

    trio.run(main)
    stop.set()
    return result


def run_case(mode: str, case: str, count: int, interval: float) -> dict[str, Any]:
    job = {"mode": mode, "case": case, "count": count, "interval": interval}
    recv = Child("receiver", receiver, job)
    try:
        url = recv.expect("url", 30)
        send = Child("sender", sender, url, job)
        try:
            sent = send.result(300)
        finally:
            send.stop()
        recv.send("done")
        received = recv.result(60)
    finally:
        recv.stop()
    return {"mode": mode, "case": case, **sent, **received}


def scrape_cost(sessions: int, repeats: int = 20) -> dict[str, Any]:
    """Median ``generate_latest()`` time with ``sessions`` idle sessions open (this process)."""
    import prometheus_client  # noqa: PLC0415

    registry = prometheus_client.CollectorRegistry()
    reliablelink.metrics.register(registry)
    keys = {f"c{i}": KEY for i in range(sessions)}
    out: dict[str, Any] = {"sessions": sessions}

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(
                    reliablelink.serve,
                    _idle,
                    "memory://",
                    keys=keys,
                    max_sessions_per_client=1,
                    # Every memory:// connection comes from one "address".
                    max_connections_per_address=sessions + 1,
                    max_pending_handshakes=sessions + 1,
                    heartbeat_interval=600,
                    dead_after=1800,
                )
            )
            opened = trio.Event()
            ready = 0

            async def client(i: int) -> None:
                nonlocal ready
                async with reliablelink.connect(
                    server.url, client_id=f"c{i}", key=KEY, heartbeat_interval=600, dead_after=1800
                ):
                    ready += 1
                    if ready == sessions:
                        opened.set()
                    await trio.sleep_forever()

            async with trio.open_nursery() as clients:
                for i in range(sessions):
                    clients.start_soon(client, i)
                await opened.wait()
                timings = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    text = prometheus_client.generate_latest(registry)
                    timings.append(time.perf_counter() - start)
                out["scrape_ms"] = statistics.median(timings) * 1000
                out["bytes"] = len(text)
                clients.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    trio.run(main)
    return out


async def _idle(session: reliablelink.Session) -> None:
    async for _ in session:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages, rounds and sessions")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"), help="output directory")
    parser.add_argument("--rounds", type=int, help="runs per mode and case (default 5, or 3 with --quick)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between scrapes in 'scraped' mode")
    parser.add_argument(
        "--sessions", help="comma-separated idle session counts for the scrape cost (default 1,1000,5000; 1,1000 quick)"
    )
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    # Long enough for a few dozen scrapes in each 'scraped' run.
    counts = {"send": 1_000_000 if args.quick else 3_000_000, "echo": 10_000 if args.quick else 30_000}
    if args.sessions:
        session_counts = [int(n) for n in args.sessions.split(",")]
    else:
        session_counts = [1, 1000] if args.quick else [1, 1000, 5000]
    runs: list[dict[str, Any]] = []
    for r in range(rounds):
        for case, count in counts.items():
            # Each round starts with another mode, so no mode always runs first.
            for mode in MODES[r % 3 :] + MODES[: r % 3]:
                run = run_case(mode, case, count, args.interval)
                print(json.dumps(run), flush=True)
                runs.append(run)
    scrapes = []
    for n in session_counts:
        cost = scrape_cost(n)
        print(json.dumps(cost), flush=True)
        scrapes.append(cost)
    summary: dict[str, dict[str, Any]] = {}
    for case in counts:
        for mode in MODES:
            mine = [run for run in runs if run["case"] == case and run["mode"] == mode]
            keys = ["rate"] if case == "send" else ["p50_us", "p99_us"]
            summary.setdefault(case, {})[mode] = {
                key: {"median": statistics.median(run[key] for run in mine), "all": [run[key] for run in mine]}
                for key in keys
            }
    report = {
        "machine": machine_info(),
        "settings": {"quick": args.quick, "rounds": rounds, "counts": counts, "size": SIZE, "interval": args.interval},
        "summary": summary,
        "scrape_cost": scrapes,
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomically(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    write_atomically(out / "metrics.md", markdown(report))
    print(markdown(report))
    return 0


def markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    settings = report["settings"]
    lines = [
        "# Metrics: the hot path with and without the collector",
        "",
        f"{report['machine']['processor']}, {report['machine']['cpu_count']} cores, Python "
        f"{report['machine']['python']}, {report['machine']['started']}; "
        f"{'quick run, ' if settings['quick'] else ''}{settings['rounds']} rounds per mode, interleaved; "
        f"sender and receiver in separate processes over TCP loopback; {settings['size']} B messages; "
        f"'scraped' = generate_latest() every {settings['interval']} s in both processes.",
        "",
        "| case | off | registered | scraped | scraped / off |",
        "|---|---|---|---|---|",
    ]
    send = s["send"]
    rate = {mode: send[mode]["rate"]["median"] for mode in MODES}
    lines.append(
        f"| send() one way, msgs/s (median) | {rate['off']:,.0f} | {rate['registered']:,.0f} | "
        f"{rate['scraped']:,.0f} | {rate['scraped'] / rate['off']:.3f} |"
    )
    for key, label in (("p50_us", "echo p50, µs"), ("p99_us", "echo p99, µs")):
        v = {mode: s["echo"][mode][key]["median"] for mode in MODES}
        lines.append(
            f"| {label} | {v['off']:.1f} | {v['registered']:.1f} | {v['scraped']:.1f} | {v['scraped'] / v['off']:.3f} |"
        )
    lines += ["", "Every sample (msgs/s), in run order:", ""]
    for mode in MODES:
        lines.append(f"- {mode}: " + ", ".join(f"{x:,.0f}" for x in send[mode]["rate"]["all"]))
    lines += [
        "",
        "| idle sessions open | generate_latest() (median of 20) | exposition size |",
        "|---|---|---|",
    ]
    lines += [f"| {c['sessions']:,} | {c['scrape_ms']:.2f} ms | {c['bytes']:,} B |" for c in report["scrape_cost"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
