"""Options: validation, the reconnect backoff's full jitter, and the typed options
(ConnectOptions, ServeOptions) that type checkers see."""

from __future__ import annotations

import dataclasses
import random
import re
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
from mypy import api as mypy_api

import reliablelink
from reliablelink import Backoff, ConnectOptions, ServeOptions, load_key_file
from reliablelink._core import LinkParams
from reliablelink._guard import GuardLimits
from reliablelink._options import ClientOptions, ServerOptions
from reliablelink._util import key_lookup


def test_backoff_is_exponential_with_full_jitter_and_a_cap() -> None:
    backoff = Backoff(initial=0.1, maximum=5.0, multiplier=2.0)
    rng = random.Random(7)
    for attempt in range(12):
        bound = min(5.0, 0.1 * 2**attempt)
        delays = [backoff.delay(attempt, rng) for _ in range(500)]
        assert all(0 <= d <= bound for d in delays), f"attempt {attempt}: delays within [0, {bound}]"
        assert max(delays) > 0.8 * bound, "full jitter spreads over the whole range"
        assert min(delays) < 0.2 * bound, "... down to almost zero, so clients do not return in lock step"


def test_backoff_seed_makes_delays_reproducible() -> None:
    a = ClientOptions.from_kwargs({"reconnect_backoff": Backoff(seed=3)})
    b = ClientOptions.from_kwargs({"reconnect_backoff": Backoff(seed=3)})
    ra, rb = random.Random(a.reconnect_backoff.seed), random.Random(b.reconnect_backoff.seed)
    assert [a.reconnect_backoff.delay(i, ra) for i in range(10)] == [
        b.reconnect_backoff.delay(i, rb) for i in range(10)
    ]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"heartbeat_intervall": 1}, TypeError, "unknown connect"),
        ({"heartbeat_interval": 0}, ValueError, "heartbeat_interval"),
        ({"heartbeat_interval": 3, "dead_after": 2}, ValueError, "dead_after"),
        ({"max_message_size": 0}, ValueError, "max_message_size"),
        ({"connect_timeout": -1}, ValueError, "connect_timeout"),
        ({"reconnect_backoff": (5.0, 1.0)}, ValueError, "backoff"),
    ],
)
def test_bad_client_options_fail_clearly(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ClientOptions.from_kwargs(kwargs)


def test_server_options_and_defaults() -> None:
    opts = ServerOptions.from_kwargs({"session_ttl": 30, "max_connections_per_address": 5, "heartbeat_interval": 1})
    assert opts.session_ttl == 30 and opts.limits.max_connections_per_address == 5
    assert opts.params.dead_after == 3, "dead_after defaults to three heartbeats"
    with pytest.raises(TypeError, match="unknown serve"):
        ServerOptions.from_kwargs({"sesion_ttl": 1})
    with pytest.raises(ValueError, match="max_sessions_per_client"):
        ServerOptions.from_kwargs({"max_sessions_per_client": 0})


def test_key_callable_may_return_text_and_key_files_parse(tmp_path: Path) -> None:
    lookup = key_lookup(lambda cid: "text-key-of-some-length" if cid == "a" else None)
    assert lookup("a") == b"text-key-of-some-length" and lookup("b") is None
    path = tmp_path / "keys"
    path.write_text("# comment\nagent-1 " + "ab" * 32 + "\nagent-2 base64:" + "QUFBQUFBQUFBQUFBQUFBQUFBQUE=" + "\n")
    keys = load_key_file(path)
    assert keys["agent-1"] == bytes.fromhex("ab" * 32) and keys["agent-2"] == b"A" * 20
    assert key_lookup(path)("agent-1") == keys["agent-1"]
    path.write_text("agent-1 abcd\n")
    with pytest.raises(ValueError, match="too short"):
        load_key_file(path)
    path.write_text("agent-1 " + "ab" * 32 + "\nagent-1 " + "cd" * 32 + "\n")
    with pytest.raises(ValueError, match="listed twice"):
        load_key_file(path)


# The dataclasses the options are built into, each with its defaults: every field name is a
# candidate option name and its default a valid value for it.
_OPTION_SOURCES = (ClientOptions(), ServerOptions(), LinkParams(), GuardLimits(), Backoff())


def _accepted_by(options_class: type[ClientOptions] | type[ServerOptions]) -> tuple[set[str], set[str]]:
    """The names ``from_kwargs`` accepts (trying every candidate with its default value),
    and the valid names its ``TypeError`` for an unknown name lists."""
    candidates = {f.name: getattr(obj, f.name) for obj in _OPTION_SOURCES for f in dataclasses.fields(obj)}
    accepted = set()
    for name, value in candidates.items():
        try:
            options_class.from_kwargs({name: value})
        except TypeError as exc:
            assert "unknown" in str(exc), f"{name}={value!r}: {exc}"
        else:
            accepted.add(name)
    with pytest.raises(TypeError, match="unknown") as info:
        options_class.from_kwargs({"no_such_option": 1})
    listed = set(str(info.value).split("valid options: ")[1].split(", "))
    return accepted, listed


@pytest.mark.parametrize(("typed", "options_class"), [(ConnectOptions, ClientOptions), (ServeOptions, ServerOptions)])
def test_typed_options_are_exactly_the_options_from_kwargs_accepts(
    typed: type[Any], options_class: type[ClientOptions] | type[ServerOptions]
) -> None:
    """The TypedDict that type checkers see and the run-time validation can never drift apart:
    same names, and each name's type is the type of the field it sets."""
    accepted, listed = _accepted_by(options_class)
    assert typed.__required_keys__ == frozenset(), "every option may be left out"
    assert set(typed.__optional_keys__) == accepted, "the TypedDict has exactly the names from_kwargs accepts"
    assert listed == accepted, "the TypeError for an unknown name lists exactly the accepted names"
    hints = typing.get_type_hints(typed)
    field_types: dict[str, Any] = {}
    for source in (GuardLimits, LinkParams, options_class):
        field_types |= typing.get_type_hints(source)
    for name, hint in hints.items():
        if name == "reconnect_backoff":  # a Backoff, or a tuple of its arguments
            assert field_types[name] is Backoff and Backoff in typing.get_args(hint)
        else:
            assert hint == field_types[name], f"{name}: typed {hint}, but the option is a {field_types[name]}"


def test_mypy_sees_the_options_of_connect_and_serve(tmp_path: Path) -> None:
    """``**options`` is typed: mypy reports a misspelt option and a value of the wrong type,
    and the correct calls in the same file check clean."""
    source = textwrap.dedent(
        """\
        import ssl

        import trio

        import reliablelink

        K = b"k"


        async def handler(session: reliablelink.Session) -> None:
            await session.send(b"hi")


        async def good(url: str, store: reliablelink.stores.SessionStore) -> None:
            async with reliablelink.connect(
                url, client_id="a", key=b"k", heartbeat_interval=1, dead_after=3.0, max_inflight=8,
                reconnect_backoff=(0.1, 5.0), ssl_context=ssl.create_default_context(), store=store,
            ):
                pass
            async with reliablelink.connect(url, client_id="a", key=b"k", reconnect_backoff=reliablelink.Backoff()):
                pass
            options: reliablelink.ConnectOptions = {"connect_timeout": 5.0, "close_timeout": 1}
            async with reliablelink.connect(url, client_id="a", key=b"k", **options):
                pass


        async def good_server(url: str, task_status: trio.TaskStatus[reliablelink.Server]) -> None:
            await reliablelink.serve(
                handler, url, keys={"a": b"k"}, task_status=task_status, session_ttl=60, max_sessions=10,
                max_connections_per_address=4, lockout=1.5, max_tracked=100, store=None,
            )


        async def bad_client(u: str) -> None:
            async with reliablelink.connect(u, client_id="a", key=K, heartbeat_intervall=1):  # BAD heartbeat_intervall
                pass
            async with reliablelink.connect(u, client_id="a", key=K, reconnect_backoff=5.0):  # BAD reconnect_backoff
                pass


        async def bad_server(u: str) -> None:
            await reliablelink.serve(handler, u, keys={"a": b"k"}, max_sessions="x")  # BAD max_sessions


        async def bad_server_2(u: str) -> None:
            await reliablelink.serve(handler, u, keys={}, reconnect_backoff=(1.0, 2.0))  # BAD reconnect_backoff
        """
    )
    path = tmp_path / "uses_options.py"
    path.write_text(source)
    # mypy checks the reliablelink that this test imported, wherever it was found.
    root = Path(reliablelink.__file__).resolve().parent.parent
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n" + ("" if "site-packages" in root.parts else f"mypy_path = {root}\n"))
    stdout, stderr, status = mypy_api.run(
        [
            str(path),
            "--strict",
            "--config-file",
            str(config),
            "--cache-dir",
            str(tmp_path / "mypy_cache"),
            "--python-executable",
            sys.executable,
            "--no-error-summary",
            "--hide-error-context",
        ]
    )
    assert stderr == "" and status in (0, 1), stderr
    bad = {n: line.split("# BAD ")[1] for n, line in enumerate(source.splitlines(), 1) if "# BAD " in line}
    errors: dict[int, list[str]] = {}
    for line in stdout.splitlines():
        match = re.match(rf"{re.escape(str(path))}:(\d+): error: (.*)", line)
        if match:
            errors.setdefault(int(match[1]), []).append(match[2])
    assert set(errors) == set(bad), f"errors exactly on the lines marked BAD:\n{stdout}"
    for n, name in bad.items():
        assert any(name in message for message in errors[n]), f"line {n} names {name}: {errors[n]}"
