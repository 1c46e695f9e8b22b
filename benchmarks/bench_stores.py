"""Cost of the session stores: throughput and echo latency with memory, SQLite and Redis.

Client and server run in one process over loopback TCP (the store cost is what is compared,
so the layout is the same for every row). Each case runs ``--repeat`` times, interleaved;
medians and min..max are reported. Rows:

* ``memory``: no store (the default);
* ``sqlite``: ``SQLiteStore`` on both ends (each in its own file, WAL, synchronous=NORMAL);
* ``redis``: ``RedisStore`` on the server (a ``redis-server`` started here on a free port),
  no store on the client.

Usage: ``python benchmarks/bench_stores.py [--quick] [--out benchmarks/results]``
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

import reliablelink
from reliablelink.stores import RedisStore, SessionStore, SQLiteStore

KEY = b"bench-stores-key-0123456789abcd!"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def one_run(kind: str, workdir: Path, redis_url: str | None, count: int, rounds: int) -> dict[str, float]:
    def store(name: str) -> SessionStore | None:
        if kind == "sqlite":
            return SQLiteStore(workdir / f"{name}-{time.monotonic_ns()}.db")
        if kind == "redis" and name == "server":
            assert redis_url is not None
            return RedisStore(redis_url, prefix=f"bench-{time.monotonic_ns()}:")
        return None

    done = trio.Event()
    received = 0
    mode = "sink"

    async def handler(session: reliablelink.Session) -> None:
        nonlocal received
        async for message in session:
            if mode == "echo":
                await session.send(message)
            else:
                received += 1
                if received == count:
                    done.set()

    result: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: reliablelink.serve(
                handler, "tcp://127.0.0.1:0", keys={"b": KEY}, store=store("server"), task_status=task_status
            )
        )
        async with reliablelink.connect(server.url, client_id="b", key=KEY, store=store("client")) as session:
            payload = b"x" * 1024
            start = time.perf_counter()
            for _ in range(count):
                await session.send(payload)
            await done.wait()
            result["send_1k_per_s"] = count / (time.perf_counter() - start)
            done = trio.Event()
            received = 0
            start = time.perf_counter()
            for _ in range(count // 256):
                await session.send_many([payload] * 256)
            if count // 256 * 256 != count:
                await session.send_many([payload] * (count - count // 256 * 256))
            await done.wait()
            result["send_many_1k_per_s"] = count / (time.perf_counter() - start)
            mode = "echo"
            times = []
            for _ in range(rounds):
                t = time.perf_counter()
                await session.send(b"p" * 64)
                await session.receive()
                times.append(time.perf_counter() - t)
            times.sort()
            result["echo_p50_us"] = times[len(times) // 2] * 1e6
            result["echo_p99_us"] = times[int(len(times) * 0.99)] * 1e6
        nursery.cancel_scope.cancel()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    count, rounds = (2000, 300) if args.quick else (10000, 2000)
    repeat = 3 if args.quick else args.repeat
    workdir = Path(tempfile.mkdtemp())
    redis_proc = None
    redis_url = None
    kinds = ["memory", "sqlite"]
    if shutil.which("redis-server"):
        port = free_port()
        redis_proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        redis_url = f"redis://127.0.0.1:{port}/0"
        kinds.append("redis")
    else:
        print("redis-server not found: the redis row is skipped")
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    try:
        for i in range(repeat):
            for kind in kinds[i % len(kinds) :] + kinds[: i % len(kinds)]:
                samples[kind].append(trio.run(one_run, kind, workdir, redis_url, count, rounds))
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {}
    for kind, runs in samples.items():
        summary[kind] = {
            m: {
                "median": statistics.median(r[m] for r in runs),
                "min": min(r[m] for r in runs),
                "max": max(r[m] for r in runs),
            }
            for m in runs[0]
        }
    info = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "count": count,
        "rounds": rounds,
        "repeat": repeat,
        "reliablelink": reliablelink.__version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stores.json").write_text(json.dumps({"info": info, "summary": summary}, indent=2) + "\n")
    lines = [
        "| store | send() 1 KiB msg/s | send_many(256) 1 KiB msg/s | 64 B echo p50 µs | p99 µs |",
        "|---|---|---|---|---|",
    ]
    base = summary["memory"]

    def cell(s: dict[str, Any], metric: str) -> str:
        value = s[metric]["median"]
        return f"{value:,.0f} ({value / base[metric]['median']:.2f}x)"

    for kind, s in summary.items():
        lines.append(
            f"| {kind} | {cell(s, 'send_1k_per_s')} | {cell(s, 'send_many_1k_per_s')} "
            f"| {s['echo_p50_us']['median']:,.0f} | {s['echo_p99_us']['median']:,.0f} |"
        )
    text = "\n".join(lines) + f"\n\n{info}\n"
    (out / "stores.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
