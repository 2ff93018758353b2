"""The dashboard's reading of the jobs' reports: found by their contract names, absent is None, damage is named."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import orjson
import pytest

from src.common.layout import aggregated_file_name, fleet_health_file_name
from src.dashboard import reports

HOUR = datetime(2026, 1, 1, 10, tzinfo=UTC)


def write(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(document))


def test_reports_are_listed_by_their_contract_names_oldest_first_and_other_files_ignored(tmp_path: Path) -> None:
    write(tmp_path / aggregated_file_name(HOUR.replace(hour=11)), {"hour": 11})
    write(tmp_path / aggregated_file_name(HOUR), {"hour": 10})
    write(tmp_path / fleet_health_file_name(date(2026, 1, 2)), {"day": "2026-01-02"})
    write(tmp_path / fleet_health_file_name(date(2026, 1, 1)), {"day": "2026-01-01"})
    for stray in ("aggregated-2026-01-01T99.json", "fleet-health-2026-02-30.json", "notes.json", ".tmp-x.json"):
        (tmp_path / stray).write_text("{}")

    assert reports.aggregated_hours(tmp_path) == [HOUR, HOUR.replace(hour=11)]
    assert reports.health_days(tmp_path) == [date(2026, 1, 1), date(2026, 1, 2)]
    assert reports.aggregate(tmp_path, HOUR) == {"hour": 10}
    assert reports.latest_fleet_health(tmp_path) == {"day": "2026-01-02"}


def test_absent_reports_are_none_and_a_missing_directory_has_none(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert reports.aggregated_hours(missing) == []
    assert reports.health_days(missing) == []
    assert reports.aggregate(missing, HOUR) is None
    assert reports.fleet_health(tmp_path, date(2026, 1, 1)) is None
    assert reports.latest_fleet_health(missing) is None


@pytest.mark.parametrize(("content", "problem"), [(b"{not json", "is not JSON"), (b"[1, 2]", "is not a JSON object")])
def test_a_damaged_report_raises_naming_its_file(tmp_path: Path, content: bytes, problem: str) -> None:
    (tmp_path / fleet_health_file_name(date(2026, 1, 1))).write_bytes(content)
    with pytest.raises(reports.ReportError, match=f"fleet-health-2026-01-01.json {problem}"):
        reports.latest_fleet_health(tmp_path)


def test_every_page_words_an_unreadable_source_alike() -> None:
    error = "IO Error: No magic bytes found at end of file 'x.parquet'\n" + "LINE 1: " * 100
    assert reports.unreadable("the readings", error) == (
        "the readings cannot be read: IO Error: No magic bytes found at end of file 'x.parquet'"
    )
    assert len(reports.unreadable("the aggregate", "x" * 1000)) == len("the aggregate cannot be read: ") + 300
    assert reports.unreadable("the readings", "") == "the readings cannot be read: unknown error"
