"""Curated hours: raw JSONL compacted by DuckDB into one deduplicated, sorted, typed, zstd Parquet file."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from src.aggregator import curated, queries
from src.aggregator.curated import CompactionFailed, compact_hour, connect, is_current, stale_hours
from src.aggregator.hourly_stats import main
from src.common.aws import sync_client
from src.common.schema import SIGNALS
from src.common.settings import AggregatorSettings
from tests.unit.test_aggregator_hourly_stats import HOUR, output, record, write_batch

PARQUET = Path("year=2025/month=10/day=19/hour=17") / curated.PARQUET_NAME


def curated_file() -> Path:
    return AggregatorSettings().curated_dir / PARQUET


def rows(path: Path | None = None) -> list[tuple[object, ...]]:
    with duckdb.connect() as connection:
        return connection.execute("SELECT * FROM read_parquet(?)", [str(path or curated_file())]).fetchall()


def compact(hour: datetime = HOUR) -> curated.Compaction:
    settings = AggregatorSettings()
    with connect(settings.curated_dir, 256) as connection:
        return compact_hour(connection, settings.raw_dir, settings.curated_dir, hour)


def test_the_curated_hour_is_deduplicated_sorted_typed_and_zstd() -> None:
    """One row per natural key (the earliest copy), vehicles then time in order, the contract's column types."""
    late_copy = record("veh-00002", 1, soc=10.0) | {"ingest_received_at": "2025-10-19T17:30:00.000001Z"}
    write_batch("batch-1760893200000-a.jsonl", [record("veh-00002", 2), record("veh-00002", 1, soc=50.0)])
    write_batch("batch-1760893201000-b.jsonl", [late_copy, record("veh-00001", 9), b"{broken\n"])
    result = compact()
    assert (result.rows, result.duplicates_dropped, result.lines_read, result.lines_skipped) == (3, 1, 5, 1)
    table = pq.read_table(curated_file())
    assert table.column_names == [name for name, _ in queries.COLUMNS]
    assert table.column("vehicle_id").to_pylist() == ["veh-00001", "veh-00002", "veh-00002"]
    assert [t.second for t in table.column("timestamp").to_pylist()] == [9, 1, 2]
    assert table.column("battery_soc").to_pylist()[1] == 50.0  # the copy received first, not the later one
    schema = table.schema
    for name in ("timestamp", "ingest_received_at"):
        assert str(schema.field(name).type) == "timestamp[us, tz=UTC]"
    assert all(str(schema.field(name).type) == "double" for name in SIGNALS)
    metadata = pq.ParquetFile(curated_file()).metadata
    assert {metadata.row_group(0).column(i).compression for i in range(metadata.num_columns)} == {"ZSTD"}


def test_a_rerun_over_the_same_raw_files_gives_the_same_rows_and_bytes() -> None:
    write_batch("batch-1760893200000.jsonl", [record(f"veh-{v:05d}", s) for v in range(5) for s in range(20)])
    write_batch("batch-1760893201000.jsonl", [record("veh-00003", s) for s in range(10)])  # redelivered
    compact()
    first = curated_file().read_bytes()
    compact()
    assert curated_file().read_bytes() == first
    assert len(rows()) == 100


def test_timestamps_keep_their_instant_whatever_the_zone_they_were_written_in() -> None:
    """ "+02:00" and "Z" forms of one instant are one reading; a timestamp without a zone is not a reading."""
    utc = record("veh-00001", 1)
    plus_two = utc | {"timestamp": "2025-10-19T19:00:01.200+02:00", "ingest_received_at": "2025-10-19T17:00:02Z"}
    naive = record("veh-00001", 2) | {"timestamp": "2025-10-19T17:00:02.200"}
    write_batch("batch-1760893200000.jsonl", [plus_two, utc, naive])
    result = compact()
    assert (result.rows, result.duplicates_dropped, result.lines_skipped) == (1, 1, 1)
    assert rows()[0][2] == datetime(2025, 10, 19, 17, 0, 1, 200000, tzinfo=UTC)


def test_a_failed_compaction_writes_nothing_and_keeps_the_previous_hour(monkeypatch: pytest.MonkeyPatch) -> None:
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    compact()
    before = curated_file().read_bytes()
    write_batch("batch-1760893201000.jsonl", [record("veh-00001", 2)])
    monkeypatch.setattr(queries, "copy_curated", lambda path: f"COPY (SELECT 1 / 'x') TO {queries.sql_string(path)}")
    with pytest.raises(CompactionFailed, match="hour 2025-10-19T17"):
        compact()
    assert curated_file().read_bytes() == before
    assert sorted(p.name for p in curated_file().parent.iterdir()) == [curated.MANIFEST_NAME, curated.PARQUET_NAME]


def test_the_manifest_tells_whether_the_raw_hour_changed() -> None:
    settings = AggregatorSettings()
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    assert stale_hours(settings.raw_dir, settings.curated_dir) == [HOUR]
    compact()
    manifest = orjson.loads((curated_file().parent / curated.MANIFEST_NAME).read_bytes())
    assert manifest["hour"] == "2025-10-19T17" and list(manifest["raw_files"]) == ["batch-1760893200000.jsonl"]
    assert is_current(settings.raw_dir, settings.curated_dir, HOUR)
    assert stale_hours(settings.raw_dir, settings.curated_dir) == []
    write_batch("batch-1760893999000.jsonl", [record("veh-00001", 2)])  # a late file
    assert stale_hours(settings.raw_dir, settings.curated_dir) == [HOUR]


def test_catch_up_rebuilds_changed_hours_and_counts_late_readings_once(capsys: pytest.CaptureFixture[str]) -> None:
    """A late batch file (a redelivery, a consumer that was down) reaches the curated hour and its aggregate."""
    other = HOUR + timedelta(hours=1)
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1), record("veh-00001", 2)])
    write_batch("batch-1760896800000.jsonl", [record("veh-00009", 1)], hour=other)
    assert main(["--catch-up"]) == 0
    assert len(rows()) == 2
    write_batch("batch-1760893999000.jsonl", [record("veh-00001", 2), record("veh-00001", 3)])  # one redelivered
    capsys.readouterr()
    assert main(["--catch-up"]) == 0
    assert len(rows()) == 3
    assert output()["vehicles"][0]["message_count"] == 3
    assert output()["quality"]["duplicates_dropped"] == 1
    assert "1 hour(s) to curate: 2025-10-19T17" in capsys.readouterr().err
    assert main(["--catch-up"]) == 0  # nothing changed: nothing to do


def test_catch_up_reads_local_raw_files_only() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--catch-up", "--source", "s3"])
    assert exit_info.value.code == 2


def test_an_hour_without_raw_files_curates_nothing() -> None:
    assert compact().path is None
    assert not curated_file().exists()


def test_spill_directories_of_dead_runs_are_removed(tmp_path: Path) -> None:
    """A run killed with -9 leaves its spill directory; the next run removes it, never a live run's."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    spill_root = tmp_path / curated.SPILL_DIR_NAME
    (spill_root / dead.stdout.strip()).mkdir(parents=True)
    (spill_root / str(os.getppid())).mkdir()
    with connect(tmp_path, 64):
        assert (spill_root / str(os.getpid())).is_dir()
    assert sorted(p.name for p in spill_root.iterdir()) == [str(os.getppid())]


def test_temporaries_of_dead_runs_in_an_hour_are_removed_by_the_next_compaction() -> None:
    """A run killed with -9 mid-write leaves temporaries; the next compaction removes them, never a live run's."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid, live = dead.stdout.strip(), os.getppid()
    hour_dir = curated_file().parent
    hour_dir.mkdir(parents=True, exist_ok=True)
    left = [hour_dir / f".readings.parquet.{pid}.tmp", hour_dir / f"._manifest.json.{pid}.tmp"]
    for path in [*left, hour_dir / f".readings.parquet.{live}.tmp"]:
        path.write_bytes(b"half")
    (hour_dir / f"_spark-{pid}").mkdir()
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert sorted(p.name for p in hour_dir.iterdir()) == sorted(
        [curated.MANIFEST_NAME, curated.PARQUET_NAME, f".readings.parquet.{live}.tmp"]
    )


def test_the_curated_hour_goes_to_s3_beside_the_aggregate(bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    assert main(["--hour", "2025-10-19T17"]) == 0
    prefix = f"curated/{PARQUET.parent.as_posix()}/"
    s3 = sync_client("s3", AggregatorSettings())
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert sorted(item["Key"] for item in listed) == [prefix + curated.MANIFEST_NAME, prefix + curated.PARQUET_NAME]
    body = s3.get_object(Bucket=bucket, Key=prefix + curated.PARQUET_NAME)["Body"].read()
    assert body == curated_file().read_bytes()
    assert f"s3://{bucket}/{prefix}{curated.PARQUET_NAME}" in capsys.readouterr().out
