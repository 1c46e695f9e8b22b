"""Logs across a session's life: every line about a session names it, its client and its peer
(``key=value`` in the message and in ``extra``), and no key or resume token ever appears."""

from __future__ import annotations

import base64
import logging
import re
from typing import Any

import pytest
import trio
import trio.testing

import reliablelink
from reliablelink import LinkState, _server
from reliablelink._core import new_token, rotate_tokens
from tests.helpers import KEY, echo, memory_connections, start_server

SIM: dict[str, Any] = {"heartbeat_interval": 1.0, "dead_after": 3.0}
CLIENT_SIM: dict[str, Any] = {**SIM, "reconnect_backoff": (0.1, 0.5)}
WRONG_KEY = b"w" * 32
EVIL_ID = "evil\nclient=admin peer=1.2.3.4"


def extra(record: logging.LogRecord, name: str) -> str:
    """A field the library passed through ``extra`` (empty if missing)."""
    return str(vars(record).get(name, ""))


def forms(secret: bytes) -> set[str]:
    """The ways a secret could be written into a log line."""
    return {
        secret.hex(),
        secret.hex().upper(),
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret).decode().rstrip("="),
        repr(secret),
        secret.decode("latin-1"),
    }


async def test_every_line_about_a_session_names_it_and_no_secret_is_logged(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("reliablelink").handlers)
    # Every resume token the server issues, to look for them in the log afterwards.
    tokens: list[bytes] = []

    def recorded_new_token() -> bytes:
        tokens.append(new_token())
        return tokens[-1]

    def recorded_rotate(presented: bytes, current: bytes, previous: bytes) -> tuple[bytes, bytes]:
        new, prev = rotate_tokens(presented, current, previous)
        tokens.append(new)
        return new, prev

    monkeypatch.setattr(_server, "new_token", recorded_new_token)
    monkeypatch.setattr(_server, "rotate_tokens", recorded_rotate)
    caplog.set_level(logging.DEBUG, logger="reliablelink")

    server = await start_server(nursery, echo, "memory://", **SIM)
    with trio.fail_after(600):
        async with reliablelink.connect(server.url, client_id="agent-1", key=KEY, **CLIENT_SIM) as session:
            sid = session.session_id
            await session.send(b"one")
            assert await session.receive() == b"one"
            (conn,) = memory_connections(server)
            conn.reset()  # the connection is cut; the client resumes
            assert await session.wait_link_change() is LinkState.RECONNECTING
            assert await session.wait_link_change() is LinkState.CONNECTED
            await session.send(b"two")
            assert await session.receive() == b"two"
        while server.sessions:  # noqa: ASYNC110 - the server's registry is all there is
            await trio.sleep(0.1)
        for client_id, key in (("agent-1", WRONG_KEY), (EVIL_ID, KEY)):
            with pytest.raises(reliablelink.AuthenticationError):
                async with reliablelink.connect(server.url, client_id=client_id, key=key, **CLIENT_SIM):
                    pass
    assert len(tokens) >= 2, "a token issued for the session and one for its resume"

    records = [r for r in caplog.records if r.name.startswith("reliablelink")]
    lines = [(r.name, r.getMessage()) for r in records]
    about_sessions = [r for r in records if r.name in ("reliablelink.server", "reliablelink.client")]
    about_sessions = [r for r in about_sessions if not r.getMessage().startswith("serving on")]
    assert about_sessions, lines
    for r in about_sessions:
        message = r.getMessage()
        fields = {"session": extra(r, "session_id"), "client": extra(r, "client_id"), "peer": extra(r, "peer")}
        for name, value in fields.items():
            assert value, f"{name} is in extra: {message}"
            assert re.search(rf"(^| ){name}=", message), f"{name}= in the message: {message}"
        assert "\n" not in message and "\r" not in message, f"one line per event: {message!r}"

    def find(logger: str, event: str, **expect: str) -> logging.LogRecord:
        for r in about_sessions:
            message = r.getMessage()
            if (
                r.name == f"reliablelink.{logger}"
                and message.startswith(event + " ")
                and all(f"{k}={v}" in message for k, v in expect.items())
            ):
                return r
        raise AssertionError(f"no {logger} line {event!r} with {expect}: {lines}")

    for logger in ("client", "server"):
        for event in ("session opened", "link lost", "session resumed", "session ended"):
            r = find(logger, event, session=sid)
            assert (extra(r, "session_id"), extra(r, "client_id")) == (sid, "agent-1"), r.getMessage()
            assert extra(r, "peer") != "-", f"the peer is known: {r.getMessage()}"
    find("server", "handshake refused", client="agent-1", outcome="wrong_key")
    evil = find("server", "handshake refused", outcome="unknown_client")
    assert 'client="evil\\nclient=admin peer=1.2.3.4"' in evil.getMessage(), "a hostile client id is quoted"
    assert extra(evil, "client_id") == EVIL_ID

    secrets = set().union(*(forms(s) for s in [KEY, WRONG_KEY, *tokens]))
    for r in records:
        text = r.getMessage() + " " + " ".join(str(v) for v in vars(r).values())
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"a key or token in the log: {r.getMessage()}"
        for run in re.findall(r"[0-9a-fA-F]{16,}", r.getMessage()):
            assert run == sid, f"the only long hex string logged is the session id: {r.getMessage()}"
