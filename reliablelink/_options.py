"""Options accepted by :func:`reliablelink.connect` and :func:`reliablelink.serve`.

Keyword options are gathered into frozen dataclasses here so that a typo fails at once
with the list of valid names, instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import random
import ssl
from dataclasses import dataclass, field
from typing import Any

from ._core import LinkParams
from ._guard import GuardLimits
from .stores import SessionStore

__all__ = ["Backoff", "ClientOptions", "ServerOptions"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential reconnect backoff with full jitter.

    The n-th consecutive failed attempt waits a uniformly random time between 0 and
    ``min(maximum, initial * multiplier**n)`` (the "full jitter" of AWS's analysis), so a
    thousand clients cut off by the same outage do not come back in lock step.

    Args:
        initial: upper bound of the first wait, seconds.
        maximum: cap of the upper bound, seconds.
        multiplier: growth per failed attempt.
        seed: seed of the jitter's random numbers, for reproducible tests (``None``: random).
    """

    initial: float = 0.1
    maximum: float = 5.0
    multiplier: float = 2.0
    seed: int | str | None = None

    def __post_init__(self) -> None:
        if not (0 < self.initial <= self.maximum and self.multiplier >= 1):
            raise ValueError(f"invalid backoff {self}: need 0 < initial <= maximum and multiplier >= 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number ``attempt`` (0 for the first retry)."""
        bound = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return (rng or random).uniform(0, bound)


def _link_params(opts: dict[str, Any]) -> LinkParams:
    names = ("heartbeat_interval", "dead_after", "max_message_size", "max_inflight", "max_inflight_bytes")
    given = {n: opts.pop(n) for n in names if n in opts}
    if "heartbeat_interval" in given and "dead_after" not in given:
        given["dead_after"] = 3 * given["heartbeat_interval"]
    return LinkParams(**given).validate()


def _check_store(store: object) -> None:
    if store is not None and not isinstance(store, SessionStore):
        raise TypeError(f"store must be a reliablelink.stores.SessionStore (or None), got {type(store).__name__}")


def _reject_unknown(kind: str, opts: dict[str, Any], valid: list[str]) -> None:
    if opts:
        raise TypeError(f"unknown {kind} option(s) {sorted(opts)}; valid options: {', '.join(sorted(valid))}")


_COMMON = ["heartbeat_interval", "dead_after", "max_message_size", "max_inflight", "max_inflight_bytes", "ssl_context"]


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Options of :func:`reliablelink.connect` (see its docstring)."""

    params: LinkParams = field(default_factory=LinkParams)
    reconnect_backoff: Backoff = field(default_factory=Backoff)
    connect_timeout: float = 10.0
    close_timeout: float = 10.0
    ack_delay: float = 0.02
    ssl_context: ssl.SSLContext | None = None
    store: SessionStore | None = None

    @classmethod
    def from_kwargs(cls, opts: dict[str, Any]) -> ClientOptions:
        """Build from ``connect(**options)``; ``TypeError`` for an unknown name."""
        opts = dict(opts)
        params = _link_params(opts)
        backoff = opts.pop("reconnect_backoff", None)
        if isinstance(backoff, tuple):
            backoff = Backoff(*backoff)
        fields = {f.name for f in dataclasses.fields(cls)} - {"params", "reconnect_backoff"}
        kwargs = {n: opts.pop(n) for n in list(opts) if n in fields}
        _reject_unknown("connect()", opts, [*_COMMON, "reconnect_backoff", *fields])
        result = cls(params=params, reconnect_backoff=backoff or Backoff(), **kwargs)
        _check_store(result.store)
        for name in ("connect_timeout", "close_timeout", "ack_delay"):
            if getattr(result, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(result, name)}")
        return result


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Options of :func:`reliablelink.serve` (see its docstring)."""

    params: LinkParams = field(default_factory=LinkParams)
    session_ttl: float = 300.0
    handshake_timeout: float = 10.0
    close_timeout: float = 10.0
    ack_delay: float = 0.02
    ssl_context: ssl.SSLContext | None = None
    store: SessionStore | None = None
    max_sessions: int = 100_000
    max_sessions_per_client: int = 64
    limits: GuardLimits = field(default_factory=GuardLimits)

    @classmethod
    def from_kwargs(cls, opts: dict[str, Any]) -> ServerOptions:
        """Build from ``serve(**options)``; ``TypeError`` for an unknown name."""
        opts = dict(opts)
        params = _link_params(opts)
        limit_names = {f.name for f in dataclasses.fields(GuardLimits)}
        limits = GuardLimits(**{n: opts.pop(n) for n in list(opts) if n in limit_names})
        fields = {f.name for f in dataclasses.fields(cls)} - {"params", "limits"}
        kwargs = {n: opts.pop(n) for n in list(opts) if n in fields}
        _reject_unknown("serve()", opts, [*_COMMON, *fields, *limit_names])
        result = cls(params=params, limits=limits, **kwargs)
        _check_store(result.store)
        for name in ("session_ttl", "handshake_timeout", "close_timeout", "ack_delay"):
            if getattr(result, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(result, name)}")
        for name in ("max_sessions", "max_sessions_per_client"):
            if getattr(result, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(result, name)}")
        return result
