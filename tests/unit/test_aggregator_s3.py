"""The aggregator's S3 tier: an hour read from S3 gives the bytes the same files give locally, and lands in S3."""

from __future__ import annotations

import gzip
import random
import re
import shutil
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import FlexibleChecksumError, ResponseStreamingError
from botocore.retries.standard import ExponentialBackoff

from src.aggregator import hourly_stats, sources
from src.aggregator.columnar import parse_files
from src.aggregator.hourly_stats import S3Bucket, SourceUnreadable, aggregate_hour, main
from src.aggregator.sources import Opened, S3Object, Source, list_s3_hour, open_in_turn, open_source
from src.common.aws import sync_client
from src.common.layout import batch_files, raw_hour_dir, s3_aggregated_key, s3_hour_prefix, s3_raw_key
from src.common.settings import AggregatorSettings, CommonSettings
from tests.unit.test_aggregator_fastlines import stored_line
from tests.unit.test_aggregator_rollup import HOUR, write_hour

LABEL = "2026-01-01T10"


def s3() -> Any:
    return sync_client("s3", CommonSettings())


def upload_hour(bucket: str, gzip_every: int = 2) -> list[str]:
    """Put the hour's local batch files where the consumer puts them: every ``gzip_every``-th one compressed."""
    raw_dir = AggregatorSettings().raw_dir
    client = s3()
    keys = []
    for n, path in enumerate(batch_files(raw_dir, HOUR)):
        gzipped = n % gzip_every == 0
        data = path.read_bytes()
        key = s3_raw_key(path.relative_to(raw_dir), gzipped)
        client.put_object(Bucket=bucket, Key=key, Body=gzip.compress(data, mtime=0) if gzipped else data)
        keys.append(key)
    return keys


def write_messy_hour() -> None:
    """Redeliveries across files, torn and corrupt lines, a file without a final line break, an empty file."""
    write_hour(random.Random(11), files=9, per_file=80)
    directory = raw_hour_dir(AggregatorSettings().raw_dir, HOUR)
    (directory / "batch-1767261999000-w_corrupt.jsonl").write_bytes(
        stored_line("veh-00001", 1.0) + b"\n\x00\x07garbage\n" + stored_line("veh-00077", 2.0)[:50]
    )
    (directory / "batch-1767261999500-w_empty.jsonl").write_bytes(b"")


def aggregate_path() -> Path:
    return AggregatorSettings().aggregated_dir / f"aggregated-{LABEL}.json"


def move_local_raw_away(tmp_path: Path) -> None:
    """The S3 run must not read the local tier: take it away."""
    shutil.move(AggregatorSettings().raw_dir, tmp_path / "raw-elsewhere")


def test_s3_gives_the_bytes_the_local_files_give(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same files, local or in S3 (gzip and plain mixed), give the same bytes: duplicates, bad lines and all."""
    write_messy_hour()
    upload_hour(bucket)
    assert main(["--hour", LABEL]) == 0
    local = aggregate_path().read_bytes()
    quality = orjson.loads(local)["quality"]
    assert quality["duplicates_dropped"] > 0 and quality["lines_skipped"] > 0 and quality["files_read"] == 11
    aggregate_path().unlink()
    move_local_raw_away(tmp_path)
    capsys.readouterr()
    assert main(["--hour", LABEL, "--source", "s3"]) == 0
    assert aggregate_path().read_bytes() == local
    out, err = capsys.readouterr()
    assert "source=s3: 11 objects (" in out and f"s3://{bucket}/{s3_hour_prefix(HOUR)}" in out
    assert f"reading 11 batch files from s3://{bucket}/" in err
    assert re.search(r"batch-\d{13}-w_\d{6}\.jsonl\.gz:\d+ skipped: not JSON", err)  # named by object


def test_workers_read_s3_objects_each_with_its_own_client(bucket: str, tmp_path: Path) -> None:
    """Objects handed to worker processes (small tasks, two workers) give the bytes one in-process reader gives."""
    write_messy_hour()
    upload_hour(bucket, gzip_every=3)
    move_local_raw_away(tmp_path)
    settings = AggregatorSettings()
    s3_bucket = S3Bucket(bucket, settings)
    path, single = aggregate_hour(s3_bucket, settings.aggregated_dir, HOUR, workers=1)
    whole = path.read_bytes()
    path, split = aggregate_hour(s3_bucket, settings.aggregated_dir, HOUR, workers=2, task_bytes=20_000)
    assert path.read_bytes() == whole
    stored = sum(o.size for o in list_s3_hour(s3_bucket, HOUR))
    for result in (single, split):
        assert (result.input.listed, result.input.files_read, result.input.bytes_read) == (11, 11, stored)


@pytest.mark.parametrize("source", ["local", "s3"])
def test_the_aggregate_is_uploaded_as_written(bucket: str, source: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With S3_BUCKET set, either source's aggregate is put at aggregated/<file name>, the bytes of the local file."""
    write_messy_hour()
    upload_hour(bucket)
    assert main(["--hour", LABEL, "--source", source]) == 0
    stored = s3().get_object(Bucket=bucket, Key=s3_aggregated_key(HOUR))
    assert stored["Body"].read() == aggregate_path().read_bytes()
    assert stored["ContentType"] == "application/json"
    assert f"s3://{bucket}/aggregated/aggregated-{LABEL}.json" in capsys.readouterr().out.splitlines()


def test_an_empty_hour_in_s3_is_an_aggregate_without_vehicles(bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    """As locally: an hour without objects still gets its (empty) aggregate, so 'no data' differs from 'not run'."""
    assert main(["--hour", LABEL]) == 0  # local: no directory either
    local = aggregate_path().read_bytes()
    aggregate_path().unlink()
    assert main(["--hour", LABEL, "--source", "s3"]) == 0
    assert aggregate_path().read_bytes() == local
    assert orjson.loads(local)["vehicles"] == []
    assert "no readings" in capsys.readouterr().out


def test_only_the_partitions_batch_objects_count_each_batch_file_once(
    bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Temporary names, other files, deeper keys are not read; a batch file there plain and as .gz is read once."""
    line = stored_line("veh-00001", 1.0) + b"\n"
    prefix = s3_hour_prefix(HOUR)
    client = s3()
    for key, body in [
        (f"{prefix}batch-1767261900000-w1.jsonl", line),
        (f"{prefix}batch-1767261900000-w1.jsonl.gz", gzip.compress(line)),  # the same file, compressed
        (f"{prefix}.batch-1767261900001.jsonl.tmp", line),
        (f"{prefix}notes.txt", b"x"),
        (f"{prefix}nested/batch-1767261900002.jsonl", line),
        (f"{s3_hour_prefix(datetime(2026, 1, 1, 11, tzinfo=UTC))}batch-1767265200000.jsonl", line),
    ]:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    objects = list_s3_hour(S3Bucket(bucket, CommonSettings()), HOUR)
    assert [o.key for o in objects] == [f"{prefix}batch-1767261900000-w1.jsonl"]
    assert "holds the same batch file as" in caplog.text


def test_listing_follows_every_page(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An hour of more objects than one ListObjectsV2 page holds is read whole, oldest batch first."""
    monkeypatch.setattr(sources, "LIST_PAGE_SIZE", 2)
    names = [f"batch-{1_767_261_900_000 + n:013d}.jsonl" for n in (4, 0, 3, 1, 2)]
    client = s3()
    for name in names:
        client.put_object(Bucket=bucket, Key=s3_hour_prefix(HOUR) + name + ".gz", Body=gzip.compress(b"\n"))
    objects = list_s3_hour(S3Bucket(bucket, CommonSettings()), HOUR)
    assert [o.name for o in objects] == [f"{n}.gz" for n in sorted(names)]


def test_an_object_vanishing_before_its_turn_is_skipped_like_a_local_file(
    bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listed, then gone (NoSuchKey): logged where it was, the rest aggregated, as a vanished local file."""
    write_messy_hour()
    upload_hour(bucket)
    s3_bucket = S3Bucket(bucket, AggregatorSettings())
    listed = list_s3_hour(s3_bucket, HOUR)
    gone = S3Object(s3_bucket, s3_hour_prefix(HOUR) + "batch-1767261900001.jsonl.gz", 10)
    monkeypatch.setattr(hourly_stats, "list_s3_hour", lambda *_: [gone, *listed])
    assert main(["--hour", LABEL, "--source", "s3"]) == 0
    assert orjson.loads(aggregate_path().read_bytes())["quality"]["files_read"] == 11
    assert f"{gone} vanished before it could be read; skipped" in capsys.readouterr().err


def test_a_missing_bucket_fails_the_run_and_writes_nothing(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bucket that is not there is no empty hour: exit 1 with a message, no aggregate claimed, locally or in S3."""
    monkeypatch.setenv("S3_BUCKET", f"agg-missing-{uuid.uuid4().hex[:12]}")
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    err = capsys.readouterr().err
    assert f"error: hour {LABEL} not aggregated, nothing written: cannot list s3://" in err and "NoSuchBucket" in err
    assert not AggregatorSettings().aggregated_dir.exists()


@pytest.fixture
def unreachable_endpoint(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_ENDPOINT_URL at a closed port; botocore's retries kept (5 attempts), their waits made instant."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def test_an_unreachable_s3_fails_the_run_and_writes_nothing(
    unreachable_endpoint: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """S3 down through every retry: exit 1 naming what failed, and no aggregate written as if the hour were complete."""
    monkeypatch.setenv("S3_BUCKET", "agg-unreachable")
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    assert "Could not connect to the endpoint URL" in capsys.readouterr().err
    assert not AggregatorSettings().aggregated_dir.exists()


def test_a_failed_upload_exits_1_and_keeps_the_local_file(
    unreachable_endpoint: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The local curated hour and aggregate stand when S3 refuses them; the run says so (exit 1) for cron's rerun."""
    monkeypatch.setenv("S3_BUCKET", "agg-unreachable")
    write_messy_hour()
    assert main(["--hour", LABEL]) == 1
    out, err = capsys.readouterr()
    curated = AggregatorSettings().curated_dir / "year=2026/month=01/day=01/hour=10/readings.parquet"
    assert f"cannot upload {curated} to s3://agg-unreachable/curated/year=2026/month=01/day=01/hour=10/" in err
    assert out == ""
    assert orjson.loads(aggregate_path().read_bytes())["quality"]["readings"] > 0


def test_an_object_that_cannot_be_read_fails_the_run(
    bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """GetObject failing for good (here: the object's bucket is gone) stops the hour: exit 1, nothing written."""
    write_messy_hour()
    upload_hour(bucket)
    s3_bucket = S3Bucket(bucket, AggregatorSettings())
    listed = list_s3_hour(s3_bucket, HOUR)
    elsewhere = S3Object(S3Bucket(f"agg-gone-{uuid.uuid4().hex[:8]}", AggregatorSettings()), listed[0].key, 10)
    monkeypatch.setattr(hourly_stats, "list_s3_hour", lambda *_: [elsewhere, *listed])
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    assert f"{elsewhere}: An error occurred (NoSuchBucket)" in capsys.readouterr().err
    assert not aggregate_path().exists()
    with pytest.raises(SourceUnreadable, match="NoSuchBucket"):  # raised in a worker process, re-raised here
        aggregate_hour(s3_bucket, AggregatorSettings().aggregated_dir, HOUR, workers=2, task_bytes=1)
    assert not aggregate_path().exists()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not gzip at all\n", "BadGzipFile"),
        (gzip.compress(stored_line() + b"\n")[:-12], "EOFError"),  # cut short: no end-of-stream marker
    ],
)
def test_a_damaged_gzip_object_fails_the_run(
    bucket: str, body: bytes, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .gz object that does not decompress is not silently short of readings: exit 1 naming the object."""
    key = s3_hour_prefix(HOUR) + "batch-1767261900000.jsonl.gz"
    s3().put_object(Bucket=bucket, Key=key, Body=body)
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    assert f"s3://{bucket}/{key}: {error}" in capsys.readouterr().err
    assert not aggregate_path().exists()


class BreakingBody:
    """A GetObject body whose connection breaks after ``good`` bytes: a read reaching that far fails, data lost."""

    def __init__(self, body: Any, good: int, error: Exception) -> None:
        self.body, self.good, self.error = body, good, error

    def read(self, size: int | None = None) -> bytes:
        if size is None or size >= self.good:
            self.body.read(self.good)
            raise self.error
        data: bytes = self.body.read(size)
        self.good -= len(data)
        return data

    def close(self) -> None:
        self.body.close()


class BreakingClient:
    """A real client whose first ``breaks`` GetObject bodies break after ``good`` bytes."""

    def __init__(self, breaks: int, good: int, error: Exception) -> None:
        self.client = sync_client("s3", CommonSettings())
        self.breaks, self.good, self.error = breaks, good, error
        self.ranges: list[str] = []

    def get_object(self, **request: Any) -> dict[str, Any]:
        response = self.client.get_object(**request)
        self.ranges.append(request.get("Range", ""))
        if self.breaks:
            self.breaks -= 1
            response["Body"] = BreakingBody(response["Body"], self.good, self.error)
        return response


@pytest.fixture
def one_object(bucket: str) -> S3Object:
    """One plain batch object of a hundred readings."""
    data = b"".join(stored_line(f"veh-{n % 7:05d}", n / 5) + b"\n" for n in range(100))
    key = s3_hour_prefix(HOUR) + "batch-1767261900000.jsonl"
    s3().put_object(Bucket=bucket, Key=key, Body=data)
    return S3Object(S3Bucket(bucket, CommonSettings()), key, len(data))


def test_a_body_broken_midway_is_resumed_where_it_broke(
    one_object: S3Object, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """botocore does not retry a body: a connection lost midway resumes at the byte it broke (same ETag), all read."""
    expected = parse_files([one_object])
    client = BreakingClient(breaks=2, good=2500, error=ResponseStreamingError(error="connection reset"))
    monkeypatch.setattr(sources, "_client", lambda pid, settings: client)
    chunk = parse_files([one_object], block_bytes=1000)
    assert chunk.readings.size == expected.readings.size == 100
    assert all((a == b).all() for a, b in zip(chunk.readings, expected.readings, strict=True))
    assert client.ranges == ["", "bytes=2000-", "bytes=4000-"]  # two blocks read before each break
    assert caplog.text.count("resuming there") == 2


def test_a_body_that_keeps_breaking_fails_the_read(one_object: S3Object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resuming is bounded: a body that breaks every time makes the object unreadable, named in the error."""
    client = BreakingClient(breaks=99, good=100, error=ResponseStreamingError(error="connection reset"))
    monkeypatch.setattr(sources, "_client", lambda pid, settings: client)
    with pytest.raises(SourceUnreadable, match=r"body broke at byte 0 of [\d,]+ 4 times, last: .*connection reset"):
        parse_files([one_object])


def test_a_checksum_mismatch_fails_the_read(one_object: S3Object, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes that do not match the checksum stored at upload are not read as readings."""
    client = BreakingClient(breaks=1, good=0, error=FlexibleChecksumError(error_msg="CRC32 mismatch"))
    monkeypatch.setattr(sources, "_client", lambda pid, settings: client)
    with pytest.raises(SourceUnreadable, match=r"batch-1767261900000.jsonl: CRC32 mismatch"):
        parse_files([one_object])


class Tracked:
    """A handle that remembers being closed."""

    def __init__(self, opened: Opened) -> None:
        self.opened, self.closed = opened, False

    def read(self, size: int = -1, /) -> bytes:
        return self.opened.handle.read(size)

    def close(self) -> None:
        self.closed = True
        self.opened.handle.close()


def test_stopping_early_closes_what_was_opened_ahead(one_object: S3Object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that stops before the end leaves no connection open for the objects it had opened ahead."""
    handles: list[Tracked] = []

    def tracked_open(source: Source) -> Opened:
        handles.append(Tracked(open_source(source)))
        return handles[-1].opened._replace(handle=handles[-1])

    monkeypatch.setattr(sources, "open_source", tracked_open)
    turns = open_in_turn([one_object] * 20)
    _, first = next(turns)
    assert first is not None and first.handle.read(10)
    turns.close()
    assert 1 < len(handles) <= 1 + sources.OPEN_AHEAD  # opened ahead, never further
    (mine,) = [handle for handle in handles if handle is first.handle]
    assert not mine.closed  # the caller's to close
    assert all(handle.closed for handle in handles if handle is not mine)


def test_an_object_on_an_unreachable_s3_is_unreadable(unreachable_endpoint: None) -> None:
    """GetObject failing through every retry (no connection) makes the object unreadable, not vanished."""
    unreachable = S3Object(S3Bucket("agg-unreachable", CommonSettings()), "raw/batch-1767261900000.jsonl", 10)
    with pytest.raises(
        SourceUnreadable, match=r"s3://agg-unreachable/raw/batch-1767261900000\.jsonl: Could not connect"
    ):
        parse_files([unreachable])
