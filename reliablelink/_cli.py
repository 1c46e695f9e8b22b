"""The ``reliablelink`` command line.

Every subcommand ends with one of the :class:`ExitCode` statuses, listed in one place
(:data:`EXIT_CODES`, shown by ``reliablelink --help`` and in the docs). A mistake a user can
act on (a bad URL, a port in use, a refused key, a server out of reach, a missing key file,
Ctrl-C) is reported as one line on standard error, ``reliablelink COMMAND: what happened;
what to do``, never as a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import enum
import errno
import functools
import logging
import math
import random
import socket
import sys
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

import trio

_T = TypeVar("_T")


class ExitCode(enum.IntEnum):
    """The exit statuses of ``reliablelink`` and its subcommands."""

    OK = 0
    FAILED = 1
    USAGE = 2
    REFUSED = 3
    UNREACHABLE = 4
    CANNOT_LISTEN = 5
    INTERRUPTED = 130


EXIT_CODES: dict[ExitCode, str] = {
    ExitCode.OK: "the run ended and its check passed (the demos: the ledger is exact)",
    ExitCode.FAILED: "the run ended and its check failed: a ledger that is not exact, or a run too short to "
    "check anything",
    ExitCode.USAGE: "a bad option, URL, key or key file",
    ExitCode.REFUSED: "the server refused the credentials: a wrong key, or a client id it does not know",
    ExitCode.UNREACHABLE: "the server (or the proxy's upstream) could not be reached",
    ExitCode.CANNOT_LISTEN: "cannot listen on the address: in use, not an address of this machine, or not allowed",
    ExitCode.INTERRUPTED: "stopped by Ctrl-C before it could finish (a second Ctrl-C, or one during start-up)",
}


def _exit_codes_epilog() -> str:
    lines = ["exit status:"]
    for code, text in EXIT_CODES.items():
        lines.append(textwrap.fill(text, 78, initial_indent=f"  {int(code):>3}  ", subsequent_indent=" " * 7))
    return "\n".join(lines)


class _CommandError(Exception):
    """A subcommand failed; the reason is already on standard error."""

    def __init__(self, status: ExitCode) -> None:
        super().__init__(status)
        self.status = status


def _say_error(command: str, message: str) -> None:
    print(f"reliablelink {command}: {message}", file=sys.stderr, flush=True)


def _fail(command: str, status: ExitCode, message: str) -> int:
    """Print ``reliablelink COMMAND: message`` on standard error; return ``status``."""
    _say_error(command, message)
    return status


@dataclass(frozen=True, slots=True)
class _Where:
    """What a subcommand was pointed at, to say which option a one-line error is about."""

    listen: str | None = None
    connect: str | None = None
    client_id: str | None = None


def _explain(exc: BaseException, where: _Where) -> tuple[ExitCode, str] | None:
    """The exit status and the one line for an error a user can act on; ``None``: a bug."""
    from ._errors import AuthenticationError, ConnectionFailed
    from .demo.chat import NothingChecked

    if isinstance(exc, NothingChecked):
        return ExitCode.FAILED, str(exc)
    if isinstance(exc, AuthenticationError):
        return ExitCode.REFUSED, (
            f"{exc}; a wrong key, or a client id the server does not know: check that --id {where.client_id} "
            f"and --key match a line of the server's key file (--connect {where.connect})"
        )
    if isinstance(exc, ConnectionFailed):
        return ExitCode.UNREACHABLE, f"{exc}; is the server running, and is --connect {where.connect} right?"
    if isinstance(exc, ValueError):
        option = f"--listen {where.listen}" if where.listen is not None else f"--connect {where.connect}"
        return ExitCode.USAGE, f"{exc} ({option})"
    if isinstance(exc, OSError) and where.listen is not None:
        return ExitCode.CANNOT_LISTEN, f"{_os_reason(exc)}{_listen_advice(exc)} (--listen {where.listen})"
    return None


def _os_reason(exc: OSError) -> str:
    return exc.strerror if exc.errno is not None and exc.strerror else str(exc)


def _listen_advice(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return "; check the host name"
    return {
        errno.EADDRINUSE: "; another program listens there: stop it, or pick another port",
        errno.EACCES: "; not allowed here (ports below 1024 need privileges): pick another port or path",
        errno.EADDRNOTAVAIL: "; that is not an address of this machine: use 127.0.0.1, 0.0.0.0 or one of its own",
        errno.ENOENT: "; create the directory, or pick another path",
    }.get(exc.errno or 0, "")


def _run_trio(command: str, async_fn: Callable[[], Awaitable[_T]], where: _Where) -> _T:
    """``trio.run(async_fn)``, with the errors a user can act on reported in one line.

    Raises:
        _CommandError: an error :func:`_explain` knows, already reported on standard error.
        KeyboardInterrupt: Ctrl-C reached it (before its own signal handling, or forced).
    """
    try:
        return trio.run(async_fn)
    except (Exception, BaseExceptionGroup) as exc:
        leaves = [leaf for leaf in _leaves(exc) if not isinstance(leaf, trio.Cancelled)]
        if leaves and all(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            raise KeyboardInterrupt from None
        explained = [_explain(leaf, where) for leaf in leaves]
        first = explained[0] if explained else None
        if first is None or any(e is None for e in explained):
            raise
        _say_error(command, first[1])
        raise _CommandError(first[0]) from None


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc``, exception groups unwrapped."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _url_problem(url: str, *, tcp_only: bool = False) -> str | None:
    """Why ``url`` cannot work (``None``: it may), found before anything starts."""
    from .transports import get_transport

    try:
        if tcp_only:
            parts = urlsplit(url)
            if parts.scheme != "tcp" or not parts.hostname or parts.port is None:
                return f"expected tcp://host:port, got {url!r} (the proxy forwards TCP: give a server's host and port)"
            return None
        _, parts = get_transport(url)
        if parts.scheme in ("tcp", "tls") and (not parts.hostname or parts.port is None):
            return f"a {parts.scheme}:// URL needs a host and a port, got {url!r}"
    except ValueError as exc:  # also a port that is not a number
        return str(exc)
    return None


def _demo(args: argparse.Namespace) -> int:
    from .demo.run import run_demo_command
    from .demo.views import make_view

    if args.log_level is None:
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
            _Where(),
        )
    except _CommandError as exc:
        view.stop()
        return exc.status
    except KeyboardInterrupt:
        view.stop()
        raise
    if report is None:
        return _fail("demo", ExitCode.INTERRUPTED, "stopped at once by a second Ctrl-C; nothing was checked")
    for line in report.lines():
        view.line(line)
    return ExitCode.OK if report.ok else ExitCode.FAILED


def _demo_server(args: argparse.Namespace) -> int:
    from ._keys import load_key_file
    from .demo.server import DemoServerSettings, run_demo_server

    command = "demo-server"
    if problem := _url_problem(args.listen):
        return _fail(command, ExitCode.USAGE, f"{problem} (--listen {args.listen})")
    try:
        keys = load_key_file(args.keys)
    except (OSError, ValueError) as exc:
        return _fail(command, ExitCode.USAGE, f"cannot read the keys: {exc}")
    if not keys:
        return _fail(command, ExitCode.USAGE, f"no keys in {args.keys} (make some with 'reliablelink keygen')")
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
        return _run_trio(command, functools.partial(run_demo_server, settings), _Where(listen=args.listen))
    except _CommandError as exc:
        return exc.status


def _demo_agent(args: argparse.Namespace) -> int:
    from .demo.desk import DemoAgentSettings, run_demo_agent

    command = "demo-agent"
    if problem := _url_problem(args.connect):
        return _fail(command, ExitCode.USAGE, f"{problem} (--connect {args.connect})")
    try:
        key = _read_key(args.key, args.id)
    except (OSError, ValueError) as exc:
        return _fail(command, ExitCode.USAGE, f"bad --key: {exc}")
    settings = DemoAgentSettings(
        url=args.connect,
        agent=args.id,
        key=key,
        interactive=sys.stdin.isatty() and not args.scripted,
        duration=args.duration,
        heartbeat_interval=args.heartbeat,
        connect_timeout=args.connect_timeout,
        retry_report=min(3.0, args.connect_timeout),
    )
    try:
        return _run_trio(
            command, functools.partial(run_demo_agent, settings), _Where(connect=args.connect, client_id=args.id)
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


def _configure_logging(level: str | None) -> None:
    """Log lines go to standard error: WARNING and above, or from ``--log-level`` up."""
    if level is None:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    else:
        logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _echo_demo(args: argparse.Namespace) -> int:
    from .demo.echo import echo_with_cuts

    try:
        report = _run_trio(
            "echo-demo",
            functools.partial(echo_with_cuts, messages=args.messages, cuts=args.cuts, size=args.size),
            _Where(),
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
    return ExitCode.OK if report.exact and report.cuts >= args.cuts else ExitCode.FAILED


def _keygen(args: argparse.Namespace) -> int:
    from ._keys import generate_key

    for client_id in args.client_ids:
        if any(c.isspace() for c in client_id) or not client_id:
            return _fail("keygen", ExitCode.USAGE, f"client id {client_id!r} must be non-empty without spaces")
        print(f"{client_id} {generate_key().hex()}")
    return ExitCode.OK


def _at_least(low: float, convert: Callable[[str], float] = float) -> Callable[[str], float]:
    """An argparse type: ``convert(text)``, refused below ``low``."""

    def parse(text: str) -> float:
        value = convert(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {value:g}")
        return value

    return parse


_count = _at_least(1, int)

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def run(argv: list[str]) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return _fail(args.command, ExitCode.INTERRUPTED, "interrupted (Ctrl-C) before it could finish")
    return int(result)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reliablelink",
        description="reliablelink tools and demos",
        epilog=_exit_codes_epilog(),
        formatter_class=_DescriptionWrapped,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=_LOG_LEVELS,
        default=None,
        metavar="LEVEL",
        help=f"show the library's log lines from LEVEL up ({', '.join(_LOG_LEVELS)}; default: warnings only)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_echo_demo(sub)
    _add_demo_server(sub)
    _add_demo_agent(sub)
    _add_chaos_proxy(sub)
    keygen = _add_parser(
        sub, "keygen", help="print new random keys as key-file lines ('client_id hexkey')", description=""
    )
    keygen.add_argument("client_ids", nargs="+", metavar="CLIENT_ID", help="client ids to make keys for")
    keygen.set_defaults(func=_keygen)
    return parser


def _add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, *, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with the exit statuses."""
    return sub.add_parser(
        name,
        help=help,
        description=description or None,
        epilog=_exit_codes_epilog(),
        formatter_class=_DescriptionWrapped,
    )


class _DescriptionWrapped(argparse.HelpFormatter):
    """Wraps the description to the terminal; keeps the epilog's lines (the exit statuses) as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit status:"):
            return text
        return super()._fill_text(text, width, indent)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("reliablelink")
    except PackageNotFoundError:
        return "(version unknown: not installed)"


def _add_chaos_proxy(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = _add_parser(
        sub,
        "chaos-proxy",
        help="a TCP proxy that adds latency, caps bandwidth, slices, blackholes and resets connections",
        description="Forward --listen to --upstream and misbehave. Toxics: latency=S, jitter=S, bandwidth=BYTES_PER_S, "
        "segment=N, blackhole=to_server|to_client|both, reset_after=BYTES, slow_close=S, refuse=1. "
        "While it runs, SIGUSR1 pulls the cable (open connections go silent, new ones are refused) and "
        "SIGUSR2 restores it; on a terminal the keys p (pull), r (restore), k (reset every connection) and "
        "q (quit) do the same. Ctrl-C stops it and prints a summary.",
    )
    proxy.add_argument("--listen", required=True, help="tcp://host:port to listen on")
    proxy.add_argument("--upstream", required=True, help="tcp://host:port of the real server")
    proxy.add_argument("--toxic", action="append", default=[], metavar="NAME=VALUE", help="a toxic (repeatable)")
    proxy.add_argument("--kill-every", type=float, metavar="SECONDS", help="reset every connection this often")
    proxy.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long (default: Ctrl-C)")
    proxy.set_defaults(func=_chaos_proxy)


def _chaos_proxy(args: argparse.Namespace) -> int:
    from .testing._proxy_cli import keys_available, parse_toxics, run_proxy

    command = "chaos-proxy"
    for option, url in (("--listen", args.listen), ("--upstream", args.upstream)):
        if problem := _url_problem(url, tcp_only=True):
            return _fail(command, ExitCode.USAGE, f"{option}: {problem}")
    try:
        toxics = parse_toxics(args.toxic)
    except ValueError as exc:
        return _fail(command, ExitCode.USAGE, str(exc))
    run = functools.partial(
        run_proxy, args.listen, args.upstream, toxics, args.kill_every, args.duration, keys=keys_available()
    )
    try:
        return _run_trio(command, run, _Where(listen=args.listen))
    except _CommandError as exc:
        return exc.status


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = _add_parser(
        sub,
        "demo",
        help="customer service in one process: a server, agents behind chaos proxies, visitors; cables pulled",
        description=(
            "A server routes visitor chats to agents whose links run through chaos proxies; cables are pulled "
            "and restored on a seeded schedule (one pull outlasts session_ttl: the session expires and its "
            "conversations go to another agent). Ends with a ledger of every message both ways; exit status 0 "
            "only if nothing was lost, duplicated or reordered, and the run showed a pull and an expiry."
        ),
    )
    demo.add_argument("--duration", type=_at_least(3.0), default=10.0, help="seconds of chatting (default 10)")
    demo.add_argument("--agents", type=_count, default=3, help="agents, each behind its own proxy (default 3)")
    demo.add_argument("--visitors", type=_count, default=6, help="visitors chatting at once (default 6)")
    demo.add_argument("--seed", type=int, default=None, help="seed of the pulls and chats (default: random)")
    demo.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")
    demo.set_defaults(func=_demo)


def _add_echo_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    echo = _add_parser(
        sub,
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
    server = _add_parser(
        sub,
        "demo-server",
        help="customer-service server with simulated visitors, for agents started with demo-agent",
        description=(
            "Listens for agents, simulates visitors and routes their chats to the agents online; an agent whose "
            "session expires has its unanswered conversations handed to another agent. The first line printed is "
            "'listening on URL'. Ctrl-C stops cleanly (the agents end too) and prints the ledger; exit status 0 "
            "only if every visitor message that an agent held got exactly one answer, in order (messages still "
            "waiting for an agent when the agents left are counted apart), and at least one answer came back."
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
    agent = _add_parser(
        sub,
        "demo-agent",
        help="an agent desk for demo-server: shows visitors' messages and answers them",
        description=(
            "Connects to demo-server and answers every visitor message: typed answers on a terminal (an empty "
            "line sends the scripted one), scripted answers otherwise. Pull the cable: it reconnects and resumes "
            "with nothing lost. While the server is out of reach it says so every few seconds, and gives up "
            "after --connect-timeout. Ends with Ctrl-C, --duration, or when the server closes the session; a run "
            "in which no visitor message arrived checked nothing and fails."
        ),
    )
    agent.add_argument("--connect", required=True, metavar="URL", help="the server, e.g. tcp://host:7000")
    agent.add_argument("--id", required=True, help="this agent's id, as in the server's key file")
    agent.add_argument("--key", required=True, metavar="KEY|@FILE", help="the key (hex or base64) or @keyfile")
    agent.add_argument("--duration", type=_at_least(0.1), default=math.inf, help="stop after SECONDS")
    agent.add_argument("--heartbeat", type=_at_least(0.05), default=1.0, help="heartbeat seconds (default 1)")
    agent.add_argument(
        "--connect-timeout",
        type=_at_least(0.1),
        default=30.0,
        metavar="SECONDS",
        help="give up when the server stays out of reach this long (default 30)",
    )
    agent.add_argument("--scripted", action="store_true", help="scripted answers even on a terminal")
    agent.set_defaults(func=_demo_agent)
