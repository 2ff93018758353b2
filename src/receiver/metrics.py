"""The receiver's Prometheus metrics, in a registry of their own per app, summed over uvicorn's workers.

A registry per app (not the global one) lets several apps live in one process, as they
do in the tests, without counting each other's requests.

With ``uvicorn --workers N`` each worker is a process of its own, so a registry in memory
would show one worker's counts, whichever answered the scrape. prometheus_client's
multiprocess mode is the field's answer: with ``PROMETHEUS_MULTIPROC_DIR`` in the
environment (an empty directory, wiped before the server starts; prometheus_client reads
the variable itself, at import, so it must be a real environment variable, not in .env),
every worker writes its values to files there and ``/metrics`` sums all of them
(:meth:`Metrics.exposition`). Counters and histograms of a worker that died stay counted, as
Prometheus expects of counters; the receiver has no gauges, so nothing needs
``mark_process_dead``. The embedded stack does this whenever it runs several workers.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Requests by endpoint and status, readings accepted, and what the SQS sends looked like."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "receiver_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.readings_accepted = Counter(
            "receiver_readings_accepted", "Readings SQS accepted (answered 202)", registry=self.registry
        )
        self.publish_seconds = Histogram(
            "receiver_publish_seconds",
            "How long a request waited for SQS to accept its readings (linger included)",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.envelope_bytes = Histogram(
            "receiver_envelope_bytes",
            "Size of the SQS message bodies sent",
            buckets=(1_024, 4_096, 16_384, 65_536, 131_072, 196_608, 262_144),
            registry=self.registry,
        )
        self.sqs_send_seconds = Histogram(
            "receiver_sqs_send_seconds",
            "How long SQS took to accept one envelope (SendMessage alone, without linger or queueing)",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.envelope_readings = Histogram(
            "receiver_envelope_readings",
            "Readings per SQS message sent",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500),
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """What ``/metrics`` answers: this app's registry, or with ``PROMETHEUS_MULTIPROC_DIR`` set the sum over
        every worker's files there (read at each scrape, so a worker started later is counted too)."""
        directory = os.environ.get(MULTIPROC_DIR_VARIABLE)
        if not directory:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def envelope_sent(self, readings: int, body_bytes: int, seconds: float) -> None:
        self.envelope_bytes.observe(body_bytes)
        self.envelope_readings.observe(readings)
        self.sqs_send_seconds.observe(seconds)
