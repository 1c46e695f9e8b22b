"""The library's own operational counters: plain integers, read when metrics are scraped.

Nothing here imports ``prometheus_client``. :mod:`reliablelink._metrics` names these numbers
(metric names, help, types and labels are defined there, and nowhere else) and turns them
into metrics at scrape time.

Two kinds of numbers:

* **Rare events** (a handshake, a resume, a lockout, a session's end, a reconnect, a store
  operation) are counted inline where they happen, in a :class:`RoleStats` (one for the
  client side, one for the server side of this process) or a :class:`Histogram`: an
  integer addition, no lock, no call into a metrics library.
* **Per-message numbers** (messages and payload bytes sent and received, resends,
  reconnects, the window) are already kept by each session's core for ``Session.stats``.
  Nothing is added per message for metrics: a scrape sums them over the live sessions and
  adds a running total for the sessions that are gone. Each session is tracked from the
  moment the client or the server takes it on (:func:`track`); when its carrier is garbage
  collected, a weakref callback queues it, and the next :func:`track` or scrape folds its
  final numbers into the totals.

A scrape usually runs in another thread (``prometheus_client.start_http_server``). The one
lock here is taken by :func:`track` (once per session) and by :func:`snapshot` (once per
scrape), never per message; the weakref callback only appends to a list, so it is safe
wherever the garbage collector runs it. Numbers read while Trio updates them may be a
message behind; a counter is never reported lower than before (see :func:`snapshot`), so a
scraper never sees a false reset.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._errors import SessionClosed, SessionExpired, SessionMoved

if TYPE_CHECKING:
    from ._carrier import Carrier
    from ._core import SessionCore

__all__ = [
    "CLIENT",
    "CONNECT_OUTCOMES",
    "END_REASONS",
    "HANDSHAKE_OUTCOMES",
    "ROLES",
    "SERVER",
    "STORE_OPS",
    "UNTRACKED",
    "Histogram",
    "RoleStats",
    "Snapshot",
    "end_reason",
    "snapshot",
    "store_histogram",
    "track",
]

#: Server handshake outcomes (the ``outcome`` label; a fixed set).
HANDSHAKE_OUTCOMES = (
    "ok",
    "wrong_key",
    "unknown_client",
    "timeout",
    "refused_limits",
    "resume_refused",
    "resume_conflict",
    "protocol_error",
    "store_error",
    "disconnected",
)
#: Client connection attempt outcomes.
CONNECT_OUTCOMES = ("ok", "auth_failed", "session_gone", "failed")
#: Why sessions end.
END_REASONS = ("closed", "expired", "moved", "failed")
#: Store operations timed (``SessionStore`` methods), plus ``other`` for anything else.
STORE_OPS = ("load", "create", "take_over", "claim", "commit", "delete", "renew", "close", "other")

# Histogram bucket upper bounds, in seconds (a last bucket, +Inf, is implied).
RECONNECT_BOUNDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OFFLINE_BOUNDS = (0.0, 0.1, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)
STORE_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Counts of observations per fixed bucket, and their sum: updated on rare events only.

    Attributes:
        bounds: the buckets' upper bounds (inclusive), ascending; the last bucket is +Inf.
        counts: observations per bucket (not cumulative), ``len(bounds) + 1`` of them.
        sum: the sum of all observations.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def copy(self) -> Histogram:
        """A copy (for a snapshot)."""
        other = Histogram(self.bounds)
        other.counts = list(self.counts)
        other.sum = self.sum
        return other


class RoleStats:
    """Counters of one role (client or server side) in this process; plain integers.

    Attributes:
        role: ``"client"`` or ``"server"``.
        opened: sessions taken on (created, or loaded from a store).
        ended: sessions ended, by reason (:data:`END_REASONS`).
        handshakes: server handshakes by outcome (:data:`HANDSHAKE_OUTCOMES`).
        connect_attempts: client connection attempts by outcome (:data:`CONNECT_OUTCOMES`).
        resumes: resumes accepted (server).
        lockouts: addresses locked out after repeated failed handshakes (server).
        moves_in: sessions taken over from the store (another node, or an earlier process).
        moves_out: sessions this process lost to another attachment (fenced).
        reconnect_seconds: link lost to the next attach, per reconnect.
        offline_seconds: a session's total time without a connection, when it ends.
    """

    __slots__ = (
        "connect_attempts",
        "ended",
        "handshakes",
        "lockouts",
        "moves_in",
        "moves_out",
        "offline_seconds",
        "opened",
        "reconnect_seconds",
        "resumes",
        "role",
    )

    def __init__(self, role: str) -> None:
        self.role = role
        self.opened = 0
        self.ended = dict.fromkeys(END_REASONS, 0)
        self.handshakes = dict.fromkeys(HANDSHAKE_OUTCOMES, 0)
        self.connect_attempts = dict.fromkeys(CONNECT_OUTCOMES, 0)
        self.resumes = 0
        self.lockouts = 0
        self.moves_in = 0
        self.moves_out = 0
        self.reconnect_seconds = Histogram(RECONNECT_BOUNDS)
        self.offline_seconds = Histogram(OFFLINE_BOUNDS)

    def session_ended(self, error: BaseException, offline: float) -> None:
        """A session of this role ended with ``error`` after ``offline`` seconds offline in all."""
        self.ended[end_reason(error)] += 1
        self.offline_seconds.observe(offline)


def end_reason(error: BaseException) -> str:
    """The ``reason`` label for a session that ended with ``error``."""
    if isinstance(error, SessionMoved):  # StoreFenced included
        return "moved"
    if isinstance(error, SessionClosed):
        return "closed"
    if isinstance(error, SessionExpired):
        return "expired"
    return "failed"


ROLES = (CLIENT := RoleStats("client"), SERVER := RoleStats("server"))
#: Where a carrier that nobody tracks counts (tests that build one directly); never reported.
UNTRACKED = RoleStats("untracked")

_STORE_SECONDS = {op: Histogram(STORE_BOUNDS) for op in STORE_OPS}


def store_histogram(method_name: str) -> Histogram:
    """The latency histogram of a store operation, by its method's name (``_load``, ``commit``...)."""
    return _STORE_SECONDS.get(method_name.lstrip("_")) or _STORE_SECONDS["other"]


# -- sessions: summed at scrape time ----------------------------------------------------


@dataclass(slots=True)
class _Sums:
    """Per-message numbers of a role's sessions (see :class:`Snapshot`)."""

    sent: int = 0
    received: int = 0
    resent: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    reconnects: int = 0

    def add(self, other: _Sums, sign: int = 1) -> None:
        self.sent += sign * other.sent
        self.received += sign * other.received
        self.resent += sign * other.resent
        self.bytes_sent += sign * other.bytes_sent
        self.bytes_received += sign * other.bytes_received
        self.reconnects += sign * other.reconnects

    def copy(self) -> _Sums:
        return _Sums(self.sent, self.received, self.resent, self.bytes_sent, self.bytes_received, self.reconnects)


_ZERO = _Sums()


class _Tracked:
    """One session being tracked: its core, and its counters when tracking began (a session
    loaded from a store arrives with the numbers of an earlier process)."""

    __slots__ = ("base", "core", "ref", "role")

    def __init__(self, carrier: Carrier, role: RoleStats) -> None:
        self.core = carrier.core
        self.role = role
        self.base = _ZERO
        base = self.read()
        if base != _ZERO:  # most sessions start from zero: share one object
            self.base = base
        self.ref: weakref.ref[Carrier] | None = weakref.ref(carrier, self._gone)

    def _gone(self, _ref: object) -> None:
        # Any thread, any moment the garbage collector runs: only an append (atomic).
        _dead.append(self)

    def read(self) -> _Sums:
        core: SessionCore = self.core
        s = core.stats
        base = self.base
        return _Sums(
            s.sent - base.sent,
            core.delivered - base.received,
            s.resent - base.resent,
            s.acked_bytes + core.unacked_bytes - base.bytes_sent,
            core.delivered_bytes - base.bytes_received,
            max(0, s.attaches - 1) - base.reconnects,
        )


_lock = threading.Lock()
# Per role: the sessions tracked and not yet gone, the sum of their starting numbers
# (subtracted once per scrape instead of once per session), and the final numbers of the
# sessions that are gone.
_live: dict[str, set[_Tracked]] = {role.role: set() for role in ROLES}
_live_base = {role.role: _Sums() for role in ROLES}
_dead: list[_Tracked] = []
_gone_totals = {role.role: _Sums() for role in ROLES}
_reported: dict[str, _Sums] = {role.role: _Sums() for role in ROLES}


def _fold_dead() -> None:
    """Move the numbers of garbage-collected sessions into the totals (``_lock`` held)."""
    while _dead:
        entry = _dead.pop()
        role = entry.role.role
        if entry in _live[role]:
            _live[role].discard(entry)
            _live_base[role].add(entry.base, -1)
            _gone_totals[role].add(entry.read())
        entry.ref = None


def track(carrier: Carrier, role: RoleStats) -> None:
    """Count ``carrier``'s session under ``role`` from now on (once per session)."""
    if carrier.counters is role:
        return
    carrier.counters = role
    role.opened += 1
    entry = _Tracked(carrier, role)
    with _lock:
        _fold_dead()
        _live[role.role].add(entry)
        _live_base[role.role].add(entry.base)


@dataclass(slots=True)
class RoleSnapshot:
    """One role's numbers at one instant (see :func:`snapshot`).

    Attributes:
        stats: the role's event counters and histograms (copies).
        sums: messages and bytes sent, received and resent, and reconnects (never lower
            than in an earlier snapshot).
        attached: open sessions with a connection now.
        detached: open sessions without one.
        inflight: messages sent and not yet acknowledged, over all open sessions.
        inflight_bytes: their payload bytes.
        window_limit: the sum of the open sessions' ``max_inflight``.
        window_full: open sessions whose window is full (``send()`` would wait).
    """

    stats: RoleStats
    sums: _Sums = field(default_factory=_Sums)
    attached: int = 0
    detached: int = 0
    inflight: int = 0
    inflight_bytes: int = 0
    window_limit: int = 0
    window_full: int = 0


@dataclass(slots=True)
class Snapshot:
    """Every number, at one instant: per role, and the store operations' latencies."""

    roles: dict[str, RoleSnapshot]
    store_seconds: dict[str, Histogram]


def _add_cores(snap: RoleSnapshot, cores: list[SessionCore]) -> None:
    """Add the sessions' numbers to ``snap`` (plain local sums: this loop is the scrape's cost)."""
    sent = received = resent = bytes_sent = bytes_received = reconnects = 0
    attached = detached = inflight = inflight_bytes = window_limit = window_full = 0
    for core in cores:
        stats = core.stats
        unacked_bytes = core.unacked_bytes
        sent += stats.sent
        received += core.delivered
        resent += stats.resent
        bytes_sent += stats.acked_bytes + unacked_bytes
        bytes_received += core.delivered_bytes
        if stats.attaches > 1:
            reconnects += stats.attaches - 1
        if core.finished:
            continue
        if core.attached:
            attached += 1
        else:
            detached += 1
        n = len(core.unacked)
        inflight += n
        inflight_bytes += unacked_bytes
        params = core.params
        window_limit += params.max_inflight
        if n and (n >= params.max_inflight or unacked_bytes >= params.max_inflight_bytes):
            window_full += 1
    sums = snap.sums
    sums.add(_Sums(sent, received, resent, bytes_sent, bytes_received, reconnects))
    snap.attached, snap.detached = attached, detached
    snap.inflight, snap.inflight_bytes = inflight, inflight_bytes
    snap.window_limit, snap.window_full = window_limit, window_full


def _copy_role(role: RoleStats) -> RoleStats:
    copy = RoleStats(role.role)
    for name in RoleStats.__slots__:
        value = getattr(role, name)
        if isinstance(value, dict):
            value = dict(value)
        elif isinstance(value, Histogram):
            value = value.copy()
        setattr(copy, name, value)
    return copy


def snapshot() -> Snapshot:
    """Read every number: the counters, and the sums over the live sessions.

    Costs one pass over the live sessions (a few attribute reads each, no allocation); the
    lock is held only to fold the sessions that are gone and to copy the live ones.
    """
    with _lock:
        _fold_dead()
        roles: dict[str, RoleSnapshot] = {}
        cores: dict[str, list[SessionCore]] = {}
        for role in ROLES:
            name = role.role
            snap = RoleSnapshot(_copy_role(role), _gone_totals[name].copy())
            snap.sums.add(_live_base[name], -1)
            roles[name] = snap
            cores[name] = [entry.core for entry in _live[name]]
    for name, snap in roles.items():
        _add_cores(snap, cores[name])
    with _lock:
        # A number read while Trio was between two related updates (an ACK moves bytes from
        # in flight to acknowledged) may be off for an instant: report a counter never lower
        # than before, or a scraper would take the dip for a restart.
        for name, snap in roles.items():
            reported = _reported[name]
            sums = snap.sums
            for attr in _Sums.__slots__:
                value = max(getattr(reported, attr), getattr(sums, attr))
                setattr(reported, attr, value)
                setattr(sums, attr, value)
    store = {op: h.copy() for op, h in _STORE_SECONDS.items()}
    return Snapshot(roles, store)
