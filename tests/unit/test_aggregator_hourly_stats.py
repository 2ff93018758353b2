"""The hourly aggregator: exact statistics, duplicates dropped, bad lines survived, reruns identical."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from src.aggregator import curated
from src.aggregator.hourly_stats import curate_and_aggregate, main
from src.common.layout import batch_file_sizes, raw_hour_dir
from src.common.schema import SIGNALS
from src.common.settings import AggregatorSettings

HOUR = datetime(2025, 10, 19, 17, tzinfo=UTC)


def record(vehicle: str, second: int, soc: float = 80.0, **payload: float) -> dict[str, object]:
    values = {name: 1.0 for name in SIGNALS} | {"battery_soc": soc} | payload
    return {
        "timestamp": f"2025-10-19T17:00:{second:02d}.200Z",
        "vehicle_id": vehicle,
        "can_id": "0x1F0",
        "payload": values,
        "ingest_received_at": f"2025-10-19T17:00:{second:02d}.250Z",
    }


def write_batch(name: str, rows: list[dict[str, object] | bytes], hour: datetime = HOUR) -> Path:
    directory = raw_hour_dir(AggregatorSettings().raw_dir, hour)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(b"".join(r if isinstance(r, bytes) else orjson.dumps(r) + b"\n" for r in rows))
    return path


def output(hour: datetime = HOUR) -> dict[str, object]:
    path = AggregatorSettings().aggregated_dir / f"aggregated-{hour:%Y-%m-%dT%H}.json"
    return orjson.loads(path.read_bytes())


def test_known_files_give_exact_counts_min_max_avg() -> None:
    """The statistics themselves: count, min, max and mean per vehicle and signal, vehicles sorted."""
    write_batch(
        "batch-1760893200000.jsonl",
        [record("veh-00002", 1, soc=50.0), record("veh-00001", 1, soc=80.0, battery_current=-10.0)],
    )
    write_batch(
        "batch-1760893201000-w1.jsonl",
        [record("veh-00001", 2, soc=79.0, battery_current=5.0), record("veh-00001", 3, soc=78.5)],
    )
    assert main(["--hour", "2025-10-19T17"]) == 0
    document = output()
    assert document["aggregation_timestamp"] == "2025-10-19T18:00:00Z"
    assert document["time_range"] == {"start": "2025-10-19T17:00:00Z", "end": "2025-10-19T17:59:59Z"}
    first, second = document["vehicles"]
    assert first["vehicle_id"] == "veh-00001" and second["vehicle_id"] == "veh-00002"
    assert first["message_count"] == 3
    assert first["battery_soc"] == {"min": 78.5, "max": 80.0, "avg": 79.166667}
    assert first["battery_current"] == {"min": -10.0, "max": 5.0, "avg": -1.333333}
    assert list(first) == ["vehicle_id", "message_count", *SIGNALS]
    assert second["message_count"] == 1 and second["battery_soc"] == {"min": 50.0, "max": 50.0, "avg": 50.0}
    assert document["quality"] == {
        "files_read": 2,
        "lines_read": 4,
        "readings": 4,
        "duplicates_dropped": 0,
        "lines_skipped": 0,
    }


def test_duplicates_across_files_are_dropped_by_natural_key() -> None:
    """SQS delivers at least once: the same reading stored twice must count once."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1, soc=80.0), record("veh-00001", 2, soc=70.0)])
    redelivered = record("veh-00001", 1, soc=80.0)
    redelivered["timestamp"] = "2025-10-19T19:00:01.200+02:00"  # same instant, other spelling
    write_batch("batch-1760893205000.jsonl", [redelivered])
    settings = AggregatorSettings()
    path, result, _ = curate_and_aggregate(
        settings.raw_dir, settings.curated_dir, settings.aggregated_dir, HOUR, settings.duckdb_memory_limit_mb
    )
    assert result.vehicles["veh-00001"].message_count == 2
    assert result.quality.duplicates_dropped == 1
    assert output()["vehicles"][0]["battery_soc"]["avg"] == 75.0  # type: ignore[index]
    assert path.name == "aggregated-2025-10-19T17.json"


def test_corrupt_and_truncated_lines_are_skipped_and_counted(capsys: pytest.CaptureFixture[str]) -> None:
    """One bad line must not cost the hour: it is skipped, counted, and logged (by file)."""
    good = record("veh-00001", 1)
    missing_field = record("veh-00001", 2)
    del missing_field["vehicle_id"]
    text_signal = record("veh-00001", 3)
    text_signal["payload"] = dict(text_signal["payload"], battery_soc="eighty")  # type: ignore[call-overload]
    null_signal = record("veh-00001", 4)
    null_signal["payload"] = dict(null_signal["payload"], battery_soc=None)  # type: ignore[call-overload]
    missing_signal = record("veh-00001", 5)
    missing_signal["payload"] = {"battery_soc": 1.0}
    bad_time = record("veh-00001", 6)
    bad_time["timestamp"] = "yesterday"
    naive_time = record("veh-00001", 7)
    naive_time["timestamp"] = "2025-10-19T17:00:07"
    write_batch(
        "batch-1760893200000.jsonl",
        [
            good,
            b"{not json\n",
            b"[1, 2]\n",
            b'{"vehicle_id": "veh-00001", "payload": 3}\n',
            missing_field,
            text_signal,
            null_signal,
            missing_signal,
            bad_time,
            naive_time,
            b"\n",  # blank lines are not readings and not damage
            b'{"bigint": 1e999}\n',
            orjson.dumps(record("veh-00001", 8))[:40],  # truncated last line, no newline
        ],
    )
    assert main(["--hour", "2025-10-19T17"]) == 0
    quality = output()["quality"]
    assert quality == {"files_read": 1, "lines_read": 12, "readings": 1, "duplicates_dropped": 0, "lines_skipped": 11}
    assert "batch-1760893200000.jsonl: 11 line(s) skipped: not a reading" in capsys.readouterr().err


def test_skipped_lines_are_logged_only_up_to_a_cap(capsys: pytest.CaptureFixture[str]) -> None:
    """Thoroughly broken files are counted in full but must not flood the log: one line per file, at most a few."""
    for i in range(curated.MAX_LOGGED_SKIPS + 5):
        write_batch(f"batch-17608932{i:05d}.jsonl", [b"garbage\n", record("veh-00001", i % 60)])
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert output()["quality"]["lines_skipped"] == curated.MAX_LOGGED_SKIPS + 5  # type: ignore[index]
    assert capsys.readouterr().err.count("skipped: not a reading") == curated.MAX_LOGGED_SKIPS


def test_non_finite_signal_is_skipped() -> None:
    """NaN or infinity would poison min/max/avg of the whole hour."""
    line = orjson.dumps(record("veh-00001", 1)).replace(b'"battery_soc":80.0', b'"battery_soc":1e999')
    write_batch("batch-1760893200000.jsonl", [line + b"\n", record("veh-00001", 2)])
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert output()["quality"]["lines_skipped"] == 1  # type: ignore[index]


def test_temporary_and_hidden_files_are_ignored() -> None:
    """A file still being written (temporary name) is not complete and must not be read."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    write_batch(".batch-1760893201000.jsonl.tmp", [record("veh-00009", 1)])
    write_batch("batch-1760893202000.jsonl.tmp", [record("veh-00009", 2)])
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert [v["vehicle_id"] for v in output()["vehicles"]] == ["veh-00001"]  # type: ignore[union-attr]


def test_empty_hour_writes_an_aggregate_without_vehicles(capsys: pytest.CaptureFixture[str]) -> None:
    """An hour without data still gets its file, so downstream can tell 'no data' from 'not run'."""
    assert main(["--hour", "2025-10-19T03"]) == 0
    document = output(datetime(2025, 10, 19, 3, tzinfo=UTC))
    assert document["vehicles"] == []
    assert document["quality"]["readings"] == 0  # type: ignore[index]
    out = capsys.readouterr().out
    assert "aggregated-2025-10-19T03.json" in out and "no readings" in out


def test_rerun_is_byte_identical() -> None:
    """Idempotent reruns (cron retries, backfills) must not change the output."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", s, soc=80.0 - s / 7) for s in range(30)])
    assert main(["--hour", "2025-10-19T17"]) == 0
    path = AggregatorSettings().aggregated_dir / "aggregated-2025-10-19T17.json"
    first = path.read_bytes()
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


def test_default_hour_is_the_previous_full_hour(capsys: pytest.CaptureFixture[str]) -> None:
    """Cron runs at :05; without --hour the aggregator must pick the hour that just ended."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    assert main([], now=lambda: datetime(2025, 10, 19, 18, 5, tzinfo=UTC)) == 0
    assert output()["quality"]["readings"] == 1  # type: ignore[index]
    assert "1 readings from 1 vehicles" in capsys.readouterr().out


def test_default_clock_is_utc_now() -> None:
    """Without an injected clock the run still picks a valid hour and writes its file."""
    assert main([]) == 0
    assert len(list(AggregatorSettings().aggregated_dir.glob("aggregated-*.json"))) == 1


def test_source_s3_without_a_bucket_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asking for S3 without S3_BUCKET must fail clearly (exit 2), not silently aggregate the local tier instead."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    assert main(["--source", "s3", "--hour", "2025-10-19T17"]) == 2
    assert "S3_BUCKET unset" in capsys.readouterr().err
    monkeypatch.setenv("S3_BUCKET", "  ")  # blank is unset
    assert main(["--source", "s3", "--hour", "2025-10-19T17"]) == 2
    assert "S3_BUCKET unset" in capsys.readouterr().err
    assert not AggregatorSettings().aggregated_dir.exists()


def test_bad_hour_is_a_usage_error() -> None:
    """A mistyped --hour must not aggregate some other hour."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--hour", "2025-10-19 17"])
    assert exit_info.value.code == 2


def test_file_vanishing_between_listing_and_reading_is_survived(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files may be moved away (e.g. by pruning) while the job runs; the hour is read again without them."""
    write_batch("batch-1760893200000.jsonl", [record("veh-00001", 1)])
    real_listing = batch_file_sizes
    listings = iter([{"batch-1760893100000.jsonl": 10}])  # listed once, gone when DuckDB opens it

    def listing(raw_dir: Path, hour: datetime) -> dict[str, int]:
        return next(listings, {}) | real_listing(raw_dir, hour)

    monkeypatch.setattr(curated, "batch_file_sizes", listing)
    assert main(["--hour", "2025-10-19T17"]) == 0
    assert output()["quality"]["files_read"] == 1  # type: ignore[index]
    assert "batch-1760893100000.jsonl vanished before it could be read" in capsys.readouterr().err


def test_write_failure_leaves_no_temporary_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed write must not leave debris that a later reader could mistake for output."""

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        main(["--hour", "2025-10-19T17"])
    assert list(AggregatorSettings().aggregated_dir.iterdir()) == []


@pytest.mark.parametrize("arguments", [["--engine", "spark", "--source", "s3"], ["--engine", "presto"]])
def test_an_engine_it_cannot_run_is_a_usage_error(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--hour", "2025-10-19T17", *arguments])
    assert exit_info.value.code == 2
