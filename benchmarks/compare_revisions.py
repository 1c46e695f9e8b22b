"""Compare two source trees of reliablelink with ``bench_throughput.py``, runs interleaved.

Runs ``bench_throughput.py`` (TCP; sizes 64 B, 1 KiB, 16 KiB; the 64 B echo) once per tree
per round, alternately: base, head, base, head, ... for ``--rounds`` rounds. Each run gets
``PYTHONPATH=<tree>``, so the benchmark's parent and worker processes import that tree's
``reliablelink``; the benchmark script itself always comes from the head tree, so the
measuring code is the same for both. From each run's ``throughput.json`` it takes

* ``send()`` and ``send_many(256)`` msgs/s at each size, and each as a ratio to raw Trio's
  coalescing writer measured in the same run;
* the reliablelink 64 B echo p50 (pooled over the run), in µs and as a ratio to raw Trio's
  echo p50 in the same run,

and reports, per figure, the base's median [min-max] over the rounds against the head's,
with a verdict: *better* / *worse* when the head's median lies outside the base's range
(above its max or below its min, the good side depending on the figure), else *within
spread*.

Usage::

    python benchmarks/compare_revisions.py --base-rev e1587a9 --head . [--rounds 3]
    python benchmarks/compare_revisions.py --base /path/to/old --head /path/to/new --quick

Writes ``compare.json``, ``compare.md`` and every run's own ``throughput.json`` /
``throughput.md`` (under ``runs/``) to ``--out`` (default ``benchmarks/results/compare/``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

HERE: Final = Path(__file__).resolve().parent
SIZES: Final = (64, 1024, 16 * 1024)
CASES: Final = {"send": "send()", "send_many": "send_many(256)"}
DASH: Final = "\u2013"
BENCH: Final = Path("benchmarks") / "bench_throughput.py"
#: Modules of the head's benchmarks/ whose ``reliablelink.<name>`` uses are checked against each tree.
BENCH_MODULES: Final = ("bench_throughput.py", "bench_common.py")


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    label: str
    unit: str
    #: True: a larger value is better (throughput); False: smaller is better (latency).
    higher_is_better: bool
    fmt: str


def metrics() -> list[Metric]:
    out: list[Metric] = []
    for size in SIZES:
        for case, name in CASES.items():
            label = f"{name} {size_label(size)}"
            out.append(Metric(f"{case}_{size}_msgs_per_s", f"{label} msgs/s", "msgs/s", True, "{:,.0f}"))
            out.append(Metric(f"{case}_{size}_vs_coalesce", f"{label} \u00f7 raw coalescing", "\u00d7", True, "{:.3f}"))
    out.append(Metric("echo_p50_us", "echo 64 B p50 \u00b5s", "\u00b5s", False, "{:.1f}"))
    out.append(Metric("echo_p50_vs_raw", "echo 64 B p50 \u00f7 raw Trio echo p50", "\u00d7", False, "{:.3f}"))
    return out


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


# -- the trees -------------------------------------------------------------------------


def check_tree(tree: Path) -> None:
    if not (tree / "reliablelink" / "__init__.py").is_file():
        raise SystemExit(f"{tree}: no reliablelink/ package there")


@contextlib.contextmanager
def worktree_of(rev: str, repo: Path) -> Iterator[Path]:
    """A temporary detached ``git worktree`` of ``rev``, removed again afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="rl-compare-"))
    path = parent / "base"
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(path), rev], check=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(path)], check=False)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], check=False)
        with contextlib.suppress(OSError):
            parent.rmdir()


def git_state(tree: Path) -> str:
    """``<commit>`` plus a note when ``reliablelink/`` has uncommitted changes; or why not known."""
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "reliablelink"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"{head}{' + uncommitted changes in reliablelink/' if dirty else ''}"


def names_used(bench_dir: Path) -> list[str]:
    found: set[str] = set()
    for module in BENCH_MODULES:
        found |= set(re.findall(r"\breliablelink\.([A-Za-z_]\w*)", (bench_dir / module).read_text()))
    return sorted(found)


def probe(tree: Path, bench_dir: Path, python: str) -> dict[str, Any]:
    """Import ``reliablelink`` the way the benchmark will (script dir first, then PYTHONPATH)
    and check that every ``reliablelink.<name>`` the benchmark uses exists in that tree."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(bench_dir)!r})\n"
        "import reliablelink\n"
        "names = json.loads(sys.argv[1])\n"
        "print(json.dumps({'file': reliablelink.__file__, 'version': getattr(reliablelink, '__version__', None),"
        " 'missing': [n for n in names if not hasattr(reliablelink, n)]}))\n"
    )
    done = subprocess.run(
        [python, "-c", code, json.dumps(names_used(bench_dir))],
        env=tree_env(tree),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"cannot import reliablelink from {tree}:\n{done.stderr}")
    found: dict[str, Any] = json.loads(done.stdout)
    imported = Path(found["file"]).resolve()
    if not imported.is_relative_to(tree.resolve()):
        raise SystemExit(f"with PYTHONPATH={tree} reliablelink is imported from {imported}, not from that tree")
    if found["missing"]:
        raise SystemExit(f"{tree}: reliablelink lacks {', '.join(found['missing'])}, which the benchmark uses")
    return {"path": str(tree), "git": git_state(tree), "imports": str(imported), "version": found["version"]}


def tree_env(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree.resolve())
    env.pop("PYTHONHOME", None)
    return env


# -- running and reading the benchmark --------------------------------------------------


def run_bench(tree: Path, script: Path, out: Path, extra: list[str], python: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "throughput.json"
    json_path.unlink(missing_ok=True)
    command = [python, str(script), "--sizes", ",".join(map(str, SIZES)), "--out", str(out), *extra]
    began = time.perf_counter()
    with (out / "stdout.log").open("w") as log:
        code = subprocess.run(
            command, env=tree_env(tree), cwd=tempfile.gettempdir(), stdout=log, stderr=subprocess.STDOUT, check=False
        ).returncode
    took = time.perf_counter() - began
    if not json_path.is_file():
        raise SystemExit(f"{shlex.join(command)} wrote no {json_path} (exit {code}); see {out / 'stdout.log'}")
    document = json.loads(json_path.read_text())
    return {"exit": code, "wall_s": took, "figures": figures(document), "noise": document["machine"]["noise"]}


def figures(document: dict[str, Any]) -> dict[str, float | None]:
    """One run's figures (None where the run has no value, e.g. a failed case)."""
    rows = {(r["transport"], r["case"], r["size"]): r for r in document["summary"]["throughput"]}
    out: dict[str, float | None] = {}
    for size in SIZES:
        for case in CASES:
            row = rows.get(("tcp", case, size), {})
            out[f"{case}_{size}_msgs_per_s"] = row.get("median_msgs_per_s")
            out[f"{case}_{size}_vs_coalesce"] = row.get("ratio_vs_coalesce")
    lat = {(r["transport"], r["case"]): r for r in document["summary"]["latency"]}
    mine, raw = lat.get(("tcp", "reliablelink"), {}), lat.get(("tcp", "raw"), {})
    out["echo_p50_us"] = mine.get("p50_us")
    out["echo_p50_vs_raw"] = mine["p50_us"] / raw["p50_us"] if mine.get("p50_us") and raw.get("p50_us") else None
    return out


# -- comparing ------------------------------------------------------------------------


def spread(values: list[float | None]) -> dict[str, Any]:
    ok = [v for v in values if v is not None]
    if not ok:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(ok), "min": min(ok), "max": max(ok), "n": len(ok)}


def verdict(metric: Metric, base: dict[str, Any], head: dict[str, Any]) -> str:
    if base["median"] is None or head["median"] is None:
        return "n/a"
    if head["median"] > base["max"]:
        return "better" if metric.higher_is_better else "worse"
    if head["median"] < base["min"]:
        return "worse" if metric.higher_is_better else "better"
    return "within spread"


def compare(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for metric in metrics():
        base = spread([r["figures"][metric.key] for r in runs if r["tree"] == "base"])
        head = spread([r["figures"][metric.key] for r in runs if r["tree"] == "head"])
        rows.append(
            {
                "metric": metric.key,
                "label": metric.label,
                "higher_is_better": metric.higher_is_better,
                "base": base,
                "head": head,
                "head_vs_base": head["median"] / base["median"] if base["median"] and head["median"] else None,
                "verdict": verdict(metric, base, head),
            }
        )
    return rows


def cell(metric: Metric, stats: dict[str, Any]) -> str:
    if stats["median"] is None:
        return "n/a"
    f = metric.fmt.format
    return f"{f(stats['median'])} [{f(stats['min'])}{DASH}{f(stats['max'])}]"


def markdown(result: dict[str, Any]) -> str:
    by_key = {m.key: m for m in metrics()}
    base, head = result["trees"]["base"], result["trees"]["head"]
    lines = [
        "# reliablelink: base vs head, bench_throughput.py interleaved",
        "",
        f"- base: `{base['path']}` ({base['git']}){' = ' + result['base_rev'] if result.get('base_rev') else ''}",
        f"- head: `{head['path']}` ({head['git']}); the benchmark script is the head's",
        f"- {result['rounds']} rounds (base, head, base, head, ...); bench_throughput options: "
        f"`{shlex.join(result['bench_args']) or '(defaults)'}`; took {result['duration_s']:.0f} s",
        "",
        "Each cell: median [min\u2013max] over the rounds of one run's figure (itself a median over the "
        "run's samples). Ratios are against raw Trio measured in the same run. Verdict: the head's median "
        "above the base's max or below its min is *better* or *worse* (higher is better for throughput, "
        "lower for latency); otherwise *within spread*.",
        "",
        "| metric | base | head | head \u00f7 base | verdict |",
        "|---|---:|---:|---:|---|",
    ]
    for row in result["comparison"]:
        metric = by_key[row["metric"]]
        ratio = "n/a" if row["head_vs_base"] is None else f"{row['head_vs_base']:.3f}"
        lines.append(
            f"| {row['label']} | {cell(metric, row['base'])} | {cell(metric, row['head'])} | {ratio} "
            f"| {row['verdict']} |"
        )
    lines += ["", "## Runs", "", "| # | tree | took s | exit | noisy samples kept / retaken | max background |"]
    lines.append("|---:|---|---:|---:|---:|---:|")
    for i, run in enumerate(result["runs"], 1):
        noise = run["noise"]
        background = noise.get("max_background_cores")
        shown = "n/a" if background is None else f"{background:.0%} of a core"
        lines.append(
            f"| {i} | {run['tree']} | {run['wall_s']:.0f} | {run['exit']} | {noise['noisy_kept']} / "
            f"{noise['discarded']} | {shown} |"
        )
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--base", type=Path, help="the base source tree (a checkout containing reliablelink/)")
    which.add_argument("--base-rev", help="a git revision: measured in a temporary git worktree")
    parser.add_argument("--head", type=Path, required=True, help="the head source tree; its benchmark script is run")
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="git repository for --base-rev (default: ours)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per tree, alternating (default 3)")
    parser.add_argument(
        "--out", type=Path, default=HERE / "results" / "compare", help="output directory (default results/compare)"
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for the runs (default: this one)")
    parser.add_argument("--quick", action="store_true", help="passed to bench_throughput.py")
    parser.add_argument("--scale", type=float, help="passed to bench_throughput.py")
    parser.add_argument("--repeats", type=int, help="passed to bench_throughput.py")
    parser.add_argument("--max-wait", type=float, help="passed to bench_throughput.py")
    parser.add_argument("--retries", type=int, help="passed to bench_throughput.py")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def bench_args(args: argparse.Namespace) -> list[str]:
    extra = ["--quick"] if args.quick else []
    for name in ("scale", "repeats", "max_wait", "retries"):
        value = getattr(args, name)
        if value is not None:
            extra += [f"--{name.replace('_', '-')}", str(value)]
    return extra


def run_all(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    head: Path = args.head.resolve()
    check_tree(base)
    check_tree(head)
    script = head / BENCH
    if not script.is_file():
        raise SystemExit(f"{script} not found: the head tree must hold {BENCH}")
    trees = {"base": probe(base, script.parent, args.python), "head": probe(head, script.parent, args.python)}
    extra = bench_args(args)
    began = time.perf_counter()
    runs: list[dict[str, Any]] = []
    for rnd in range(1, args.rounds + 1):
        for name, tree in (("base", base), ("head", head)):
            print(f"[round {rnd}/{args.rounds}] {name}: {tree}", flush=True)
            run = run_bench(tree, script, args.out / "runs" / f"round{rnd}-{name}", extra, args.python)
            run.update(tree=name, round=rnd)
            runs.append(run)
            print(f"  took {run['wall_s']:.0f} s, exit {run['exit']}", flush=True)
    return {
        "base_rev": args.base_rev,
        "trees": trees,
        "rounds": args.rounds,
        "bench_script": str(script),
        "bench_args": ["--sizes", ",".join(map(str, SIZES)), *extra],
        "python": args.python,
        "command": shlex.join(["python", *sys.argv]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "duration_s": time.perf_counter() - began,
        "runs": runs,
        "comparison": compare(runs),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(worktree_of(args.base_rev, args.repo)) if args.base_rev else args.base.resolve()
        result = run_all(args, base)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    table = markdown(result)
    (args.out / "compare.md").write_text(table, encoding="utf-8")
    print()
    print(table, end="")
    print(f"\nwrote {args.out / 'compare.json'} and {args.out / 'compare.md'}")
    failed = [i for i, r in enumerate(result["runs"], 1) if r["exit"]]
    if failed:
        print(f"\nrun(s) {', '.join(map(str, failed))} exited non-zero; see their stdout.log", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
