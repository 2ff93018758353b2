"""`make dashboard`'s history (src/loadtest/history.py): which hours to simulate, which to aggregate, the jobs run.

The whole of it, with the real simulator and jobs, is tests/integration/test_live_dashboard.py.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from src.common.layout import aggregated_file_name, raw_hour_dir
from src.loadtest import history

NOW = datetime(2026, 1, 15, 10, 25, 7, tzinfo=UTC)
HOUR = timedelta(hours=1)


def raw_file(data_dir: Path, hour: datetime, name: str = "batch-1768471200000.jsonl") -> Path:
    directory = raw_hour_dir(data_dir / "raw", hour)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("{}\n")
    return path


def test_the_newest_raw_hour_is_the_newest_partition_holding_a_batch_file(tmp_path: Path) -> None:
    assert history.newest_raw_hour(tmp_path / "raw") is None
    raw_file(tmp_path, NOW - 3 * HOUR)
    raw_file(tmp_path, NOW - HOUR, ".batch-1.jsonl.tmp")  # a writer's temporary file is not a batch file
    assert history.newest_raw_hour(tmp_path / "raw") == datetime(2026, 1, 15, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("hours", "newest", "window"),
    [
        (3, None, (datetime(2026, 1, 15, 7, tzinfo=UTC), NOW)),
        (3, datetime(2026, 1, 15, 2, tzinfo=UTC), (datetime(2026, 1, 15, 7, tzinfo=UTC), NOW)),
        (3, datetime(2026, 1, 15, 8, tzinfo=UTC), (datetime(2026, 1, 15, 9, tzinfo=UTC), NOW)),
        (3, datetime(2026, 1, 15, 10, tzinfo=UTC), None),  # this hour is on disk: an earlier run streamed it
        (0, None, None),
    ],
)
def test_history_covers_the_hours_before_now_that_no_earlier_run_left(
    hours: int, newest: datetime | None, window: tuple[datetime, datetime] | None
) -> None:
    assert history.history_window(NOW, hours, newest) == window


def test_unaggregated_hours_have_raw_files_and_no_aggregate(tmp_path: Path) -> None:
    start = datetime(2026, 1, 15, 7, tzinfo=UTC)
    for hour in (start, start + HOUR, start + 2 * HOUR):
        raw_file(tmp_path, hour)
    (tmp_path / "aggregated").mkdir()
    (tmp_path / "aggregated" / aggregated_file_name(start + HOUR)).write_text("{}")
    found = history.unaggregated_hours(tmp_path, start - HOUR, start + 2 * HOUR)
    assert found == [start]  # 08 is aggregated, 09 is not before the bound, 06 has no raw files


def test_jobs_run_as_the_contracts_commands_hour_by_hour_then_each_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hour's job, then one daily job per day touched; a failure is said and returned, the rest still runs."""
    commands: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        commands.append(command[1:])
        return subprocess.CompletedProcess(command, 3 if "2026-01-14T23" in command else 0)

    monkeypatch.setattr(history.subprocess, "run", run)
    said: list[str] = []
    hours = [datetime(2026, 1, 14, 23, tzinfo=UTC), datetime(2026, 1, 15, 0, tzinfo=UTC)]
    failed = history.run_jobs(hours, {"DATA_DIR": str(tmp_path)}, tmp_path / "logs" / "aggregator.log", said.append)
    assert commands == [
        ["-m", "src.aggregator.hourly_stats", "--hour", "2026-01-14T23"],
        ["-m", "src.aggregator.hourly_stats", "--hour", "2026-01-15T00"],
        ["-m", "src.aggregator.fleet_health", "--day", "2026-01-14"],
        ["-m", "src.aggregator.fleet_health", "--day", "2026-01-15"],
    ]
    assert failed == ["hourly job 2026-01-14T23"]
    assert "hourly job 2026-01-14T23: FAILED with exit status 3" in said[0]
    assert (tmp_path / "logs" / "aggregator.log").exists()


def test_simulated_hours_land_in_raw_whole_and_the_staging_area_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator's lines are laid out per hour under a staging directory, then renamed into raw/."""
    seen: dict[str, Any] = {}

    def simulate(directory: Path, vehicles: int, days: int, faults: int, rate_ms: int, seed: int, **kw: Any) -> Any:
        seen.update(vehicles=vehicles, faults=faults, rate_ms=rate_ms, seed=seed, **kw)
        lines = [
            b'{"timestamp":"2026-01-15T09:59:59.000000Z","vehicle_id":"veh-00001","can_id":"0x1F0","payload":{}}\n',
            b'{"timestamp":"2026-01-15T10:00:00.000000Z","vehicle_id":"veh-00001","can_id":"0x1F0","payload":{}}\n',
        ]
        (directory / "readings.jsonl").write_bytes(b"".join(lines))
        return directory / "readings.jsonl", directory / "truth.json"

    monkeypatch.setattr(history, "simulate", simulate)
    window = (datetime(2026, 1, 15, 9, tzinfo=UTC), NOW)
    fleet = history.FleetOptions(vehicles=3, faults=2, fault_kinds="sensor_bias,weak_cell", seed=5)
    hours = history.simulate_history(tmp_path, window, fleet, lambda message: None)
    assert hours == [datetime(2026, 1, 15, 9, tzinfo=UTC), datetime(2026, 1, 15, 10, tzinfo=UTC)]
    assert seen["duration_s"] == 5107 and seen["faults_at_start"] == 2 and seen["rate_ms"] == 1000
    assert seen["fault_kinds"] == "sensor_bias,weak_cell" and seen["start"] == window[0]
    files = sorted((tmp_path / "raw").rglob("batch-*.jsonl"))
    assert [f.parent.name for f in files] == ["hour=09", "hour=10"]
    assert b'"ingest_received_at":"2026-01-15T09:59:59.000000Z"' in files[0].read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["raw"]  # nothing left of the staging directory
