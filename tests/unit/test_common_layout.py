"""The storage layout (contract.md, "Storage layout"): hour partitions and file names, in one place."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from src.common.layout import (
    aggregated_file_name,
    batch_file_ms,
    batch_file_name,
    batch_files,
    hour_key,
    hour_label,
    hour_of_key,
    hour_partition,
    hour_start,
    parse_hour_label,
    previous_full_hour,
    raw_hour_dir,
    raw_hours,
)

MOMENT = datetime(2025, 10, 19, 12, 34, 56, 123456, tzinfo=UTC)
HOUR = datetime(2025, 10, 19, 12, tzinfo=UTC)


# --- hours ----------------------------------------------------------------------------


def test_hour_partition_is_hive_style_with_zero_padding() -> None:
    assert hour_partition(datetime(2025, 3, 4, 5, 6, tzinfo=UTC)) == Path("year=2025/month=03/day=04/hour=05")


def test_hour_partition_uses_the_utc_hour() -> None:
    # 01:30 at +02:00 is 23:30 UTC the day before.
    local = datetime(2025, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2)))
    assert hour_partition(local) == Path("year=2024/month=12/day=31/hour=23")


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(MOMENT, id="utc"),
        pytest.param(datetime(2025, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=2))), id="plus-2-new-year"),
        pytest.param(datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))), id="minus-5"),
        pytest.param(datetime(2025, 10, 19, 12, 0, tzinfo=timezone(timedelta(0), "Z")), id="utc-not-the-singleton"),
    ],
)
def test_hour_key_names_the_same_hour_and_partition(moment: datetime) -> None:
    """Grouping by the cheap key and building the Path once per group partitions exactly as per moment."""
    key = hour_key(moment)
    assert hour_of_key(key) == hour_start(moment)
    assert hour_of_key(key).tzinfo is UTC
    assert hour_partition(hour_of_key(key)) == hour_partition(moment)


def test_hour_keys_are_equal_exactly_when_the_utc_hours_are() -> None:
    same_hour_elsewhere = datetime(2025, 10, 19, 14, 59, 59, tzinfo=timezone(timedelta(hours=2)))
    assert hour_key(MOMENT) == hour_key(same_hour_elsewhere) == (2025, 10, 19, 12)
    assert hour_key(MOMENT) != hour_key(MOMENT + timedelta(hours=1))


def test_raw_hour_dir_is_the_partition_under_raw(tmp_path: Path) -> None:
    assert raw_hour_dir(tmp_path / "raw", MOMENT) == tmp_path / "raw/year=2025/month=10/day=19/hour=12"


def test_hour_start_truncates_to_the_utc_hour() -> None:
    assert hour_start(MOMENT) == HOUR
    local = datetime(2025, 10, 19, 14, 59, 59, tzinfo=timezone(timedelta(hours=2)))
    assert hour_start(local) == HOUR
    assert hour_start(local).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "hour",
    [
        datetime(2025, 10, 19, 12, tzinfo=UTC),
        datetime(2025, 1, 1, 0, tzinfo=UTC),
        datetime(2024, 2, 29, 23, tzinfo=UTC),
    ],
)
def test_hour_label_round_trips_through_parse_hour_label(hour: datetime) -> None:
    label = hour_label(hour)
    assert parse_hour_label(label) == hour
    assert parse_hour_label(label).tzinfo == UTC


def test_hour_label_is_the_utc_hour_of_the_moment() -> None:
    assert hour_label(MOMENT) == "2025-10-19T12"
    assert hour_label(datetime(2025, 10, 19, 14, 5, tzinfo=timezone(timedelta(hours=2)))) == "2025-10-19T12"


@pytest.mark.parametrize("label", ["2025-10-19", "2025-10-19T12:00", "2025-10-19 12", "2025-13-01T00", "yesterday"])
def test_parse_hour_label_rejects_other_text(label: str) -> None:
    with pytest.raises(ValueError):
        parse_hour_label(label)


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(
            datetime(2025, 10, 19, 13, 5, tzinfo=UTC), datetime(2025, 10, 19, 12, tzinfo=UTC), id="cron-5-past"
        ),
        pytest.param(
            datetime(2025, 10, 19, 13, 0, tzinfo=UTC), datetime(2025, 10, 19, 12, tzinfo=UTC), id="on-the-hour"
        ),
        pytest.param(
            datetime(2025, 10, 19, 12, 59, 59, 999999, tzinfo=UTC),
            datetime(2025, 10, 19, 11, tzinfo=UTC),
            id="end-of-hour",
        ),
        pytest.param(datetime(2025, 1, 1, 0, 5, tzinfo=UTC), datetime(2024, 12, 31, 23, tzinfo=UTC), id="new-year"),
        pytest.param(
            datetime(2025, 10, 19, 15, 5, tzinfo=timezone(timedelta(hours=2))),
            datetime(2025, 10, 19, 12, tzinfo=UTC),
            id="non-utc-now",
        ),
    ],
)
def test_previous_full_hour_is_the_last_hour_that_has_ended(now: datetime, expected: datetime) -> None:
    assert previous_full_hour(now) == expected


# --- batch file names -----------------------------------------------------------------


def test_batch_file_name_has_13_digit_ms() -> None:
    assert batch_file_name(1_760_877_296_123) == "batch-1760877296123.jsonl"
    assert batch_file_name(42) == "batch-0000000000042.jsonl"


def test_batch_file_name_with_writer_id() -> None:
    assert batch_file_name(1_760_877_296_123, "w_1") == "batch-1760877296123-w_1.jsonl"


def test_batch_file_name_without_writer_id_for_none_or_empty() -> None:
    assert (
        batch_file_name(1_760_877_296_123, None)
        == batch_file_name(1_760_877_296_123, "")
        == ("batch-1760877296123.jsonl")
    )


@pytest.mark.parametrize("writer_id", [None, "w_1", "a1B2c3D4"])
def test_batch_file_ms_reads_back_what_batch_file_name_wrote(writer_id: str | None) -> None:
    for ms in (0, 42, 1_760_877_296_123, 9_999_999_999_999):
        assert batch_file_ms(batch_file_name(ms, writer_id)) == ms


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("batch-1760877296123.jsonl.tmp", id="tmp-suffix"),
        pytest.param(".batch-1760877296123.jsonl", id="hidden-tmp"),
        pytest.param(".batch-1760877296123.jsonl.tmp", id="hidden-tmp-suffix"),
        pytest.param(".batch-a1b2c3d4_000001.tmp", id="consumer-tmp"),
        pytest.param("batch-1760877296123.jsonl.gz", id="gz"),
        pytest.param("batch-1760877296123.json", id="json"),
        pytest.param("batch-176087729612.jsonl", id="12-digits"),
        pytest.param("batch-17608772961234.jsonl", id="14-digits"),
        pytest.param("batch-1760877296123-.jsonl", id="empty-writer"),
        pytest.param("batch-1760877296123-w-1.jsonl", id="dash-in-writer"),
        pytest.param("aggregated-2025-10-19T12.json", id="aggregated"),
        pytest.param("notes.txt", id="other"),
        pytest.param("", id="empty"),
    ],
)
def test_batch_file_ms_is_none_for_names_that_are_not_batch_files(name: str) -> None:
    assert batch_file_ms(name) is None


def hour_dir(raw: Path, hour: datetime = HOUR) -> Path:
    directory = raw_hour_dir(raw, hour)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_batch_files_are_oldest_first_and_ignore_other_files(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    directory = hour_dir(raw)
    names = [
        batch_file_name(1_760_877_296_500, "b"),
        batch_file_name(1_760_877_296_123),
        batch_file_name(1_760_877_296_124, "a"),
        batch_file_name(900_000_000_000),  # earlier, and fewer significant digits
    ]
    for name in names:
        (directory / name).write_text("{}\n")
    for other in (
        ".batch-1760877296999.jsonl.tmp",
        ".batch-a1b2c3d4_000001.tmp",
        "batch-1760877296999.jsonl.tmp",
        "README",
        "x.jsonl",
    ):
        (directory / other).write_text("partial")
    found = batch_files(raw, MOMENT)
    assert [batch_file_ms(p.name) for p in found] == [
        900_000_000_000,
        1_760_877_296_123,
        1_760_877_296_124,
        1_760_877_296_500,
    ]
    assert all(p.parent == directory for p in found)


def test_batch_files_only_of_the_hour_asked_for(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (hour_dir(raw) / batch_file_name(1)).write_text("{}\n")
    (hour_dir(raw, HOUR + timedelta(hours=1)) / batch_file_name(2)).write_text("{}\n")
    assert [p.name for p in batch_files(raw, HOUR)] == [batch_file_name(1)]


def test_batch_files_of_an_hour_without_data_is_empty(tmp_path: Path) -> None:
    assert batch_files(tmp_path / "raw", HOUR) == []
    assert batch_files(tmp_path / "missing", HOUR) == []


def test_aggregated_file_name_names_the_utc_hour() -> None:
    assert aggregated_file_name(HOUR) == "aggregated-2025-10-19T12.json"
    assert aggregated_file_name(datetime(2025, 10, 19, 14, 30, tzinfo=timezone(timedelta(hours=2)))) == (
        "aggregated-2025-10-19T12.json"
    )


def test_raw_hours_are_the_partitions_holding_a_complete_batch_file_oldest_first(tmp_path: Path) -> None:
    """An empty partition, one with only a temporary file, and a directory that is no hour are not hours."""
    later, empty, writing = HOUR.replace(hour=14), HOUR.replace(hour=13), HOUR.replace(hour=15)
    for hour in (later, HOUR):
        directory = raw_hour_dir(tmp_path, hour)
        directory.mkdir(parents=True)
        (directory / batch_file_name(1_700_000_000_000)).write_text("{}\n")
    raw_hour_dir(tmp_path, empty).mkdir(parents=True)
    raw_hour_dir(tmp_path, writing).mkdir(parents=True)
    (raw_hour_dir(tmp_path, writing) / ".batch-1.tmp").write_text("{}\n")
    (tmp_path / "year=2025" / "month=13" / "day=01" / "hour=00").mkdir(parents=True)
    assert raw_hours(tmp_path) == [HOUR, later]
    assert raw_hours(tmp_path / "nowhere") == []
