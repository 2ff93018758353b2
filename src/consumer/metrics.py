"""Latency percentiles and counters the consumer logs per batch and at shutdown.

The pipeline's latency target is stated as P50/P95/P99, so each flushed batch logs
those for three spans: end-to-end (reading taken -> durable on disk), queue (sent to
SQS -> received by us) and processing (received -> durable). One line per batch keeps
the log greppable without a metrics backend.

Prometheus counters live in :data:`REGISTRY`, the consumer's own registry (nothing
serves it over HTTP yet; a scrape endpoint would expose exactly this registry).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from src.consumer.batching import Batch

REGISTRY = CollectorRegistry()
VISIBILITY_EXTENSIONS = Counter(
    "consumer_visibility_extensions",
    "Held messages whose visibility timeout was extended (one per message per heartbeat round)",
    registry=REGISTRY,
)
VISIBILITY_EXTENSION_FAILURES = Counter(
    "consumer_visibility_extension_failures",
    "Held messages whose visibility extension failed (retried on the next heartbeat)",
    registry=REGISTRY,
)


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


def batch_latencies(batch: Batch, durable_at: float) -> BatchLatencies:
    """Latencies of ``batch`` whose files became durable at ``durable_at`` (unix seconds).

    End-to-end is per reading (each has its own ``timestamp``); queue and processing are
    per message, since SQS timestamps messages, not the readings packed inside them.
    """
    e2e = [(durable_at - record.timestamp.timestamp()) * 1000.0 for record in batch.records()]
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
class ConsumerStats:
    """Running totals for the shutdown summary (mutated on the event loop only)."""

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

    def summary(self) -> str:
        return " ".join(f"{name}={value}" for name, value in asdict(self).items())
