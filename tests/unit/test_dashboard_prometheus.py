"""Prometheus text as the dashboard reads it: the receiver's and the consumer's real expositions, rates
across counter resets, and histogram quantiles as Prometheus' histogram_quantile computes them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from src.consumer.metrics import ConsumerCollector, ConsumerStats, LatencyHistogram
from src.dashboard.prometheus import (
    Scrape,
    add_buckets,
    histogram_increase,
    increase,
    parse,
    quantile,
    rate,
)
from src.receiver.metrics import Metrics

INF = math.inf


def receiver_text(accepted: int, answers: dict[tuple[str, int], int]) -> str:
    metrics = Metrics()
    metrics.readings_accepted.inc(accepted)
    for (endpoint, status), times in answers.items():
        for _ in range(times):
            metrics.request(endpoint, status)
    return generate_latest(metrics.registry).decode()


def consumer_text(written: int, latencies_ms: list[float], pending: int | None = None) -> str:
    stats = ConsumerStats(readings_written=written, write_failures=2)
    histogram = LatencyHistogram()
    if latencies_ms:
        histogram.observe_ms(np.asarray(latencies_ms, dtype=np.float64))
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(stats, histogram, uploads_pending=None if pending is None else lambda: pending))
    return generate_latest(registry).decode()


def test_the_receivers_counters_are_read_by_sample_name_and_filtered_by_label() -> None:
    scrape = parse(receiver_text(120, {("/ingest", 202): 3, ("/ingest", 503): 2, ("/health", 503): 1}), at=5.0)
    assert scrape.at == 5.0
    assert scrape.total("receiver_readings_accepted_total") == 120
    assert scrape.total("receiver_requests_total") == 6
    assert scrape.total("receiver_requests_total", lambda labels: labels["status"].startswith("5")) == 3
    assert scrape.total("receiver_no_such_thing_total") is None
    assert scrape.has("receiver_publish_seconds_bucket")


def test_the_consumers_histogram_and_gauges_are_read() -> None:
    scrape = parse(consumer_text(40, [30.0, 80.0, 700.0, 400_000.0], pending=3), at=0.0)
    assert scrape.total("consumer_readings_written_total") == 40
    assert scrape.total("consumer_write_failures_total") == 2
    assert scrape.total("consumer_uploads_pending") == 3
    buckets = scrape.buckets("consumer_e2e_latency_seconds")
    assert buckets is not None
    assert buckets[0] == (0.05, 1.0)  # 30 ms
    assert dict(buckets)[0.1] == 2.0
    assert dict(buckets)[1.0] == 3.0
    assert buckets[-1] == (INF, 4.0)  # 400 s: beyond the last bound
    assert scrape.buckets("consumer_nothing") is None
    assert parse(consumer_text(0, []), at=0).total("consumer_uploads_pending") is None  # S3 tier off


def test_text_that_is_not_prometheus_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse("<html>this is a login page</html>\n", at=0.0)


def test_a_counter_that_went_down_restarted_from_zero() -> None:
    assert increase(10, 25) == 15
    assert increase(25, 7) == 7
    assert increase(None, 7) is None
    assert increase(7, None) is None


def test_rate_is_per_second_between_two_scrapes_of_one_endpoint() -> None:
    old = parse("# TYPE c counter\nc_total 100\n", at=10.0)
    new = parse("# TYPE c counter\nc_total 160\n", at=12.0)
    assert rate(old, new, "c_total") == pytest.approx(30.0)
    assert rate(new, old, "c_total") is None  # time went backwards: no rate
    assert rate(None, new, "c_total") is None
    assert rate(old, new, "d_total") is None
    restarted = parse("# TYPE c counter\nc_total 20\n", at=14.0)
    assert rate(new, restarted, "c_total") == pytest.approx(10.0)


def test_histogram_increase_subtracts_bucket_by_bucket_and_survives_restarts() -> None:
    old = ((1.0, 2.0), (2.0, 5.0), (INF, 6.0))
    new = ((1.0, 4.0), (2.0, 9.0), (INF, 12.0))
    assert histogram_increase(old, new) == ((1.0, 2.0), (2.0, 4.0), (INF, 6.0))
    restarted = ((1.0, 1.0), (2.0, 1.0), (INF, 1.0))
    assert histogram_increase(new, restarted) == restarted
    rebucketed = ((5.0, 7.0), (INF, 20.0))
    assert histogram_increase(new, rebucketed) == rebucketed
    assert histogram_increase(None, new) is None
    assert histogram_increase(old, None) is None


def test_histograms_of_several_consumers_add_up_when_their_bounds_agree() -> None:
    a = ((1.0, 1.0), (INF, 2.0))
    b = ((1.0, 3.0), (INF, 3.0))
    assert add_buckets([a, b]) == ((1.0, 4.0), (INF, 5.0))
    assert add_buckets([a, ((2.0, 1.0), (INF, 1.0))]) is None
    assert add_buckets([]) is None


def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile() -> None:
    # 100 observations: 10 up to 0.5 s, 80 in (0.5, 1], 10 in (1, 2].
    buckets = ((0.5, 10.0), (1.0, 90.0), (2.0, 100.0), (INF, 100.0))
    assert quantile(0.5, buckets).value == pytest.approx(0.5 + 0.5 * 40 / 80)  # type: ignore[union-attr]
    assert quantile(0.05, buckets).value == pytest.approx(0.25)  # type: ignore[union-attr]
    assert quantile(0.95, buckets).value == pytest.approx(1.5)  # type: ignore[union-attr]
    assert not quantile(0.99, buckets).beyond_last_bound  # type: ignore[union-attr]


def test_a_quantile_beyond_the_last_bound_is_a_floor_and_an_empty_histogram_has_none() -> None:
    slow = ((1.0, 1.0), (300.0, 2.0), (INF, 100.0))
    estimate = quantile(0.99, slow)
    assert estimate is not None and estimate.value == 300.0 and estimate.beyond_last_bound
    assert quantile(0.5, ((1.0, 0.0), (INF, 0.0))) is None
    assert quantile(0.5, None) is None
    assert quantile(0.5, ((1.0, 3.0),)) is None  # no +Inf bucket: not a Prometheus histogram


def test_an_empty_scrape_has_nothing() -> None:
    assert Scrape(at=0.0).total("anything") is None
