"""Misuse of the API fails at once with an error that says what to do (issue 19, item 4)."""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import trio

import reliablelink
from reliablelink._util import check_handler
from tests.helpers import KEY, KEYS, RunServer, echo


async def _serve_and_stop(handler: Any, url: str = "memory://", **kwargs: Any) -> reliablelink.Server:
    """Start ``serve`` (the test's keys unless given), return its Server, stop it."""
    kwargs.setdefault("keys", KEYS)
    try:
        async with trio.open_nursery() as nursery:
            server: reliablelink.Server = await nursery.start(
                functools.partial(reliablelink.serve, handler, url, **kwargs)
            )
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the nursery's wrapping: raise what serve() raised
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise
    return server


@pytest.mark.parametrize("kind", ["connect()", "serve()"])
async def test_unknown_option_lists_each_valid_name_once(kind: str) -> None:
    with pytest.raises(TypeError, match=r"unknown .* option\(s\) \['heartbeat'\]") as info:
        if kind == "connect()":
            async with reliablelink.connect("memory://nobody", client_id="agent-1", key=KEY, heartbeat=1):  # type: ignore[call-arg]
                pass
        else:
            await _serve_and_stop(echo, heartbeat=1)
    valid = str(info.value).split("valid options: ")[1].split(", ")
    assert valid == sorted(set(valid)), valid
    assert "ssl_context" in valid and "heartbeat_interval" in valid


@pytest.mark.parametrize("keys", [b"a secret of 32 bytes or so......", 42, ["agent-1"]])
async def test_keys_of_the_wrong_type_is_a_type_error_that_says_what_keys_must_be(keys: object) -> None:
    with pytest.raises(TypeError, match=r"keys must be a mapping \{client_id: key\}, a callable") as info:
        await _serve_and_stop(echo, keys=keys)
    if isinstance(keys, bytes):
        assert "one key? pass keys={'client-id': key}" in str(info.value)


async def test_a_unix_socket_in_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "rl.sock"
    with pytest.raises(FileNotFoundError) as info:
        await _serve_and_stop(echo, f"unix://{path}")
    message = str(info.value)
    assert f"cannot listen on unix socket {path}" in message, message
    assert f"the directory {path.parent} does not exist" in message, message


async def test_a_port_in_use_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}: ") as info:
            await _serve_and_stop(echo, f"tcp://127.0.0.1:{port}")
    assert info.value.errno is not None and info.value.errno > 0


# -- handlers checked when serve() is called ---------------------------------------------


def plain(session: reliablelink.Session) -> None:
    """The mistake: ``async`` forgotten."""


def plain_with_work(session: reliablelink.Session) -> None:
    if session.session_id:
        print(session.session_id)
        return
    print("never")


def generator(session: reliablelink.Session) -> Iterator[None]:
    yield


async def async_generator(session: reliablelink.Session) -> AsyncIterator[None]:
    yield


@pytest.mark.parametrize(
    ("handler", "says"),
    [
        (plain, "handler plain is a plain function; it must be a coroutine function: 'async def plain(session)'"),
        (plain_with_work, "handler plain_with_work is a plain function"),
        (functools.partial(plain), "handler plain is a plain function"),
        (generator, "handler generator is a generator function"),
        (async_generator, "handler async_generator is an async generator function"),
        ("echo", "handler must be an async function handler(session), got str"),
    ],
)
async def test_serve_refuses_a_handler_that_cannot_be_awaited_at_once(handler: Any, says: str) -> None:
    with pytest.raises(TypeError) as info:
        await _serve_and_stop(handler)
    assert says in str(info.value), str(info.value)


class AsyncCallable:
    async def __call__(self, session: reliablelink.Session) -> None:
        await echo(session)


class Desk:
    async def handle(self, session: reliablelink.Session, greeting: bytes = b"hi") -> None:
        await session.send(greeting)
        await echo(session)


def decorated(fn: Callable[[reliablelink.Session], Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(fn)
    def wrapper(session: reliablelink.Session) -> Awaitable[None]:
        return fn(session)

    return wrapper


def returns_an_awaitable(session: reliablelink.Session) -> Awaitable[None]:
    return echo(session)


def returns_one_or_the_other(session: reliablelink.Session) -> Awaitable[None] | None:
    return echo(session) if session.session_id else None


@pytest.mark.parametrize(
    "handler",
    [
        echo,
        functools.partial(echo),
        functools.partial(functools.partial(Desk().handle, greeting=b"hello")),
        Desk().handle,
        AsyncCallable(),
        decorated(echo),
        lambda session: echo(session),  # noqa: PLW0108 (a lambda is what is tested)
        returns_an_awaitable,
        returns_one_or_the_other,
        print,  # a builtin: nothing to inspect, so it is trusted
    ],
    ids=[
        "async-def",
        "partial",
        "partial-of-partial-of-a-method",
        "bound-async-method",
        "async-__call__",
        "functools.wraps",
        "lambda",
        "plain-def-returning-a-coroutine",
        "plain-def-returning-one-or-none",
        "builtin",
    ],
)
def test_handlers_that_may_return_an_awaitable_are_accepted(handler: Any) -> None:
    check_handler(handler)


@pytest.mark.parametrize(
    "handler",
    [
        functools.partial(Desk().handle, greeting=b"hello"),
        lambda session: echo(session),  # noqa: PLW0108 (a lambda is what is tested)
        AsyncCallable(),
    ],
    ids=["partial-of-a-method", "lambda", "async-__call__"],
)
async def test_accepted_handlers_serve_sessions(handler: Any, run_server: RunServer) -> None:
    server = await run_server(handler)
    with trio.fail_after(10):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            await session.send(b"ping")
            replies = [await session.receive()]
            if replies == [b"hello"]:
                replies.append(await session.receive())
        assert replies[-1] == b"ping"


async def test_send_of_text_says_messages_are_bytes_and_send_after_close_says_who_closed(
    run_server: RunServer,
) -> None:
    """Both were fixed before issue 19's work; kept here with the other misuse errors."""
    server = await run_server(echo)
    with trio.fail_after(10):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY) as session:
            with pytest.raises(TypeError, match="a message is bytes, not str"):
                await session.send("hello")  # type: ignore[arg-type]
        with pytest.raises(reliablelink.SessionClosed, match="this side closed"):
            await session.send(b"late")


def test_check_handler_is_quiet_for_a_mock() -> None:
    check_handler(mock.Mock())
    check_handler(mock.AsyncMock())
