"""Command line: ``reliablelink demo`` (see ``reliablelink --help``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``reliablelink`` command."""
    from ._cli import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
