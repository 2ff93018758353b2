"""The receiver's Prometheus metrics, in a registry of their own per app.

A registry per app (not the global one) lets several apps live in one process, as they
do in the tests, without counting each other's requests.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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

    def request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def envelope_sent(self, readings: int, body_bytes: int, seconds: float) -> None:
        self.envelope_bytes.observe(body_bytes)
        self.envelope_readings.observe(readings)
        self.sqs_send_seconds.observe(seconds)
