"""Hourly per-vehicle statistics of the stored readings.

``python -m src.aggregator.hourly_stats [--hour YYYY-MM-DDTHH] [--source local|s3]``
(default: the previous full UTC hour; run from cron at ``5 * * * *``).

Reads the hour's partition from ``DATA_DIR/raw/`` or, with ``--source s3``, streams it from
``s3://$S3_BUCKET/raw/`` (``.jsonl.gz`` too); with ``S3_BUCKET`` set, the aggregate is also
uploaded to ``s3://$S3_BUCKET/aggregated/``. Guarantees: a bad line is counted and skipped,
never fatal; each natural key counts once (the first copy read); an hour that cannot be
read completely writes nothing; the same files, local or in S3, give the same bytes.
Exit status: 0 done, 1 an input or the upload failed, 2 usage (``--source s3`` without
``S3_BUCKET``). Design: docs/architecture.md, "Design notes: aggregator".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import math
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from multiprocessing.pool import AsyncResult
from pathlib import Path
from typing import Any

import duckdb
import orjson

from src.aggregator import curated, queries
from src.aggregator.columnar import Chunk, Skip, Vanished, chunks_of_records, parse_files
from src.aggregator.curated import Compaction, CompactionFailed
from src.aggregator.records import Record, SkippedLine, canonical_timestamp, parse_line
from src.aggregator.rollup import BUCKET_ROWS, MEMORY_ROWS, RowStore, ranks, reduce_rows
from src.aggregator.sources import S3Bucket, Source, SourceUnreadable, list_s3_hour, planned_bytes
from src.common.files import write_atomically
from src.common.layout import (
    aggregated_file_name,
    batch_files,
    hour_label,
    parse_hour_label,
    previous_full_hour,
    raw_hour_dir,
    s3_aggregated_key,
    s3_curated_prefix,
    s3_hour_prefix,
)
from src.common.logs import configure_logging
from src.common.schema import SIGNALS, format_timestamp
from src.common.settings import AggregatorSettings

__all__ = [
    "MAX_LOGGED_SKIPS",
    "HourAggregate",
    "Input",
    "Quality",
    "Record",
    "S3Bucket",
    "SkippedLine",
    "SourceUnreadable",
    "VehicleStats",
    "aggregate",
    "aggregate_hour",
    "canonical_timestamp",
    "main",
    "parse_line",
    "stream_records",
    "upload_aggregate",
    "write_aggregate",
]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
AVG_DECIMALS = 6
"""Averages are rounded (well below any signal's resolution) so they print compactly; min and max are stored values."""
MAX_LOGGED_SKIPS = 20
"""Skipped lines are all counted, but only the first few logged: a broken file must not flood the log."""
TASK_BYTES = 8 << 20
"""Consecutive files are handed to a worker in runs of about this many bytes."""


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


@dataclass
class VehicleStats:
    """Count, min, max and mean of every signal of one vehicle."""

    message_count: int = 0
    mins: list[float] = field(default_factory=lambda: [math.inf] * len(SIGNALS))
    maxs: list[float] = field(default_factory=lambda: [-math.inf] * len(SIGNALS))
    avgs: list[float] = field(default_factory=lambda: [math.nan] * len(SIGNALS))

    def as_dict(self, vehicle_id: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"vehicle_id": vehicle_id, "message_count": self.message_count}
        for i, name in enumerate(SIGNALS):
            entry[name] = {"min": self.mins[i], "max": self.maxs[i], "avg": round(self.avgs[i], AVG_DECIMALS)}
        return entry


@dataclass
class Input:
    """Where the hour was read from and how much of it: for the log and the summary, not the document."""

    source: str = "records"  # "local", "s3", or records handed to aggregate()
    location: str = ""  # the hour's directory or S3 prefix
    listed: int = 0  # batch files (objects) listed
    files_read: int = 0
    bytes_read: int = 0  # as stored: compressed objects count compressed
    seconds: float = 0.0

    def describe(self) -> str:
        files = "objects" if self.source == "s3" else "files"
        return f"{self.files_read} {files} ({self.bytes_read:,} bytes) from {self.location}"


@dataclass
class HourAggregate:
    """The result of :func:`aggregate`: statistics per vehicle plus the input's quality."""

    hour: datetime
    vehicles: dict[str, VehicleStats] = field(default_factory=dict)
    quality: Quality = field(default_factory=Quality)
    input: Input = field(default_factory=Input)

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


def stream_records(files: Iterable[Path], quality: Quality) -> Iterator[Record]:
    """Every usable record of ``files``, in file then line order; counts into ``quality``.

    Reads lines exactly as :func:`aggregate_hour` does, one record at a time.
    """
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
    with RowStore() as store:
        for chunk in chunks_of_records(records):
            store.add(chunk.readings, chunk.vehicles, chunk.cans)
        _roll_up(store, result)
    return result


def aggregate_hour(
    raw: Path | S3Bucket,
    aggregated_dir: Path,
    hour: datetime,
    *,
    workers: int | None = None,
    task_bytes: int = TASK_BYTES,
    memory_rows: int = MEMORY_ROWS,
    bucket_rows: int = BUCKET_ROWS,
) -> tuple[Path, HourAggregate]:
    """Read, aggregate and write one hour from the local tier (``raw``: its ``raw/`` directory) or from S3.

    ``workers`` processes read the files (default: one per usable CPU); past ``memory_rows``
    readings, rows spill to buckets of about ``bucket_rows`` under ``aggregated_dir``. The
    written bytes depend on none of these, nor on the source. Raises :class:`SourceUnreadable`
    (writing nothing) if the hour cannot be read completely.
    """
    started = time.perf_counter()
    result = HourAggregate(hour)
    quality = result.quality
    sources: Sequence[Source]
    if isinstance(raw, S3Bucket):
        result.input = Input("s3", raw.url(s3_hour_prefix(hour)))
        sources = list_s3_hour(raw, hour)
    else:
        result.input = Input("local", str(raw_hour_dir(raw, hour)))
        sources = batch_files(raw, hour)
    result.input.listed = len(sources)
    log.info("hour %s: reading %d batch files from %s", hour_label(hour), len(sources), result.input.location)
    tasks = plan_tasks(sources, task_bytes)
    total_bytes = sum(size for _, size in tasks) or 1
    read_bytes = 0
    with RowStore(aggregated_dir, memory_rows, bucket_rows) as store:
        for (_, size), chunk in zip(tasks, read_chunks([paths for paths, _ in tasks], workers), strict=True):
            read_bytes += size
            _count(chunk, quality)
            result.input.files_read += chunk.files_read
            result.input.bytes_read += chunk.bytes_read
            store.add(chunk.readings, chunk.vehicles, chunk.cans, read_bytes / total_bytes)
        _roll_up(store, result)
    result.input.seconds = time.perf_counter() - started
    log.info("hour %s: read %s in %.2f s", hour_label(hour), result.input.describe(), result.input.seconds)
    return write_aggregate(result, aggregated_dir), result


def curate_and_aggregate(
    raw_dir: Path, curated_dir: Path, aggregated_dir: Path, hour: datetime, memory_limit_mb: int
) -> tuple[Path, HourAggregate, Compaction]:
    """Compact the hour's raw files into its curated Parquet, roll that up, write the aggregate.

    Raises :class:`CompactionFailed` (nothing written) if the hour cannot be read completely.
    """
    started = time.perf_counter()
    with curated.connect(curated_dir, memory_limit_mb) as connection:
        compaction = _compact(connection, raw_dir, curated_dir, hour)
        result = HourAggregate(hour, quality=compaction_quality(compaction))
        result.input = _local_input(raw_dir, hour, compaction)
        if compaction.path is not None:
            roll_up_curated(connection, [compaction.path], result)
    result.input.seconds = time.perf_counter() - started
    return write_aggregate(result, aggregated_dir), result, compaction


def curate_and_aggregate_spark(settings: AggregatorSettings, hour: datetime) -> tuple[Path, HourAggregate, Compaction]:
    """:func:`curate_and_aggregate` on Spark (``SPARK_MASTER``, else spark-submit's master, else ``local[*]``)."""
    from src.aggregator import spark  # pyspark is an optional dependency, imported only for this engine

    started = time.perf_counter()
    session = spark.spark_session(settings.spark_master)
    compaction = spark.compact_hour_spark(session, settings.raw_dir, settings.curated_dir, hour)
    result = HourAggregate(hour, quality=compaction_quality(compaction))
    result.input = _local_input(settings.raw_dir, hour, compaction)
    if compaction.path is not None:
        _fill(result, spark.roll_up_spark(session, [compaction.path]))
    result.input.seconds = time.perf_counter() - started
    return write_aggregate(result, settings.aggregated_dir), result, compaction


def _local_input(raw_dir: Path, hour: datetime, compaction: Compaction) -> Input:
    files = len(compaction.raw_files)
    return Input("local", str(raw_hour_dir(raw_dir, hour)), files, files, sum(compaction.raw_files.values()))


def _fill(result: HourAggregate, rollup: Iterable[Sequence[Any]]) -> None:
    """Rollup rows (vehicle, count, then min, max, mean per signal) into ``result``."""
    for vehicle_id, count, *values in rollup:
        result.vehicles[vehicle_id] = VehicleStats(count, values[0::3], values[1::3], values[2::3])


def _compact(connection: duckdb.DuckDBPyConnection, raw_dir: Path, curated_dir: Path, hour: datetime) -> Compaction:
    """:func:`curated.compact_hour`, listing the hour again if a file vanished while it was read."""
    try:
        return curated.compact_hour(connection, raw_dir, curated_dir, hour)
    except CompactionFailed as exc:
        vanished = [name for name in exc.listing if not (raw_hour_dir(raw_dir, hour) / name).exists()]
        if not vanished:
            raise
        log.warning("%s vanished before it could be read; the hour is read again without it", ", ".join(vanished))
        return curated.compact_hour(connection, raw_dir, curated_dir, hour)


def compaction_quality(compaction: Compaction) -> Quality:
    return Quality(
        files_read=len(compaction.raw_files),
        lines_read=compaction.lines_read,
        readings=compaction.rows,
        duplicates_dropped=compaction.duplicates_dropped,
        lines_skipped=compaction.lines_skipped,
    )


def roll_up_curated(connection: duckdb.DuckDBPyConnection, files: Sequence[Path], result: HourAggregate) -> None:
    """Per-vehicle statistics of curated ``files`` (:data:`queries.ROLLUP`) into ``result``."""
    _fill(result, connection.execute(queries.ROLLUP, [[str(f) for f in files]]).fetchall())


def plan_tasks(files: Sequence[Source], task_bytes: int) -> list[tuple[list[Source], int]]:
    """Runs of consecutive files of about ``task_bytes`` each, with their sizes (file order kept)."""
    tasks: list[tuple[list[Source], int]] = []
    current: list[Source] = []
    size = 0
    for path in files:
        size += planned_bytes(path)
        current.append(path)
        if size >= task_bytes:
            tasks.append((current, size))
            current, size = [], 0
    if current:
        tasks.append((current, size))
    return tasks


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - platforms without sched_getaffinity
        return os.cpu_count() or 1


def read_chunks(tasks: Sequence[Sequence[Source]], workers: int | None = None) -> Iterator[Chunk]:
    """:func:`~src.aggregator.columnar.parse_files` of every task, in task order, on ``workers`` processes.

    At most two tasks per worker are in flight, so finished chunks do not pile up in memory.
    """
    workers = min(workers or usable_cpus(), len(tasks))
    if workers <= 1:
        yield from map(parse_files, tasks)
        return
    with multiprocessing.get_context(start_method()).Pool(workers, initializer=worker_signals) as pool:
        queued = iter(tasks)
        pending: deque[AsyncResult[Chunk]] = deque(
            pool.apply_async(parse_files, (task,)) for task in islice(queued, 2 * workers)
        )
        while pending:
            chunk = pending.popleft().get()
            pending.extend(pool.apply_async(parse_files, (task,)) for task in islice(queued, 1))
            yield chunk
        pool.close()  # a clean shutdown; leaving the block early terminates the workers instead
        pool.join()


def worker_signals() -> None:
    """In a worker: die on SIGTERM whatever handler was inherited, leave Ctrl-C to the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def start_method() -> str | None:
    """``fork`` (fast start, modules already imported) if this process is single-threaded, else the default.

    A fork with other threads running could copy a lock held forever; the pool forks before starting its threads.
    """
    return "fork" if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1 else None


def _count(chunk: Chunk, quality: Quality) -> None:
    """Add a chunk's counts to ``quality`` and log its events as a line-by-line reader would have."""
    skipped_before = quality.lines_skipped
    quality.files_read += chunk.files_read
    quality.lines_read += chunk.lines_read
    quality.lines_skipped += chunk.lines_skipped
    for event in chunk.events:
        if isinstance(event, Vanished):
            log.warning("%s vanished before it could be read; skipped", event.source)
        elif isinstance(event, Skip):
            skipped_before += 1
            if skipped_before <= MAX_LOGGED_SKIPS:
                log.warning("%s:%d skipped: %s", event.file_name, event.line_number, event.reason)


def _roll_up(store: RowStore, result: HourAggregate) -> None:
    """Statistics of everything in ``store``, one bucket at a time, into ``result``."""
    names = list(store.vehicle_codes)  # code order
    vehicle_rank, can_rank = ranks(store.vehicle_codes), ranks(store.can_codes)
    for parts in store.buckets():
        totals = reduce_rows(parts, vehicle_rank, can_rank)
        result.quality.duplicates_dropped += totals.duplicates
        result.quality.readings += int(totals.counts.sum())
        for code, count, mins, maxs, sums in zip(
            totals.vehicles.tolist(),
            totals.counts.tolist(),
            totals.mins.tolist(),
            totals.maxs.tolist(),
            totals.sums.tolist(),
            strict=True,
        ):
            result.vehicles[names[code]] = VehicleStats(count, mins, maxs, [total / count for total in sums])


def render(document: dict[str, Any]) -> bytes:
    """Indented JSON with a final newline: byte-stable for the same document."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def write_aggregate(result: HourAggregate, aggregated_dir: Path) -> Path:
    """Write atomically (temporary name, fsync, rename): readers never see half a file."""
    aggregated_dir.mkdir(parents=True, exist_ok=True)
    target = aggregated_dir / aggregated_file_name(result.hour)
    write_atomically(target, render(result.to_document()))
    return target


class UploadFailed(RuntimeError):
    """The aggregate is written locally but could not be put in S3."""


def upload_aggregate(bucket: S3Bucket, path: Path, hour: datetime) -> str:
    """Put the written aggregate at ``aggregated/…`` in ``bucket``; its URL. Raises :class:`UploadFailed`."""
    return _put(bucket, path, s3_aggregated_key(hour), "application/json")


def upload_curated(bucket: S3Bucket, hour_dir: Path, hour: datetime) -> list[str]:
    """Put the curated hour at ``curated/<hive path>/`` in ``bucket``, the Parquet before its manifest; their URLs."""
    prefix = s3_curated_prefix(hour)
    return [
        _put(bucket, hour_dir / curated.PARQUET_NAME, prefix + curated.PARQUET_NAME, "application/vnd.apache.parquet"),
        _put(bucket, hour_dir / curated.MANIFEST_NAME, prefix + curated.MANIFEST_NAME, "application/json"),
    ]


def _put(bucket: S3Bucket, path: Path, key: str, content_type: str) -> str:
    """Put exactly ``path``'s bytes at ``key``, verified by S3 (Content-MD5); its URL.

    Raises :class:`UploadFailed` if S3 refuses it or cannot be reached (after botocore's retries).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        handle.seek(0)
        try:
            bucket.client().put_object(
                Bucket=bucket.name,
                Key=key,
                Body=handle,
                ContentType=content_type,
                ContentMD5=base64.b64encode(digest.digest()).decode(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise UploadFailed(f"cannot upload {path} to {bucket.url(key)}: {exc}") from None
    return bucket.url(key)


def summary(result: HourAggregate) -> str:
    q = result.quality
    if not result.vehicles:
        head = f"hour {hour_label(result.hour)}: no readings, wrote an aggregate with no vehicles"
    else:
        head = f"hour {hour_label(result.hour)}: {q.readings} readings from {len(result.vehicles)} vehicles"
    return (
        f"{head} (source={result.input.source}: {result.input.describe()}; files={q.files_read} "
        f"lines={q.lines_read} duplicates_dropped={q.duplicates_dropped} lines_skipped={q.lines_skipped})"
    )


def _hour(text: str) -> datetime:
    try:
        return parse_hour_label(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DDTHH, got {text!r}") from None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.aggregator.hourly_stats", description=__doc__.split("\n\n")[0])
    hours = parser.add_mutually_exclusive_group()
    hours.add_argument("--hour", type=_hour, help="UTC hour YYYY-MM-DDTHH (default: the previous full hour)")
    hours.add_argument(
        "--catch-up", action="store_true", help="every hour whose raw files changed since it was curated (cron: hourly)"
    )
    parser.add_argument("--source", choices=("local", "s3"), default="local", help="where the raw files are")
    parser.add_argument(
        "--engine", choices=("duckdb", "spark"), default="duckdb", help="the SQL engine (default duckdb)"
    )
    args = parser.parse_args(argv)
    if args.catch_up and args.source == "s3":
        parser.error("--catch-up compares the local raw files with their curated hours: it needs --source local")
    if args.engine == "spark" and args.source == "s3":
        parser.error(
            "--engine spark reads DATA_DIR (on a cluster, a file system every executor mounts): --source local"
        )
    return args


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    args = parse_args(argv)
    settings = AggregatorSettings()
    configure_logging(settings.log_level, settings.log_format)
    if args.source == "s3" and settings.s3_bucket is None:
        print("error: --source s3: S3_BUCKET unset (it names the bucket holding raw/ and aggregated/)", file=sys.stderr)
        return EXIT_USAGE
    bucket = S3Bucket(settings.s3_bucket, settings) if settings.s3_bucket else None
    if args.catch_up:
        hours = curated.stale_hours(settings.raw_dir, settings.curated_dir)
        log.info("catch-up: %d hour(s) to curate: %s", len(hours), ", ".join(map(hour_label, hours)) or "none")
        outcomes = [run_hour(settings, bucket, hour, "local", args.engine) for hour in hours]
        return max(outcomes, default=EXIT_OK)
    return run_hour(settings, bucket, args.hour or previous_full_hour(now()), args.source, args.engine)


def run_hour(settings: AggregatorSettings, bucket: S3Bucket | None, hour: datetime, source: str, engine: str) -> int:
    """One hour curated (from local raw files) and aggregated, both uploaded with a bucket; the exit status."""
    compaction: Compaction | None = None
    try:
        if source == "s3" and bucket is not None:
            path, result = aggregate_hour(bucket, settings.aggregated_dir, hour)
        elif engine == "spark":
            path, result, compaction = curate_and_aggregate_spark(settings, hour)
        else:
            path, result, compaction = curate_and_aggregate(
                settings.raw_dir, settings.curated_dir, settings.aggregated_dir, hour, settings.duckdb_memory_limit_mb
            )
    except (SourceUnreadable, CompactionFailed) as exc:
        print(f"error: hour {hour_label(hour)} not aggregated, nothing written: {exc}", file=sys.stderr)
        return EXIT_FAILED
    uploaded: list[str] = []
    try:
        if bucket is not None and compaction is not None and compaction.path is not None:
            uploaded += upload_curated(bucket, compaction.path.parent, hour)
        if bucket is not None:
            uploaded.append(upload_aggregate(bucket, path, hour))
    except UploadFailed as exc:
        print(f"error: {exc} (the local files stand; a rerun writes and uploads the same rows)", file=sys.stderr)
        return EXIT_FAILED
    if compaction is not None and compaction.path is not None:
        print(compaction.path)
    print(path)
    for url in uploaded:
        print(url)
    print(summary(result))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
