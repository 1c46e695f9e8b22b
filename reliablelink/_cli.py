"""The ``reliablelink`` command line."""

from __future__ import annotations

import argparse

import trio


def _demo(args: argparse.Namespace) -> int:
    from .demo._echo import echo_with_cuts

    report = trio.run(lambda: echo_with_cuts(messages=args.messages, cuts=args.cuts, size=args.size))
    print(report.upstream.line("client -> server"))
    print(report.downstream.line("server -> client"))
    print(f"connections reset: {report.cuts}, reconnects: {report.reconnects}, messages resent: {report.resent}")
    total_sent = report.upstream.sent + report.downstream.sent
    up, down = report.upstream, report.downstream
    print(
        f"ledger: sent {total_sent}, delivered {up.delivered + down.delivered}, lost {up.lost + down.lost}, "
        f"duplicated {up.duplicated + down.duplicated}, reordered {up.reordered + down.reordered}"
    )
    return 0 if report.exact and report.cuts >= args.cuts else 1


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the exit status."""
    parser = argparse.ArgumentParser(prog="reliablelink", description="reliablelink tools and demos")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="echo server and client exchanging messages while the connection is cut and restored"
    )
    demo.add_argument("--messages", type=int, default=5000, help="messages each way (default 5000)")
    demo.add_argument("--cuts", type=int, default=20, help="connection resets during the run (default 20)")
    demo.add_argument("--size", type=int, default=64, help="message size in bytes, at least 8 (default 64)")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
