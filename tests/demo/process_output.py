"""Run a ``reliablelink`` subcommand as a subprocess and read its output line by line."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable

import trio


class ProcessOutput:
    """A subprocess's merged stdout and stderr, collected line by line as it comes."""

    def __init__(self, name: str, process: trio.Process) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self.ended = False
        self._lot = trio.lowlevel.ParkingLot()

    @property
    def text(self) -> str:
        """Everything so far."""
        return "\n".join(self.lines)

    async def pump(self) -> None:
        """Read until end of file."""
        assert self.process.stdout is not None
        pending = b""
        try:
            async for chunk in self.process.stdout:
                pending += chunk
                *complete, pending = pending.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)
                self._lot.unpark_all()
            if pending:
                self.lines.append(pending.decode(errors="replace"))
        finally:
            self.ended = True
            self._lot.unpark_all()

    async def wait_for(self, what: str, predicate: Callable[[list[str]], bool]) -> None:
        """Wait until ``predicate(lines)`` holds; fail with the output if the process ends first."""
        while not predicate(self.lines):
            if self.ended:
                raise AssertionError(f"{self.name} ended before {what}; its output:\n{self.text}")
            await self._lot.park()

    async def wait_for_line(self, what: str, match: Callable[[str], bool]) -> str:
        """Wait for a line that ``match`` accepts; return it."""
        await self.wait_for(what, lambda lines: any(match(line) for line in lines))
        return next(line for line in self.lines if match(line))

    def count(self, match: Callable[[str], bool]) -> int:
        """Lines so far that ``match`` accepts."""
        return sum(1 for line in self.lines if match(line))


async def start_reliablelink(nursery: trio.Nursery, name: str, *args: str) -> ProcessOutput:
    """Start ``python -m reliablelink ARGS`` (stdin empty, stdout a pipe) and collect its output."""
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [sys.executable, "-m", "reliablelink", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
    )
    output = ProcessOutput(name, process)
    nursery.start_soon(output.pump)
    return output
