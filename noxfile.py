"""Developer tasks: ``nox -s tests``, ``tests_pythons``, ``lint``, ``docs``, ``demo``, ``fuzz``, ``bench``."""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "docs"]
nox.options.reuse_existing_virtualenvs = True
# A session whose Python is not installed fails; it is never skipped quietly.
nox.options.error_on_missing_interpreters = True

#: The supported Python versions: ``tests_pythons`` runs on each, and pyproject.toml's
#: classifiers list them (tests/unit/test_packaging.py checks that the two agree).
PYTHONS = ["3.11", "3.12", "3.13"]

#: The commands of ``nox -s lint``; .pre-commit-config.yaml runs the same ones (checked by
#: tests/unit/test_packaging.py).
LINT_COMMANDS = [
    ["ruff", "check", "reliablelink", "tests", "benchmarks", "noxfile.py"],
    ["ruff", "format", "--check", "reliablelink", "tests", "benchmarks", "noxfile.py"],
    ["mypy", "--strict", "reliablelink", "tests", "noxfile.py"],
]


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split("."))


def _put_pyenv_pythons_on_path(versions: list[str]) -> None:
    """Put the newest pyenv interpreter of each version first on PATH, if pyenv has one.

    pyenv's shims find only the versions selected (``PYENV_VERSION``, ``pyenv global``), so
    ``python3.12`` may be a shim that fails; the interpreters' own bin directories work
    whatever is selected. Versions pyenv does not have are looked up on PATH as usual.
    """
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found: list[str] = []
    for version in versions:
        candidates = [
            d
            for d in root.glob(f"{version}.*")
            if d.name.replace(".", "").isdigit() and (d / "bin" / f"python{version}").exists()
        ]
        if candidates:
            found.append(str(max(candidates, key=lambda d: _version_key(d.name)) / "bin"))
    if found:
        os.environ["PATH"] = os.pathsep.join([*found, os.environ.get("PATH", "")])


_put_pyenv_pythons_on_path(PYTHONS)


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (extra pytest arguments after ``--``)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "auto", *session.posargs)


@nox.session(python=PYTHONS)
def tests_pythons(session: nox.Session) -> None:
    """The unit, simulation and property suites on every supported Python (3.11 to 3.13).

    ``nox -s tests_pythons`` runs all three; ``nox -s tests_pythons-3.13`` one. The
    interpreters come from pyenv when it has them (see ``_put_pyenv_pythons_on_path``), else
    from PATH; a missing one fails the session.
    """
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "auto", "-q", "tests/unit", "tests/sim", "tests/property", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict."""
    session.install("-e", ".[dev]")
    for command in LINT_COMMANDS:
        session.run(*command)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation nitpicky (every cross-reference resolves), warnings as errors."""
    session.install("-e", ".[dev]")
    session.run("sphinx-build", "-n", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def demo(session: nox.Session) -> None:
    """Run the demo (arguments after ``--`` go to ``reliablelink demo``)."""
    session.install("-e", ".")
    session.run("reliablelink", "demo", *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """Long chaos sweep in simulated time (``nox -s chaos -- --seeds 100000``): that many
    seeded random-fault runs and as many hypothesis fault schedules."""
    session.install("-e", ".[test]")
    seeds = "1000"
    args = list(session.posargs)
    if "--seeds" in args:
        i = args.index("--seeds")
        seeds = args[i + 1]
        del args[i : i + 2]
    env = {"RELIABLELINK_SEEDS": seeds, "RELIABLELINK_SCHEDULES": seeds}
    session.run("pytest", "-n", "auto", "-q", "tests/sim/test_session_faults.py", "-k", "random", *args, env=env)
    # One test runs every schedule: no per-test time limit (pyproject sets 120 s).
    session.run("pytest", "-q", "--timeout=0", "tests/sim/test_fault_schedules.py", *args, env=env)


@nox.session
def fuzz(session: nox.Session) -> None:
    """Coverage-guided fuzzing with atheris (``nox -s fuzz -- -max_total_time=600``).

    Skipped, with the reason, where atheris cannot be installed (it builds against libFuzzer).
    """
    session.install("-e", ".")
    try:
        session.install("atheris")
    except nox.command.CommandFailed:
        session.skip("atheris could not be installed on this platform")
    args = session.posargs or ["-max_total_time=60"]
    session.run("python", "fuzz/fuzz_decoder.py", *args)


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite: throughput and latency against raw Trio, recovery, scale, memory
    (``nox -s bench -- --quick`` for a run under two minutes; results in benchmarks/results/)."""
    session.install("-e", ".[bench]")
    session.run("python", "benchmarks/run_all.py", *session.posargs)
