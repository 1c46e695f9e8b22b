"""Options accepted by :func:`reliablelink.connect` and :func:`reliablelink.serve`.

Keyword options are gathered into frozen dataclasses here so that a typo fails at once
with the list of valid names, instead of being ignored. :class:`ConnectOptions` and
:class:`ServeOptions` describe the same names and types for type checkers and IDEs
(``**options: Unpack[ConnectOptions]``); a unit test keeps them equal to what
``from_kwargs`` accepts.
"""

from __future__ import annotations

import dataclasses
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ._core import LinkParams
from ._guard import GuardLimits
from .stores import SessionStore

__all__ = ["Backoff", "ClientOptions", "ConnectOptions", "ServeOptions", "ServerOptions"]


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


class ConnectOptions(TypedDict, total=False):
    """The keyword options of :func:`reliablelink.connect`, for type checkers and IDEs.

    ``connect(url, client_id=..., key=..., **options)`` is typed as
    ``**options: Unpack[ConnectOptions]``: a misspelt name or a value of the wrong type is a
    type error. Every key is optional; the defaults and the checks on the values are those
    of :ref:`the options table <quickstart-options>`. At run time an unknown name still
    raises ``TypeError``.

    Attributes:
        heartbeat_interval: send a PING when nothing was sent for this long (3 s).
        dead_after: declare the link dead when nothing was received for this long, and
            reconnect (3 heartbeat intervals).
        max_message_size: largest message payload, bytes (1 MiB).
        max_inflight: most messages sent and not yet acknowledged (4096).
        max_inflight_bytes: most payload bytes sent and not yet acknowledged (8 MiB).
        reconnect_backoff: a :class:`Backoff`, or its arguments as an ``(initial, maximum)``
            or ``(initial, maximum, multiplier)`` tuple (0.1 s to 5 s, doubling).
        connect_timeout: the first connection must succeed within it; each later attempt
            is bounded by it (10 s).
        close_timeout: bound on closing the session (10 s).
        ack_delay: longest wait before a standalone ACK (0.02 s).
        ssl_context: TLS settings for ``tls://`` and ``wss://`` (``None``: the system's CAs).
        store: where the session is kept, so that a restarted process resumes it (``None``:
            in memory only).
    """

    heartbeat_interval: float
    dead_after: float
    max_message_size: int
    max_inflight: int
    max_inflight_bytes: int
    reconnect_backoff: Backoff | tuple[float, float] | tuple[float, float, float]
    connect_timeout: float
    close_timeout: float
    ack_delay: float
    ssl_context: ssl.SSLContext | None
    store: SessionStore | None


class ServeOptions(TypedDict, total=False):
    """The keyword options of :func:`reliablelink.serve`, for type checkers and IDEs.

    ``serve(handler, url, keys=..., **options)`` is typed as
    ``**options: Unpack[ServeOptions]``: a misspelt name or a value of the wrong type is a
    type error. Every key is optional; the defaults and the checks on the values are those
    of :ref:`the options table <quickstart-options>`. At run time an unknown name still
    raises ``TypeError``.

    Attributes:
        heartbeat_interval: cap on the clients' heartbeat interval (3 s).
        dead_after: cap on the clients' dead-link time (3 heartbeat intervals).
        max_message_size: cap on the largest message payload, bytes (1 MiB).
        max_inflight: cap on messages sent and not yet acknowledged (4096).
        max_inflight_bytes: cap on payload bytes sent and not yet acknowledged (8 MiB).
        session_ttl: how long a detached session is kept (300 s).
        handshake_timeout: time a new connection has to complete the handshake (10 s).
        close_timeout: bound on closing a session (10 s).
        ack_delay: longest wait before a standalone ACK (0.02 s).
        ssl_context: TLS settings for ``tls://`` and ``wss://``.
        store: where sessions live (``None``: in this process only).
        max_sessions: most sessions held at a time (100,000).
        max_sessions_per_client: most sessions one client id may hold (64).
        max_connections_per_address: open connections from one address (64).
        max_pending_handshakes: connections, from all addresses, not yet authenticated (1024).
        failures_before_delay: failed handshakes from one address before answers slow
            down (3).
        failure_delay: added wait per failure beyond ``failures_before_delay`` (0.5 s).
        failure_delay_max: longest wait before answering a throttled address (5 s).
        failures_before_lockout: failed handshakes after which the address is refused (20).
        lockout: how long a locked-out address is refused (60 s).
        max_tracked: addresses remembered for these limits (100,000).
    """

    heartbeat_interval: float
    dead_after: float
    max_message_size: int
    max_inflight: int
    max_inflight_bytes: int
    session_ttl: float
    handshake_timeout: float
    close_timeout: float
    ack_delay: float
    ssl_context: ssl.SSLContext | None
    store: SessionStore | None
    max_sessions: int
    max_sessions_per_client: int
    max_connections_per_address: int
    max_pending_handshakes: int
    failures_before_delay: int
    failure_delay: float
    failure_delay_max: float
    failures_before_lockout: int
    lockout: float
    max_tracked: int


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
        raise TypeError(f"unknown {kind} option(s) {sorted(opts)}; valid options: {', '.join(sorted(set(valid)))}")


# The link parameters; the other names are fields of ClientOptions and ServerOptions.
_COMMON = ["heartbeat_interval", "dead_after", "max_message_size", "max_inflight", "max_inflight_bytes"]


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
    def from_kwargs(cls, options: Mapping[str, Any]) -> ClientOptions:
        """Build from ``connect(**options)``; ``TypeError`` for an unknown name."""
        opts = dict(options)
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
    def from_kwargs(cls, options: Mapping[str, Any]) -> ServerOptions:
        """Build from ``serve(**options)``; ``TypeError`` for an unknown name."""
        opts = dict(options)
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
