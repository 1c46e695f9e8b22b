"""Memory under a stalled reader: the sender's and the receiver's RSS stay bounded by the window.

A receiver process runs ``reliablelink.serve`` with a handler that accepts the session and
never calls ``receive``; a sender process connects and calls ``session.send`` as fast as it
can. The window (``max_inflight`` messages / ``max_inflight_bytes`` bytes, defaults 4096 /
8 MiB) fills, ``send`` blocks, and memory must stop growing: this process samples both
processes' RSS every ``INTERVAL`` seconds for ``duration`` seconds, and the sender records
how many messages ``send`` accepted over time.

*Plateau*: the RSS growth over the second half of the run (last sample minus the sample at
half time) is reported next to the total growth from the first sample; a bounded process
grows during the first fraction of a second (the window filling) and then stays flat.

Usage::

    python benchmarks/bench_memory.py [--quick] [--repeats N] [--duration S]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import trio
from bench_common import (
    CLIENT_ID,
    HOST,
    KEY,
    Child,
    loadavg,
    machine_info,
    median_spread,
    mib,
    rotated,
    rss_bytes,
    spread_text,
    write_atomically,
)

import reliablelink

SIZES: Final = (1024, 16 * 1024)
FULL_REPEATS: Final = 5
QUICK_REPEATS: Final = 1
FULL_DURATION: Final = 6.0
QUICK_DURATION: Final = 3.0
INTERVAL: Final = 0.1
#: The library's defaults, stated here for the report (the benchmark passes no window option).
WINDOW: Final = {"max_inflight": 4096, "max_inflight_bytes": 8 * 1024 * 1024}


def receiver_main(conn: Connection) -> dict[str, Any]:
    return trio.run(_receiver, conn)


async def _receiver(conn: Connection) -> dict[str, Any]:
    stalled = trio.Event()

    async def handler(session: reliablelink.Session) -> None:
        stalled.set()
        await trio.sleep_forever()  # never receives

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(reliablelink.serve, handler, f"tcp://{HOST}:0", keys={CLIENT_ID: KEY})
        )
        conn.send(("address", server.url))
        await trio.to_thread.run_sync(conn.recv)  # the parent's "stop"
        nursery.cancel_scope.cancel()
    return {"handler_started": stalled.is_set()}


def sender_main(conn: Connection, url: str, size: int, duration: float) -> dict[str, Any]:
    return trio.run(_sender, conn, url, size, duration)


async def _sender(conn: Connection, url: str, size: int, duration: float) -> dict[str, Any]:
    accepted: list[tuple[float, int, int]] = []
    stats: dict[str, Any] = {}
    message = bytes(size)
    # Cancelled at the end: a cancelled close does not wait for a drain that cannot come.
    with trio.move_on_after(duration + 1):
        async with reliablelink.connect(url, client_id=CLIENT_ID, key=KEY) as session:
            conn.send(("connected", time.monotonic()))

            async def sample() -> None:
                while True:
                    s = session.stats
                    accepted.append((time.monotonic(), s.sent, s.in_flight_bytes))
                    await trio.sleep(INTERVAL)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample)
                while True:
                    await session.send(message)
                    s = session.stats
                    stats = {"sent": s.sent, "acked": s.acked, "in_flight": s.in_flight}
    return {"accepted": accepted, "stats": stats}


def measure(size: int, duration: float) -> dict[str, Any]:
    sample: dict[str, Any] = {"size": size, "ok": False, "loadavg_before": loadavg()}
    receiver = Child("memory-receiver", receiver_main)
    sender: Child | None = None
    try:
        url = receiver.expect("address", 30)
        sender = Child("memory-sender", sender_main, url, size, duration)
        start = sender.expect("connected", 30)
        series: list[tuple[float, int, int]] = []
        while time.monotonic() < start + duration:
            series.append((time.monotonic() - start, rss_bytes(sender.pid), rss_bytes(receiver.pid)))
            time.sleep(INTERVAL)
        result = sender.result(duration + 30)
        receiver.send("stop")
        receiver.result(30)
        half = next(i for i, row in enumerate(series) if row[0] >= duration / 2)
        accepted = result["accepted"]
        sent_half = next((s for t, s, _ in accepted if t - start >= duration / 2), None)
        sample.update(
            ok=True,
            rss_series=[{"t": round(t, 3), "sender": s, "receiver": r} for t, s, r in series],
            accepted_series=[{"t": round(t - start, 3), "sent": n, "in_flight_bytes": b} for t, n, b in accepted],
            final_stats=result["stats"],
            sender_rss_first=series[0][1],
            receiver_rss_first=series[0][2],
            sender_rss_max=max(r[1] for r in series),
            receiver_rss_max=max(r[2] for r in series),
            sender_growth=series[-1][1] - series[0][1],
            receiver_growth=series[-1][2] - series[0][2],
            sender_growth_second_half=series[-1][1] - series[half][1],
            receiver_growth_second_half=series[-1][2] - series[half][2],
            sent_total=accepted[-1][1] if accepted else 0,
            sent_second_half=(accepted[-1][1] - sent_half) if accepted and sent_half is not None else None,
            window_messages=min(WINDOW["max_inflight"], WINDOW["max_inflight_bytes"] // size),
        )
    except (RuntimeError, StopIteration) as exc:
        sample["error"] = f"stalled reader {size} B: {exc!r}"
    finally:
        if sender is not None:
            sender.stop(10)
        receiver.stop(10)
    sample["loadavg_after"] = loadavg()
    return sample


def run(*, quick: bool = False, repeats: int | None = None, duration: float | None = None) -> dict[str, Any]:
    repeats = repeats or (QUICK_REPEATS if quick else FULL_REPEATS)
    duration = duration or (QUICK_DURATION if quick else FULL_DURATION)
    config = {
        "quick": quick,
        "sizes": list(SIZES),
        "repeats": repeats,
        "duration_s": duration,
        "rss_interval_s": INTERVAL,
        "window": WINDOW,
        "receiver": "reliablelink.serve handler that never calls receive()",
        "sender": "await session.send(message) in a loop, as fast as possible",
    }
    began = time.perf_counter()
    samples = []
    for rep in range(repeats):
        for size in rotated(list(SIZES), rep):
            s = measure(size, duration)
            s["repeat"] = rep
            samples.append(s)
            if s["ok"]:
                print(
                    f"[{rep + 1}/{repeats}] stalled reader {size:>6} B: sender RSS {mib(s['sender_rss_max']):.1f} MiB "
                    f"(+{mib(s['sender_growth_second_half']):.2f} MiB in 2nd half), receiver "
                    f"{mib(s['receiver_rss_max']):.1f} MiB (+{mib(s['receiver_growth_second_half']):.2f}); "
                    f"{s['sent_total']:,} messages accepted",
                    flush=True,
                )
            else:
                print(f"[{rep + 1}/{repeats}] stalled reader {size} B: FAILED {s['error']}", flush=True)
    summary = {}
    for size in SIZES:
        ok = [s for s in samples if s["size"] == size and s["ok"]]
        summary[str(size)] = {
            key: median_spread([s[key] for s in ok])
            for key in (
                "sender_rss_max",
                "receiver_rss_max",
                "sender_growth",
                "receiver_growth",
                "sender_growth_second_half",
                "receiver_growth_second_half",
                "sent_total",
            )
        }
        summary[str(size)]["sent_second_half"] = median_spread(
            [s["sent_second_half"] for s in ok if s["sent_second_half"] is not None]
        )
        summary[str(size)]["window_messages"] = min(WINDOW["max_inflight"], WINDOW["max_inflight_bytes"] // size)
    return {
        "config": config,
        "summary": summary,
        "samples": samples,
        "errors": [s["error"] for s in samples if not s["ok"]],
        "duration_s": time.perf_counter() - began,
    }


def _mib(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: (mib(v) if k != "n" and v is not None else v) for k, v in stats.items()}


def markdown(result: dict[str, Any]) -> str:
    config = result["config"]
    lines = [
        "## Memory under a stalled reader (loopback TCP, sender and receiver in separate processes)",
        "",
        f"The receiver's handler never calls `receive()`; the sender calls `send()` as fast as it can for "
        f"{config['duration_s']:g} s. Window: the defaults, {config['window']['max_inflight']:,} messages / "
        f"{mib(config['window']['max_inflight_bytes']):g} MiB. RSS sampled every {config['rss_interval_s']:g} s. "
        "*2nd half*: growth from half time to the end (a plateau is about 0). Median (min\u2013max, n) over "
        f"{config['repeats']} run(s).",
        "",
        "| message | window (messages) | accepted by send() | accepted in 2nd half | sender RSS max MiB "
        "| sender growth 2nd half MiB | receiver RSS max MiB | receiver growth 2nd half MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, s in result["summary"].items():
        lines.append(
            f"| {int(size):,} B | {s['window_messages']:,} | {spread_text(s['sent_total'], '{:,.0f}')} "
            f"| {spread_text(s['sent_second_half'], '{:,.0f}')} "
            f"| {spread_text(_mib(s['sender_rss_max']), '{:.1f}')} "
            f"| {spread_text(_mib(s['sender_growth_second_half']), '{:.2f}')} "
            f"| {spread_text(_mib(s['receiver_rss_max']), '{:.1f}')} "
            f"| {spread_text(_mib(s['receiver_growth_second_half']), '{:.2f}')} |"
        )
    if result["errors"]:
        lines += ["", "**FAILURES:**", "", *[f"- {e}" for e in result["errors"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_REPEATS} run per size, {QUICK_DURATION:g} s")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    info = machine_info()
    result = run(quick=args.quick, repeats=args.repeats, duration=args.duration)
    result["machine"] = info
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomically(args.out / "memory.json", json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    write_atomically(args.out / "memory.md", "# reliablelink memory benchmark\n\n" + text)
    print(text)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
