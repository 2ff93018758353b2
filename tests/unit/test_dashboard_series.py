"""One vehicle's series for the vehicle page: curated and raw hours stitched once, downsampled so spikes survive."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from src.aggregator.curated import compact_hour, connect
from src.common.layout import batch_file_name, hour_partition
from src.common.schema import format_timestamp
from src.dashboard import queries, series

HOUR = datetime(2026, 1, 15, 8, tzinfo=UTC)
VEHICLE = "veh-00001"


def record(at: datetime, vehicle: str = VEHICLE, received: datetime | None = None, **signals: float) -> dict[str, Any]:
    payload = {
        "battery_soc": 50.0,
        "battery_voltage": 360.0,
        "battery_current": -10.0,
        "cell_voltage_min": 3.70,
        "cell_voltage_max": 3.74,
        "cell_temp_min": 20.0,
        "cell_temp_max": 22.0,
    } | signals
    return {
        "timestamp": format_timestamp(at),
        "vehicle_id": vehicle,
        "can_id": "0x1F0",
        "payload": payload,
        "ingest_received_at": format_timestamp(received or at),
    }


def write_raw(raw_dir: Path, records: Iterable[dict[str, Any]], durable: datetime, extra: bytes = b"") -> Path:
    """One batch file, in the partition of ``durable`` and named by it, as the consumer writes them."""
    directory = raw_dir / hour_partition(durable)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / batch_file_name(int(durable.timestamp() * 1000), "t")
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + extra)
    return path


def curate(root: Path, hour: datetime) -> None:
    """The hourly job's compaction of ``hour`` (the real curated layout and file)."""
    with connect(root / "curated", 256) as connection:
        compact_hour(connection, root / "raw", root / "curated", hour)


def every_second(start: datetime, seconds: int, vehicle: str = VEHICLE) -> list[dict[str, Any]]:
    return [record(start + timedelta(seconds=i), vehicle, battery_soc=50 + i / 1000) for i in range(seconds)]


def read(root: Path, start: datetime, end: datetime, points: int = 1000, vehicle: str = VEHICLE) -> series.Series:
    return series.read_series(root / "raw", root / "curated", vehicle, series.Window(start, end), points)


def test_a_one_reading_spike_survives_downsampling_and_buckets_stay_bounded(tmp_path: Path) -> None:
    readings = every_second(HOUR, 3600)
    readings[1234] = record(HOUR + timedelta(seconds=1234), battery_current=-750.0, cell_voltage_min=3.1)
    readings += every_second(HOUR, 3600, "veh-00002")
    write_raw(tmp_path / "raw", readings, HOUR + timedelta(minutes=59))
    curate(tmp_path, HOUR)

    found = read(tmp_path, HOUR, HOUR + timedelta(hours=1), points=100)

    assert found.mode == "buckets" and found.bucket_s == 36.0
    assert found.readings == 3600 and found.points == 100
    assert len(found.columns["t"]) == 100
    assert min(v for v in found.columns["battery_current_min"] if v is not None) == -750.0
    assert max(v for v in found.columns["battery_current_max"] if v is not None) == -10.0
    assert min(v for v in found.columns["cell_voltage_min_min"] if v is not None) == 3.1
    assert max(v for v in found.columns["cell_voltage_spread_mv_max"] if v is not None) == pytest.approx(640.0)
    assert found.sources.curated_hours == ["2026-01-15T08"] and found.sources.raw_hours == []


def test_a_small_window_gives_every_reading_and_a_gap_is_drawn_as_one(tmp_path: Path) -> None:
    readings = every_second(HOUR, 10) + every_second(HOUR + timedelta(seconds=60), 10)
    write_raw(tmp_path / "raw", readings, HOUR + timedelta(minutes=2))

    found = read(tmp_path, HOUR, HOUR + timedelta(minutes=5))

    assert found.mode == "raw" and found.bucket_s is None
    assert found.readings == 20 and found.points == 20
    assert found.columns["t"][:2] == [HOUR.timestamp(), HOUR.timestamp() + 1]
    assert found.columns["battery_soc_min"] == found.columns["battery_soc_max"]
    gap = found.columns["readings"].index(None)
    assert gap == 10 and found.columns["battery_soc_min"][gap] is None
    assert found.sources.raw_hours == ["2026-01-15T08"]


def test_curated_and_raw_hours_are_stitched_without_counting_a_reading_twice(tmp_path: Path) -> None:
    raw, next_hour = tmp_path / "raw", HOUR + timedelta(hours=1)
    write_raw(raw, every_second(HOUR + timedelta(minutes=50), 600), HOUR + timedelta(minutes=59, seconds=59))
    curate(tmp_path, HOUR)
    # The hour's last reading delivered again after the hour turned, and a reading received late:
    # both land in the next (raw, not curated) hour's partition.
    again = record(HOUR + timedelta(minutes=59, seconds=59), received=next_hour + timedelta(seconds=1))
    late = record(HOUR + timedelta(minutes=59, seconds=59, milliseconds=500), received=next_hour + timedelta(seconds=2))
    current = every_second(next_hour, 60)
    write_raw(raw, [again, late, *current], next_hour + timedelta(seconds=3))
    write_raw(raw, current[:5], next_hour + timedelta(seconds=4))  # a redelivered batch: the same readings again

    found = read(tmp_path, HOUR + timedelta(minutes=55), next_hour + timedelta(minutes=5))

    assert found.sources.curated_hours == ["2026-01-15T08"] and found.sources.raw_hours == ["2026-01-15T09"]
    assert found.readings == 300 + 1 + 60  # the curated minutes, the late reading, the new hour: each once
    times = [t for t in found.columns["t"] if t is not None]
    assert len(times) == len(set(times)) == found.readings


def test_a_curated_hour_is_read_from_its_parquet_only_and_a_raw_hour_only_for_its_vehicle(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_raw(raw, every_second(HOUR, 30), HOUR + timedelta(minutes=1))
    curate(tmp_path, HOUR)
    write_raw(raw, every_second(HOUR + timedelta(minutes=5), 30), HOUR + timedelta(minutes=6))  # after the job ran
    other = every_second(HOUR + timedelta(hours=1), 30, "veh-00001x")  # an id that contains ours
    damaged = b'{"timestamp":"2026-01-15T09:00:59Z","vehicle_id":"veh-00001","can_id":"0x1F0","payl\n'
    mentions = record(HOUR + timedelta(hours=1, seconds=40), "veh-00009", note="veh-00001")  # type: ignore[arg-type]
    write_raw(raw, [*other, mentions], HOUR + timedelta(hours=1, minutes=1), extra=damaged)

    found = read(tmp_path, HOUR, HOUR + timedelta(hours=2))

    assert found.readings == 30  # the curated rows; a raw file the job has not seen waits for --catch-up
    assert found.sources.raw_hours == ["2026-01-15T09"]
    assert read(tmp_path, HOUR, HOUR + timedelta(hours=2), vehicle="veh-00001x").readings == 30
    assert read(tmp_path, HOUR + timedelta(hours=3), HOUR + timedelta(hours=4)).readings == 0


def test_raw_files_made_durable_before_the_window_are_not_read(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    early = write_raw(raw, every_second(HOUR, 60), HOUR + timedelta(minutes=1))
    later = write_raw(raw, every_second(HOUR + timedelta(minutes=30), 60), HOUR + timedelta(minutes=31))
    window = series.Window(HOUR + timedelta(minutes=20), HOUR + timedelta(minutes=40))

    assert series.sources(raw, tmp_path / "curated", window).raw == [later]
    assert early not in series.sources(raw, tmp_path / "curated", window).raw
    assert series.partition_hours(window) == [HOUR, HOUR + timedelta(hours=1)]


def test_empty_windows_and_unreadable_parquet(tmp_path: Path) -> None:
    empty = read(tmp_path, HOUR, HOUR + timedelta(hours=1))
    assert (empty.readings, empty.points, empty.columns["t"]) == (0, 0, [])

    broken = tmp_path / "curated" / hour_partition(HOUR) / "readings.parquet"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PAR1 not really")
    (broken.parent / "_manifest.json").write_text("{}")
    (broken.parent / ".readings.parquet.1.tmp").write_text("")
    assert queries.curated_files(tmp_path / "curated", HOUR) == [broken]
    with pytest.raises(duckdb.Error):
        read(tmp_path, HOUR, HOUR + timedelta(hours=1))


def test_vehicle_lines_and_their_cache(tmp_path: Path) -> None:
    path = write_raw(tmp_path, [record(HOUR), record(HOUR, "veh-2"), record(HOUR + timedelta(seconds=1))], HOUR)
    lines = series.vehicle_lines(path, VEHICLE)
    assert lines.count(b"\n") == 2 and b"veh-2" not in lines
    no_newline = tmp_path / "last.jsonl"
    no_newline.write_bytes(orjson.dumps(record(HOUR)))
    assert series.vehicle_lines(no_newline, VEHICLE).endswith(b"}\n")
    assert series.vehicle_lines(tmp_path / "gone.jsonl", VEHICLE) == b""

    cache = series.LineCache(max_bytes=1000)
    assert cache.lines(path, VEHICLE) == lines
    path.write_bytes(b"")  # a batch file never changes; the cache is keyed by size all the same
    assert cache.lines(path, VEHICLE) == b""
    assert cache.lines(tmp_path / "gone.jsonl", VEHICLE) == b""
    for i in range(20):
        cache.lines(no_newline, f"v{i}")
    assert cache._bytes <= 1000


def test_bucket_width_and_sql_parts() -> None:
    window = series.Window(HOUR, HOUR + timedelta(hours=24))
    assert series.bucket_us(window, 1000) == 86_400_000
    assert series.bucket_us(series.Window(HOUR, HOUR + timedelta(microseconds=1)), 1000) == 1
    both = queries.series_sql(curated=True, raw=True)
    assert "read_parquet($curated)" in both and "read_ndjson($raw" in both and "UNION ALL" in both
    assert "read_ndjson" not in queries.series_sql(curated=True, raw=False)


def test_two_requests_for_the_same_file_and_vehicle_share_one_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_raw(tmp_path, every_second(HOUR, 5), HOUR)
    cache, scans, started, release = series.LineCache(), [], threading.Event(), threading.Event()

    def slow_scan(scanned: Path, vehicle_id: str) -> bytes:
        scans.append(scanned)
        started.set()
        release.wait(10)
        return b"lines\n"

    monkeypatch.setattr(series, "vehicle_lines", slow_scan)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(cache.lines, path, VEHICLE)
        started.wait(10)
        second = pool.submit(cache.lines, path, VEHICLE)
        time.sleep(0.05)  # the second request is waiting on the first's scan
        release.set()
        assert first.result() == second.result() == b"lines\n"
    assert scans == [path]
