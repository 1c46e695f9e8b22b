"""Prometheus metrics for reliablelink (opt-in; the ``reliablelink[prometheus]`` extra).

Call :func:`register` once at start-up, then expose the registry as usual::

    import prometheus_client
    import reliablelink

    reliablelink.metrics.register()
    prometheus_client.start_http_server(9100)

Importing reliablelink registers nothing and does not import ``prometheus_client``. The
collector reads the library's own counters at scrape time. :data:`METRICS` lists every
metric (name, type, help, labels) and :func:`read` gives their values without Prometheus,
for a bridge to another metrics system. The list, with each metric's meaning, is in the
operations guide (``docs/operations.md``).
"""

from ._metrics import METRICS, Histogram, MetricSpec, Sample, read, register

__all__ = ["METRICS", "Histogram", "MetricSpec", "Sample", "read", "register"]
