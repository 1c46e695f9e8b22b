"""Per-address admission control, with time passed in."""

from __future__ import annotations

import pytest

from reliablelink._guard import AddressGuard, GuardLimits


def test_connection_cap_per_address_and_release() -> None:
    guard = AddressGuard(GuardLimits(max_connections_per_address=2))
    assert guard.admit("a", 0) is None and guard.admit("a", 0) is None
    assert "connections already open" in (guard.admit("a", 0) or "")
    assert guard.admit("b", 0) is None, "another address is not affected"
    guard.release("a")
    assert guard.admit("a", 0) is None


def test_pending_handshake_cap() -> None:
    guard = AddressGuard(GuardLimits(max_pending_handshakes=2))
    assert guard.admit("a", 0) is None and guard.admit("b", 0) is None
    assert "handshakes already pending" in (guard.admit("c", 0) or "")
    guard.handshake_done()
    assert guard.admit("c", 0) is None


def test_failures_slow_down_then_lock_out_then_are_forgotten() -> None:
    lim = GuardLimits(
        failures_before_delay=2, failure_delay=0.5, failure_delay_max=1.2, failures_before_lockout=5, lockout=60
    )
    guard = AddressGuard(lim)
    delays = []
    for t in range(4):
        delays.append(guard.delay("a", t))
        assert not guard.failure("a", t)
    assert delays == [0.0, 0.0, 0.5, 1.0]
    assert guard.delay("a", 4) == 1.2, "capped at failure_delay_max"
    assert guard.failure("a", 4), "the fifth failure locks the address out"
    assert "locked out" in (guard.admit("a", 10) or "")
    assert guard.admit("b", 10) is None
    assert guard.admit("a", 4 + 60) is None, "lockout and failures expire"
    assert guard.delay("a", 64) == 0.0


def test_table_is_bounded() -> None:
    guard = AddressGuard(GuardLimits(max_tracked=100))
    for i in range(10_000):
        guard.failure(f"10.0.{i // 256}.{i % 256}", 0)
    assert len(guard._records) == 100


def test_limits_are_range_checked() -> None:
    with pytest.raises(ValueError, match="max_connections_per_address"):
        GuardLimits(max_connections_per_address=0)
    with pytest.raises(ValueError, match="lockout"):
        GuardLimits(lockout=-1)
