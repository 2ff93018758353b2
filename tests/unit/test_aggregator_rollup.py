"""Duplicates dropped by compact natural key, memory bounded by spilling, and the same bytes however work is split."""

from __future__ import annotations

import random
import signal
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from src.aggregator import hourly_stats, rollup
from src.aggregator.columnar import chunks_of_records
from src.aggregator.hourly_stats import Quality, aggregate, aggregate_hour, render, stream_records
from src.aggregator.records import Record
from src.aggregator.rollup import RowStore, ranks, reduce_rows
from src.common.layout import batch_files, raw_hour_dir
from src.common.schema import NaturalKey
from src.common.settings import AggregatorSettings
from tests.unit.test_aggregator_fastlines import stored_line

HOUR = datetime(2026, 1, 1, 10, tzinfo=UTC)


def write_hour(rng: random.Random, files: int = 30, per_file: int = 120) -> list[bytes]:
    """An hour of batch files: several vehicles, redeliveries across files, damaged and odd lines."""
    directory = raw_hour_dir(AggregatorSettings().raw_dir, HOUR)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[bytes] = []
    readings: dict[tuple[int, int], bytes] = {}
    for n in range(files):
        lines = []
        for _ in range(per_file):
            roll = rng.random()
            if roll < 0.05 and written:
                lines.append(rng.choice(written))  # redelivered: the same line again, later
            elif roll < 0.07:
                lines.append(b"{torn")
            elif roll < 0.09:  # the same reading spelled another way: one reading
                lines.append(rng.choice(written or [stored_line()]).replace(b'Z","vehicle_id', b'+00:00","vehicle_id'))
            else:  # a reading's copies are alike, as SQS redelivers them
                key = (rng.randrange(12), rng.randrange(3000))
                if key not in readings:
                    readings[key] = stored_line(f"veh-{key[0]:05d}", key[1] / 5, battery_soc=rng.randrange(1000) / 10)
                lines.append(readings[key])
                written.append(readings[key])
        (directory / f"batch-{1_767_261_900_000 + n:013d}-w_{n:06d}.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return written


def run(**options: int) -> bytes:
    settings = AggregatorSettings()
    path, _ = aggregate_hour(settings.raw_dir, settings.aggregated_dir, HOUR, **options)
    return path.read_bytes()


def test_result_is_identical_however_the_work_is_split() -> None:
    """Processes, chunk sizes and spilling change nothing: the same bytes, equal to the record-by-record core."""
    write_hour(random.Random(1), files=16)
    whole = run(workers=1)
    assert run(workers=2, task_bytes=5_000) == whole
    assert run(workers=3, task_bytes=1) == whole
    assert run(workers=1, memory_rows=100, bucket_rows=40) == whole  # spilled to disk
    assert run(workers=2, task_bytes=20_000, memory_rows=1, bucket_rows=1) == whole
    quality = Quality()
    core = aggregate(stream_records(batch_files(AggregatorSettings().raw_dir, HOUR), quality), HOUR, quality)
    assert render(core.to_document()) == whole
    document = orjson.loads(whole)
    assert document["quality"]["duplicates_dropped"] > 0 and document["quality"]["lines_skipped"] > 0


def test_result_does_not_depend_on_file_order() -> None:
    """Averages are summed in natural-key order: renaming files (so reading them in another order) changes nothing."""
    written = write_hour(random.Random(2), files=6)
    del written
    first = orjson.loads(run(workers=1))
    directory = raw_hour_dir(AggregatorSettings().raw_dir, HOUR)
    for i, path in enumerate(sorted(directory.iterdir())):  # reverse the reading order
        path.rename(directory / f"batch-{1_767_261_999_000 - i:013d}-w_{i:06d}.jsonl")
    second = orjson.loads(run(workers=2, task_bytes=3_000))
    assert second["vehicles"] == first["vehicles"]


def test_first_copy_read_wins_when_copies_differ() -> None:
    """Copies of a reading are one reading; if they ever differed, the one in the earlier file counts, in any split."""
    directory = raw_hour_dir(AggregatorSettings().raw_dir, HOUR)
    directory.mkdir(parents=True)
    (directory / "batch-1767261900000.jsonl").write_bytes(stored_line(battery_soc=10.0) + b"\n")
    (directory / "batch-1767261900001.jsonl").write_bytes(
        stored_line(battery_soc=20.0) + b"\n" + stored_line(second=3.0, battery_soc=30.0) + b"\n"
    )
    for options in ({"workers": 1}, {"workers": 2, "task_bytes": 1}, {"memory_rows": 1, "bucket_rows": 1}):
        document = orjson.loads(run(**options))
        (vehicle,) = document["vehicles"]
        assert vehicle["message_count"] == 2 and vehicle["battery_soc"] == {"min": 10.0, "max": 30.0, "avg": 20.0}
        assert document["quality"]["duplicates_dropped"] == 1


def test_one_instant_spelled_many_ways_is_one_reading() -> None:
    """The compact key is the UTC microsecond: offsets and fraction digits do not make new readings."""
    spellings = [
        b"2026-01-01T10:00:01.200000Z",
        b"2026-01-01T10:00:01.2Z",
        b"2026-01-01T10:00:01.200+00:00",
        b"2026-01-01T15:30:01.2+05:30",
        b"2026-01-01T09:00:01.200000-01:00",
    ]
    directory = raw_hour_dir(AggregatorSettings().raw_dir, HOUR)
    directory.mkdir(parents=True)
    for i, spelling in enumerate(spellings):
        line = stored_line().replace(b"2026-01-01T10:00:01.200000Z", spelling, 1)
        (directory / f"batch-{1_767_261_900_000 + i:013d}.jsonl").write_bytes(line + b"\n")
    document = orjson.loads(run(workers=2, task_bytes=1))
    assert document["vehicles"][0]["message_count"] == 1
    assert document["quality"]["duplicates_dropped"] == len(spellings) - 1


def test_spilling_keeps_memory_to_the_budget_and_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the budget, rows go to per-vehicle bucket files, which are gone once the hour is written."""
    write_hour(random.Random(4), files=10)
    made: list[Path] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(**kwargs: str) -> str:
        made.append(Path(real_mkdtemp(**kwargs)))
        return str(made[-1])

    monkeypatch.setattr(rollup.tempfile, "mkdtemp", recording_mkdtemp)
    held: list[int] = []
    real_add = RowStore.add

    def watching_add(self: RowStore, *args: object, **kwargs: object) -> None:
        real_add(self, *args, **kwargs)  # type: ignore[arg-type]
        held.append(sum(part.size for part in self._parts))

    monkeypatch.setattr(RowStore, "add", watching_add)
    run(workers=1, task_bytes=2_000, memory_rows=200, bucket_rows=100)
    assert len(made) == 1 and made[0].parent == AggregatorSettings().aggregated_dir
    assert not made[0].exists()
    assert max(held) <= 200 + 2_000  # the budget plus at most one chunk
    assert held[-1] == 0  # everything went to disk once the budget was passed
    assert [p.name for p in AggregatorSettings().aggregated_dir.iterdir()] == ["aggregated-2026-01-01T10.json"]


def test_a_store_spills_into_buckets_of_whole_vehicles() -> None:
    """Each bucket holds every row of its vehicles, in input order; without a progress hint the count is doubled."""
    records = [
        Record(NaturalKey(f"veh-{i % 7}", "0x1F0", f"2026-01-01T10:00:{i % 60:02d}.{i:06d}Z"), (float(i),) * 7)
        for i in range(500)
    ]
    with RowStore(memory_rows=100, bucket_rows=60) as store:
        for chunk in chunks_of_records(records, size=50):
            store.add(chunk.readings, chunk.vehicles, chunk.cans)
        assert store.spilled
        buckets = list(store.buckets())
    assert len(buckets) == 5  # 150 rows held when the budget was passed, doubled, in buckets of 60
    seen: dict[int, int] = {}
    for (part,) in buckets:
        for code in set(part.vehicle.tolist()):
            assert code not in seen
            seen[code] = int((part.vehicle == code).sum())
        assert (np.diff(part.values[:, 0]) > 0).all()  # input order kept
    assert sum(seen.values()) == 500


def test_reduce_of_nothing_and_ranks() -> None:
    """Edge cases of the core: no rows at all; ranks order codes by name, not by arrival."""
    totals = reduce_rows([], np.empty(0, np.int32), np.empty(0, np.int32))
    assert totals.duplicates == 0 and len(totals.vehicles) == 0
    assert ranks({"b": 0, "a": 1, "c": 2}).tolist() == [1, 0, 2]


def test_memory_is_per_reading_not_per_object() -> None:
    """A reading costs 72 bytes in the store (the key compact, the signals as float64)."""
    records = [Record(NaturalKey("v", "0x1", "2026-01-01T00:00:00Z"), (0.0,) * 7)] * 1000
    store = RowStore()
    for chunk in chunks_of_records(records):
        store.add(chunk.readings, chunk.vehicles, chunk.cans)
    assert (
        sum(part.ts.nbytes + part.vehicle.nbytes + part.can.nbytes + part.values.nbytes for part in store._parts)
        == 72_000
    )
    store.close()


def test_hour_timestamps_are_microseconds() -> None:
    """The fixture's lines carry the canonical timestamp spelling (guards the tests above)."""
    assert b'"timestamp":"2026-01-01T10:00:01.200000Z"' in stored_line()
    assert HOUR + timedelta(seconds=1.2) == datetime.fromisoformat("2026-01-01T10:00:01.200000+00:00")


def test_a_file_vanishing_mid_hour_is_logged_and_survived(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Files may move away (to S3) while the hour is read: logged where it was, the rest aggregated."""
    write_hour(random.Random(6), files=3)
    settings = AggregatorSettings()
    listed = [*batch_files(settings.raw_dir, HOUR), raw_hour_dir(settings.raw_dir, HOUR) / "batch-1767261999999.jsonl"]
    monkeypatch.setattr(hourly_stats, "batch_files", lambda *_: listed)
    _, result = aggregate_hour(settings.raw_dir, settings.aggregated_dir, HOUR, workers=1)
    assert result.quality.files_read == 3 and result.quality.readings > 0
    assert "batch-1767261999999.jsonl vanished before it could be read; skipped" in caplog.text


def test_an_empty_chunk_adds_nothing() -> None:
    """A chunk of files without readings leaves the store as it was."""
    (chunk,) = chunks_of_records([Record(NaturalKey("v", "0x1", "2026-01-01T00:00:00Z"), (0.0,) * 7)])
    with RowStore() as store:
        store.add(chunk.readings._replace(ts=chunk.readings.ts[:0]), [], [])
        assert store.rows == 0


def test_workers_are_forked_only_from_a_single_threaded_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forking while another thread holds a lock can hang the child: then the platform's default is used."""
    monkeypatch.setattr(hourly_stats.threading, "active_count", lambda: 1)
    assert hourly_stats.start_method() == "fork"
    monkeypatch.setattr(hourly_stats.threading, "active_count", lambda: 2)
    assert hourly_stats.start_method() is None


def test_workers_die_on_sigterm_and_leave_ctrl_c_to_the_parent(monkeypatch: pytest.MonkeyPatch) -> None:
    """A handler inherited from the parent (coverage's, say) must not keep a worker alive when it is terminated."""
    installed: dict[int, object] = {}
    monkeypatch.setattr(hourly_stats.signal, "signal", lambda number, handler: installed.__setitem__(number, handler))
    hourly_stats.worker_signals()
    assert installed == {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.SIG_IGN}
