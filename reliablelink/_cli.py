"""The ``reliablelink`` command line."""

from __future__ import annotations

import argparse
import sys

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


def _keygen(args: argparse.Namespace) -> int:
    from ._keys import generate_key

    for client_id in args.client_ids:
        if any(c.isspace() for c in client_id) or not client_id:
            print(f"reliablelink keygen: client id {client_id!r} must be non-empty without spaces", file=sys.stderr)
            return 2
        print(f"{client_id} {generate_key().hex()}")
    return 0


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the exit status."""
    parser = argparse.ArgumentParser(prog="reliablelink", description="reliablelink tools and demos")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="echo server and client exchanging messages while the connection is cut and restored"
    )
    demo.add_argument("--messages", type=int, default=5000, help="messages each way (default 5000)")
    demo.add_argument("--cuts", type=int, default=30, help="connection resets during the run (default 30)")
    demo.add_argument("--size", type=int, default=64, help="message size in bytes, at least 8 (default 64)")
    demo.set_defaults(func=_demo)
    keygen = sub.add_parser("keygen", help="print new random keys as key-file lines ('client_id hexkey')")
    keygen.add_argument("client_ids", nargs="+", metavar="CLIENT_ID", help="client ids to make keys for")
    keygen.set_defaults(func=_keygen)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
