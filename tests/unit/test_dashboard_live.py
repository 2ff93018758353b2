"""The fleet page's live tail (src/dashboard/live.py): each batch file read once, the newest reading per
vehicle kept, the analytics' states, the budget, the vehicle cap and the hour rollover."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.common.layout import batch_file_name, raw_hour_dir
from src.dashboard.live import CHARGING, DRIVING, PARKED, Latest, Rules, Tailer, live_row, next_state, parse_line

RULES = Rules(rest_current_a=0.5, session_merge_s=60.0, session_min_s=120.0)
HOUR = datetime(2026, 1, 15, 8, tzinfo=UTC)


def record(vehicle_id: str, at: datetime, current: float = -10.0, soc: float = 50.0) -> dict[str, Any]:
    stamp = at.isoformat().replace("+00:00", "Z")
    payload = {"battery_soc": soc, "battery_voltage": 360.0, "battery_current": current, "cell_voltage_min": 3.7,
               "cell_voltage_max": 3.722, "cell_temp_min": 20.0, "cell_temp_max": 24.5}  # fmt: skip
    return {"timestamp": stamp, "vehicle_id": vehicle_id, "can_id": "0x1F0", "payload": payload,
            "ingest_received_at": stamp}  # fmt: skip


def write_batch(raw_dir: Path, hour: datetime, ms: int, records: list[dict[str, Any]]) -> Path:
    directory = raw_hour_dir(raw_dir, hour)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / batch_file_name(ms)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def states(currents: list[tuple[float, float]]) -> list[str]:
    """The state after each (seconds from HOUR, current) reading, in order."""
    previous: Latest | None = None
    out = []
    for seconds, current in currents:
        at = HOUR + timedelta(seconds=seconds)
        state, since, last = next_state(previous, at, current, RULES)
        previous = Latest(at, "", (0.0,) * 7, state, since, last)
        out.append(state)
    return out


def test_states_follow_the_analytics_definition() -> None:
    # A first reading at rest is parked; discharge is driving; so is regeneration and a charge's first 120 s.
    assert states([(0, 0.2), (1, -30.0), (2, 15.0), (3, -5.0)]) == [PARKED, DRIVING, DRIVING, DRIVING]
    assert states([(0, 40.0)]) == [DRIVING]
    # A charge becomes a session once it has lasted session_min_s; a pause within session_merge_s keeps it.
    charge = [(0, 40.0), (60, 40.0), (120, 40.0), (150, 0.0), (170, 40.0), (200, 0.0), (261, 0.1)]
    assert states(charge) == [DRIVING, DRIVING, CHARGING, CHARGING, CHARGING, CHARGING, PARKED]
    # A pause before the session counted stays parked; a discharge ends the session.
    assert states([(0, 40.0), (10, 0.0), (20, 40.0), (80, 40.0), (140, 40.0), (141, -20.0), (142, 0.0)]) == [
        DRIVING, PARKED, DRIVING, DRIVING, CHARGING, DRIVING, PARKED,
    ]  # fmt: skip
    # Charging readings further apart than session_merge_s start a new session.
    assert states([(0, 40.0), (100, 40.0), (180, 40.0)]) == [DRIVING, DRIVING, DRIVING]


def test_parse_line_takes_stored_records_and_refuses_anything_else() -> None:
    at = HOUR + timedelta(seconds=5)
    parsed = parse_line(orjson.dumps(record("veh-1", at, current=-12.5)))
    assert parsed is not None
    assert parsed[0] == "veh-1" and parsed[1] == at and parsed[3][2] == -12.5
    bad_payload = record("veh-1", at)
    bad_payload["payload"]["battery_soc"] = True
    no_zone = record("veh-1", at) | {"timestamp": "2026-01-15T08:00:05"}
    numeric_id = record("veh-1", at) | {"vehicle_id": 7}
    for line in (b"{not json", b"[]", orjson.dumps({"vehicle_id": "x"}), orjson.dumps(bad_payload),
                 orjson.dumps(no_zone), orjson.dumps(numeric_id), b'{"payload": {"battery_soc": "high"}}'):  # fmt: skip
        assert parse_line(line) is None, line


def test_each_batch_file_is_read_once_and_the_newest_reading_per_vehicle_wins(tmp_path: Path) -> None:
    tailer = Tailer(tmp_path, RULES)
    write_batch(tmp_path, HOUR, 1, [record("veh-1", HOUR + timedelta(seconds=10), soc=60.0),
                                    record("veh-2", HOUR + timedelta(seconds=10))])  # fmt: skip
    tailer.scan(HOUR + timedelta(minutes=10))
    assert sorted(tailer.latest) == ["veh-1", "veh-2"]
    assert tailer.counts.files_read == 1 and tailer.counts.readings == 2

    # A later file with an older (redelivered) and a newer reading, a blank line and a damaged one.
    path = write_batch(tmp_path, HOUR, 2, [record("veh-1", HOUR + timedelta(seconds=5), soc=99.0),
                                           record("veh-2", HOUR + timedelta(seconds=11), soc=42.0)])  # fmt: skip
    path.write_bytes(path.read_bytes() + b"\n{broken\n")
    tailer.scan(HOUR + timedelta(minutes=10))
    tailer.scan(HOUR + timedelta(minutes=10))  # nothing new: nothing read again
    assert tailer.counts.files_read == 2 and tailer.counts.lines_skipped == 1
    assert tailer.latest["veh-1"].values[0] == 60.0  # the older reading changed nothing
    assert tailer.latest["veh-2"].values[0] == 42.0

    row = live_row("veh-2", tailer.latest["veh-2"])
    assert row == {"vehicle_id": "veh-2", "at": "2026-01-15T08:00:11Z", "soc": 42.0, "voltage_v": 360.0,
                   "current_a": -10.0, "spread_mv": 22.0, "temp_max_c": 24.5, "state": DRIVING}  # fmt: skip


def test_a_backlog_beyond_the_budget_reads_the_newest_files_only(tmp_path: Path) -> None:
    for ms in range(1, 6):
        write_batch(tmp_path, HOUR, ms, [record("veh-1", HOUR + timedelta(seconds=ms), soc=float(ms))])
    size = next(raw_hour_dir(tmp_path, HOUR).iterdir()).stat().st_size
    tailer = Tailer(tmp_path, RULES, budget_bytes=2 * size)
    tailer.scan(HOUR + timedelta(minutes=5))
    assert tailer.counts.files_read == 2 and tailer.counts.files_skipped == 3
    assert tailer.latest["veh-1"].values[0] == 5.0
    tiny = Tailer(tmp_path, RULES, budget_bytes=1)
    tiny.scan(HOUR + timedelta(minutes=5))
    assert tiny.counts.files_read == 1  # always at least the newest file


def test_vehicles_beyond_the_cap_are_counted_not_kept(tmp_path: Path) -> None:
    at = HOUR + timedelta(seconds=1)
    write_batch(tmp_path, HOUR, 1, [record(f"veh-{i}", at) for i in range(5)])
    tailer = Tailer(tmp_path, RULES, max_vehicles=3)
    tailer.scan(HOUR + timedelta(minutes=1))
    assert len(tailer.latest) == 3 and tailer.counts.vehicles_dropped == 2


def test_the_previous_hour_is_read_just_after_the_hour_turns_and_old_vehicles_are_forgotten(tmp_path: Path) -> None:
    previous = HOUR - timedelta(hours=1)
    write_batch(tmp_path, previous, 1, [record("late", HOUR - timedelta(seconds=1))])
    write_batch(tmp_path, previous - timedelta(hours=1), 1, [record("old", previous - timedelta(minutes=1))])
    tailer = Tailer(tmp_path, RULES, grace_s=120)
    assert tailer.hours(HOUR + timedelta(seconds=30)) == [previous, HOUR]
    assert tailer.hours(HOUR + timedelta(minutes=3)) == [HOUR]
    tailer.scan(HOUR + timedelta(seconds=30))
    assert list(tailer.latest) == ["late"]
    tailer.latest["old"] = Latest(previous - timedelta(minutes=1), "", (0.0,) * 7, PARKED)
    tailer.scan(HOUR + timedelta(minutes=3))
    assert list(tailer.latest) == ["late"] and list(tailer.seen) == [HOUR]  # "old" is from two hours ago
    tailer.scan(HOUR + timedelta(hours=1, minutes=3))
    assert tailer.latest == {}


def test_a_file_gone_between_listing_and_reading_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = raw_hour_dir(tmp_path, HOUR)
    directory.mkdir(parents=True)
    os.symlink(directory / "nowhere", directory / batch_file_name(1))  # listed, but stat finds nothing
    kept = write_batch(tmp_path, HOUR, 2, [record("veh-1", HOUR + timedelta(seconds=1))])
    original = Path.read_bytes

    def vanishing(path: Path) -> bytes:
        if path == kept:
            raise FileNotFoundError(path)
        return original(path)

    monkeypatch.setattr(Path, "read_bytes", vanishing)
    tailer = Tailer(tmp_path, RULES)
    tailer.scan(HOUR + timedelta(minutes=1))
    assert tailer.latest == {} and tailer.counts.files_read == 0
