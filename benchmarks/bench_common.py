"""Shared pieces of the benchmark suite: the machine, noise control, worker processes, output.

Every ``bench_*.py`` module imports this one (the scripts put ``benchmarks/`` first on
``sys.path``; spawned children inherit that path).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import multiprocessing
import os
import platform
import resource
import ssl
import statistics
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

import trio

import reliablelink

#: Packages whose versions every report records.
PACKAGES: Final = ("trio", "wsproto", "trio-websocket", "trustme", "matplotlib", "psutil")

CLIENT_ID: Final = "bench"
KEY: Final = b"reliablelink-benchmark-key-0123456789"
HOST: Final = "127.0.0.1"


class HasCpu(Protocol):
    def cpu(self) -> float | None: ...


def percentile(ordered: list[float], q: float) -> float:
    """Linear-interpolated percentile of sorted values (numpy's default method)."""
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


T = TypeVar("T")


def noise_summary(kept: list[dict[str, Any]], discarded: list[dict[str, Any]], guard: NoiseGuard) -> dict[str, Any]:
    levels = [s["background_cores"] for s in kept if s.get("background_cores") is not None]
    return {
        "threshold_cores": NOISY,
        "kept": len(kept),
        "noisy_kept": sum(1 for b in levels if b > NOISY),
        "median_background_cores": statistics.median(levels) if levels else None,
        "max_background_cores": max(levels) if levels else None,
        "discarded": len(discarded),
        "waited_s": guard.waited,
    }


def rotated(items: Sequence[T], by: int) -> list[T]:
    by %= len(items)
    return [*items[by:], *items[:by]]


DASH: Final = "\u2013"
#: Average cores used by other processes above which the results are flagged as disturbed.
NOISY: Final = 0.1


def ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}\u00d7"


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_model(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "trio": trio.__version__,
        "reliablelink": reliablelink.__version__,
        "openssl": ssl.OPENSSL_VERSION,
        "packages": {name: package_version(name) for name in PACKAGES},
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "loadavg_before": loadavg(),
        "memory_total_bytes": memory_total(),
        "git": git_state(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


class NoiseGuard:
    """Keeps other processes' CPU use out of the samples, as far as it can (Linux only).

    The benchmark wants two idle cores. Before each sample it waits until the machine is
    idle; after it, it computes how much CPU other processes used during the sample (busy
    time of the machine from ``/proc/stat`` minus the CPU time of this process and of the
    two workers) and takes the sample again, ``retries`` times at most, if that was more
    than NOISY of a core. Waiting and retaking share one time budget (``max_wait``), so a
    busy machine delays the run by that much at most. Elsewhere it does nothing.
    """

    def __init__(self, max_wait: float, retries: int) -> None:
        self.budget = max_wait
        self.retries = retries
        self.waited = 0.0
        self.enabled = machine_cpu() is not None

    def wait_until_idle(self) -> None:
        announced = False
        while self.enabled and self.budget > 0:
            began = time.perf_counter()
            before = machine_cpu()
            time.sleep(0.25)
            after = machine_cpu()
            spent = time.perf_counter() - began
            if before is None or after is None or (after[0] - before[0]) / spent < NOISY:
                return
            if not announced:
                busy = (after[0] - before[0]) / spent
                print(f"  (machine busy: {busy:.0%} of a core used elsewhere; waiting for it to calm down)", flush=True)
                announced = True
            time.sleep(0.75)
            spent = time.perf_counter() - began
            self.budget -= spent
            self.waited += spent

    def snapshot(self, pair: HasCpu) -> tuple[float, float, float] | None:
        machine = machine_cpu()
        workers = pair.cpu()
        if machine is None or workers is None:
            return None
        return time.perf_counter(), machine[0], workers + self_cpu()

    def background(self, before: tuple[float, float, float] | None, pair: HasCpu) -> float | None:
        """Cores used by other processes on average since ``before``."""
        after = self.snapshot(pair)
        if before is None or after is None:
            return None
        wall = after[0] - before[0]
        return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / wall

    def run(self, pair: HasCpu, measure: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Take one sample; return it and the noisy attempts that were discarded."""
        discarded: list[dict[str, Any]] = []
        while True:
            self.wait_until_idle()
            before = self.snapshot(pair)
            sample = measure()
            sample["background_cores"] = background = self.background(before, pair)
            if (
                not sample["ok"]
                or background is None
                or background <= NOISY
                or len(discarded) >= self.retries
                or self.budget <= 0
            ):
                return sample, discarded
            print(f"  (discarded: other processes used {background:.0%} of a core; measuring again)", flush=True)
            discarded.append(sample)
            if before is not None:
                spent = time.perf_counter() - before[0]
                self.budget -= spent
                self.waited += spent


def machine_cpu() -> tuple[float, float] | None:
    """Seconds the whole machine spent busy, and stolen by the hypervisor, since boot."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    tick = os.sysconf("SC_CLK_TCK")
    # Steal is time the hypervisor gave to other machines: it disturbs the run too.
    return (user + nice + system + irq + softirq + steal) / tick, steal / tick


def process_cpu(pid: int | None) -> float | None:
    """User + system CPU seconds of a live process (Linux), or ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_state() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "reliablelink"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}{' + uncommitted changes in reliablelink/' if dirty else ''}"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def loadavg() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def memory_total() -> int | None:
    try:
        import psutil  # noqa: PLC0415 - optional ([bench] extra)
    except ImportError:
        return None
    return int(psutil.virtual_memory().total)


def raise_nofile() -> tuple[int, int]:
    """Raise this process's open-file limit to its hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (this one by default), from /proc (Linux) or psutil."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil  # noqa: PLC0415 - fallback outside Linux

        return int(psutil.Process(pid).memory_info().rss)


def median_spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median, min, max and count of some samples (None when there are none)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def spread_text(stats: dict[str, Any], fmt: str = "{:.3f}", unit: str = "") -> str:
    """``median (min-max, n=5)`` for a ``median_spread`` result."""
    if stats["median"] is None:
        return "n/a"
    return (
        f"{fmt.format(stats['median'])}{unit} ({fmt.format(stats['min'])}{DASH}{fmt.format(stats['max'])}{unit}, "
        f"n={stats['n']})"
    )


def mib(n: float) -> float:
    return n / (1024 * 1024)


# -- one-shot child processes ------------------------------------------------------------


def _child_main(target: Callable[..., Any], conn: Connection, args: tuple[Any, ...]) -> None:
    """Run ``target(conn, *args)`` in a spawned child; send ("ok", result) or ("error", traceback)."""
    try:
        result = target(conn, *args)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    else:
        conn.send(("ok", result))
    finally:
        conn.close()


class Child:
    """A spawned child process running one function, and the parent's end of its pipe.

    The function gets the child's end of the pipe first: it may send ``(tag, value)``
    messages (an address, "ready", progress) before its result, which arrives as
    ``("ok", result)`` or ``("error", traceback)``.
    """

    def __init__(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_child_main, args=(target, child, args), name=name, daemon=True)
        self.process.start()
        child.close()
        self.name = name

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, value: Any) -> None:
        self.conn.send(value)

    def expect(self, tag: str, timeout: float) -> Any:
        """Wait for a ``(tag, value)`` message and return the value; raise on anything else."""
        if not self.conn.poll(timeout):
            raise RuntimeError(f"{self.name}: nothing received for {timeout:.0f} s (waiting for {tag!r})")
        try:
            kind, value = self.conn.recv()
        except EOFError as exc:
            raise RuntimeError(f"{self.name} died (exit code {self.process.exitcode})") from exc
        if kind != tag:
            raise RuntimeError(f"{self.name}: expected {tag!r}, got {kind!r}:\n{value}")
        return value

    def result(self, timeout: float) -> Any:
        return self.expect("ok", timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Wait for the child to exit; terminate it if it does not."""
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
