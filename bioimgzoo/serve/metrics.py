"""What ``/metrics`` shows (Prometheus text format, by ``prometheus-client``), one registry per server.

=========================================  ==============================================================
metric                                     meaning
=========================================  ==============================================================
``bioimgzoo_requests_total``               requests by ``model``, ``endpoint`` and HTTP ``status``
``bioimgzoo_request_queue_seconds``        from admission to a worker thread taking the request
``bioimgzoo_request_compute_seconds``      the prediction itself (model loading included when cold)
``bioimgzoo_inferences_total``             callers' engine calls, by ``model`` (Triton's inference count)
``bioimgzoo_executions_total``             real engine calls, by ``model``; inferences / executions is
                                           the mean number of calls merged (Triton's execution count)
``bioimgzoo_batch_windows``                windows per real engine call (histogram), by ``model``
``bioimgzoo_models_loaded``                models loaded now
``bioimgzoo_model_load_seconds``           seconds each load took, by ``model``
``bioimgzoo_jobs``                         jobs by ``state``
``bioimgzoo_requests_in_flight``           requests admitted and not yet answered
``process_resident_memory_bytes`` ...      the process collector's RSS, CPU and file descriptors
=========================================  ==============================================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["ServerMetrics", "CONTENT_TYPE_LATEST"]

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class ServerMetrics:
    """The server's metrics in a registry of their own (several servers in one process stay apart)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        self.requests = Counter("bioimgzoo_requests", "Requests by model, endpoint and HTTP status",
                                ["model", "endpoint", "status"], registry=r)
        self.queue_seconds = Histogram("bioimgzoo_request_queue_seconds", "Seconds from admission to a worker",
                                       ["model"], buckets=_SECONDS, registry=r)
        self.compute_seconds = Histogram("bioimgzoo_request_compute_seconds", "Seconds of prediction per request",
                                         ["model"], buckets=_SECONDS, registry=r)
        self.inferences = Counter("bioimgzoo_inferences", "Callers' engine calls", ["model"], registry=r)
        self.executions = Counter("bioimgzoo_executions", "Real engine calls (merged batches)", ["model"],
                                  registry=r)
        self.batch_windows = Histogram("bioimgzoo_batch_windows", "Windows per real engine call", ["model"],
                                       buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r)
        self.models_loaded = Gauge("bioimgzoo_models_loaded", "Models loaded now", registry=r)
        self.load_seconds = Histogram("bioimgzoo_model_load_seconds", "Seconds a model load took", ["model"],
                                      buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.jobs = Gauge("bioimgzoo_jobs", "Jobs by state", ["state"], registry=r)
        self.in_flight = Gauge("bioimgzoo_requests_in_flight", "Requests admitted and not yet answered",
                               registry=r)

    def executed(self, model: str, calls: int, rows: int, seconds: float) -> None:
        self.inferences.labels(model).inc(calls)
        self.executions.labels(model).inc(1)
        self.batch_windows.labels(model).observe(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
