"""The command line around the demos: subcommands, key arguments, and the one-line answer
and documented exit status of each common mistake (issue 19, item 3)."""

from __future__ import annotations

import base64
import contextlib
import functools
import importlib.metadata
import io
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from reliablelink import LinkState, Session, connect, generate_key, serve
from reliablelink._cli import EXIT_CODES, ExitCode, _read_key, run
from reliablelink.demo.chat import Answer, NothingChecked
from reliablelink.demo.desk import AgentDesk, DeskEvents, ScriptedAnswerer
from reliablelink.demo.run import DemoReport
from reliablelink.demo.server import DemoServerSettings, run_demo_server
from reliablelink.demo.views import TimedPrinter
from reliablelink.testing import Ledger, LedgerResult, number_of, numbered
from tests.demo.process_output import start_reliablelink
from tests.helpers import free_port


def test_echo_demo_keeps_the_old_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["echo-demo", "--messages", "300", "--cuts", "2"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "ledger: sent 600, delivered 600, lost 0, duplicated 0, reordered 0"


def test_key_in_hex_base64_or_a_file(tmp_path: Path) -> None:
    key, other = generate_key(), generate_key()
    assert _read_key(key.hex(), "agent-1") == key
    assert _read_key("base64:" + base64.b64encode(key).decode(), "agent-1") == key
    keys = tmp_path / "agents.keys"
    keys.write_text(f"# agents\nagent-1 {key.hex()}\nagent-2 {other.hex()}\n")
    assert _read_key(f"@{keys}", "agent-2") == other
    single = tmp_path / "agent-1.key"
    single.write_text(key.hex() + "\n")
    assert _read_key(f"@{single}", "agent-1") == key
    with pytest.raises(ValueError, match="no key for 'agent-3'"):
        _read_key(f"@{keys}", "agent-3")


def test_bad_arguments_exit_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (``run``): the usage errors found before anything starts."""
    assert run(["demo-agent", "--connect", "tcp://127.0.0.1:1", "--id", "a", "--key", "zz"]) == 2
    assert "bad --key" in capsys.readouterr().err
    empty = tmp_path / "empty.keys"
    empty.write_text("# nobody\n")
    assert run(["demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(empty)]) == 2
    assert "no keys" in capsys.readouterr().err
    assert run(["demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        run(["demo", "--duration", "1"])


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"reliablelink {importlib.metadata.version('reliablelink')}\n"


def test_echo_demo_help_describes_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["echo-demo", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "streams numbered messages to an echo server" in out, out
    assert "resets the connection --cuts times" in out, out


def test_echo_demo_refuses_messages_below_8_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["echo-demo", "--size", "7"])
    assert exit_info.value.code == 2
    assert "argument --size: must be at least 8, got 7" in capsys.readouterr().err


# -- helpers -------------------------------------------------------------------------------


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reliablelink", *args]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``reliablelink ARGS`` to its end (standard input empty)."""
    return subprocess.run(
        _command(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


def _one_line(err: str, command: str) -> str:
    """Standard error is one line, ``reliablelink COMMAND: ...``, and no traceback."""
    lines = err.splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"reliablelink {command}: "), err
    return lines[0]


def _fails(
    result: subprocess.CompletedProcess[str] | subprocess.CompletedProcess[bytes], command: str, status: ExitCode
) -> str:
    """``result`` exited with ``status`` and one line on standard error; return that line."""
    out = result.stdout if isinstance(result.stdout, str) else result.stdout.decode()
    err = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
    assert result.returncode == status, f"exit status {result.returncode}, not {status}\n{out}\n{err}"
    return _one_line(err, command)


@contextlib.contextmanager
def _popen(*args: str, stdin: int = subprocess.DEVNULL, **kwargs: Any) -> Iterator[subprocess.Popen[str]]:
    """``reliablelink ARGS`` as a process with text pipes, killed if the test leaves it running."""
    proc = subprocess.Popen(
        _command(*args), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def agents_keys(tmp_path: Path) -> Path:
    keys = tmp_path / "agents.keys"
    keys.write_text(f"agent-1 {generate_key().hex()}\n")
    return keys


async def _idle(session: Session) -> None:
    await trio.sleep_forever()


# -- the exit statuses, defined once ---------------------------------------------------------


def test_every_exit_status_is_in_the_help_and_in_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(EXIT_CODES) == set(ExitCode)
    with pytest.raises(SystemExit):
        run(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    docs = (Path(__file__).parents[2] / "docs" / "quickstart.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert f"{int(code)} {meaning}" in help_text, (code, help_text)
        assert f"| {int(code)} | {meaning} |" in docs, f"docs/quickstart.md lacks the row of exit status {int(code)}"
    with pytest.raises(SystemExit):
        run(["demo-agent", "--help"])
    assert "exit status:" in capsys.readouterr().out


def test_log_level_is_a_global_option(agents_keys: Path) -> None:
    args = ("demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(agents_keys), "--duration", "0.2")
    quiet = _cli(*args)
    assert not re.search(r"INFO reliablelink", quiet.stderr), quiet.stderr
    chatty = _cli("--log-level", "INFO", *args)
    assert re.search(r"^\S+ \S+ INFO reliablelink\.\w+: ", chatty.stderr, re.MULTILINE), chatty.stderr
    assert "Traceback" not in chatty.stderr, chatty.stderr
    wrong = _cli("--log-level", "loud", "keygen", "agent-1")
    assert wrong.returncode == ExitCode.USAGE and "invalid choice: 'loud'" in wrong.stderr, wrong.stderr


# -- bad URLs and schemes: status 2, before anything starts ------------------------------------


def test_bad_url_is_one_line(agents_keys: Path) -> None:
    line = _fails(
        _cli("demo-server", "--listen", "http://127.0.0.1:7600", "--keys", str(agents_keys)),
        "demo-server",
        ExitCode.USAGE,
    )
    assert "no transport for URL 'http://127.0.0.1:7600'" in line and "(--listen http://127.0.0.1:7600)" in line


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("tcp://127.0.0.1", "a tcp:// URL needs a host and a port, got 'tcp://127.0.0.1'"),
        ("127.0.0.1:7000", "no transport for URL '127.0.0.1:7000'; known schemes: "),
        ("tcp://127.0.0.1:x", "Port could not be cast to integer value as 'x'"),
    ],
)
def test_a_bad_agent_url_is_one_line_before_connecting(url: str, says: str, agents_keys: Path) -> None:
    result = _cli("demo-agent", "--connect", url, "--id", "agent-1", "--key", f"@{agents_keys}")
    line = _fails(result, "demo-agent", ExitCode.USAGE)
    assert says in line and f"(--connect {url})" in line, line
    assert result.stdout == "", "nothing started"


def test_chaos_proxy_takes_only_tcp_urls() -> None:
    result = _cli("chaos-proxy", "--listen", "ws://127.0.0.1:0", "--upstream", "tcp://127.0.0.1:1")
    line = _fails(result, "chaos-proxy", ExitCode.USAGE)
    assert "--listen: expected tcp://host:port, got 'ws://127.0.0.1:0'" in line, line


# -- key files: status 2 ---------------------------------------------------------------------


def test_missing_or_malformed_key_files_are_one_line(tmp_path: Path, agents_keys: Path) -> None:
    missing = tmp_path / "nosuch.keys"
    line = _fails(
        _cli("demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(missing)), "demo-server", ExitCode.USAGE
    )
    assert f"cannot read the keys: [Errno 2] No such file or directory: '{missing}'" in line, line
    bad = tmp_path / "bad.keys"
    bad.write_text("agent-1 nothex!!\n")
    line = _fails(
        _cli("demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(bad)), "demo-server", ExitCode.USAGE
    )
    assert "bad.keys:1: bad key for 'agent-1'" in line, line
    agent = ("demo-agent", "--connect", "tcp://127.0.0.1:1", "--id")
    line = _fails(_cli(*agent, "agent-1", "--key", f"@{missing}"), "demo-agent", ExitCode.USAGE)
    assert line.startswith("reliablelink demo-agent: bad --key: [Errno 2] No such file or directory"), line
    line = _fails(_cli(*agent, "agent-9", "--key", f"@{agents_keys}"), "demo-agent", ExitCode.USAGE)
    assert line.endswith(f"bad --key: {agents_keys} has no key for 'agent-9'"), line


# -- cannot listen: status 5, naming the address ------------------------------------------------


@pytest.mark.parametrize("command", ["demo-server", "chaos-proxy"])
def test_port_in_use_is_one_line_naming_the_address(command: str, agents_keys: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        url = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        if command == "demo-server":
            result = _cli(command, "--listen", url, "--keys", str(agents_keys), "--duration", "5")
        else:
            result = _cli(command, "--listen", url, "--upstream", "tcp://127.0.0.1:1", "--duration", "5")
    line = _fails(result, command, ExitCode.CANNOT_LISTEN)
    address = url.removeprefix("tcp://")
    assert f"cannot listen on {address}: Address already in use; another program listens there" in line, line
    assert line.endswith(f"(--listen {url})"), line


def test_a_unix_socket_in_a_missing_directory_is_one_line(tmp_path: Path, agents_keys: Path) -> None:
    path = tmp_path / "no-such-dir" / "s.sock"
    result = _cli("demo-server", "--listen", f"unix://{path}", "--keys", str(agents_keys))
    line = _fails(result, "demo-server", ExitCode.CANNOT_LISTEN)
    assert f"cannot listen on unix socket {path}: No such file or directory" in line, line
    assert "create the directory, or pick another path" in line, line


# -- refused: status 3 -----------------------------------------------------------------------


async def _agent_against_idle_server(
    server_key: bytes, *agent_args: str
) -> tuple[str, subprocess.CompletedProcess[bytes]]:
    """Run ``reliablelink demo-agent --connect URL AGENT_ARGS`` against a server that knows
    ``agent-1`` by ``server_key`` and never sends anything; return URL and the result."""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve, _idle, "tcp://127.0.0.1:0", keys={"agent-1": server_key})
            )
            result = await trio.run_process(
                _command("demo-agent", "--connect", server.url, *agent_args),
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            nursery.cancel_scope.cancel()
    return server.url, result


@pytest.mark.parametrize("client_id", ["agent-1", "agent-9"], ids=["wrong-key", "unknown-client-id"])
async def test_wrong_key_or_unknown_client_id_is_one_line(client_id: str) -> None:
    url, result = await _agent_against_idle_server(generate_key(), "--id", client_id, "--key", generate_key().hex())
    line = _fails(result, "demo-agent", ExitCode.REFUSED)
    assert "server refused the credentials: authentication failed; a wrong key, or a client id" in line, line
    assert f"check that --id {client_id} and --key match a line" in line and f"(--connect {url})" in line


# -- unreachable: status 4 -------------------------------------------------------------------


def test_agent_reports_while_the_server_is_out_of_reach_then_gives_up() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    result = _cli(
        "demo-agent", "--connect", url, "--id", "agent-1", "--key", generate_key().hex(), "--connect-timeout", "4"
    )
    line = _fails(result, "demo-agent", ExitCode.UNREACHABLE)
    assert f"cannot reach {url} within 4 s (connection refused); is the server running" in line, line
    retrying = [
        x
        for x in result.stdout.splitlines()
        if x.endswith(f"agent-1: cannot reach {url} (connection refused), retrying")
    ]
    assert len(retrying) == 1, result.stdout  # one try of 3 s, reported; the last one, 1 s, gives up


def test_agent_whose_run_ends_before_it_reached_the_server_fails() -> None:
    """Before, ``--duration`` shorter than the connect timeout exited 0 with an empty ledger."""
    url = f"tcp://127.0.0.1:{free_port()}"
    result = _cli("demo-agent", "--connect", url, "--id", "agent-1", "--key", generate_key().hex(), "--duration", "1")
    line = _fails(result, "demo-agent", ExitCode.UNREACHABLE)
    assert f"the run ended before the agent reached {url}" in line, line
    assert "ledger:" not in result.stdout, result.stdout


# -- runs that prove nothing: status 1 ---------------------------------------------------------


async def test_agent_that_received_nothing_fails() -> None:
    key = generate_key()
    _, result = await _agent_against_idle_server(key, "--id", "agent-1", "--key", key.hex(), "--duration", "0.5")
    line = _fails(result, "demo-agent", ExitCode.FAILED)
    assert "no visitor message arrived, so nothing was checked; run it longer (--duration)" in line, line
    assert "ledger: received 0, answered 0, lost 0, duplicated 0, reordered 0" in result.stdout.decode()


async def test_demo_server_that_no_agent_answered_checked_nothing() -> None:
    """No agent ever comes: the visitor messages wait for one (not "lost"), and the run fails
    because it proved nothing."""
    out = io.StringIO()
    settings = DemoServerSettings(
        listen="tcp://127.0.0.1:0", keys={"agent-1": generate_key()}, duration=1.0, drain_timeout=5.0
    )
    with trio.fail_after(30), pytest.raises(NothingChecked, match="no agent answered a visitor message"):
        await run_demo_server(settings, TimedPrinter(out))
    lines = out.getvalue().splitlines()
    final = re.fullmatch(
        r"ledger: sent (\d+), delivered 0, unanswered 0, duplicated 0, reordered 0, waiting for an agent (\d+)",
        lines[-1],
    )
    assert final is not None and final[1] == final[2] and int(final[1]) > 0, out.getvalue()
    assert " lost " not in out.getvalue(), out.getvalue()
    assert any("no agent online to answer the rest" in line for line in lines), out.getvalue()


async def test_demo_server_does_not_count_messages_waiting_after_the_agents_left() -> None:
    """The agent leaves early; the visitors go on. Their later messages wait for an agent: the
    ledger says so, nothing is "unanswered", and the exit status is 0. The server does not
    wait ``drain_timeout`` for answers no agent can give."""
    key = generate_key()
    url = f"tcp://127.0.0.1:{free_port()}"
    out = io.StringIO()
    settings = DemoServerSettings(listen=url, keys={"agent-1": key}, duration=3.0, seed=7, drain_timeout=30.0)
    status: list[int] = []

    async def server() -> None:
        status.append(await run_demo_server(settings, TimedPrinter(out)))

    began = trio.current_time()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            answered = _FirstAnswer()
            desk = AgentDesk(
                url, "agent-1", key, answerer=ScriptedAnswerer(), events=answered, options={"connect_timeout": 5.0}
            )
            nursery.start_soon(desk.run)
            await answered.event.wait()
            desk.stop()
        took = trio.current_time() - began
    lines = out.getvalue().splitlines()
    final = re.fullmatch(
        r"ledger: sent (\d+), delivered (\d+), unanswered 0, duplicated 0, reordered 0, waiting for an agent (\d+)",
        lines[-1],
    )
    assert final is not None, out.getvalue()
    sent, delivered, waiting = map(int, final.groups())
    assert delivered >= 1 and waiting >= 1 and sent == delivered + waiting, out.getvalue()
    assert status == [0], out.getvalue()
    assert took < settings.drain_timeout, "the server did not wait for answers no agent could give"


class _FirstAnswer(DeskEvents):
    def __init__(self) -> None:
        self.event = trio.Event()

    def answered(self, desk: AgentDesk, answer: Answer) -> None:
        self.event.set()


def test_demo_report_without_messages_says_it_proves_nothing() -> None:
    empty = LedgerResult(0, 0, 0, 0, 0, 0)
    report = DemoReport(7, [], empty, empty, [], 0, 0, 0, 0, 0, interrupted=True)
    assert not report.ok
    assert "no message was exchanged, so nothing was checked: the run proves nothing" in report.lines()


# -- Ctrl-C ------------------------------------------------------------------------------------


def _interrupt_after(line_starts: str, *args: str) -> tuple[int, str, str]:
    with _popen(*args) as proc:
        assert proc.stdout is not None
        seen: list[str] = []
        while not (seen and seen[-1].startswith(line_starts)):
            line = proc.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    return proc.returncode, "".join(seen) + out, err


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
def test_ctrl_c_on_echo_demo_is_one_line() -> None:
    status, out, err = _interrupt_after("  cut   1:", "echo-demo", "--messages", "200000", "--cuts", "3")
    assert status == ExitCode.INTERRUPTED, (status, out, err)
    assert _one_line(err, "echo-demo") == "reliablelink echo-demo: interrupted (Ctrl-C) before it could finish"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
def test_ctrl_c_on_demo_server_stops_cleanly_and_reports(agents_keys: Path) -> None:
    status, out, err = _interrupt_after(
        "listening on", "demo-server", "--listen", "tcp://127.0.0.1:0", "--keys", str(agents_keys)
    )
    assert status == ExitCode.FAILED, (status, out, err)  # no agent came: nothing was checked
    assert "SIGINT: stopping cleanly" in out and out.splitlines()[-1].startswith("ledger: sent "), out
    assert "nothing was checked" in _one_line(err, "demo-server")


# -- chaos-proxy: pull and restore while it runs ---------------------------------------------


async def test_chaos_proxy_pulls_and_restores_the_cable_on_signals() -> None:
    """SIGUSR1 pulls the cable under a live session, SIGUSR2 puts it back; the session notices,
    reconnects and resumes with nothing lost; Ctrl-C prints the summary."""
    key = generate_key()
    fast: dict[str, Any] = {"heartbeat_interval": 0.2, "dead_after": 0.6}
    echoes = Ledger()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(serve, echo_handler, "tcp://127.0.0.1:0", keys={"agent-1": key}, **fast)
            )
            proxy = await start_reliablelink(
                nursery, "chaos-proxy", "chaos-proxy", "--listen", "tcp://127.0.0.1:0", "--upstream", server.url
            )
            first = await proxy.wait_for_line("its URL", bool)
            url = first.removeprefix("chaos proxy ").split(" ")[0]
            controls = await proxy.wait_for_line("the controls", lambda line: line.startswith("pull the cable:"))
            assert (
                controls
                == f"pull the cable: kill -USR1 {proxy.process.pid}; restore it: kill -USR2 {proxy.process.pid}"
            )
            async with connect(url, client_id="agent-1", key=key, reconnect_backoff=(0.05, 0.2), **fast) as session:

                async def exchange(first: int, count: int) -> None:
                    for i in range(first, first + count):
                        await session.send(numbered(i))
                        echoes.on_send(i)
                        echoes.on_receive(number_of(await session.receive()))

                await exchange(0, 20)
                proxy.process.send_signal(signal.SIGUSR1)
                await proxy.wait_for_line("the pull", lambda line: line.startswith("cable pulled: 1 connection(s)"))
                assert await session.wait_link_change() is LinkState.RECONNECTING
                proxy.process.send_signal(signal.SIGUSR2)
                await proxy.wait_for_line("the restore", lambda line: line.startswith("cable back after"))
                await exchange(20, 20)
                assert session.stats.reconnects == 1
            proxy.process.send_signal(signal.SIGINT)
            await proxy.process.wait()
            nursery.cancel_scope.cancel()
    assert echoes.result().exact, echoes.result().line("echoes")
    assert proxy.process.returncode == 0, proxy.text
    assert re.fullmatch(r"cable pulled 1 time\(s\), [\d.]+ s in all", proxy.lines[-2]), proxy.text
    assert re.fullmatch(r"connections: 2, resets: 0", proxy.lines[-1]), proxy.text
    assert "Traceback" not in proxy.text


async def echo_handler(session: Session) -> None:
    async for data in session:
        await session.send(data)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal")
def test_chaos_proxy_keys_on_a_terminal() -> None:
    """p pulls, r restores, k resets, q quits; the terminal is left as it was."""
    import fcntl  # noqa: PLC0415 (Unix only)
    import pty  # noqa: PLC0415
    import termios  # noqa: PLC0415

    master, terminal = pty.openpty()

    def controlling_terminal() -> None:  # the pseudo-terminal becomes the child's own, in the foreground
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    before = termios.tcgetattr(master)[3]
    with _popen(
        *("chaos-proxy", "--listen", "tcp://127.0.0.1:0", "--upstream", "tcp://127.0.0.1:1"),
        stdin=terminal,
        preexec_fn=controlling_terminal,  # the pty becomes its controlling terminal (no threads run here)
    ) as proc:
        os.close(terminal)
        assert proc.stdout is not None

        def line_starting(prefix: str) -> str:
            while True:
                line = proc.stdout.readline()  # type: ignore[union-attr]
                assert line, f"ended before {prefix!r}"
                if line.startswith(prefix):
                    return line.rstrip("\n")

        assert line_starting("pull the cable:").endswith("; keys: p pull, r restore, k reset connections, q quit")
        os.write(master, b"p")
        assert line_starting("cable ") == "cable pulled: 0 connection(s) go silent, new connections are refused"
        assert not termios.tcgetattr(master)[3] & termios.ECHO, "keys are read without echo"
        os.write(master, b"r")
        assert line_starting("cable ").startswith("cable back after ")
        os.write(master, b"k")
        assert line_starting("reset ") == "reset 0 connection(s)"
        os.write(master, b"q")
        out, err = proc.communicate(timeout=30)
    after = termios.tcgetattr(master)[3]
    os.close(master)
    assert proc.returncode == 0 and "Traceback" not in err, (out, err)
    assert out.splitlines()[-2:] == [out.splitlines()[-2], "connections: 0, resets: 0"], out
    assert out.splitlines()[-2].startswith("cable pulled 1 time(s), "), out
    assert after & termios.ECHO and before == after, "the terminal's echo is back"


def test_chaos_proxy_says_when_it_cannot_reach_the_upstream() -> None:
    upstream = f"tcp://127.0.0.1:{free_port()}"
    with _popen("chaos-proxy", "--listen", "tcp://127.0.0.1:0", "--upstream", upstream, "--duration", "20") as proc:
        assert proc.stdout is not None
        url = proc.stdout.readline().removeprefix("chaos proxy tcp://").split(" ")[0]
        host, port = url.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as client:
            assert client.recv(10) == b"", "the proxy closes the connection it cannot forward"
        while True:
            line = proc.stdout.readline()
            assert line, "the proxy ended first"
            if line.startswith("cannot reach"):
                break
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert line.rstrip("\n") == (
        f"cannot reach the upstream {upstream} (connection refused): 1 client connection(s) closed so far; "
        "is the server running?"
    )
