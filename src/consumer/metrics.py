"""What the consumer measures: latency percentiles per batch, counters, Prometheus.

Each flushed batch logs P50/P95/P99 of three spans: end-to-end (reading taken ->
durable), queue (sent to SQS -> received) and processing (received -> durable).
``/metrics`` reads the counters (:class:`ConsumerStats`, :class:`UploadStats`) at scrape
time and an end-to-end histogram filled a batch at a time with numpy (why:
docs/architecture.md, "Design notes: consumer").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from src.consumer.batching import Batch

log = logging.getLogger(__name__)

E2E_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds (s) of the end-to-end latency histogram: around the 2 s batch timeout and the 5 s target."""


@dataclass(frozen=True)
class Percentiles:
    """Summary of one latency sample, in the sample's unit (ms here)."""

    count: int
    p50: float
    p95: float
    p99: float
    min: float
    max: float

    def describe(self) -> str:
        return f"p50={self.p50:.0f} p95={self.p95:.0f} p99={self.p99:.0f}"


def percentiles(values: Sequence[float]) -> Percentiles | None:
    """P50/P95/P99 (linear interpolation, numpy's default) plus min and max; None if empty."""
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(array, [50.0, 95.0, 99.0])
    return Percentiles(
        count=int(array.size),
        p50=float(p50),
        p95=float(p95),
        p99=float(p99),
        min=float(array.min()),
        max=float(array.max()),
    )


@dataclass(frozen=True)
class BatchLatencies:
    """The three latency spans of one flushed batch, in milliseconds."""

    e2e_ms: Percentiles | None
    queue_ms: Percentiles | None
    processing_ms: Percentiles | None


def batch_latencies(batch: Batch, durable_at: float, histogram: LatencyHistogram | None = None) -> BatchLatencies:
    """Latencies of ``batch`` whose files became durable at ``durable_at`` (unix seconds).

    End-to-end is per reading (each has its own ``timestamp``); queue and processing are
    per message, since SQS timestamps messages, not the readings packed inside them.
    """
    e2e = [(durable_at - record.timestamp.timestamp()) * 1000.0 for record in batch.records()]
    if histogram is not None and e2e:
        histogram.observe_ms(np.asarray(e2e, dtype=np.float64))
    queue = [
        (message.received_at - message.sent_at) * 1000.0 for message in batch.messages if message.sent_at is not None
    ]
    processing = [(durable_at - message.received_at) * 1000.0 for message in batch.messages]
    return BatchLatencies(percentiles(e2e), percentiles(queue), percentiles(processing))


def format_latencies(latencies: BatchLatencies) -> str:
    """``e2e_ms p50=.. p95=.. p99=.. queue_ms ... processing_ms ...`` for the batch log line."""
    parts = []
    for name, value in (
        ("e2e_ms", latencies.e2e_ms),
        ("queue_ms", latencies.queue_ms),
        ("processing_ms", latencies.processing_ms),
    ):
        parts.append(f"{name} {value.describe() if value else 'n/a'}")
    return " ".join(parts)


@dataclass
class Totals:
    """Running totals (mutated on the event loop only); ``summary()`` is their log line."""

    def summary(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())


@dataclass
class ConsumerStats(Totals):
    """Running totals for the shutdown summary and /metrics (mutated on the event loop only)."""

    batches: int = 0
    readings_written: int = 0
    files_written: int = 0
    messages_deleted: int = 0
    delete_failures: int = 0
    write_failures: int = 0
    poison_receives: int = 0
    receive_errors: int = 0
    visibility_extensions: int = 0
    visibility_extension_failures: int = 0


@dataclass
class UploadStats(Totals):
    """Running totals of the S3 uploader."""

    uploads: int = 0
    upload_bytes: int = 0
    upload_failures: int = 0
    uploads_abandoned: int = 0


class LatencyHistogram:
    """Cumulative end-to-end latency buckets, filled a batch at a time with numpy.

    Batches are flushed by tasks on the event loop while scrapes come from the metrics
    server's thread, hence the lock (held for microseconds either side).
    """

    def __init__(self, bounds_s: Sequence[float] = E2E_BUCKETS_S) -> None:
        self.bounds_ms = np.asarray(bounds_s, dtype=np.float64) * 1000.0
        self._counts = np.zeros(len(bounds_s) + 1, dtype=np.int64)  # the last is +Inf
        self._sum_ms = 0.0
        self._lock = threading.Lock()

    def observe_ms(self, values_ms: np.ndarray) -> None:
        """Count each latency (ms) in the first bucket whose bound is at least it."""
        counts = np.bincount(np.searchsorted(self.bounds_ms, values_ms, side="left"), minlength=self._counts.size)
        with self._lock:
            self._counts += counts
            self._sum_ms += float(values_ms.sum())

    def metric(self, name: str, documentation: str) -> HistogramMetricFamily:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total_s = self._sum_ms / 1000.0
        bounds = [f"{bound / 1000.0:g}" for bound in self.bounds_ms] + ["+Inf"]
        return HistogramMetricFamily(
            name, documentation, buckets=list(zip(bounds, (int(c) for c in cumulative), strict=True)), sum_value=total_s
        )


COUNTER_HELP = {
    "batches": "Batches written and deleted from SQS",
    "readings_written": "Readings written to durable batch files",
    "files_written": "Batch files written",
    "messages_deleted": "SQS messages deleted after their batch was durable",
    "delete_failures": "SQS deletes that failed (the messages come back and are stored again)",
    "write_failures": "Batches whose write failed twice (left in SQS for redelivery)",
    "poison_receives": "Received messages that could not be decoded (left for the dead-letter queue)",
    "receive_errors": "SQS receive calls that failed (retried with backoff)",
    "visibility_extensions": "Held messages whose visibility timeout was extended",
    "visibility_extension_failures": "Held messages whose visibility extension failed (retried next beat)",
    "uploads": "Batch files uploaded to S3",
    "upload_bytes": "Bytes uploaded to S3 (after gzip)",
    "upload_failures": "Failed S3 calls of the uploader (retried with backoff)",
    "uploads_abandoned": "Uploads given up because the local file was gone",
}


class ConsumerCollector(Collector):
    """Reads the consumer's stats at scrape time: one source of truth, nothing to keep in step."""

    def __init__(
        self,
        stats: ConsumerStats,
        latency: LatencyHistogram,
        uploads: UploadStats | None = None,
        uploads_pending: Callable[[], int] | None = None,
        unflushed: Callable[[], int] | None = None,
    ) -> None:
        self.stats = stats
        self.latency = latency
        self.uploads = uploads
        self.uploads_pending = uploads_pending
        self.unflushed = unflushed

    def collect(self) -> Iterator[Metric]:
        for source in (self.stats, self.uploads):
            if source is None:
                continue
            for item in fields(source):
                yield CounterMetricFamily(
                    f"consumer_{item.name}", COUNTER_HELP[item.name], value=getattr(source, item.name)
                )
        yield self.latency.metric(
            "consumer_e2e_latency_seconds", "Reading timestamp to its batch file being durable, per reading"
        )
        if self.unflushed is not None:
            yield GaugeMetricFamily(
                "consumer_readings_unflushed", "Readings received but not yet durable", value=self.unflushed()
            )
        if self.uploads_pending is not None:
            yield GaugeMetricFamily(
                "consumer_uploads_pending", "Batch files queued or being uploaded to S3", value=self.uploads_pending()
            )


def serve_metrics(collector: Collector, port: int) -> Callable[[], None] | None:
    """Serve ``collector`` on ``port`` (all interfaces) from a thread; the function that stops it.

    None when the port is taken: metrics are worth a loud log line, not a consumer that
    stops consuming.
    """
    registry = CollectorRegistry(auto_describe=True)
    registry.register(collector)
    try:
        server, thread = start_http_server(port, registry=registry)
    except OSError as exc:
        log.error("metrics: cannot listen on port %d (%r); consuming without /metrics", port, exc)
        return None
    log.info("metrics: serving Prometheus text on port %d", server.server_port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
