"""Developer tasks: ``nox -s tests``, ``lint``, ``docs``, ``demo``, ``fuzz``, ``bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "docs"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite (extra pytest arguments after ``--``)."""
    session.install("-e", ".[test]")
    session.run("pytest", "-n", "auto", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", "reliablelink", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "reliablelink", "tests", "benchmarks", "noxfile.py")
    session.run("mypy", "--strict", "reliablelink", "tests", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors."""
    session.install("-e", ".[dev]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


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
