"""Every metric reliablelink exposes: name, type, help, labels, and where its value comes from.

This module is the one place metrics are defined. :data:`METRICS` lists them;
:func:`read` gives their current values, backend-neutral (label values and a number, or a
:class:`~reliablelink.metrics.Histogram`); :func:`register` hands them to Prometheus through
a collector that calls :func:`read` at scrape time. A bridge to another backend (an
OpenTelemetry meter with observable instruments, say) needs :data:`METRICS` and
:func:`read` only.

The numbers themselves are the library's own plain counters (:mod:`reliablelink._stats`),
so nothing is added to the hot path, and nothing is registered until :func:`register` is
called. ``prometheus_client`` is imported by :func:`register` only (the
``reliablelink[prometheus]`` extra).

Labels are few and bounded: ``role`` (``client``, ``server``), ``state``, ``reason``,
``outcome``, ``direction``, ``op``; never a session id or a client id.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from . import _stats
from ._stats import Histogram

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["METRICS", "Histogram", "MetricSpec", "Sample", "read", "register"]

Kind = Literal["counter", "gauge", "histogram"]
#: One value of a metric: its label values (in the order of ``MetricSpec.labels``) and a
#: number, or a histogram.
Sample = tuple[tuple[str, ...], "float | Histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric.

    Attributes:
        name: the metric's name; Prometheus adds ``_total`` to a counter's.
        kind: ``counter``, ``gauge`` or ``histogram``.
        help: what it counts.
        labels: its label names.
        unit: ``seconds``, ``bytes``, ``messages`` or ``""``.
    """

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""


_ROLE = ("role",)

#: Every metric, in the order they are exposed.
METRICS: tuple[MetricSpec, ...] = (
    # Both ends (role="client" for sessions opened with connect(), "server" for serve()).
    MetricSpec(
        "reliablelink_messages_sent",
        "counter",
        "Messages accepted by send() (each counted once, however often it is resent).",
        _ROLE,
    ),
    MetricSpec("reliablelink_messages_received", "counter", "Messages handed to the application.", _ROLE),
    MetricSpec(
        "reliablelink_messages_resent",
        "counter",
        "Messages sent again after a reconnect (the peer had not received them).",
        _ROLE,
    ),
    MetricSpec(
        "reliablelink_payload_sent_bytes",
        "counter",
        "Payload bytes of the messages accepted by send().",
        _ROLE,
        "bytes",
    ),
    MetricSpec(
        "reliablelink_payload_received_bytes",
        "counter",
        "Payload bytes of the messages handed to the application.",
        _ROLE,
        "bytes",
    ),
    MetricSpec("reliablelink_reconnects", "counter", "Connections that resumed a session, after its first.", _ROLE),
    MetricSpec(
        "reliablelink_sessions_opened",
        "counter",
        "Sessions this process took on: created, or loaded from a session store.",
        _ROLE,
    ),
    MetricSpec(
        "reliablelink_sessions_ended",
        "counter",
        "Sessions ended, by reason: closed (by either side), expired (session_ttl), moved (taken over by "
        "another connection or server node), failed.",
        ("role", "reason"),
    ),
    MetricSpec(
        "reliablelink_sessions",
        "gauge",
        "Open sessions, attached (a connection carries them) or detached (waiting for one).",
        ("role", "state"),
    ),
    MetricSpec(
        "reliablelink_inflight_messages",
        "gauge",
        "Messages sent and not yet acknowledged, over all open sessions (the window's fill).",
        _ROLE,
        "messages",
    ),
    MetricSpec("reliablelink_inflight_bytes", "gauge", "Payload bytes of the messages in flight.", _ROLE, "bytes"),
    MetricSpec(
        "reliablelink_window_limit_messages",
        "gauge",
        "Sum of the open sessions' windows (max_inflight): the most that could be in flight.",
        _ROLE,
        "messages",
    ),
    MetricSpec(
        "reliablelink_window_full_sessions",
        "gauge",
        "Open sessions whose window is full now: send() waits for acknowledgements (backpressure).",
        _ROLE,
    ),
    MetricSpec(
        "reliablelink_reconnect_seconds",
        "histogram",
        "Time from a lost connection to the session's next attach.",
        _ROLE,
        "seconds",
    ),
    MetricSpec(
        "reliablelink_session_offline_seconds",
        "histogram",
        "A session's total time without a connection after its first, observed when it ends.",
        _ROLE,
        "seconds",
    ),
    # Server only.
    MetricSpec(
        "reliablelink_handshakes",
        "counter",
        "Server handshakes by outcome: ok, wrong_key, unknown_client, timeout, refused_limits (admission "
        "limits or session caps), resume_refused (bad token, unknown, expired or closed session), "
        "resume_conflict (another node claimed the session; the client retries), protocol_error, "
        "store_error, disconnected.",
        ("outcome",),
    ),
    MetricSpec("reliablelink_resumes", "counter", "Resumes the server accepted."),
    MetricSpec(
        "reliablelink_session_moves",
        "counter",
        "Sessions moved between server nodes: in (taken over from the store), out (fenced: another node took it over).",
        ("direction",),
    ),
    MetricSpec("reliablelink_lockouts", "counter", "Client addresses locked out after repeated failed handshakes."),
    # Client only.
    MetricSpec(
        "reliablelink_connect_attempts",
        "counter",
        "Client connection attempts by outcome: ok, auth_failed, session_gone (expired or closed), failed "
        "(unreachable, refused, timed out; retried).",
        ("outcome",),
    ),
    # Both.
    MetricSpec(
        "reliablelink_store_operation_seconds",
        "histogram",
        "Session store operations (load, create, take_over, claim, commit, delete, renew, close), waiting "
        "for the store's thread included.",
        ("op",),
        "seconds",
    ),
)


def read() -> dict[str, list[Sample]]:
    """The current value of every metric in :data:`METRICS`, by name, read now."""
    snap = _stats.snapshot()
    v: dict[str, list[Sample]] = {spec.name: [] for spec in METRICS}
    for role, r in snap.roles.items():
        key = (role,)
        sums, stats = r.sums, r.stats
        v["reliablelink_messages_sent"].append((key, sums.sent))
        v["reliablelink_messages_received"].append((key, sums.received))
        v["reliablelink_messages_resent"].append((key, sums.resent))
        v["reliablelink_payload_sent_bytes"].append((key, sums.bytes_sent))
        v["reliablelink_payload_received_bytes"].append((key, sums.bytes_received))
        v["reliablelink_reconnects"].append((key, sums.reconnects))
        v["reliablelink_sessions_opened"].append((key, stats.opened))
        v["reliablelink_sessions_ended"] += [((role, reason), n) for reason, n in stats.ended.items()]
        v["reliablelink_sessions"] += [((role, "attached"), r.attached), ((role, "detached"), r.detached)]
        v["reliablelink_inflight_messages"].append((key, r.inflight))
        v["reliablelink_inflight_bytes"].append((key, r.inflight_bytes))
        v["reliablelink_window_limit_messages"].append((key, r.window_limit))
        v["reliablelink_window_full_sessions"].append((key, r.window_full))
        v["reliablelink_reconnect_seconds"].append((key, stats.reconnect_seconds))
        v["reliablelink_session_offline_seconds"].append((key, stats.offline_seconds))
    server = snap.roles["server"].stats
    v["reliablelink_handshakes"] = [((outcome,), n) for outcome, n in server.handshakes.items()]
    v["reliablelink_resumes"] = [((), server.resumes)]
    v["reliablelink_session_moves"] = [(("in",), server.moves_in), (("out",), server.moves_out)]
    v["reliablelink_lockouts"] = [((), server.lockouts)]
    client = snap.roles["client"].stats
    v["reliablelink_connect_attempts"] = [((outcome,), n) for outcome, n in client.connect_attempts.items()]
    # Only the operations that happened: a process without a store shows none.
    v["reliablelink_store_operation_seconds"] = [((op,), h) for op, h in snap.store_seconds.items() if any(h.counts)]
    return v


# -- Prometheus ---------------------------------------------------------------------------

_registered: weakref.WeakKeyDictionary[CollectorRegistry, Collector] = weakref.WeakKeyDictionary()
_collector_type: type[Collector] | None = None


def _families(values: dict[str, list[Sample]] | None) -> Iterator[Metric]:
    """Prometheus metric families for ``values`` (``None``: empty ones, for ``describe()``)."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily  # noqa: PLC0415

    for spec in METRICS:
        labels = list(spec.labels)
        samples = [] if values is None else values[spec.name]
        family: CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily
        if spec.kind == "histogram":
            family = HistogramMetricFamily(spec.name, spec.help, labels=labels, unit=spec.unit)
            for label_values, h in samples:
                assert isinstance(h, Histogram)
                buckets: list[tuple[str, float]] = []
                total = 0
                for bound, count in zip((*h.bounds, math.inf), h.counts, strict=True):
                    total += count
                    buckets.append(("+Inf" if bound == math.inf else repr(bound), total))
                family.add_metric(list(label_values), buckets, h.sum)
        else:
            cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
            family = cls(spec.name, spec.help, labels=labels, unit=spec.unit)
            for label_values, value in samples:
                assert not isinstance(value, Histogram)
                family.add_metric(list(label_values), value)
        yield family


def _collector() -> Collector:
    global _collector_type  # noqa: PLW0603
    if _collector_type is None:
        from prometheus_client.registry import Collector  # noqa: PLC0415

        class ReliableLinkCollector(Collector):
            """Reads reliablelink's counters at scrape time (see :mod:`reliablelink.metrics`)."""

            def collect(self) -> Iterator[Metric]:
                return _families(read())

            def describe(self) -> Iterator[Metric]:
                return _families(None)

        _collector_type = ReliableLinkCollector
    return _collector_type()


def register(registry: CollectorRegistry | None = None) -> Collector:
    """Expose reliablelink's metrics (``reliablelink_*``) to Prometheus.

    Registers a collector in ``registry`` (default: ``prometheus_client.REGISTRY``) that
    reads the library's own counters when scraped: sending and receiving gain no lock and
    no call. Expose the registry as usual, for example with
    ``prometheus_client.start_http_server(9100)``. Calling it again for the same registry
    returns the collector already registered. Counts start when the process imports
    reliablelink, not when this is called.

    Args:
        registry: a ``prometheus_client.CollectorRegistry``; default the global one.

    Returns:
        The collector (``registry.unregister(collector)`` removes it).

    Raises:
        ImportError: ``prometheus_client`` is not installed (install ``reliablelink[prometheus]``).
    """
    try:
        import prometheus_client  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            "reliablelink.metrics.register() needs prometheus_client: pip install 'reliablelink[prometheus]'"
        ) from exc
    if registry is None:
        registry = prometheus_client.REGISTRY
    collector = _registered.get(registry)
    if collector is None:
        collector = _collector()
        registry.register(collector)
        _registered[registry] = collector
    return collector
