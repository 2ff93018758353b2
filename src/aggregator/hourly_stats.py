"""Hourly per-vehicle statistics of the stored readings.

``python -m src.aggregator.hourly_stats [--hour YYYY-MM-DDTHH] [--source local|s3]``
(default: the previous full UTC hour; run from cron at ``5 * * * *``).

The work is three small steps with a pure core in the middle:

1. :func:`stream_records` reads the hour's batch files line by line (memory does not
   grow with file size) and yields parsed, checked records; a corrupt or truncated line
   is counted and skipped, never fatal, because one bad line must not cost an hour;
2. :func:`aggregate` drops duplicates by natural key (SQS delivers at least once, so the
   same reading can be on disk twice) and keeps count/min/max/sum per vehicle and signal;
3. :func:`write_aggregate` writes the seed's schema atomically. Everything in it derives
   from the hour and the data (``aggregation_timestamp`` is the hour's end, not the
   wall clock), so a rerun over the same files writes the same bytes.

Parsing uses orjson and plain float checks rather than the pydantic model: an hour holds
hundreds of thousands of lines, and these checks are all the statistics need.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from src.common.files import write_atomically
from src.common.layout import aggregated_file_name, batch_files, hour_label, parse_hour_label, previous_full_hour
from src.common.logs import configure_logging
from src.common.schema import SIGNALS, NaturalKey, format_timestamp, natural_key_of
from src.common.settings import AggregatorSettings

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_USAGE = 2
AVG_DECIMALS = 6
"""Averages are rounded (well below any signal's resolution) so they print compactly; min and max are stored values."""
MAX_LOGGED_SKIPS = 20
"""Skipped lines are all counted, but only the first few logged: a broken file must not flood the log."""


@dataclass
class Quality:
    """How clean the hour's input was: reported beside the statistics, never hidden."""

    files_read: int = 0
    lines_read: int = 0
    readings: int = 0
    duplicates_dropped: int = 0
    lines_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class Record:
    """The part of a stored reading the statistics need."""

    key: NaturalKey
    values: tuple[float, ...]  # in SIGNALS order


@dataclass
class VehicleStats:
    """Running count, min, max and sum of every signal of one vehicle."""

    message_count: int = 0
    mins: list[float] = field(default_factory=lambda: [math.inf] * len(SIGNALS))
    maxs: list[float] = field(default_factory=lambda: [-math.inf] * len(SIGNALS))
    sums: list[float] = field(default_factory=lambda: [0.0] * len(SIGNALS))

    def add(self, values: Sequence[float]) -> None:
        self.message_count += 1
        mins, maxs, sums = self.mins, self.maxs, self.sums
        for i, value in enumerate(values):
            if value < mins[i]:
                mins[i] = value
            if value > maxs[i]:
                maxs[i] = value
            sums[i] += value

    def as_dict(self, vehicle_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"vehicle_id": vehicle_id, "message_count": self.message_count}
        for i, name in enumerate(SIGNALS):
            avg = round(self.sums[i] / self.message_count, AVG_DECIMALS)
            entry[name] = {"min": self.mins[i], "max": self.maxs[i], "avg": avg}
        return entry


@dataclass
class HourAggregate:
    """The result of :func:`aggregate`: statistics per vehicle plus the input's quality."""

    hour: datetime
    vehicles: dict[str, VehicleStats] = field(default_factory=dict)
    quality: Quality = field(default_factory=Quality)

    def to_document(self) -> dict[str, Any]:
        """The seed's aggregated schema (4.3), vehicles sorted by id, plus ``quality``."""
        end = self.hour + timedelta(hours=1)
        return {
            "aggregation_timestamp": format_timestamp(end),
            "time_range": {
                "start": format_timestamp(self.hour),
                "end": format_timestamp(end - timedelta(seconds=1)),
            },
            "vehicles": [self.vehicles[vid].as_dict(vid) for vid in sorted(self.vehicles)],
            "quality": self.quality.as_dict(),
        }


class SkippedLine(ValueError):
    """A line that is not a usable reading (bad JSON, missing field, non-numeric signal)."""


def parse_line(line: bytes) -> Record:
    """One stored line as a :class:`Record`; raises :class:`SkippedLine` if it is not one."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise SkippedLine(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SkippedLine("not a JSON object")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise SkippedLine("no payload object")
    values = []
    for name in SIGNALS:
        value = payload.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SkippedLine(f"{name} is not a finite number: {value!r}")
        values.append(float(value))
    if not all(isinstance(document.get(name), str) for name in ("vehicle_id", "can_id", "timestamp")):
        raise SkippedLine("vehicle_id, can_id or timestamp missing or not a string")
    try:
        timestamp = canonical_timestamp(document["timestamp"])
    except ValueError as exc:
        raise SkippedLine(f"bad timestamp: {exc}") from None
    return Record(NaturalKey(document["vehicle_id"], document["can_id"], timestamp), tuple(values))


@functools.lru_cache(maxsize=65_536)
def canonical_timestamp(text: str) -> str:
    """The natural key's form of a timestamp (as ``natural_key_of`` makes it), cached.

    A fleet's readings of one tick share their timestamp, so the cache saves most of the
    ISO 8601 parsing, which otherwise dominates the per-line cost.
    """
    return natural_key_of({"vehicle_id": "", "can_id": "", "timestamp": text}).timestamp


def stream_records(files: Iterable[Path], quality: Quality) -> Iterator[Record]:
    """Every usable record of ``files``, in file then line order; counts into ``quality``."""
    for path in files:
        try:
            handle = path.open("rb")
        except FileNotFoundError:  # removed between listing and reading (e.g. moved to S3)
            log.warning("%s vanished before it could be read; skipped", path)
            continue
        quality.files_read += 1
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                quality.lines_read += 1
                try:
                    yield parse_line(line)
                except SkippedLine as exc:
                    quality.lines_skipped += 1
                    if quality.lines_skipped <= MAX_LOGGED_SKIPS:
                        log.warning("%s:%d skipped: %s", path.name, number, exc)


def aggregate(records: Iterable[Record], hour: datetime, quality: Quality | None = None) -> HourAggregate:
    """Per-vehicle statistics of ``records``, each natural key counted once (the pure core)."""
    result = HourAggregate(hour, quality=quality or Quality())
    seen: set[NaturalKey] = set()
    vehicles = result.vehicles
    for record in records:
        if record.key in seen:
            result.quality.duplicates_dropped += 1
            continue
        seen.add(record.key)
        stats = vehicles.get(record.key.vehicle_id)
        if stats is None:
            stats = vehicles[record.key.vehicle_id] = VehicleStats()
        stats.add(record.values)
        result.quality.readings += 1
    return result


def render(document: dict[str, Any]) -> bytes:
    """Indented JSON with a final newline: byte-stable for the same document."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def write_aggregate(result: HourAggregate, aggregated_dir: Path) -> Path:
    """Write atomically (temporary name, fsync, rename): readers never see half a file."""
    aggregated_dir.mkdir(parents=True, exist_ok=True)
    target = aggregated_dir / aggregated_file_name(result.hour)
    write_atomically(target, render(result.to_document()))
    return target


def aggregate_hour(raw_dir: Path, aggregated_dir: Path, hour: datetime) -> tuple[Path, HourAggregate]:
    """Read, aggregate and write one hour from the local tier."""
    quality = Quality()
    result = aggregate(stream_records(batch_files(raw_dir, hour), quality), hour, quality)
    return write_aggregate(result, aggregated_dir), result


def summary(result: HourAggregate) -> str:
    q = result.quality
    if not result.vehicles:
        head = f"hour {hour_label(result.hour)}: no readings, wrote an aggregate with no vehicles"
    else:
        head = f"hour {hour_label(result.hour)}: {q.readings} readings from {len(result.vehicles)} vehicles"
    return (
        f"{head} (files={q.files_read} lines={q.lines_read} duplicates_dropped={q.duplicates_dropped} "
        f"lines_skipped={q.lines_skipped})"
    )


def _hour(text: str) -> datetime:
    try:
        return parse_hour_label(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DDTHH, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.aggregator.hourly_stats", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hour", type=_hour, help="UTC hour YYYY-MM-DDTHH (default: the previous full hour)")
    parser.add_argument("--source", choices=("local", "s3"), default="local", help="where the raw files are")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    args = parse_args(argv)
    settings = AggregatorSettings()
    configure_logging(settings.log_level)
    if args.source == "s3":
        state = "S3_BUCKET unset" if settings.s3_bucket is None else "not implemented in this version"
        print(f"error: --source s3: the S3 tier is not available yet ({state})", file=sys.stderr)
        return EXIT_USAGE
    hour: datetime = args.hour or previous_full_hour(now())
    path, result = aggregate_hour(settings.raw_dir, settings.aggregated_dir, hour)
    print(path)
    print(summary(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
