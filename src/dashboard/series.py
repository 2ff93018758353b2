"""One vehicle's signals over a time window, for the vehicle page: curated hours and raw files stitched, downsampled.

Complete hours come from the curated Parquet (``DATA_DIR/curated/<hive hour>/*.parquet``); an hour
with no curated file yet (the current one, or one whose job has not run) from its raw batch files,
of which only the lines that name the vehicle (found as bytes, before any JSON parsing) reach
DuckDB. Partitions are by receive hour, readings are windowed by their ``timestamp``, so the
partitions read run from the hour of ``start`` minus the allowed clock skew to the hour after ``end``.
The union is deduplicated by timestamp (a natural key stored twice, in a curated and a raw hour or
in two raw files, counts once; two CAN ids at one instant are one sample, as the analytics count
them) and, beyond ``points`` samples, bucketed into at most ``points`` equal spans keeping each
signal's min and max, so a one-reading spike survives. The SQL is in :mod:`src.dashboard.queries`;
every call opens its own DuckDB connection and does blocking I/O: run it in a worker thread.
"""

from __future__ import annotations

import math
import mmap
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from src.common.layout import batch_file_ms, batch_files, hour_label, hour_start
from src.common.settings import AggregatorSettings, ReceiverSettings
from src.dashboard import queries

CLOCK_SKEW = timedelta(seconds=ReceiverSettings.model_fields["max_clock_skew_s"].default)
"""How far ahead of the server a reading may be stamped (the receiver's ``MAX_CLOCK_SKEW_S``, its one owner)."""
LATE = timedelta(hours=1)
"""Readings received up to this long after their timestamp are found (in the next hour's partition)."""
GAP_BUCKETS = 2
"""In bucketed mode, a jump of more than this many buckets between points is drawn as a gap."""
RAW_GAP_S = float(AggregatorSettings.model_fields["analytics_gap_s"].default)
"""In raw mode, a jump of more than this between readings is drawn as a gap (the analytics' ``ANALYTICS_GAP_S``)."""


@dataclass(frozen=True)
class Window:
    """A half-open span of reading time, ``[start, end)``, in UTC."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class Sources:
    """What a window was read from: curated hours (their Parquet files) and raw hours (their batch files)."""

    curated: list[Path] = field(default_factory=list)
    raw: list[Path] = field(default_factory=list)
    curated_hours: list[str] = field(default_factory=list)
    raw_hours: list[str] = field(default_factory=list)


def partition_hours(window: Window) -> list[datetime]:
    """The receive hours that can hold readings stamped within ``window``, oldest first."""
    hour, last = hour_start(window.start - CLOCK_SKEW), hour_start(window.end + LATE)
    hours = []
    while hour <= last:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def sources(raw_dir: Path, curated_dir: Path, window: Window) -> Sources:
    """Per hour: its curated files if it has any, else its raw batch files that can hold the window's readings.

    A batch file made durable at T holds readings received by T, so stamped before T + the clock skew:
    files durable before ``start`` minus the skew are skipped.
    """
    found = Sources()
    earliest_ms = (window.start - CLOCK_SKEW).timestamp() * 1000
    for hour in partition_hours(window):
        if curated := queries.curated_files(curated_dir, hour):
            found.curated += curated
            found.curated_hours.append(hour_label(hour))
            continue
        raw = [path for path in batch_files(raw_dir, hour) if (batch_file_ms(path.name) or 0) >= earliest_ms]
        if raw:
            found.raw += raw
            found.raw_hours.append(hour_label(hour))
    return found


def vehicle_lines(path: Path, vehicle_id: str) -> bytes:
    """The lines of ``path`` that contain ``"<vehicle_id>"`` (as a JSON string), newline-terminated; b"" if none.

    A cheap pre-filter: a line naming the id anywhere passes, and the SQL keeps only those whose
    ``vehicle_id`` is it. A file that vanished (pruned) has no lines.
    """
    needle = b'"' + vehicle_id.encode() + b'"'
    lines = []
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return b""
            # Mapped, not read: the page cache is searched in place, without a copy of the file in memory.
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                at = data.find(needle)
                while at != -1:
                    start = data.rfind(b"\n", 0, at) + 1
                    end = data.find(b"\n", at)
                    end = len(data) if end == -1 else end
                    lines.append(data[start:end])
                    at = data.find(needle, end)
    except FileNotFoundError:
        return b""
    return b"\n".join(lines) + b"\n" if lines else b""


class LineCache:
    """Pre-filtered lines of batch files by (file, size, vehicle); least recently used dropped beyond ``max_bytes``.

    Batch files never change once they exist (written under a temporary name, then renamed), so a
    refresh of a live window scans only the files written since. Thread-safe.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._scanning: dict[tuple[str, int, str], threading.Event] = {}

    def lines(self, path: Path, vehicle_id: str) -> bytes:
        try:
            key = (str(path), path.stat().st_size, vehicle_id)
        except FileNotFoundError:
            return b""
        while True:
            with self._lock:
                if key in self._entries:
                    self._entries.move_to_end(key)
                    return self._entries[key]
                scanning = self._scanning.get(key)
                if scanning is None:
                    self._scanning[key] = threading.Event()
                    break
            scanning.wait()  # another request scans this file for this vehicle: one scan serves both
        try:
            found = vehicle_lines(path, vehicle_id)
            with self._lock:
                self._entries[key] = found
                self._bytes += len(found) + 100  # an empty entry still costs its key
                while self._bytes > self.max_bytes and self._entries:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= len(dropped) + 100
        finally:
            with self._lock:
                self._scanning.pop(key).set()
        return found


@dataclass
class Series:
    """Points in time order: ``t`` (unix seconds), ``readings`` per point, and ``<series>_min``/``_max`` columns.

    ``mode``: ``raw`` (one point per sample) or ``buckets`` (``bucket_s`` wide); a ``None`` point marks a gap.
    """

    mode: str
    bucket_s: float | None
    readings: int
    columns: dict[str, list[float | None]]
    sources: Sources

    @property
    def points(self) -> int:
        return sum(1 for count in self.columns["readings"] if count)


def bucket_us(window: Window, points: int) -> int:
    """The bucket width (µs) that cuts ``window`` into at most ``points`` equal spans."""
    span_us = round(window.seconds * 1_000_000)
    return max(1, math.ceil(span_us / points))


def read_series(
    raw_dir: Path, curated_dir: Path, vehicle_id: str, window: Window, points: int, cache: LineCache | None = None
) -> Series:
    """``vehicle_id``'s signals within ``window``: every sample if at most ``points``, else ``points`` buckets at most.

    Raises ``duckdb.Error`` when a file cannot be read (a damaged Parquet file).
    """
    found = sources(raw_dir, curated_dir, window)
    cache = cache or LineCache()
    width = bucket_us(window, points)
    with TemporaryDirectory(prefix="vehicle-series-") as scratch:
        raw_lines = Path(scratch) / "lines.jsonl"
        with raw_lines.open("wb") as out:
            for path in found.raw:
                out.write(cache.lines(path, vehicle_id))
        has_raw = raw_lines.stat().st_size > 0
        if not found.curated and not has_raw:
            rows: list[tuple[Any, ...]] = []
        else:
            parameters: dict[str, Any] = {
                "vehicle": vehicle_id,
                "start": window.start,
                "end": window.end,
                "points": points,
                "start_us": round(window.start.timestamp() * 1_000_000),
                "bucket_us": width,
            }
            if found.curated:
                parameters["curated"] = [str(path) for path in found.curated]
            if has_raw:
                parameters["raw"] = str(raw_lines)
            rows = queries.query(queries.series_sql(bool(found.curated), has_raw), parameters)
    readings = sum(int(row[1]) for row in rows)
    bucketed = readings > points
    columns = columnar(queries.SERIES_COLUMNS, rows, width if bucketed else None)
    return Series("buckets" if bucketed else "raw", width / 1e6 if bucketed else None, readings, columns, found)


def columnar(names: Sequence[str], rows: Sequence[tuple[Any, ...]], width_us: int | None) -> dict[str, list[Any]]:
    """``rows`` as columns, ``t_us`` as unix seconds ``t``, with an all-None point inside every gap (so it is drawn)."""
    gap_us = width_us * GAP_BUCKETS if width_us is not None else RAW_GAP_S * 1_000_000
    columns: dict[str, list[Any]] = {("t" if name == "t_us" else name): [] for name in names}
    previous: int | None = None
    for row in rows:
        at = int(row[0])
        if previous is not None and at - previous > gap_us:
            columns["t"].append((previous + at) / 2 / 1e6)
            for name in names[1:]:
                columns[name].append(None)
        columns["t"].append(at / 1e6)
        for name, value in zip(names[1:], row[1:], strict=True):
            columns[name].append(round(value, 4) if isinstance(value, float) else value)
        previous = at
    return columns
