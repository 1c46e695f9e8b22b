"""matplotlib PNG plots of a suite run (the ``[bench]`` extra): one figure per benchmark.

``plot_all(document, out)`` writes ``throughput.png``, ``latency.png``, ``recovery.png``,
``scale.png`` and ``memory.png`` (those whose results are in the document) and returns
their paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench_common import size_label

CASE_NAMES = {
    "raw": "raw Trio, one send_all per message",
    "coalesce": "raw Trio, coalescing writes",
    "send": "reliablelink send()",
    "send_many": "reliablelink send_many(256)",
}


def _pyplot() -> Any:
    import matplotlib  # noqa: PLC0415 - optional ([bench] extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def throughput(summary: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    rows = [r for r in summary["throughput"] if r["transport"] == "tcp" and "median_msgs_per_s" in r]
    sizes = sorted({r["size"] for r in rows})
    cases = [c for c in CASE_NAMES if any(r["case"] == c for r in rows)]
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / max(1, len(cases))
    for i, case in enumerate(cases):
        xs, mb, lo, hi = [], [], [], []
        for j, size in enumerate(sizes):
            row = next((r for r in rows if r["case"] == case and r["size"] == size), None)
            if row is None:
                continue
            xs.append(j + (i - (len(cases) - 1) / 2) * width)
            med = row["median_mb_per_s"]
            mb.append(med)
            lo.append(med - row["min_msgs_per_s"] * size / 1e6)
            hi.append(row["max_msgs_per_s"] * size / 1e6 - med)
        ax.bar(xs, mb, width, yerr=[lo, hi], capsize=3, label=CASE_NAMES[case])
    ax.set_xticks(range(len(sizes)), [size_label(s) for s in sizes])
    ax.set_xlabel("message size")
    ax.set_ylabel("MB/s (payload; median, bars: min-max)")
    ax.set_yscale("log")
    ax.set_title("One-way throughput, loopback TCP, separate processes")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latency(summary: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    rows = [r for r in summary["latency"] if r["transport"] == "tcp" and "p50_us" in r]
    labels = {"raw": "raw Trio", "reliablelink": "reliablelink send()+receive()"}
    qs = [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(qs))]
        ax.bar(xs, [row[k] for _, k in qs], width, label=labels.get(row["case"], row["case"]))
    ax.set_xticks(range(len(qs)), [q for q, _ in qs])
    ax.set_ylabel("round trip, \u00b5s")
    ax.set_title("64 B echo latency, one message in flight")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def recovery(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    profiles = list(result["summary"])
    for ax, key, title in (
        (axes[0], "detection_s", "cable pulled \u2192 dead link detected"),
        (axes[1], "recovery_s", "cable restored \u2192 first replay delivered"),
    ):
        data = [[s[key] for s in result["samples"] if s["profile"] == p and key in s] for p in profiles]
        for i, values in enumerate(data):
            ax.scatter([i] * len(values), values, alpha=0.7)
            if values:
                ax.hlines(sorted(values)[len(values) // 2], i - 0.25, i + 0.25, color="black")
        ax.set_xticks(range(len(profiles)), profiles)
        ax.set_xlim(-0.6, len(profiles) - 0.4)
        ax.set_yscale("log")
        ax.set_ylabel("seconds (dots: samples, line: median)")
        ax.set_title(title, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Recovery through ChaosProxy (default: heartbeat 3 s; aggressive: 0.1 s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scale(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    ok = [s for s in result["samples"] if s["ok"]]
    fig, axes = plt.subplots(1, 3, figsize=(11, 4))
    for ax, key, factor, label in (
        (axes[0], "rss_per_session", 1 / 1024, "server RSS per session, KiB"),
        (axes[1], "handshake_rate", 1, "handshakes per second"),
        (axes[2], "server_cpu_per_s", 100, "server CPU while idle, % of a core"),
    ):
        cases = list(result["summary"])
        for i, case in enumerate(cases):
            values = [s[key] * factor for s in ok if s.get("case", str(s["sessions"])) == case and key in s]
            ax.scatter([i] * len(values), values, alpha=0.7)
            if values:
                ax.hlines(sorted(values)[len(values) // 2], i - 0.25, i + 0.25, color="black")
        labels = [result["summary"][c].get("label", c).replace(", ", "\n") for c in cases]
        ax.set_xticks(range(len(cases)), labels)
        ax.set_xlim(-0.6, len(cases) - 0.4)
        ax.set_xlabel("idle sessions")
        ax.set_title(label, fontsize="medium")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Idle sessions on one server process (heartbeat 3 s)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def memory(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    sizes = [int(s) for s in result["summary"]]
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        runs = [s for s in result["samples"] if s["ok"] and s["size"] == size]
        for k, s in enumerate(runs):
            ts = [p["t"] for p in s["rss_series"]]
            ax.plot(ts, [p["sender"] / 2**20 for p in s["rss_series"]], color="C0", label="sender" if not k else None)
            ax.plot(
                ts, [p["receiver"] / 2**20 for p in s["rss_series"]], color="C1", label="receiver" if not k else None
            )
        ax.set_xlabel("seconds since connected")
        ax.set_ylabel("RSS, MiB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{size_label(size)} messages, reader stalled", fontsize="medium")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle("RSS under a stalled reader (window 4096 messages / 8 MiB)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_all(document: dict[str, Any], out: Path) -> list[Path]:
    """Write the PNGs for the parts present in a suite document; return their paths."""
    written = []
    if "throughput" in document:
        written.append(throughput(document["throughput"]["summary"], out / "throughput.png"))
        written.append(latency(document["throughput"]["summary"], out / "latency.png"))
    if "recovery" in document:
        written.append(recovery(document["recovery"], out / "recovery.png"))
    if "scale" in document:
        written.append(scale(document["scale"], out / "scale.png"))
    if "memory" in document:
        written.append(memory(document["memory"], out / "memory.png"))
    return written
