"""Latency metrics: the P50/P95/P99 the pipeline's targets are stated in, computed right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from src.common.schema import StoredReading
from src.consumer.batching import Batch, ReceivedMessage
from src.consumer.metrics import ConsumerStats, Percentiles, batch_latencies, format_latencies, percentiles
from tests.factories import stored_reading

T0 = datetime(2025, 10, 19, 14, 0, tzinfo=UTC)


def record(taken: datetime) -> StoredReading:
    return stored_reading("veh-1", taken, taken)


def test_percentiles_on_known_data() -> None:
    """1..100: linear-interpolated percentiles, min and max exactly."""
    result = percentiles([float(v) for v in range(100, 0, -1)])
    assert result == Percentiles(count=100, p50=50.5, p95=95.05, p99=99.01, min=1.0, max=100.0)
    assert result.describe() == "p50=50 p95=95 p99=99"


def test_percentiles_of_one_value_and_of_none() -> None:
    assert percentiles([7.0]) == Percentiles(count=1, p50=7.0, p95=7.0, p99=7.0, min=7.0, max=7.0)
    assert percentiles([]) is None


def test_batch_latencies_measure_e2e_queue_and_processing() -> None:
    """e2e = durable - reading timestamp (per reading); queue = received - sent; processing = durable - received."""
    received = T0.timestamp() + 2.0
    batch = Batch()
    batch.append(
        ReceivedMessage(
            message_id="a",
            receipt_handle="ra",
            records=[record(T0), record(T0 + timedelta(seconds=1))],
            received_at=received,
            sent_at=received - 0.5,
        )
    )
    batch.append(ReceivedMessage(message_id="b", receipt_handle="rb", records=[record(T0)], received_at=received))
    latencies = batch_latencies(batch, durable_at=received + 0.25)

    assert latencies.e2e_ms is not None and latencies.e2e_ms.count == 3
    assert latencies.e2e_ms.min == 1250.0 and latencies.e2e_ms.max == 2250.0
    assert latencies.queue_ms is not None and latencies.queue_ms.count == 1 and latencies.queue_ms.p50 == 500.0
    assert latencies.processing_ms is not None and latencies.processing_ms.max == 250.0
    line = format_latencies(latencies)
    assert line.startswith("e2e_ms p50=2250 p95=2250 p99=2250 queue_ms p50=500")
    assert "processing_ms p50=250" in line


def test_format_latencies_without_sent_timestamps() -> None:
    batch = Batch()
    batch.append(ReceivedMessage(message_id="a", receipt_handle="ra", records=[record(T0)], received_at=1.0))
    assert "queue_ms n/a" in format_latencies(batch_latencies(batch, durable_at=2.0))


def test_stats_summary_names_the_totals() -> None:
    text = ConsumerStats(batches=2, readings_written=150, poison_receives=1).summary()
    assert "batches=2" in text and "readings_written=150" in text and "poison_receives=1" in text
