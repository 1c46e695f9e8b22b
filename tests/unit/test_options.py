"""Options: validation, and the reconnect backoff's full jitter."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from reliablelink import Backoff, load_key_file
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
