"""The operational counters behind ``reliablelink.metrics``: histograms, sums over live
sessions, the running total of sessions that are gone, and counters that never go down.

The counters are per process (other tests add to them too), so checks compare snapshots.
"""

from __future__ import annotations

import gc

import pytest

from reliablelink import _stats
from reliablelink._carrier import Carrier
from tests.corepair import attached_pair, drain_inbox, pump


def test_a_histogram_counts_each_observation_in_the_first_bucket_that_holds_it() -> None:
    h = _stats.Histogram((0.1, 1.0))
    for value in (0.0, 0.1, 0.5, 1.0, 2.0, 100.0):
        h.observe(value)
    assert h.counts == [2, 2, 2], "le is inclusive; the last bucket is +Inf"
    assert h.sum == pytest.approx(103.6)


def sums(role: str = "client") -> _stats._Sums:
    gc.collect()
    return _stats.snapshot().roles[role].sums


def test_a_sessions_numbers_are_summed_while_it_lives_and_kept_once_it_is_gone() -> None:
    a, b = attached_pair()
    carrier = Carrier(a, close_timeout=1)
    before = sums()
    _stats.track(carrier, _stats.CLIENT)
    for _ in range(3):
        a.try_send(b"12345")
    pump(a, b)
    drain_inbox(b)
    pump(b, a)  # b's acknowledgement
    live = sums()
    assert (live.sent - before.sent, live.bytes_sent - before.bytes_sent) == (3, 15)
    del carrier
    gone = sums()
    assert (gone.sent - before.sent, gone.bytes_sent - before.bytes_sent) == (3, 15), "folded into the total"
    a.try_send(b"after")  # the core outlived its carrier: no longer counted
    assert sums().sent == gone.sent


def test_a_session_loaded_from_a_store_counts_from_when_it_was_loaded() -> None:
    a, _ = attached_pair()
    a.stats.sent = 1000  # as restore() leaves a core loaded from a store
    carrier = Carrier(a, close_timeout=1)
    before = sums()
    _stats.track(carrier, _stats.CLIENT)
    assert sums().sent == before.sent, "an earlier process's messages are not counted again"
    a.try_send(b"x")
    assert sums().sent == before.sent + 1
    del carrier


def test_a_counter_read_mid_update_is_never_reported_lower() -> None:
    a, _ = attached_pair()
    carrier = Carrier(a, close_timeout=1)
    _stats.track(carrier, _stats.CLIENT)
    a.try_send(b"x")
    high = sums()
    a.stats.sent -= 1  # as if read between two related updates
    assert sums().sent == high.sent
    a.stats.sent += 1
    del carrier
