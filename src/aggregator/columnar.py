"""Batch files to compact columns (one 72-byte :data:`ROW` per reading): a worker process's share of an hour.

Each line goes to the first of three readers that takes it: the vectorised
:func:`~src.aggregator.fastlines.parse_block`, then :func:`_read_fast` (orjson, all or
nothing per block), then the reference :func:`~src.aggregator.records.parse_line`, which
names skipped lines. No reader accepts a line the reference would skip, nor reads one
differently; rows keep the order of their lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain, islice
from operator import itemgetter
from typing import NamedTuple

import numpy as np
import orjson

from src.aggregator.fastlines import PADDING, Vocabulary, parse_block
from src.aggregator.records import Record, SkippedLine, instant_us, parse_line
from src.aggregator.sources import Readable, Source, open_in_turn
from src.common.schema import SIGNALS

ROW = np.dtype([("ts", "<i8"), ("vehicle", "<i4"), ("can", "<i4"), ("values", "<f8", (len(SIGNALS),))])
"""One reading: natural key (timestamp in µs since the epoch, vehicle and CAN id codes) and its signals."""
BLOCK_BYTES = 4 << 20
"""Files are read this many bytes at a time (plus the rest of the last line)."""
BATCH_BYTES = 1 << 20
"""Blocks of consecutive files are read together once they add up to this many bytes (kept cache-sized)."""
MAX_REPORTED_SKIPS = 20
"""A chunk reports at most this many skipped lines by name: the caller logs only the first few anyway."""

_vehicle_id, _can_id, _timestamp, _payload = map(itemgetter, ("vehicle_id", "can_id", "timestamp", "payload"))
_signals = itemgetter(*SIGNALS)
_NUMBER_TYPES = frozenset((float, int))
_STR_TYPES = frozenset((str,))


@dataclass(frozen=True)
class Vanished:
    """A file (or S3 object) listed for the hour that was gone when its turn came (e.g. moved to S3)."""

    source: Source


@dataclass(frozen=True)
class Skip:
    """A line that is not a reading: where it is and why."""

    file_name: str
    line_number: int
    reason: str


class Columns(NamedTuple):
    """Readings as columns: natural key (timestamp in µs since the epoch, vehicle and CAN id codes) and signals."""

    ts: np.ndarray  # int64
    vehicle: np.ndarray  # int32
    can: np.ndarray  # int32
    values: np.ndarray  # (readings, signals) float64

    @property
    def size(self) -> int:
        """How many readings."""
        return len(self.ts)

    @classmethod
    def of_rows(cls, rows: np.ndarray) -> Columns:
        """Views of a :data:`ROW` array's fields."""
        return cls(rows["ts"], rows["vehicle"], rows["can"], rows["values"])

    def to_rows(self) -> np.ndarray:
        rows = np.empty(self.size, ROW)
        rows["ts"], rows["vehicle"], rows["can"], rows["values"] = self
        return rows


@dataclass
class Chunk:
    """The readings of some consecutive files, in file then line order, plus what was seen on the way."""

    readings: Columns  # vehicle and can are codes into the two lists below
    vehicles: list[str]
    cans: list[str]
    files_read: int = 0
    bytes_read: int = 0  # of the files read, as stored (compressed, for a compressed object)
    lines_read: int = 0
    lines_skipped: int = 0
    events: list[Vanished | Skip] = field(default_factory=list)
    """Vanished files and the first :data:`MAX_REPORTED_SKIPS` skipped lines, in the order met."""


@dataclass
class _Piece:
    """A block of one file's lines (the last may lack its line break: then ``terminated`` is False)."""

    path: Source
    data: bytes
    terminated: bool
    opens_file: bool
    # Known once the batch is read:
    lines: int = 0
    first_line: int = 0  # the file's line number of its first line
    first_position: int = 0  # the chunk-wide number of its first line


class _Builder:
    """Accumulates one chunk's readings, part by part, as columns in line order."""

    def __init__(self) -> None:
        self.vehicles = Vocabulary()
        self.cans = Vocabulary()
        self.instants: dict[str, int] = {}
        self.parts: list[tuple[np.ndarray, Columns]] = []  # (line positions, readings)
        self.lines = 0  # lines met so far, blank ones included: the next line's position
        self.file_lines = 0  # lines of the current file met so far
        self.chunk = Chunk(no_readings(), [], [])

    def learn_instants(self, stamps: Iterable[str]) -> None:
        """Remember ``instant_us`` of each timestamp text (a fleet's readings share timestamps); raises as it does."""
        instants = self.instants
        for text in stamps:
            if text not in instants:
                instants[text] = instant_us(text)

    def add(
        self,
        positions: Sequence[int],
        vehicle_ids: Sequence[str],
        can_ids: Sequence[str],
        stamps: Sequence[str],
        values: np.ndarray,
    ) -> None:
        """Append readings (at chunk-wide line ``positions``) whose timestamps :meth:`learn_instants` has seen."""
        ts = np.fromiter(map(self.instants.__getitem__, stamps), np.int64, len(stamps))
        columns = Columns(ts, self.vehicles.encode_names(vehicle_ids), self.cans.encode_names(can_ids), values)
        self.parts.append((np.asarray(positions, np.int64), columns))

    def skip(self, path: Source, number: int, reason: str) -> None:
        self.chunk.lines_skipped += 1
        if self.chunk.lines_skipped <= MAX_REPORTED_SKIPS:
            self.chunk.events.append(Skip(path.name, number, reason))

    def finish(self) -> Chunk:
        chunk = self.chunk
        if self.parts:
            positions = np.concatenate([part[0] for part in self.parts])
            order = np.argsort(positions, kind="stable") if (np.diff(positions) < 0).any() else slice(None)
            chunk.readings = Columns(*(np.concatenate([p[1][i] for p in self.parts])[order] for i in range(4)))
        chunk.vehicles = list(self.vehicles.codes)
        chunk.cans = list(self.cans.codes)
        return chunk


def no_readings() -> Columns:
    return Columns(np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32), np.empty((0, len(SIGNALS))))


def parse_files(paths: Sequence[Source], block_bytes: int = BLOCK_BYTES, batch_bytes: int = BATCH_BYTES) -> Chunk:
    """The readings of ``paths`` (files or S3 objects, in order) as one :class:`Chunk`; runs in a worker process.

    Raises :class:`~src.aggregator.sources.SourceUnreadable` if one cannot be read completely.
    """
    builder = _Builder()
    batch: list[_Piece] = []
    batched = 0
    with closing(open_in_turn(paths)) as opened_in_turn:
        for path, opened in opened_in_turn:
            if opened is None:  # removed between listing and reading (e.g. moved to S3)
                _read_batch(batch, builder)  # so that events stay in file order
                batch, batched = [], 0
                builder.chunk.events.append(Vanished(path))
                continue
            builder.chunk.files_read += 1
            builder.chunk.bytes_read += opened.stored_bytes
            try:
                for number, data in enumerate(line_blocks(opened.handle, block_bytes, opened.size)):
                    batch.append(_Piece(path, data, data.endswith(b"\n"), opens_file=number == 0))
                    batched += len(data)
                    if batched >= batch_bytes:
                        _read_batch(batch, builder)
                        batch, batched = [], 0
            finally:
                opened.handle.close()
    _read_batch(batch, builder)
    return builder.finish()


def line_blocks(handle: Readable, block_bytes: int, size: int | None = None) -> Iterator[bytes]:
    """The content in pieces that end at a line break (the last one may not); ``size``: the content's, if known."""
    if size is not None and size <= block_bytes:  # the usual batch file: one read of the right size
        data = handle.read()
        if data:
            yield data
        return
    rest = b""
    while data := handle.read(block_bytes):
        if rest:
            data = rest + data
        end = data.rfind(b"\n") + 1
        rest = data[end:]
        if end:  # otherwise one long line so far: keep reading
            yield data[:end]
    if rest:
        yield rest


def _read_batch(batch: list[_Piece], builder: _Builder) -> None:
    """Read the pieces' lines: the vectorised reader first, the others for what it leaves."""
    if not batch:
        return
    parsed = parse_block(b"".join([*(p.data if p.terminated else p.data + b"\n" for p in batch), PADDING]))
    piece_ends = np.cumsum([len(p.data) + (not p.terminated) for p in batch])
    piece_lines = np.diff(np.searchsorted(parsed.ends, piece_ends), prepend=0).tolist()
    first = builder.lines
    for piece, lines in zip(batch, piece_lines, strict=True):
        if piece.opens_file:
            builder.file_lines = 0
        piece.lines, piece.first_line, piece.first_position = lines, builder.file_lines + 1, builder.lines
        builder.file_lines += lines
        builder.lines += lines
    vehicles, vehicles_exact = builder.vehicles.encode_keys(parsed.vehicle_keys, parsed.vehicle_lengths)
    cans, cans_exact = builder.cans.encode_keys(parsed.can_keys, parsed.can_lengths)
    read = np.flatnonzero(parsed.ok)
    exact = vehicles_exact & cans_exact
    if not exact.all():  # ids whose keys mix alike: left to the other readers
        parsed.ok[read[~exact]] = False
        read, vehicles, cans = read[exact], vehicles[exact], cans[exact]
    builder.parts.append((read + first, Columns(parsed.ts[exact], vehicles, cans, parsed.values[exact])))
    builder.chunk.lines_read += len(read)
    left = np.flatnonzero(~parsed.ok) + first
    if not len(left):
        return
    for piece in batch:
        mine = left[(left >= piece.first_position) & (left < piece.first_position + piece.lines)]
        if len(mine):
            lines = piece.data.split(b"\n")
            indexes = (mine - piece.first_position).tolist()
            leftovers = [lines[i] for i in indexes]
            if not _read_fast(leftovers, mine.tolist(), builder):
                _read_carefully(piece, indexes, leftovers, builder)


def _read_fast(lines: list[bytes], positions: list[int], builder: _Builder) -> bool:
    """Add the readings of ``lines`` if every non-empty one is a plain reading; False (adding nothing) otherwise."""
    kept = [(line, position) for line, position in zip(lines, positions, strict=True) if line]
    if not kept:
        return True
    lines = [line for line, _ in kept]
    try:
        documents = list(map(orjson.loads, lines))
        vehicle_ids = list(map(_vehicle_id, documents))
        can_ids = list(map(_can_id, documents))
        stamps = list(map(_timestamp, documents))
        rows = list(map(_signals, map(_payload, documents)))
        # Distinct texts: their types are checked once, and they are what the vocabularies learn.
        distinct_texts = (dict.fromkeys(vehicle_ids), dict.fromkeys(can_ids), dict.fromkeys(stamps))
    except (ValueError, KeyError, TypeError):  # JSONDecodeError is a ValueError; unhashable: TypeError
        return False
    if not all(set(map(type, texts)) == _STR_TYPES for texts in distinct_texts):
        return False
    if not set(map(type, chain.from_iterable(rows))) <= _NUMBER_TYPES:  # no str, bool, None, list, dict
        return False
    values = np.fromiter(chain.from_iterable(rows), np.float64, len(rows) * len(SIGNALS)).reshape(-1, len(SIGNALS))
    if not np.isfinite(values).all():  # pragma: no cover - orjson refuses non-finite numbers: the reference's rule
        return False
    try:
        builder.learn_instants(distinct_texts[2])
    except (ValueError, OverflowError):
        return False
    builder.add([position for _, position in kept], vehicle_ids, can_ids, stamps, values)
    builder.chunk.lines_read += len(lines)
    return True


def _read_carefully(piece: _Piece, indexes: list[int], lines: list[bytes], builder: _Builder) -> None:
    """Line by line through the reference parser: skipped lines are counted and named."""
    records: list[Record] = []
    positions: list[int] = []
    last = piece.lines - 1
    for index, line in zip(indexes, lines, strict=True):
        if not line.strip():
            continue
        builder.chunk.lines_read += 1
        try:  # with its line break, as a line-by-line reader sees it (the parser's message counts it)
            records.append(parse_line(line + b"\n" if index < last or piece.terminated else line))
        except SkippedLine as exc:
            builder.skip(piece.path, piece.first_line + index, str(exc))
            continue
        positions.append(piece.first_position + index)
    _add_records(builder, positions, records)


def _add_records(builder: _Builder, positions: Sequence[int], records: Sequence[Record]) -> None:
    stamps = [r.key.timestamp for r in records]
    builder.learn_instants(stamps)
    builder.add(
        positions,
        [r.key.vehicle_id for r in records],
        [r.key.can_id for r in records],
        stamps,
        np.array([r.values for r in records], np.float64).reshape(-1, len(SIGNALS)),
    )


def chunks_of_records(records: Iterable[Record], size: int = 65_536) -> Iterator[Chunk]:
    """Already parsed records as chunks of at most ``size`` rows (timestamps as ``parse_line`` makes them)."""
    iterator = iter(records)
    while batch := list(islice(iterator, size)):
        builder = _Builder()
        _add_records(builder, range(len(batch)), batch)
        yield builder.finish()
