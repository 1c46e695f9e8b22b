"""The ``reliablelink`` command line."""

from __future__ import annotations

import argparse
import functools
import logging
import math
import random
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

_T = TypeVar("_T")


class _CommandError(Exception):
    """A subcommand failed; the reason is already on standard error."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _run_trio(command: str, async_fn: Callable[[], Awaitable[_T]], *, hint: str = "") -> _T:
    """``trio.run(async_fn)``, with the errors a user can act on reported in one line.

    A bad URL (``ValueError``), a port in use or an unreachable path (``OSError``) and a
    refused key (:class:`~reliablelink.AuthenticationError`) are printed as
    ``reliablelink COMMAND: message (hint)`` instead of an exception group's traceback, and
    raised as :class:`_CommandError` with status 2. Anything else keeps its traceback; a
    Ctrl-C comes out as a plain ``KeyboardInterrupt``.
    """
    from ._errors import ReliableLinkError

    try:
        return trio.run(async_fn)
    except Exception as exc:
        leaves = _leaves(exc)
        if not all(isinstance(leaf, (OSError, ValueError, ReliableLinkError)) for leaf in leaves):
            raise
        suffix = f" ({hint})" if hint else ""
        for message in dict.fromkeys(str(leaf) or type(leaf).__name__ for leaf in leaves):
            print(f"reliablelink {command}: {message}{suffix}", file=sys.stderr)
        raise _CommandError(2) from None
    except BaseExceptionGroup as group:
        if all(isinstance(leaf, KeyboardInterrupt) for leaf in _leaves(group)):
            raise KeyboardInterrupt from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, exception groups unwrapped."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo_command
    from .demo.views import make_view

    # The demo reports expiries and reconnects itself; the library's own warnings about
    # them would only repeat that.
    logging.getLogger("reliablelink").setLevel(logging.ERROR)
    view = make_view(plain=args.plain)
    try:
        report = _run_trio(
            "demo",
            functools.partial(
                run_demo_command,
                view,
                duration=args.duration,
                agents=args.agents,
                visitors=args.visitors,
                seed=args.seed,
            ),
        )
    except _CommandError as exc:
        view.stop()
        return exc.status
    if report is None:
        return 130  # interrupted twice
    for line in report.lines():
        view.line(line)
    return 0 if report.ok else 1


def _demo_server(args: argparse.Namespace) -> int:
    from ._keys import load_key_file
    from .demo.server import DemoServerSettings, run_demo_server

    try:
        keys = load_key_file(args.keys)
    except (OSError, ValueError) as exc:
        print(f"reliablelink demo-server: cannot read the keys: {exc}", file=sys.stderr)
        return 2
    if not keys:
        print(
            f"reliablelink demo-server: no keys in {args.keys} (make some with 'reliablelink keygen')", file=sys.stderr
        )
        return 2
    _log_warnings()
    settings = DemoServerSettings(
        listen=args.listen,
        keys=keys,
        visitors=args.visitors,
        duration=args.duration,
        seed=random.randrange(1_000_000) if args.seed is None else args.seed,
        heartbeat_interval=args.heartbeat,
        session_ttl=args.session_ttl,
    )
    try:
        return _run_trio("demo-server", functools.partial(run_demo_server, settings), hint=f"--listen {args.listen}")
    except _CommandError as exc:
        return exc.status


def _demo_agent(args: argparse.Namespace) -> int:
    from .demo.desk import DemoAgentSettings, run_demo_agent

    try:
        key = _read_key(args.key, args.id)
    except (OSError, ValueError) as exc:
        print(f"reliablelink demo-agent: bad --key: {exc}", file=sys.stderr)
        return 2
    _log_warnings()
    settings = DemoAgentSettings(
        url=args.connect,
        agent=args.id,
        key=key,
        interactive=sys.stdin.isatty() and not args.scripted,
        duration=args.duration,
        heartbeat_interval=args.heartbeat,
    )
    try:
        return _run_trio(
            "demo-agent", functools.partial(run_demo_agent, settings), hint=f"--id {args.id}, --connect {args.connect}"
        )
    except _CommandError as exc:
        return exc.status


def _read_key(value: str, client_id: str) -> bytes:
    """``--key``: a key in hex or base64, or ``@FILE``: a key file (the line for
    ``client_id``) or a file holding just the key."""
    from pathlib import Path

    from ._keys import load_key_file, parse_key

    if not value.startswith("@"):
        return parse_key(value)
    path = value[1:]
    try:
        keys = load_key_file(path)
    except ValueError:
        return parse_key(Path(path).read_text(encoding="utf-8"))
    if client_id not in keys:
        raise ValueError(f"{path} has no key for {client_id!r}")
    return keys[client_id]


def _log_warnings() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")


def _echo_demo(args: argparse.Namespace) -> int:
    from .demo.echo import echo_with_cuts

    try:
        report = _run_trio(
            "echo-demo", functools.partial(echo_with_cuts, messages=args.messages, cuts=args.cuts, size=args.size)
        )
    except _CommandError as exc:
        return exc.status
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


def _at_least(low: float, convert: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse type: ``convert(text)``, refused below ``low``."""

    def parse(text: str) -> float:
        value = convert(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {value:g}")
        return value

    return parse


_count = _at_least(1, int)


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the exit status."""
    parser = argparse.ArgumentParser(prog="reliablelink", description="reliablelink tools and demos")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_echo_demo(sub)
    _add_demo_server(sub)
    _add_demo_agent(sub)
    _add_chaos_proxy(sub)
    keygen = sub.add_parser("keygen", help="print new random keys as key-file lines ('client_id hexkey')")
    keygen.add_argument("client_ids", nargs="+", metavar="CLIENT_ID", help="client ids to make keys for")
    keygen.set_defaults(func=_keygen)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reliablelink")
    except PackageNotFoundError:
        return "(version unknown: not installed)"


def _add_chaos_proxy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = sub.add_parser(
        "chaos-proxy",
        help="a TCP proxy that adds latency, caps bandwidth, slices, blackholes and resets connections",
        description="Forward --listen to --upstream and misbehave. Toxics: latency=S, jitter=S, bandwidth=BYTES_PER_S, "
        "segment=N, blackhole=to_server|to_client|both, reset_after=BYTES, slow_close=S, refuse=1.",
    )
    proxy.add_argument("--listen", required=True, help="tcp://host:port to listen on")
    proxy.add_argument("--upstream", required=True, help="tcp://host:port of the real server")
    proxy.add_argument("--toxic", action="append", default=[], metavar="NAME=VALUE", help="a toxic (repeatable)")
    proxy.add_argument("--kill-every", type=float, metavar="SECONDS", help="reset every connection this often")
    proxy.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    proxy.set_defaults(func=_chaos_proxy)


def _chaos_proxy(args: argparse.Namespace) -> int:
    from .testing._proxy_cli import parse_toxics, run_proxy

    try:
        toxics = parse_toxics(args.toxic)
    except ValueError as exc:
        print(f"reliablelink chaos-proxy: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_trio(
            "chaos-proxy",
            functools.partial(run_proxy, args.listen, args.upstream, toxics, args.kill_every, args.duration),
            hint=f"--listen {args.listen}",
        )
    except _CommandError as exc:
        return exc.status
    except KeyboardInterrupt:
        return 0


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo",
        help="customer service in one process: a server, agents behind chaos proxies, visitors; cables pulled",
        description=(
            "A server routes visitor chats to agents whose links run through chaos proxies; cables are pulled "
            "and restored on a seeded schedule (one pull outlasts session_ttl: the session expires and its "
            "conversations go to another agent). Ends with a ledger of every message both ways; exit status 0 "
            "only if nothing was lost, duplicated or reordered."
        ),
    )
    demo.add_argument("--duration", type=_at_least(3.0), default=10.0, help="seconds of chatting (default 10)")
    demo.add_argument("--agents", type=_count, default=3, help="agents, each behind its own proxy (default 3)")
    demo.add_argument("--visitors", type=_count, default=6, help="visitors chatting at once (default 6)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the pulls and chats (default: random)")
    demo.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    demo.set_defaults(func=_demo)


def _add_echo_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    echo = sub.add_parser(
        "echo-demo",
        help="echo server and client exchanging messages while the connection is cut and restored",
        description=(
            "A client streams numbered messages to an echo server in the same process, through a chaos proxy "
            "that resets the connection --cuts times, spread evenly over the run, each with messages in flight "
            "both ways. Both directions are checked against a ledger; exit status 0 only if nothing was lost, "
            "duplicated or reordered and every cut happened."
        ),
    )
    echo.add_argument("--messages", type=int, default=5000, help="messages each way (default 5000)")
    echo.add_argument("--cuts", type=int, default=30, help="connection resets during the run (default 30)")
    echo.add_argument(
        "--size", type=_at_least(8, int), default=64, help="message size in bytes, at least 8 (default 64)"
    )
    echo.set_defaults(func=_echo_demo)


def _add_demo_server(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = sub.add_parser(
        "demo-server",
        help="customer-service server with simulated visitors, for agents started with demo-agent",
        description=(
            "Listens for agents, simulates visitors and routes their chats to the agents online; an agent whose "
            "session expires has its unanswered conversations handed to another agent. The first line printed is "
            "'listening on URL'. Ctrl-C stops cleanly (the agents end too) and prints the ledger; exit status 0 "
            "only if every visitor message got exactly one answer, in order."
        ),
    )
    server.add_argument("--listen", required=True, metavar="URL", help="where to listen, e.g. tcp://0.0.0.0:7000")
    server.add_argument("--keys", required=True, metavar="FILE", help="key file of the agents (see keygen)")
    server.add_argument("--visitors", type=_count, default=3, help="visitors chatting at once (default 3)")
    server.add_argument("--duration", type=_at_least(0.1), default=math.inf, help="stop after SECONDS")
    server.add_argument("--seed", type=int, default=None, help="seed of the visitors' chats")
    server.add_argument("--heartbeat", type=_at_least(0.05), default=1.0, help="heartbeat seconds (default 1)")
    server.add_argument("--session-ttl", type=_at_least(0.1), default=30.0, help="seconds (default 30)")
    server.set_defaults(func=_demo_server)


def _add_demo_agent(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    agent = sub.add_parser(
        "demo-agent",
        help="an agent desk for demo-server: shows visitors' messages and answers them",
        description=(
            "Connects to demo-server and answers every visitor message: typed answers on a terminal (an empty "
            "line sends the scripted one), scripted answers otherwise. Pull the cable: it reconnects and resumes "
            "with nothing lost. Ends with Ctrl-C, --duration, or when the server closes the session."
        ),
    )
    agent.add_argument("--connect", required=True, metavar="URL", help="the server, e.g. tcp://host:7000")
    agent.add_argument("--id", required=True, help="this agent's id, as in the server's key file")
    agent.add_argument("--key", required=True, metavar="KEY|@FILE", help="the key (hex or base64) or @keyfile")
    agent.add_argument("--duration", type=_at_least(0.1), default=math.inf, help="stop after SECONDS")
    agent.add_argument("--heartbeat", type=_at_least(0.05), default=1.0, help="heartbeat seconds (default 1)")
    agent.add_argument("--scripted", action="store_true", help="scripted answers even on a terminal")
    agent.set_defaults(func=_demo_agent)
