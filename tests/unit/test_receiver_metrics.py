"""The receiver's metrics summed over uvicorn's workers (prometheus_client's multiprocess mode).

Two workers are two :class:`Metrics` whose values are written under two process ids, as
two worker processes would; either one's ``/metrics`` answer holds the sum. The real thing,
two uvicorn workers scraped again and again, is in tests/integration/test_scaling.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from src.receiver.metrics import MULTIPROC_DIR_VARIABLE, Metrics


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], Metrics]]:
    """Makes the Metrics of "worker <pid>": prometheus_client's multiprocess values with that process id."""
    monkeypatch.setenv(MULTIPROC_DIR_VARIABLE, str(tmp_path))

    class Worker(Metrics):
        def __init__(self, pid: int) -> None:
            monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))
            super().__init__()

    yield Worker  # monkeypatch puts prometheus_client's own value class back afterwards


def test_every_workers_counts_and_histograms_are_summed_in_each_answer(worker: Callable[[int], Metrics]) -> None:
    first, second = worker(101), worker(102)
    first.readings_accepted.inc(30)
    first.request("/ingest/batch", 202)
    second.readings_accepted.inc(12)
    second.request("/ingest/batch", 202)
    second.request("/ingest", 422)
    first.envelope_sent(readings=30, body_bytes=5_000, seconds=0.004)
    second.envelope_sent(readings=12, body_bytes=2_000, seconds=0.2)
    for answer in (first.exposition(), second.exposition()):
        found = samples(answer)
        assert found["receiver_readings_accepted_total", ()] == 42
        assert found["receiver_requests_total", (("endpoint", "/ingest/batch"), ("status", "202"))] == 2
        assert found["receiver_requests_total", (("endpoint", "/ingest"), ("status", "422"))] == 1
        assert found["receiver_envelope_readings_count", ()] == 2
        assert found["receiver_envelope_readings_sum", ()] == 42
        assert found["receiver_sqs_send_seconds_bucket", (("le", "0.005"),)] == 1


def test_without_the_directory_each_app_answers_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_DIR_VARIABLE, raising=False)
    one, other = Metrics(), Metrics()
    one.readings_accepted.inc(5)
    assert samples(one.exposition())["receiver_readings_accepted_total", ()] == 5
    assert samples(other.exposition())["receiver_readings_accepted_total", ()] == 0
