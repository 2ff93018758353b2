"""Reading batch files into columns: every line counted, read or skipped exactly as the reference reader does."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from src.aggregator import fastlines
from src.aggregator.columnar import Chunk, Columns, Skip, Vanished, chunks_of_records, parse_files
from src.aggregator.hourly_stats import MAX_LOGGED_SKIPS, Quality, stream_records
from src.aggregator.records import Record, SkippedLine, instant_us, parse_line
from src.common.schema import NaturalKey
from tests.unit.test_aggregator_fastlines import stored_line

LAYOUT = stored_line()


def variety(rng: random.Random, count: int) -> list[bytes]:
    """Lines of every kind a batch file may hold, mostly the consumer's own layout."""
    odd: list[bytes] = [
        b"",
        b"   ",
        b"\t\r",
        b"{not json",
        b"[1, 2]",
        b'{"vehicle_id": "veh-00001", "payload": 3}',
        b'"just a string"',
        b"null",
        LAYOUT[:40],
        LAYOUT + b"\r",  # a CRLF file
        LAYOUT.replace(b"{", b'{"extra":[1,{"a":null}],', 1),
        LAYOUT.replace(b'"timestamp":', b' "timestamp" : ', 1),
        LAYOUT.replace(b"2026-01-01T10:00:01.200000Z", b"2026-01-01T12:00:01.2+02:00"),  # the same instant
        LAYOUT.replace(b"2026-01-01T10:00:01.200000Z", b"2026-01-01T10:00:01.2"),  # no zone
        LAYOUT.replace(b"2026-01-01T10:00:01.200000Z", b"yesterday"),
        LAYOUT.replace(b"2026-01-01T10:00:01.200000Z", b"0001-01-01T00:30:00+01:00"),  # before year 1 in UTC
        LAYOUT.replace(b'"veh-00001"', b"7"),
        LAYOUT.replace(b'"veh-00001"', b'"v\\u00e9h-\\"1\\""'),  # escapes
        LAYOUT.replace(b'"veh-00001"', "v\u00e9h-1".encode()),
        LAYOUT.replace(b'"veh-00001"', b'"v\xff"'),  # not UTF-8
        LAYOUT.replace(b"80.5", b"true"),
        LAYOUT.replace(b"80.5", b'"80.5"'),
        LAYOUT.replace(b"80.5", b"null"),
        LAYOUT.replace(b"80.5", b"80"),
        LAYOUT.replace(b"80.5", b"18446744073709551615"),
        LAYOUT.replace(b"80.5", b"1e999"),
        LAYOUT.replace(b"80.5", b"1.25e2"),
        LAYOUT.replace(b"80.5", b"-0"),
        LAYOUT.replace(b'"battery_soc":80.5,', b""),
        LAYOUT.replace(b'"payload":{', b'"payload":{"payload":1,'),
        LAYOUT.replace(b"371.2", b"371.20000000000002"),
    ]
    lines = []
    for i in range(count):
        if rng.random() < 0.15:
            lines.append(rng.choice(odd))
        else:
            vehicle = f"veh-{rng.randrange(8):05d}"
            lines.append(stored_line(vehicle, second=rng.randrange(40) / 5, battery_soc=rng.randrange(1000) / 10))
        if i % 97 == 0:
            lines.append(stored_line("a-much-longer-vehicle-id", second=i / 5))
    return lines


def write_files(directory: Path, rng: random.Random, files: int, lines_each: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(files):
        lines = variety(rng, lines_each)
        data = b"".join(line + b"\n" for line in lines)
        if n % 3 == 0:
            data = data[:-1]  # the last line without its line break
        if n % 5 == 0:
            data += LAYOUT[:30]  # a torn last line
        path = directory / f"batch-{1_760_000_000_000 + n:013d}.jsonl"
        path.write_bytes(data)
        paths.append(path)
    return paths


def readings_of(chunk: Chunk) -> list[tuple[str, str, int, tuple[float, ...]]]:
    columns = chunk.readings
    return [
        (chunk.vehicles[v], chunk.cans[c], t, tuple(values))
        for v, c, t, values in zip(
            columns.vehicle.tolist(), columns.can.tolist(), columns.ts.tolist(), columns.values.tolist(), strict=True
        )
    ]


def reference(paths: list[Path]) -> tuple[list[tuple[str, str, int, tuple[float, ...]]], Quality]:
    quality = Quality()
    records = [
        (r.key.vehicle_id, r.key.can_id, instant_us(r.key.timestamp), r.values) for r in stream_records(paths, quality)
    ]
    return records, quality


@pytest.mark.parametrize(("block_bytes", "batch_bytes"), [(4 << 20, 1 << 20), (4 << 20, 1), (700, 3000), (64, 64)])
def test_every_line_is_read_as_the_reference_reads_it(tmp_path: Path, block_bytes: int, batch_bytes: int) -> None:
    """Same readings in the same order, same counts, however files are cut into blocks and batches."""
    paths = write_files(tmp_path, random.Random(5), files=8, lines_each=120)
    expected, quality = reference(paths)
    chunk = parse_files(paths, block_bytes=block_bytes, batch_bytes=batch_bytes)
    assert readings_of(chunk) == expected
    assert (chunk.files_read, chunk.lines_read, chunk.lines_skipped) == (
        quality.files_read,
        quality.lines_read,
        quality.lines_skipped,
    )


def test_skipped_lines_are_named_as_the_line_by_line_reader_names_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """File, line number and reason of each skipped line: what an operator greps the log for."""
    caplog.set_level(logging.WARNING, logger="src.aggregator.hourly_stats")
    paths = write_files(tmp_path, random.Random(8), files=6, lines_each=150)
    list(stream_records(paths, Quality()))
    logged = [r.getMessage() for r in caplog.records]
    chunk = parse_files(paths, block_bytes=200, batch_bytes=500)
    skips = [f"{e.file_name}:{e.line_number} skipped: {e.reason}" for e in chunk.events if isinstance(e, Skip)]
    assert skips == logged[:MAX_LOGGED_SKIPS] and len(logged) >= MAX_LOGGED_SKIPS  # a chunk names its first 20
    assert chunk.lines_skipped > MAX_LOGGED_SKIPS


def test_lines_longer_than_a_block_are_kept_whole(tmp_path: Path) -> None:
    """A block boundary never cuts a line, even one longer than the block."""
    long_line = LAYOUT.replace(b'"ingest_received_at":"', b'"ingest_received_at":"' + b"x" * 500)
    path = tmp_path / "batch-1760000000000.jsonl"
    path.write_bytes(b"\n".join([LAYOUT, long_line, b"{broken", LAYOUT]) + b"\n")
    chunk = parse_files([path], block_bytes=16)
    assert len(readings_of(chunk)) == 3 and chunk.lines_read == 4
    with pytest.raises(SkippedLine) as reason:
        parse_line(b"{broken\n")
    assert chunk.events == [Skip(path.name, 3, str(reason.value))]


def test_vanished_and_empty_files(tmp_path: Path) -> None:
    """A file gone before its turn is reported in its place among the events; an empty file is read, with nothing."""
    first, empty, last = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "d.jsonl"
    first.write_bytes(LAYOUT + b"\n{bad\n")
    empty.write_bytes(b"")
    last.write_bytes(LAYOUT + b"\n")
    chunk = parse_files([first, empty, tmp_path / "c.jsonl", last])
    assert chunk.files_read == 3 and chunk.lines_read == 3 and len(readings_of(chunk)) == 2
    assert [type(e) for e in chunk.events] == [Skip, Vanished]
    assert chunk.events[1] == Vanished(tmp_path / "c.jsonl")


def test_nothing_to_read(tmp_path: Path) -> None:
    """No files, or only blank lines: an empty chunk, not an error."""
    assert parse_files([]).readings.size == 0
    blank = tmp_path / "batch-1760000000000.jsonl"
    blank.write_bytes(b"\n\n  \n")
    chunk = parse_files([blank])
    assert chunk.readings.size == 0 and chunk.lines_read == 0 and chunk.files_read == 1


def test_records_become_chunks_of_the_same_readings() -> None:
    """The pure core's input (records) is turned into the same columns, in order, chunk by chunk."""
    records = [
        Record(NaturalKey(f"veh-{i % 3}", "0x1F0", f"2026-01-01T10:00:{i:02d}Z"), tuple(float(i + k) for k in range(7)))
        for i in range(10)
    ]
    chunks = list(chunks_of_records(records, size=4))
    assert [c.readings.size for c in chunks] == [4, 4, 2]
    flat = [reading for chunk in chunks for reading in readings_of(chunk)]
    assert flat == [(r.key.vehicle_id, r.key.can_id, instant_us(r.key.timestamp), r.values) for r in records]


def test_columns_round_trip_through_rows() -> None:
    """Spilled readings come back from disk as they went."""
    chunk = next(chunks_of_records([Record(NaturalKey("v", "0x1", "2026-01-01T00:00:00Z"), (1.0,) * 7)]))
    back = Columns.of_rows(chunk.readings.to_rows())
    assert all((a == b).all() for a, b in zip(back, chunk.readings, strict=True))


def test_layout_sanity() -> None:
    """The test's own line is the consumer's format (guards the fixtures above)."""
    assert orjson.loads(LAYOUT)["vehicle_id"] == "veh-00001"


def test_ids_whose_keys_collide_are_read_by_the_general_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When two ids share a key mix, the second one's lines still count, under their own id."""
    monkeypatch.setattr(fastlines, "_ID_MIX", np.uint64(0))  # the mix is then the first 8 bytes alone
    path = tmp_path / "batch-1760000000000.jsonl"
    lines = [stored_line("vehicle-0001"), stored_line("vehicle-0002"), stored_line("vehicle-0001", second=2.0)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    expected, _ = reference([path])
    assert readings_of(parse_files([path])) == expected
