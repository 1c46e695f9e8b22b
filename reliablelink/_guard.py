"""Per-address admission control: connection caps, pending-handshake cap, brute-force throttle.

Plain bookkeeping with time passed in (no Trio), so it is tested without sockets. The server
asks :meth:`AddressGuard.admit` before spending anything on a new connection, and reports
each handshake's outcome. Memory is bounded: at most ``max_tracked`` addresses are
remembered, the least recently seen are forgotten first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["AddressGuard", "GuardLimits"]


@dataclass(frozen=True, slots=True)
class GuardLimits:
    """Limits applied per client address (see :func:`reliablelink.serve`).

    Attributes:
        max_connections_per_address: open connections from one address.
        max_pending_handshakes: connections, from all addresses, not yet authenticated.
        failures_before_delay: failed handshakes from one address before answers slow down.
        failure_delay: added wait per failure beyond ``failures_before_delay`` (seconds),
            capped at ``failure_delay_max``.
        failure_delay_max: longest wait before answering a throttled address.
        failures_before_lockout: failed handshakes after which the address is refused.
        lockout: how long a locked-out address is refused (seconds); failures older than this
            are forgotten.
        max_tracked: addresses remembered at most.
    """

    max_connections_per_address: int = 64
    max_pending_handshakes: int = 1024
    failures_before_delay: int = 3
    failure_delay: float = 0.5
    failure_delay_max: float = 5.0
    failures_before_lockout: int = 20
    lockout: float = 60.0
    max_tracked: int = 100_000

    def __post_init__(self) -> None:
        for name in (
            "max_connections_per_address",
            "max_pending_handshakes",
            "failures_before_delay",
            "failures_before_lockout",
            "max_tracked",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("failure_delay", "failure_delay_max", "lockout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")


@dataclass(slots=True)
class _Record:
    connections: int = 0
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float = 0.0


class AddressGuard:
    """Tracks connections and failed handshakes per address."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits
        self.pending = 0
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def _record(self, address: str) -> _Record:
        record = self._records.get(address)
        if record is None:
            record = self._records[address] = _Record()
            self._evict()
        else:
            self._records.move_to_end(address)
        return record

    def _evict(self) -> None:
        # Forget idle addresses first; an address with open connections is kept unless the
        # table is full of them (then the oldest goes, and its count restarts at zero).
        while len(self._records) > self.limits.max_tracked:
            self._records.popitem(last=False)

    def admit(self, address: str, now: float) -> str | None:
        """Account for a new connection; return why it is refused, or ``None`` to accept it.

        An accepted connection must later be :meth:`release`\\ d, and its handshake end in
        :meth:`handshake_done` (success or failure).
        """
        lim = self.limits
        record = self._record(address)
        self._expire(record, now)
        if record.locked_until > now:
            return f"locked out for {record.locked_until - now:.0f} s after {record.failures} failed handshakes"
        if record.connections >= lim.max_connections_per_address:
            return f"{record.connections} connections already open from this address"
        if self.pending >= lim.max_pending_handshakes:
            return f"{self.pending} handshakes already pending"
        record.connections += 1
        self.pending += 1
        return None

    def release(self, address: str) -> None:
        """A connection admitted from ``address`` has ended."""
        record = self._records.get(address)
        if record is not None and record.connections > 0:
            record.connections -= 1

    def handshake_done(self) -> None:
        """A pending handshake finished (either way)."""
        self.pending = max(0, self.pending - 1)

    def delay(self, address: str, now: float) -> float:
        """Seconds to wait before answering ``address`` (grows with its recent failures)."""
        lim = self.limits
        record = self._records.get(address)
        if record is None:
            return 0.0
        self._expire(record, now)
        extra = record.failures - lim.failures_before_delay
        return 0.0 if extra < 0 else min(lim.failure_delay_max, lim.failure_delay * (extra + 1))

    def failure(self, address: str, now: float) -> bool:
        """Record a failed handshake; return whether the address is now locked out.

        A success does not wipe failures (an attacker behind the same NAT as a legitimate
        client would otherwise never be locked out); they are forgotten ``lockout`` seconds
        after the last one.
        """
        lim = self.limits
        record = self._record(address)
        self._expire(record, now)
        record.failures += 1
        record.last_failure = now
        if record.failures >= lim.failures_before_lockout:
            record.locked_until = now + lim.lockout
            return True
        return False

    def _expire(self, record: _Record, now: float) -> None:
        if record.failures and now - record.last_failure >= self.limits.lockout:
            record.failures = 0
            record.locked_until = 0.0
