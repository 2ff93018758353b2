"""Batch files: atomic, durable, hour-partitioned, rotated, collision-free (contract, "Storage layout")."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from src.common.envelope import serialize
from src.common.layout import batch_file_ms, batch_files, hour_partition
from src.common.schema import StoredReading
from src.consumer import storage
from src.consumer.storage import BatchWriter, lines_by_partition, new_writer_id, split_lines
from tests.factories import stored_reading

HOUR = datetime(2025, 10, 19, 14, 0, tzinfo=UTC)


def record(i: int, received: datetime = HOUR + timedelta(minutes=5)) -> StoredReading:
    return stored_reading(f"veh-{i:05d}", received - timedelta(seconds=1), received)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_write_is_atomic_leaves_no_tmp_and_stores_the_records(tmp_path: Path) -> None:
    """A written batch is one complete file of compact JSON lines, with no temporary left behind."""
    raw = tmp_path / "raw"
    records = [record(i) for i in range(5)]
    result = BatchWriter(raw, "w1", rotation_bytes=1 << 20).write(records)

    assert [f.path for f in result.files] == all_files(raw)
    (written,) = result.files
    assert written.readings == 5 and result.readings == 5
    assert written.path.parent == raw / "year=2025/month=10/day=19/hour=14"
    content = written.path.read_bytes()
    assert content == b"".join(serialize(r) + b"\n" for r in records)
    assert written.bytes == len(content) == result.bytes
    assert [StoredReading.model_validate_json(line) for line in content.splitlines()] == records
    assert not [p for p in raw.rglob("*.tmp")]
    assert batch_files(raw, HOUR) == [written.path]


def test_batch_spanning_two_hours_becomes_two_files(tmp_path: Path) -> None:
    """Records are partitioned by the UTC hour of ingest_received_at, not by write time."""
    raw = tmp_path / "raw"
    late = record(1, HOUR + timedelta(minutes=59, seconds=59))
    early_next = record(2, HOUR + timedelta(hours=1, seconds=1))
    result = BatchWriter(raw, "w1", rotation_bytes=1 << 20).write([late, early_next])

    assert len(result.files) == 2
    first, second = batch_files(raw, HOUR), batch_files(raw, HOUR + timedelta(hours=1))
    assert len(first) == len(second) == 1
    assert orjson.loads(first[0].read_bytes())["vehicle_id"] == "veh-00001"
    assert orjson.loads(second[0].read_bytes())["vehicle_id"] == "veh-00002"


def interleaved_hours() -> list[StoredReading]:
    """Records of two hours, interleaved, one stamped in another zone (as a record built unvalidated may be)."""
    elsewhere = timezone(timedelta(hours=2))
    records = [record(i, HOUR + timedelta(hours=i % 2, minutes=i)) for i in range(6)]
    local = record(6).model_copy(update={"ingest_received_at": (HOUR + timedelta(hours=1)).astimezone(elsewhere)})
    return [*records, local, record(7)]


def test_lines_are_grouped_by_utc_hour_in_record_order() -> None:
    """The same partitions and lines, in the same order, as partitioning every record on its own."""
    records = interleaved_hours()
    expected: dict[Path, list[bytes]] = {}
    for r in records:
        expected.setdefault(hour_partition(r.ingest_received_at), []).append(serialize(r) + b"\n")

    grouped = lines_by_partition(records)

    assert list(grouped.items()) == list(expected.items())
    assert len(grouped) == 2 and len(grouped[hour_partition(HOUR + timedelta(hours=1))]) == 4


def test_interleaved_hours_become_one_file_per_hour_in_record_order(tmp_path: Path) -> None:
    """On disk: a file per UTC hour, hours in order of first appearance, lines in record order."""
    raw = tmp_path / "raw"
    records = interleaved_hours()
    result = BatchWriter(raw, "w1", rotation_bytes=1 << 20).write(records)

    assert [f.path.parent for f in result.files] == [
        raw / hour_partition(HOUR),
        raw / hour_partition(HOUR + timedelta(hours=1)),
    ]
    this_hour, next_hour = (f.path.read_bytes().splitlines() for f in result.files)
    assert this_hour == [serialize(r) for r in (records[0], records[2], records[4], records[7])]
    assert next_hour == [serialize(r) for r in (records[1], records[3], records[5], records[6])]


def test_rotation_splits_files_under_the_limit_and_loses_nothing(tmp_path: Path) -> None:
    """A batch larger than file_rotation_mb is split into several files, each within the limit."""
    raw = tmp_path / "raw"
    records = [record(i) for i in range(50)]
    line = len(serialize(records[0])) + 1
    limit = line * 7 + 3
    result = BatchWriter(raw, "w1", rotation_bytes=limit).write(records)

    assert len(result.files) == 8  # 7 full files of 7 lines, one of 1
    assert all(f.path.stat().st_size <= limit for f in result.files)
    lines = [ln for f in result.files for ln in f.path.read_bytes().splitlines()]
    assert [StoredReading.model_validate_json(ln) for ln in lines] == records
    assert len({f.path.name for f in result.files}) == 8


def test_split_lines_keeps_an_oversized_line_alone() -> None:
    """A single record bigger than the limit still gets written (alone) rather than dropped."""
    assert split_lines([b"aaaa", b"b", b"cc"], 3) == [[b"aaaa"], [b"b", b"cc"]]
    assert split_lines([], 3) == []


def test_two_writers_never_collide_even_in_the_same_millisecond(tmp_path: Path) -> None:
    """Several consumers on one DATA_DIR, and several flushes of one, each get their own file names."""
    raw = tmp_path / "raw"
    frozen = 1_760_883_296.123
    a = BatchWriter(raw, "aaaa", rotation_bytes=1 << 20, clock=lambda: frozen)
    b = BatchWriter(raw, "bbbb", rotation_bytes=1 << 20, clock=lambda: frozen)
    names = [f.path.name for w in (a, b, a, b) for f in w.write([record(1)]).files]

    assert len(set(names)) == 4
    assert len(batch_files(raw, HOUR)) == 4
    assert {batch_file_ms(n) for n in names} == {1_760_883_296_123}


def test_file_name_parses_and_carries_the_durable_millisecond(tmp_path: Path) -> None:
    """The name holds the unix ms after the data was fsynced, readable with batch_file_ms."""
    before = int(time.time() * 1000)
    result = BatchWriter(tmp_path / "raw", new_writer_id(), rotation_bytes=1 << 20).write([record(1)])
    after = int(time.time() * 1000)

    ms = batch_file_ms(result.files[0].path.name)
    assert ms is not None and before <= ms <= after
    assert ms <= result.durable_at * 1000 + 1


def test_new_writer_ids_are_random_8_hex() -> None:
    ids = {new_writer_id() for _ in range(20)}
    assert len(ids) == 20 and all(len(i) == 8 and int(i, 16) >= 0 for i in ids)


def test_file_and_directories_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Durability: the file data, the new directories and the final directory entry are fsynced."""
    synced: list[tuple[int, bool]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append((fd, os.path.isdir(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    (tmp_path / "raw").mkdir()
    BatchWriter(tmp_path / "raw", "w1", rotation_bytes=1 << 20).write([record(1)])

    file_syncs = [fd for fd, is_dir in synced if not is_dir]
    dir_syncs = [fd for fd, is_dir in synced if is_dir]
    assert len(file_syncs) == 1
    # four new directories (year, month, day, hour): each parent fsynced, plus the hour dir after rename
    assert len(dir_syncs) == 5


def test_failed_write_removes_its_tmp_and_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails midway leaves neither a batch file nor a temporary behind."""

    real_fsync = os.fsync

    def file_fsync_fails(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(5, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", file_fsync_fails)
    with pytest.raises(OSError, match="I/O error"):
        BatchWriter(tmp_path / "raw", "w1", rotation_bytes=1 << 20).write([record(1)])
    assert (tmp_path / "raw/year=2025/month=10/day=19/hour=14").is_dir()
    assert all_files(tmp_path / "raw") == []


def test_stale_tmp_files_are_removed_and_fresh_ones_kept(tmp_path: Path) -> None:
    """At start, a crashed writer's old temporaries go; a live writer's fresh one stays."""
    raw = tmp_path / "raw"
    directory = raw / "year=2025/month=10/day=19/hour=14"
    directory.mkdir(parents=True)
    stale = directory / ".batch-dead_000001.tmp"
    fresh = directory / ".batch-live_000001.tmp"
    done = directory / "batch-1760883296123-w1_000000.jsonl"
    for path in (stale, fresh, done):
        path.write_bytes(b"{}\n")
    old = time.time() - storage.STALE_TMP_AGE_S - 60
    os.utime(stale, (old, old))
    os.utime(done, (old, old))

    removed = BatchWriter(raw, "w1", rotation_bytes=1 << 20).remove_stale_tmp()

    assert removed == [stale]
    assert not stale.exists() and fresh.exists() and done.exists()


def test_stale_cleanup_without_raw_dir_is_a_no_op(tmp_path: Path) -> None:
    assert BatchWriter(tmp_path / "missing", "w1", rotation_bytes=1).remove_stale_tmp() == []


def test_rotation_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        BatchWriter(tmp_path, "w1", rotation_bytes=0)


def test_stale_cleanup_tolerates_another_consumer_removing_the_file_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two consumers starting together on one DATA_DIR may race to clean the same leftover."""
    raw = tmp_path / "raw"
    raw.mkdir()
    stale = raw / ".batch-dead_000001.tmp"
    stale.write_bytes(b"")
    old = time.time() - storage.STALE_TMP_AGE_S - 60
    os.utime(stale, (old, old))

    def already_gone(self: Path, missing_ok: bool = False) -> None:
        raise FileNotFoundError(self)

    monkeypatch.setattr(Path, "unlink", already_gone)
    assert BatchWriter(raw, "w1", rotation_bytes=1).remove_stale_tmp() == []


def test_concurrent_flush_creating_the_same_directory_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two flushes (threads) may create the same new hour directory at once; both succeed."""
    real_mkdir = Path.mkdir

    def racing_mkdir(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self)
        raise FileExistsError(self)

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    result = BatchWriter(tmp_path / "raw", "w1", rotation_bytes=1 << 20).write([record(1)])
    assert result.files[0].path.read_bytes() == serialize(record(1)) + b"\n"
