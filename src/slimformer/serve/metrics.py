"""Prometheus metrics of one server: requests by status, latency, batch sizes, queue depth, model time.

With several worker processes (`--workers`), prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set by `serve` before the workers start) sums them, so /metrics answers for the whole server whichever worker
serves it."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


class ServerMetrics:
    def __init__(self, max_batch: int):
        self.registry = CollectorRegistry()
        reg = self.registry
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, max_batch} - {b for b in (64, 128) if b > 2 * max_batch})
        self.requests = Counter("slimformer_requests", "Classify requests answered, by HTTP status", ["status"],
                                registry=reg)
        self.texts = Counter("slimformer_texts", "Texts classified", registry=reg)
        self.latency = Histogram("slimformer_request_seconds", "Classify request latency (arrival to answer)",
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.batch_size = Histogram("slimformer_batch_size", "Texts per model batch", buckets=sizes, registry=reg)
        self.model_seconds = Histogram("slimformer_model_seconds", "Seconds per model batch (tokenize + forward)",
                                       buckets=LATENCY_BUCKETS, registry=reg)
        self.queue_depth = Gauge("slimformer_queue_depth", "Texts waiting for the model", registry=reg,
                                 multiprocess_mode="livesum")

    def on_batch(self, n: int, seconds: float) -> None:
        self.batch_size.observe(n)
        self.model_seconds.observe(seconds)
        self.texts.inc(n)

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
