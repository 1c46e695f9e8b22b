"""The whole benchmark suite in one run (``nox -s bench``; ``nox -s bench -- --quick``).

Runs, one after the other on the same machine: throughput and echo latency
(``bench_throughput``), recovery (``bench_recovery``), scale (``bench_scale``) and memory
under a stalled reader (``bench_memory``); then writes into ``--out`` (default
``benchmarks/results/``):

* ``results.json``: the machine (CPU, cores, load averages before and after each part,
  Python, package versions, git commit), the settings and every part's summary and samples;
* ``results.md``: the targets with their ratios (met / missed) and every part's table;
* ``throughput.png``, ``latency.png``, ``recovery.png``, ``scale.png``, ``memory.png``;
* each part's own ``<part>.json`` / ``<part>.md``.

``--quick`` (under two minutes on a 2-core machine) takes fewer messages and samples, the
default recovery profile only twice, 1,000 idle sessions only and shorter windows; the
report says so.

Usage::

    python benchmarks/run_all.py [--quick] [--out DIR] [--only throughput,recovery,scale,memory]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Final

import bench_memory
import bench_recovery
import bench_scale
import bench_throughput
from bench_common import loadavg, machine_info, mib, raise_nofile, ratio_text, size_label, write_atomically

PARTS: Final = ("throughput", "recovery", "scale", "memory")
#: --quick: seconds the throughput part may spend waiting for an idle machine.
QUICK_MAX_WAIT: Final = 10.0


def parse_parts(text: str) -> tuple[str, ...]:
    names = {p.strip() for p in text.split(",") if p.strip()}
    unknown = names - set(PARTS)
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in names)


def targets(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured ratio and met / missed."""
    rows: list[dict[str, Any]] = []
    if "throughput" in document:
        summary = document["throughput"]["summary"]
        tput = {(r["case"], r["size"]): r for r in summary["throughput"] if r["transport"] == "tcp"}
        for case in ("send", "send_many"):
            for size in sorted({s for _, s in tput}):
                row = tput.get((case, size), {})
                ratio = row.get("ratio_vs_raw")
                rows.append(
                    {
                        "target": f"{bench_throughput.CASE_LABELS[case]} \u2265 1.0\u00d7 raw Trio one send_all per "
                        f"message, {size_label(size)}",
                        "ratio": ratio,
                        "limit": 1.0,
                        "met": ratio is not None and ratio >= 1.0,
                    }
                )
        for case in ("send", "send_many"):
            ratio = tput.get((case, 1024), {}).get("ratio_vs_coalesce")
            rows.append(
                {
                    "target": f"{bench_throughput.CASE_LABELS[case]} \u2265 0.5\u00d7 raw Trio coalescing, 1 KiB",
                    "ratio": ratio,
                    "limit": 0.5,
                    "met": ratio is not None and ratio >= 0.5,
                }
            )
        lat = {r["case"]: r for r in summary["latency"] if r["transport"] == "tcp"}
        ratio = lat.get("reliablelink", {}).get("p50_ratio_vs_raw")
        rows.append(
            {
                "target": "64 B echo p50 latency \u2264 1.3\u00d7 raw Trio",
                "ratio": ratio,
                "limit": 1.3,
                "met": ratio is not None and ratio <= 1.3,
                "upper": True,
            }
        )
    if "scale" in document:
        s = document["scale"]["summary"].get("10000")
        rss = s["server_rss_bytes"]["median"] if s else None
        rows.append(
            {
                "target": "10,000 idle sessions: server RSS < 1 GiB",
                "ratio": rss / bench_scale.TARGET_BYTES if rss else None,
                "value": f"{mib(rss):,.0f} MiB" if rss else "not measured (--quick runs 1,000 sessions only)",
                "limit": 1.0,
                "met": None if rss is None else rss < bench_scale.TARGET_BYTES,
                "upper": True,
            }
        )
    return rows


def targets_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "## Targets",
        "",
        "Ratios from this run: throughput = reliablelink's median msgs/s \u00f7 the raw case's (same size); latency "
        "= reliablelink's p50 \u00f7 raw Trio's; memory = the server's RSS with 10,000 sessions \u00f7 1 GiB.",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
    ]
    for r in rows:
        shown = r.get("value") or ratio_text(r["ratio"])
        if r.get("value") and r["ratio"] is not None:
            shown += f" ({ratio_text(r['ratio'])})"
        verdict = "not measured" if r["met"] is None else "met" if r["met"] else "**missed**"
        lines.append(f"| {r['target']} | {shown} | {verdict} |")
    return "\n".join(lines) + "\n"


def machine_markdown(info: dict[str, Any], config: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["packages"].items())
    loads = "; ".join(
        f"{part} {' / '.join(f'{x:.2f}' for x in load)}" for part, load in config["loadavg_before"].items() if load
    )
    return (
        f"Machine: {info['processor']}, {info['cpu_count']} CPUs, {info['platform']}; Python {info['python']}; "
        f"reliablelink {info['reliablelink']} ({info['git']}); {packages}.\n"
        f"Load average (1/5/15 min) before each part: {loads}.\n"
        f"Mode: {'quick' if config['quick'] else 'full'}; started {info['started']}, took "
        f"{config['duration_s']:.0f} s. Command: `{config['command']}`.\n"
        + "".join(
            f"The {part} part is from the run started {when}.\n" for part, when in config.get("reused", {}).items()
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a short run (under two minutes)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results", help="output directory"
    )
    parser.add_argument("--only", type=parse_parts, default=PARTS, help=f"comma-separated parts among {PARTS}")
    parser.add_argument("--max-wait", type=float, help="throughput: seconds to wait for an idle machine in all")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="take the parts not in --only from the <part>.json files an earlier run left in --out",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    args = parser.parse_args(argv)
    raise_nofile()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    began = time.perf_counter()
    config: dict[str, Any] = {
        "quick": args.quick,
        "parts": list(args.only),
        "command": shlex.join(["python", *sys.argv]),
        "loadavg_before": {},
    }
    document: dict[str, Any] = {"machine": info, "config": config}
    status = 0
    sections: list[str] = []
    for part in args.only:
        config["loadavg_before"][part] = loadavg()
        print(f"\n=== {part} ===", flush=True)
        if part == "throughput":
            tput_args = ["--out", str(out)]
            if args.quick:
                tput_args.append("--quick")
            max_wait = args.max_wait if args.max_wait is not None else (QUICK_MAX_WAIT if args.quick else None)
            if max_wait is not None:
                tput_args += ["--max-wait", str(max_wait)]
            status |= bench_throughput.main(tput_args)
            document["throughput"] = json.loads((out / "throughput.json").read_text())
            text = (out / "throughput.md").read_text().split("\n", 2)[2]
            sections.append(text.split("\nMachine:", 1)[0].rstrip() + "\n")
            continue
        module = {"recovery": bench_recovery, "scale": bench_scale, "memory": bench_memory}[part]
        result = module.run(quick=args.quick)
        result["machine"] = info
        write_atomically(out / f"{part}.json", json.dumps(result, indent=1) + "\n")
        text = module.markdown(result)
        write_atomically(out / f"{part}.md", f"# reliablelink {part} benchmark\n\n{text}")
        print(text, flush=True)
        document[part] = result
        sections.append(text)
        if result["errors"]:
            status = 1
    if args.reuse:
        config["reused"] = {}
        for part in PARTS:
            path = out / f"{part}.json"
            if part in args.only or not path.exists():
                continue
            earlier = json.loads(path.read_text())
            document[part] = earlier
            config["reused"][part] = earlier.get("machine", {}).get("started")
            if part == "throughput":
                text = (out / "throughput.md").read_text().split("\n", 2)[2]
                sections.insert(PARTS.index(part), text.split("\nMachine:", 1)[0].rstrip() + "\n")
            else:
                module = {"recovery": bench_recovery, "scale": bench_scale, "memory": bench_memory}[part]
                sections.insert(min(PARTS.index(part), len(sections)), module.markdown(earlier))
    config["duration_s"] = time.perf_counter() - began
    info["loadavg_after"] = loadavg()
    rows = targets(document)
    document["targets"] = rows
    plots: list[Path] = []
    if not args.no_plots:
        import plots as plotting  # noqa: PLC0415 - needs matplotlib ([bench] extra)

        plots = plotting.plot_all(document, out)
    document["plots"] = [p.name for p in plots]
    report = [
        "# reliablelink benchmark suite",
        "",
        machine_markdown(info, config),
        targets_markdown(rows),
        *sections,
    ]
    if plots:
        report += ["## Plots", "", *[f"![{p.stem}]({p.name})\n" for p in plots]]
    write_atomically(out / "results.json", json.dumps(document, indent=1) + "\n")
    write_atomically(out / "results.md", "\n".join(report))
    print("\n" + targets_markdown(rows))
    print(
        f"wrote {out / 'results.md'}, {out / 'results.json'} and {len(plots)} plot(s) in {config['duration_s']:.0f} s"
    )
    if status:
        print("\n!!!!!! SOME BENCHMARKS FAILED; see above !!!!!!", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
