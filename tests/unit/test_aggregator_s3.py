"""The hourly job's S3 tier: an hour read from S3 (curated, else raw) gives the aggregate local files give."""

from __future__ import annotations

import gzip
import random
import shutil
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.retries.standard import ExponentialBackoff

from src.aggregator import curated, hourly_stats, sources
from src.aggregator.hourly_stats import S3Bucket, main
from src.aggregator.sources import S3Object, list_s3_hour
from src.common.aws import sync_client
from src.common.layout import (
    batch_files,
    raw_hour_dir,
    s3_aggregated_key,
    s3_curated_prefix,
    s3_hour_prefix,
    s3_raw_key,
)
from src.common.schema import SIGNALS
from src.common.settings import AggregatorSettings, CommonSettings

HOUR = datetime(2026, 1, 1, 10, tzinfo=UTC)
LABEL = "2026-01-01T10"


def s3() -> Any:
    return sync_client("s3", CommonSettings())


def stored_line(vehicle: str, second: float, soc: float = 50.0) -> bytes:
    """A line as the consumer stores it."""
    stamp = f"2026-01-01T10:{int(second) // 60:02d}:{second % 60:09.6f}Z"
    payload = {name: 1.5 for name in SIGNALS} | {"battery_soc": soc}
    record = {"timestamp": stamp, "vehicle_id": vehicle, "can_id": "0x1F0", "payload": payload}
    return orjson.dumps(record | {"ingest_received_at": stamp})


def write_messy_hour() -> None:
    """Redeliveries across files, torn and corrupt lines, a file without a final line break, an empty file."""
    rng = random.Random(11)
    directory = raw_hour_dir(AggregatorSettings().raw_dir, HOUR)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [stored_line(f"veh-{rng.randrange(12):05d}", n * 0.2, soc=rng.uniform(20, 90)) for n in range(720)]
    for index in range(9):
        chunk = lines[index * 80 : (index + 1) * 80] + rng.sample(lines, 6)  # some redelivered
        (directory / f"batch-{1_767_261_900_000 + index:013d}-w_{index:06d}.jsonl").write_bytes(
            b"\n".join(chunk) + b"\n"
        )
    (directory / "batch-1767261999000-w_corrupt.jsonl").write_bytes(
        stored_line("veh-00001", 1.0) + b"\n\x00\x07garbage\n" + stored_line("veh-00077", 2.0)[:50]
    )
    (directory / "batch-1767261999500-w_empty.jsonl").write_bytes(b"")


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


def aggregate_path() -> Path:
    return AggregatorSettings().aggregated_dir / f"aggregated-{LABEL}.json"


def local_aggregate(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """The aggregate of the local files, made without a bucket (so nothing curated lands in S3)."""
    with monkeypatch.context() as patch:
        patch.delenv("S3_BUCKET")
        assert main(["--hour", LABEL]) == 0
    data = aggregate_path().read_bytes()
    aggregate_path().unlink()
    shutil.rmtree(AggregatorSettings().curated_dir)
    return data


def move_local_raw_away(tmp_path: Path) -> None:
    """The S3 run must not read the local tier: take it away."""
    shutil.move(AggregatorSettings().raw_dir, tmp_path / "raw-elsewhere")


def test_raw_objects_in_s3_give_the_aggregate_the_local_files_give(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No curated hour in S3: the raw objects (gzip and plain mixed) are compacted, duplicates, bad lines and all."""
    write_messy_hour()
    upload_hour(bucket)
    local = local_aggregate(monkeypatch)
    quality = orjson.loads(local)["quality"]
    assert quality["duplicates_dropped"] > 0 and quality["lines_skipped"] == 2 and quality["files_read"] == 11
    move_local_raw_away(tmp_path)
    capsys.readouterr()
    assert main(["--hour", LABEL, "--source", "s3"]) == 0
    assert aggregate_path().read_bytes() == local
    out = capsys.readouterr().out
    assert "source=s3: 11 objects (" in out and f"s3://{bucket}/{s3_hour_prefix(HOUR)}" in out
    curated_key = s3_curated_prefix(HOUR) + curated.PARQUET_NAME
    assert f"s3://{bucket}/{curated_key}" in out  # compacted here, so uploaded for the next reader


def test_a_curated_hour_in_s3_is_rolled_up_without_reading_raw(
    bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the curated hour in S3, --source s3 reads it (and its manifest for the quality block), not raw/."""
    write_messy_hour()
    assert main(["--hour", LABEL]) == 0  # curates locally and puts the curated hour in S3
    local = aggregate_path().read_bytes()
    aggregate_path().unlink()
    move_local_raw_away(tmp_path)
    shutil.rmtree(AggregatorSettings().curated_dir)
    capsys.readouterr()
    assert main(["--hour", LABEL, "--source", "s3"]) == 0
    assert aggregate_path().read_bytes() == local
    assert f"source=s3: 1 objects (0 bytes) from s3://{bucket}/curated/" in capsys.readouterr().out


def test_a_curated_hour_without_its_manifest_fails_the_run(bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The quality block comes from the manifest: without it the hour is not aggregated, and says why."""
    write_messy_hour()
    assert main(["--hour", LABEL]) == 0
    aggregate_path().unlink()
    s3().delete_object(Bucket=bucket, Key=s3_curated_prefix(HOUR) + curated.MANIFEST_NAME)
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    assert "the curated hour's manifest cannot be read" in capsys.readouterr().err
    assert not aggregate_path().exists()


def test_a_truncated_curated_hour_in_s3_fails_the_run_naming_it(
    bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A curated object cut short is not rolled up into a partial aggregate: exit 1 naming the object."""
    write_messy_hour()
    assert main(["--hour", LABEL]) == 0
    aggregate_path().unlink()
    key = s3_curated_prefix(HOUR) + curated.PARQUET_NAME
    whole = s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    s3().put_object(Bucket=bucket, Key=key, Body=whole[: len(whole) // 2])
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    assert f"s3://{bucket}/{key}" in capsys.readouterr().err
    assert not aggregate_path().exists()


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


def test_an_object_vanishing_before_it_is_read_sends_the_hour_back_to_its_listing(
    bucket: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listed, then gone (pruned, say): the hour is listed again and aggregated without it."""
    write_messy_hour()
    upload_hour(bucket)
    s3_bucket = S3Bucket(bucket, AggregatorSettings())
    gone = S3Object(s3_bucket, s3_hour_prefix(HOUR) + "batch-1767261900001.jsonl.gz", 10)
    listings = iter([[gone]])
    real = hourly_stats.list_s3_hour
    monkeypatch.setattr(hourly_stats, "list_s3_hour", lambda *args: next(listings, []) + real(*args))
    assert main(["--hour", LABEL, "--source", "s3"]) == 0
    assert orjson.loads(aggregate_path().read_bytes())["quality"]["files_read"] == 11
    assert "vanished while it was read; listing the hour again" in capsys.readouterr().err


def test_a_missing_bucket_fails_the_run_and_writes_nothing(
    aws_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bucket that is not there is no empty hour: exit 1 with a message, no aggregate claimed, locally or in S3."""
    monkeypatch.setenv("S3_BUCKET", f"agg-missing-{uuid.uuid4().hex[:12]}")
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    err = capsys.readouterr().err
    assert f"error: hour {LABEL} not aggregated, nothing written: " in err and "NoSuchBucket" in err
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
    parquet = AggregatorSettings().curated_dir / "year=2026/month=01/day=01/hour=10/readings.parquet"
    assert f"cannot upload {parquet} to s3://agg-unreachable/curated/year=2026/month=01/day=01/hour=10/" in err
    assert out == ""
    assert orjson.loads(aggregate_path().read_bytes())["quality"]["readings"] > 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not gzip at all\n", "not a GZIP stream"),
        (gzip.compress(stored_line("veh-00001", 1.0) + b"\n")[:-12], "end of GZIP stream"),  # cut short
    ],
)
def test_a_damaged_gzip_object_fails_the_run(
    bucket: str, body: bytes, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .gz object that does not decompress is not silently short of readings: exit 1 naming the object."""
    key = s3_hour_prefix(HOUR) + "batch-1767261900000.jsonl.gz"
    s3().put_object(Bucket=bucket, Key=key, Body=body)
    assert main(["--hour", LABEL, "--source", "s3"]) == 1
    err = capsys.readouterr().err
    assert error in err and f"s3://{bucket}/{key}" in err
    assert not aggregate_path().exists()
