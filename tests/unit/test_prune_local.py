"""Local retention: only files S3 holds, only hours past the cut-off, and nothing at all on a dry run."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import pytest

from src.common.aws import sync_client
from src.common.layout import hour_partition
from src.common.settings import CommonSettings
from src.ops import prune as prune_local

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
OLD = datetime(2026, 11, 25, 9, tzinfo=UTC)  # ended 51.5 h before NOW
RECENT = datetime(2026, 11, 27, 10, tzinfo=UTC)  # ended 1.5 h before NOW


@pytest.fixture
def raw_dir(isolated_env: Path) -> Path:
    return isolated_env / "data" / "raw"


def batch(raw_dir: Path, hour: datetime, name: str, in_s3: str | None, bucket: str) -> Path:
    """A local batch file; ``in_s3`` is None (not uploaded), "gz" or "plain"."""
    directory = raw_dir / hour_partition(hour)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b'{"n": 1}\n' * 10)
    if in_s3 is not None:
        key = "raw/" + path.relative_to(raw_dir).as_posix()
        body = gzip.compress(path.read_bytes()) if in_s3 == "gz" else path.read_bytes()
        sync_client("s3", CommonSettings()).put_object(
            Bucket=bucket, Key=key + (".gz" if in_s3 == "gz" else ""), Body=body
        )
    return path


def run(*args: str) -> int:
    return prune_local.main(list(args), now=lambda: NOW)


def test_old_files_in_s3_go_and_everything_else_stays(
    bucket: str, raw_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the cut-off and in S3 (either key form): deleted. Not in S3, or too recent: kept."""
    gone = [batch(raw_dir, OLD, "batch-1764061200000-a_000001.jsonl", "gz", bucket)]
    gone.append(batch(raw_dir, OLD, "batch-1764061200001-a_000002.jsonl", "plain", bucket))
    not_uploaded = batch(raw_dir, OLD, "batch-1764061200002-a_000003.jsonl", None, bucket)
    recent = batch(raw_dir, RECENT, "batch-1764237600000-a_000004.jsonl", "gz", bucket)

    assert run("--older-than-hours", "48") == 0
    assert [p.exists() for p in gone] == [False, False]
    assert not_uploaded.exists() and recent.exists()
    out = capsys.readouterr().out
    assert "year=2026/month=11/day=25/hour=09: 2 file(s) in S3, 1 not" in out
    assert "deleted 2 file(s)" in out and "kept 1 file(s) not yet in S3" in out


def test_a_dry_run_deletes_nothing(bucket: str, raw_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--dry-run names what would go and leaves every file in place."""
    path = batch(raw_dir, OLD, "batch-1764061200000-a_000001.jsonl", "gz", bucket)
    assert run("--dry-run") == 0
    assert path.exists()
    assert "would delete 1 file(s)" in capsys.readouterr().out


def test_emptied_partitions_are_removed_up_to_raw(bucket: str, raw_dir: Path) -> None:
    """A fully pruned hour leaves no empty year=/month=/day=/hour= directories behind."""
    batch(raw_dir, OLD, "batch-1764061200000-a_000001.jsonl", "plain", bucket)
    keep = batch(raw_dir, RECENT, "batch-1764237600000-a_000004.jsonl", None, bucket)
    (raw_dir / "year=2026" / "month=11" / "day=20" / "hour=01").mkdir(parents=True)  # an empty old hour
    assert run("--older-than-hours", "1") == 0
    assert not (raw_dir / hour_partition(OLD)).exists() and not (raw_dir / "year=2026" / "month=11" / "day=25").exists()
    assert not (raw_dir / "year=2026" / "month=11" / "day=20").exists()
    assert keep.exists() and raw_dir.is_dir()


def test_without_a_bucket_nothing_is_pruned(raw_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """S3_BUCKET unset: no way to know what is safe, so exit 2 and touch nothing."""
    path = raw_dir / hour_partition(OLD) / "batch-1764061200000-a_000001.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{}\n")
    assert run() == 2
    assert path.exists() and "S3_BUCKET is not set" in capsys.readouterr().err


def test_a_negative_age_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("--older-than-hours", "-1")
    assert exit_info.value.code == 2


def test_partition_hour_reads_the_hive_path() -> None:
    """Only well-formed, real hours count as partitions; anything else is left alone."""
    from src.common.layout import partition_hour

    assert partition_hour(Path("raw") / hour_partition(OLD)) == OLD
    assert partition_hour(Path("raw/year=2026/month=13/day=01/hour=00")) is None
    assert partition_hour(Path("raw/misc")) is None
