"""The S3 copy of the raw files: complete, verified, retried, caught up after a restart.

Uploads go to moto's server (the session's ``ThreadedMotoServer``) through the same
aiobotocore client the consumer uses; failures come from a small fake in front of it.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from src.common.aws import s3_client, sync_client
from src.common.layout import hour_partition
from src.common.settings import CommonSettings
from src.consumer import metrics
from src.consumer.metrics import ConsumerCollector, ConsumerStats, LatencyHistogram, UploadStats, serve_metrics
from src.consumer.uploading import Uploader, read_body
from src.ops.queues import Queues
from tests.unit.test_consumer_service import consuming, reading, send, settings, stored_vehicle_ids
from tests.waiting import eventually

HOUR = datetime(2026, 11, 27, 15, tzinfo=UTC)


@pytest.fixture
def raw_dir(isolated_env: Path) -> Path:
    return isolated_env / "data" / "raw"


def batch_file(raw_dir: Path, name: str, lines: int = 3, hour: datetime = HOUR) -> Path:
    directory = raw_dir / hour_partition(hour)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"".join(orjson.dumps({"n": i, "name": name}) + b"\n" for i in range(lines)))
    return path


def objects(bucket: str) -> dict[str, bytes]:
    s3 = sync_client("s3", CommonSettings())
    listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listed}


def key_of(path: Path, raw_dir: Path, suffix: str = ".gz") -> str:
    return "raw/" + path.relative_to(raw_dir).as_posix() + suffix


@pytest.fixture
async def s3(bucket: str) -> AsyncIterator[Any]:
    async with s3_client(CommonSettings()) as client:
        yield client


class Flaky:
    """An S3 client whose first ``failures`` calls of each kind fail, then the real one answers."""

    def __init__(self, real: Any, failures: int) -> None:
        self.real = real
        self.failures = failures
        self.calls = 0

    async def put_object(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("S3 unreachable")
        return await self.real.put_object(**kwargs)

    def get_paginator(self, name: str) -> Any:
        return self.real.get_paginator(name)


class Down:
    """An S3 that never answers a put."""

    async def put_object(self, **kwargs: Any) -> Any:
        raise ConnectionError("S3 unreachable")


async def no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


async def test_submitted_files_land_under_the_same_hive_path_gzipped(s3: Any, bucket: str, raw_dir: Path) -> None:
    """Contract: raw/<hive path>/<file name>.gz, whose content is exactly the local file."""
    first = batch_file(raw_dir, "batch-1764255600000-a_000001.jsonl")
    second = batch_file(raw_dir, "batch-1764255600001-a_000002.jsonl", hour=HOUR + timedelta(hours=1))
    uploader = Uploader(s3, bucket, raw_dir, gzipped=True, concurrency=2)
    uploader.start()
    uploader.submit([first, second])
    uploader.submit([first])  # already pending: not queued twice
    await uploader.drain(30.0)

    stored = objects(bucket)
    assert sorted(stored) == [key_of(first, raw_dir), key_of(second, raw_dir)]
    assert key_of(first, raw_dir) == "raw/year=2026/month=11/day=27/hour=15/batch-1764255600000-a_000001.jsonl.gz"
    for path in (first, second):
        assert gzip.decompress(stored[key_of(path, raw_dir)]) == path.read_bytes()
    assert uploader.stats.uploads == 2 and uploader.pending == 0
    assert uploader.stats.upload_bytes == sum(len(v) for v in stored.values())


async def test_without_gzip_the_object_is_the_file_byte_for_byte(s3: Any, bucket: str, raw_dir: Path) -> None:
    """S3_GZIP=false: the key is the local name and the bytes are the local bytes."""
    path = batch_file(raw_dir, "batch-1764255600000-a_000001.jsonl")
    uploader = Uploader(s3, bucket, raw_dir, gzipped=False, concurrency=1)
    uploader.start()
    uploader.submit([path])
    await uploader.drain(30.0)
    assert objects(bucket) == {key_of(path, raw_dir, ""): path.read_bytes()}


def test_the_same_file_always_compresses_to_the_same_bytes(raw_dir: Path) -> None:
    """mtime=0: an upload repeated after a crash writes an identical object, and its MD5 is the body's."""
    path = batch_file(raw_dir, "batch-1764255600000-a_000001.jsonl")
    first, again = read_body(path, gzipped=True), read_body(path, gzipped=True)
    assert first == again and first.content_type == "application/gzip"
    assert read_body(path, gzipped=False).content_type == "application/x-ndjson"


async def test_failed_uploads_are_retried_until_s3_takes_them(
    s3: Any, bucket: str, raw_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An S3 error is logged and retried with backoff; the file still arrives, counted once."""
    path = batch_file(raw_dir, "batch-1764255600000-a_000001.jsonl")
    flaky = Flaky(s3, failures=3)
    uploader = Uploader(flaky, bucket, raw_dir, gzipped=True, concurrency=1, sleep=no_sleep)
    uploader.start()
    uploader.submit([path])
    await uploader.drain(30.0)
    assert list(objects(bucket)) == [key_of(path, raw_dir)]
    assert (uploader.stats.uploads, uploader.stats.upload_failures, flaky.calls) == (1, 3, 4)
    assert "S3 upload of raw/year=2026/month=11/day=27/hour=15/" in caplog.text and "retrying in" in caplog.text


async def test_a_vanished_local_file_is_abandoned_not_retried_forever(
    s3: Any, bucket: str, raw_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only a person deletes an unuploaded batch file; the uploader says so and moves on."""
    path = batch_file(raw_dir, "batch-1764255600000-a_000001.jsonl")
    path.unlink()
    uploader = Uploader(s3, bucket, raw_dir, gzipped=True, concurrency=1)
    uploader.start()
    uploader.submit([path])
    await uploader.drain(30.0)
    assert uploader.stats.uploads_abandoned == 1 and objects(bucket) == {}
    assert "abandoned: the local file is gone" in caplog.text


async def test_drain_leaves_what_s3_refuses_for_the_next_start(
    bucket: str, raw_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Shutdown does not wait forever for a dead S3; the files stay on disk, the count is logged."""
    paths = [batch_file(raw_dir, f"batch-176425560000{i}-a_00000{i}.jsonl") for i in range(3)]
    uploader = Uploader(Down(), bucket, raw_dir, gzipped=True, concurrency=2, sleep=lambda _: asyncio.sleep(0.01))
    uploader.start()
    uploader.submit(paths)
    await uploader.drain(0.2)
    assert uploader.pending == 3 and all(p.exists() for p in paths)
    assert "stopping with 3 upload(s) pending" in caplog.text


async def test_catch_up_uploads_exactly_the_local_files_s3_lacks(s3: Any, bucket: str, raw_dir: Path) -> None:
    """After a crash: files already in S3 (gzipped or not) are skipped, the rest queued and uploaded."""
    as_gz = batch_file(raw_dir, "batch-1764255600000-a_000001.jsonl")
    as_plain = batch_file(raw_dir, "batch-1764255600001-a_000002.jsonl")
    missing = batch_file(raw_dir, "batch-1764255600002-b_000001.jsonl")
    other_hour = batch_file(raw_dir, "batch-1764259200000-b_000002.jsonl", hour=HOUR + timedelta(hours=1))
    (missing.parent / ".batch-b_000003.tmp").write_bytes(b"partial")  # a crashed write: never uploaded
    (raw_dir / "stray.txt").write_bytes(b"not a partition")
    sync = sync_client("s3", CommonSettings())
    sync.put_object(Bucket=bucket, Key=key_of(as_gz, raw_dir), Body=gzip.compress(as_gz.read_bytes()))
    sync.put_object(Bucket=bucket, Key=key_of(as_plain, raw_dir, ""), Body=as_plain.read_bytes())

    uploader = Uploader(s3, bucket, raw_dir, gzipped=True, concurrency=2)
    uploader.start()
    assert await uploader.catch_up() == 2
    await uploader.drain(30.0)
    assert sorted(objects(bucket)) == sorted(
        [key_of(as_gz, raw_dir), key_of(as_plain, raw_dir, ""), key_of(missing, raw_dir), key_of(other_hour, raw_dir)]
    )
    assert await Uploader(s3, bucket, raw_dir, gzipped=True, concurrency=1).catch_up() == 0


async def test_catch_up_of_an_empty_data_dir_finds_nothing(s3: Any, bucket: str, raw_dir: Path) -> None:
    """A first start (no raw/ yet, or only empty partitions) lists nothing and queues nothing."""
    uploader = Uploader(s3, bucket, raw_dir, gzipped=True, concurrency=1)
    assert await uploader.catch_up() == 0
    (raw_dir / hour_partition(HOUR)).mkdir(parents=True)
    assert await uploader.catch_up() == 0


async def test_the_consumer_uploads_every_batch_it_made_durable(queues: Queues, bucket: str, raw_dir: Path) -> None:
    """With S3_BUCKET set, every file the consumer writes appears in S3 with the same content."""
    send(queues, *(orjson.dumps(reading(i)).decode() for i in range(5)))
    config = settings(batch_size=5)
    async with consuming(config):
        await eventually(lambda: len(stored_vehicle_ids(raw_dir.parent)) == 5, "the readings on disk", in_thread=True)
        files = await asyncio.to_thread(lambda: list(raw_dir.rglob("batch-*.jsonl")))
        await eventually(
            lambda: {key_of(f, raw_dir) for f in files} <= set(objects(bucket)), "their uploads", in_thread=True
        )
    stored = objects(bucket)
    assert all(gzip.decompress(stored[key_of(f, raw_dir)]) == f.read_bytes() for f in files)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(collector: ConsumerCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_latency_histogram_counts_each_reading_in_its_bucket() -> None:
    """Bucket bounds are inclusive upper bounds (Prometheus' le), cumulative, with sum and count."""
    histogram = LatencyHistogram(bounds_s=(0.1, 1.0))
    histogram.observe_ms(np.array([50.0, 100.0, 150.0, 1000.0, 5000.0]))
    registry = scrape(ConsumerCollector(ConsumerStats(), histogram))
    sample = registry.get_sample_value
    labels = {"le": "0.1"}
    assert sample("consumer_e2e_latency_seconds_bucket", labels) == 2
    assert sample("consumer_e2e_latency_seconds_bucket", {"le": "1"}) == 4
    assert sample("consumer_e2e_latency_seconds_bucket", {"le": "+Inf"}) == 5
    assert sample("consumer_e2e_latency_seconds_count") == 5
    assert sample("consumer_e2e_latency_seconds_sum") == pytest.approx(6.3)


def test_the_collector_reads_the_stats_at_scrape_time() -> None:
    """Counters come from the dataclasses the consumer updates; gauges from callables."""
    stats, uploads = ConsumerStats(batches=3, readings_written=300, receive_errors=1), UploadStats(uploads=2)
    registry = scrape(
        ConsumerCollector(stats, LatencyHistogram(), uploads=uploads, uploads_pending=lambda: 7, unflushed=lambda: 9)
    )
    stats.batches += 1
    assert registry.get_sample_value("consumer_batches_total") == 4
    assert registry.get_sample_value("consumer_readings_written_total") == 300
    assert registry.get_sample_value("consumer_receive_errors_total") == 1
    assert registry.get_sample_value("consumer_uploads_total") == 2
    assert registry.get_sample_value("consumer_uploads_pending") == 7
    assert registry.get_sample_value("consumer_readings_unflushed") == 9
    assert set(metrics.COUNTER_HELP) >= {f.name for f in fields(ConsumerStats)} | {f.name for f in fields(UploadStats)}


def test_metrics_are_served_as_prometheus_text_and_a_taken_port_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """GET /metrics answers the text format; a second server on the same port logs an error and gives None."""
    port = free_port()
    stop = serve_metrics(ConsumerCollector(ConsumerStats(batches=2), LatencyHistogram()), port)
    assert stop is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
            assert response.headers["Content-Type"].startswith("text/plain")
        assert "consumer_batches_total 2.0" in text and 'consumer_e2e_latency_seconds_bucket{le="+Inf"} 0.0' in text
        with caplog.at_level(logging.ERROR):
            assert serve_metrics(ConsumerCollector(ConsumerStats(), LatencyHistogram()), port) is None
        assert f"cannot listen on port {port}" in caplog.text
    finally:
        stop()
