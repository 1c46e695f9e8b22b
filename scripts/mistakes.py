"""Make every common mistake of issue 19 and show each one-line answer and exit status.

Run it from a clone, with the project installed (``pip install -e '.[demo]'``)::

    .venv/bin/python scripts/mistakes.py

Each case prints the command (temporary paths shown as ``$TMP``), what it wrote to standard
error (and the lines of standard output that matter), and its exit status with the name
``reliablelink --help`` gives it. A traceback anywhere is flagged ``TRACEBACK!``. It takes
about half a minute: a few cases wait for timeouts on purpose.
"""

from __future__ import annotations

import functools
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trio

import reliablelink
from reliablelink._cli import ExitCode

TMP = Path(tempfile.mkdtemp(prefix="rl-mistakes-"))
KEYS = TMP / "agents.keys"
KEY = b"k" * 32
_numbers = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def shown(text: str) -> str:
    return text.replace(str(TMP), "$TMP")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reliablelink", *args]


def title(text: str) -> None:
    print(f"\n{next(_numbers):2}. {text}")


def report(args: tuple[str, ...], status: int, out: str, err: str, keep: Callable[[str], bool]) -> None:
    """Print the command, the interesting output and the exit status."""
    print("    $ reliablelink " + shown(" ".join(args)))
    for line in out.splitlines():
        if keep(line):
            print("    " + shown(line))
    for line in err.splitlines():
        print("    " + shown(line))
    name = ExitCode(status).name if status in set(ExitCode) else "?"
    flag = "   TRACEBACK!" if "Traceback" in out + err else ""
    print(f"    -> exit {status} ({name}){flag}")


def case(text: str, *args: str, keep: Callable[[str], bool] = lambda line: False, timeout: float = 60) -> None:
    """Run ``reliablelink ARGS`` to its end and report it."""
    title(text)
    done = subprocess.run(
        command(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )
    report(args, done.returncode, done.stdout, done.stderr, keep)


@contextmanager
def running(*args: str) -> Iterator[subprocess.Popen[str]]:
    """``reliablelink ARGS`` in the background (killed if still running at the end)."""
    proc = subprocess.Popen(
        command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def read_until(proc: subprocess.Popen[str], prefix: str) -> list[str]:
    """Standard output up to and including the first line starting with ``prefix``."""
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"ended before {prefix!r}: {''.join(lines)}")
        lines.append(line.rstrip("\n"))
        if line.startswith(prefix):
            return lines


def interrupt(text: str, proc: subprocess.Popen[str], args: tuple[str, ...], seen: list[str], tail: int) -> None:
    """Ctrl-C ``proc``; report the ``seen`` lines and its last ``tail`` lines of output."""
    title(text)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    lines = [*seen, *out.splitlines()]
    shown_lines = set(seen) | (set(lines[-tail:]) if tail else set())
    report(args, proc.returncode, "\n".join(lines), err, lambda line: line in shown_lines)


def usage_and_network() -> None:
    """Mistakes found before anything runs, or while nothing answers."""
    port = free_port()
    nobody = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    agent = ("--id", "agent-1", "--key", f"@{KEYS}")

    case("a URL with the wrong scheme", "demo-server", "--listen", f"http://127.0.0.1:{port}", "--keys", str(KEYS))
    case("a URL without a port", "demo-agent", "--connect", "tcp://127.0.0.1", *agent)
    case("a URL without a scheme", "demo-agent", "--connect", f"127.0.0.1:{port}", *agent)
    case("chaos-proxy given a ws:// URL", "chaos-proxy", "--listen", "ws://127.0.0.1:0", "--upstream", nobody)
    case(
        "a key file that does not exist", "demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(TMP / "no.keys")
    )
    case("a malformed key file", "demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(TMP / "bad.keys"))
    case("--key @FILE that does not exist", "demo-agent", "--connect", nobody, "--id", "agent-1", "--key", "@no.keys")
    case(
        "a client id the key file does not have",
        "demo-agent",
        "--connect",
        nobody,
        "--id",
        "agent-9",
        "--key",
        f"@{KEYS}",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        case("a port in use (demo-server)", "demo-server", "--listen", used, "--keys", str(KEYS))
        case("a port in use (chaos-proxy)", "chaos-proxy", "--listen", used, "--upstream", nobody)
    sock = f"unix://{TMP}/no-such-dir/s.sock"
    case("a unix socket in a directory that does not exist", "demo-server", "--listen", sock, "--keys", str(KEYS))
    case(
        "an address that is not this machine's", "demo-server", "--listen", "tcp://192.0.2.1:7000", "--keys", str(KEYS)
    )
    case(
        "the server is not running (demo-agent reports, then gives up after --connect-timeout)",
        *("demo-agent", "--connect", nobody, *agent, "--connect-timeout", "4"),
        keep=lambda line: "cannot reach" in line,
    )
    case(
        "the server is not running, and --duration ends first",
        "demo-agent",
        "--connect",
        nobody,
        *agent,
        "--duration",
        "1",
    )
    case("an unknown --log-level", "--log-level", "loud", "keygen", "agent-1")
    case("demo --duration too short to prove anything", "demo", "--duration", "2")


def with_a_server() -> None:
    """A wrong key, an unknown client id, and an agent that leaves early."""
    agent = ("--id", "agent-1", "--key", f"@{KEYS}")
    print("\n-- with a demo-server running")
    server_args = (
        "demo-server",
        "--listen",
        "tcp://127.0.0.1:0",
        "--keys",
        str(KEYS),
        "--duration",
        "6",
        "--seed",
        "1",
    )
    with running(*server_args) as server:
        seen = read_until(server, "listening on ")
        url = seen[-1].removeprefix("listening on ")
        other = reliablelink.generate_key().hex()
        case("a wrong key", "demo-agent", "--connect", url, "--id", "agent-1", "--key", other)
        case("a client id the server does not know", "demo-agent", "--connect", url, "--id", "agent-9", "--key", other)
        case(
            "the agent leaves (--duration 2) long before the server stops (--duration 6)",
            *("demo-agent", "--connect", url, *agent, "--duration", "2", "--scripted"),
            keep=lambda line: line.startswith(("ledger:", "link:")),
        )
        title("... so the server's visitors wait for an agent: counted apart, not as lost")
        out, err = server.communicate(timeout=60)
        last = out.splitlines()[-1:]
        report(server_args, server.returncode, out, err, lambda line: line in last)


def chaos_proxy() -> None:
    """An upstream that does not answer, a pull and a restore by signals, Ctrl-C."""
    nobody = f"tcp://127.0.0.1:{free_port()}"
    print("\n-- chaos-proxy: pull and restore the cable while it runs; Ctrl-C")
    proxy_args = ("chaos-proxy", "--listen", "tcp://127.0.0.1:0", "--upstream", nobody)
    with running(*proxy_args) as proxy:
        seen = read_until(proxy, "pull the cable:")
        address = seen[0].removeprefix("chaos proxy tcp://").split(" ")[0].rsplit(":", 1)
        with socket.create_connection((address[0], int(address[1]))) as client:
            client.recv(1)  # the proxy closes it: nothing to forward it to
        seen += read_until(proxy, "cannot reach the upstream")
        proxy.send_signal(signal.SIGUSR1)
        seen += read_until(proxy, "cable pulled")
        time.sleep(0.5)
        proxy.send_signal(signal.SIGUSR2)
        seen += read_until(proxy, "cable back")
        kept = [line for line in seen if line.startswith(("pull the cable", "cannot reach", "cable "))]
        interrupt("kill -USR1, kill -USR2, then Ctrl-C on chaos-proxy", proxy, proxy_args, kept, 2)


def ctrl_c() -> None:
    """Ctrl-C where no signal handler runs (echo-demo) and on a server that checked nothing."""
    print("\n-- Ctrl-C")
    echo_args = ("echo-demo", "--messages", "200000")
    with running(*echo_args) as echo:
        read_until(echo, "  cut   1:")
        interrupt("Ctrl-C on echo-demo", echo, echo_args, [], 0)
    lone_args = ("demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(KEYS))
    with running(*lone_args) as lone:
        read_until(lone, "listening on ")
        time.sleep(1.5)
        interrupt("Ctrl-C on a demo-server no agent ever reached", lone, lone_args, [], 1)


# -- the Python API --------------------------------------------------------------------------


async def echo(session: reliablelink.Session) -> None:
    async for data in session:
        await session.send(data)


def sync_handler(session: reliablelink.Session) -> None:
    print(session)


async def serve(handler: Any, url: str = "tcp://127.0.0.1:0", **kwargs: Any) -> None:
    """Start ``serve()`` and stop it at once."""
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(reliablelink.serve, handler, url, **kwargs))
        nursery.cancel_scope.cancel()


async def connect_with_a_typo() -> None:
    async with reliablelink.connect("tcp://127.0.0.1:1", client_id="a", key=KEY, heartbeat=1):  # type: ignore[call-arg]
        pass


async def in_a_session(action: Callable[[reliablelink.Session], Awaitable[object]], *, after: bool) -> None:
    """``action(session)`` inside ``async with connect()``, or after it."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(reliablelink.serve, echo, "memory://", keys={"a": KEY}))
        async with reliablelink.connect(server.url, client_id="a", key=KEY) as session:
            if not after:
                await action(session)
        if after:
            await action(session)
        nursery.cancel_scope.cancel()


def api() -> None:
    print("\n== reliablelink: the Python API")
    keys = {"a": KEY}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("connect(..., heartbeat=1)", connect_with_a_typo),
            ("serve(..., keys=b'a secret')", lambda: serve(echo, keys=KEY)),
            (
                "serve(handler, 'unix:///nonexistent/dir/s.sock')",
                lambda: serve(echo, "unix:///nonexistent/dir/s.sock", keys=keys),
            ),
            ("serve(def handler(session): ..., url)", lambda: serve(sync_handler, keys=keys)),
            ("serve(handler, a port in use)", lambda: serve(echo, used, keys=keys)),
            ('session.send("hello")', lambda: in_a_session(lambda s: s.send("hello"), after=False)),  # type: ignore[arg-type]
            (
                "session.send(b'x') after leaving 'async with connect()'",
                lambda: in_a_session(lambda s: s.send(b"x"), after=True),
            ),
        ]
        for text, run in cases:
            title(text)
            try:
                trio.run(run)
                print("    no error")
            except Exception as exc:  # shown, whatever it is
                while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
                    exc = exc.exceptions[0]
                print(f"    {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    keygen = subprocess.run(command("keygen", "agent-1", "agent-2"), capture_output=True, text=True, check=True)
    KEYS.write_text(keygen.stdout)
    (TMP / "bad.keys").write_text("agent-1 nothex!!\n")
    print("== reliablelink: the command line")
    usage_and_network()
    with_a_server()
    chaos_proxy()
    ctrl_c()
    api()
