"""Command line: ``reliablelink demo`` (see ``reliablelink --help``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reliablelink`` command."""
    try:
        from ._cli import run

        return run(sys.argv[1:] if argv is None else argv)
    except KeyboardInterrupt:  # Ctrl-C while starting up, before a subcommand runs
        print("reliablelink: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
