"""The hourly job: an hour's raw JSONL -> its curated Parquet -> its per-vehicle aggregate.

``python -m src.aggregator.hourly_stats [--hour YYYY-MM-DDTHH | --catch-up] [--source local|s3]
[--engine duckdb|spark]`` (default: the previous full UTC hour, DuckDB; cron ``5 * * * *``).

Compacts the hour (:mod:`src.aggregator.curated`, SQL in :mod:`src.aggregator.queries`) and rolls
the curated file up into the seed's aggregate, quality block included. ``--source s3`` rolls up the
hour's curated file in S3 if there is one, else compacts its raw objects (streamed, nothing copied
to disk); with ``S3_BUCKET`` set, the curated hour and the aggregate are also put in S3.
``--catch-up`` rebuilds every local hour whose raw files changed since it was curated.
Guarantees: a bad line is counted and skipped, never fatal; each natural key counts once (the copy
received first); an hour that cannot be read completely writes nothing; the same files, local or
in S3, give the same aggregate. Exit status: 0 done, 1 an input or an upload failed, 2 usage.
Design: docs/architecture.md, "Curated hours".
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import orjson

from src.aggregator import analytics, curated, queries
from src.aggregator.curated import Compaction, CompactionFailed
from src.aggregator.sources import S3Bucket, SourceUnreadable, list_s3_hour
from src.common.files import write_atomically
from src.common.layout import (
    aggregated_file_name,
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

if TYPE_CHECKING:
    from src.aggregator.s3_files import S3Files

__all__ = [
    "HourAggregate",
    "Input",
    "Quality",
    "S3Bucket",
    "SourceUnreadable",
    "VehicleStats",
    "aggregate_from_s3",
    "curate_and_aggregate",
    "main",
    "upload_aggregate",
    "upload_curated",
    "write_aggregate",
]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
AVG_DECIMALS = 6
"""Averages are rounded (well below any signal's resolution) so they print compactly; min and max are stored values."""
S3_THREADS = 8
"""DuckDB threads reading from S3: each is one request in flight, so more than the cores."""


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
    analytics: dict[str, Any] | None = None  # the "analytics" block (src.aggregator.analytics); None: not computed

    def to_document(self) -> dict[str, Any]:
        """The seed's aggregated schema (4.3), vehicles sorted by id, plus ``quality`` and, when computed,
        ``analytics`` (:func:`src.aggregator.analytics.document`)."""
        end = self.hour + timedelta(hours=1)
        return {
            "aggregation_timestamp": format_timestamp(end),
            "time_range": {
                "start": format_timestamp(self.hour),
                "end": format_timestamp(end - timedelta(seconds=1)),
            },
            "vehicles": [self.vehicles[vid].as_dict(vid) for vid in sorted(self.vehicles)],
            "quality": self.quality.as_dict(),
        } | ({} if self.analytics is None else {"analytics": self.analytics})


def analytics_thresholds(settings: AggregatorSettings) -> analytics.Thresholds | None:
    """The battery analytics' thresholds, or None when ``ANALYTICS_ENABLED`` is false."""
    return analytics.Thresholds.from_settings(settings) if settings.analytics_enabled else None


def curate_and_aggregate(
    raw_dir: Path,
    curated_dir: Path,
    aggregated_dir: Path,
    hour: datetime,
    memory_limit_mb: int,
    thresholds: analytics.Thresholds | None = None,
) -> tuple[Path, HourAggregate, Compaction]:
    """Compact the hour's raw files into its curated Parquet, roll that up, write the aggregate.

    ``thresholds``: the battery analytics' (None: no analytics block).
    Raises :class:`CompactionFailed` (nothing written) if the hour cannot be read completely.
    """
    started = time.perf_counter()
    with curated.connect(curated_dir, memory_limit_mb) as connection:
        compaction = _compact(connection, raw_dir, curated_dir, hour)
        result = HourAggregate(hour, quality=compaction_quality(compaction))
        result.input = _local_input(raw_dir, hour, compaction)
        if compaction.path is not None:
            roll_up_curated(connection, [compaction.path], result, thresholds)
    result.input.seconds = time.perf_counter() - started
    return write_aggregate(result, aggregated_dir), result, compaction


def aggregate_from_s3(
    settings: AggregatorSettings, bucket: S3Bucket, hour: datetime
) -> tuple[Path, HourAggregate, Compaction | None]:
    """The hour from S3: rolled up from its curated Parquet if S3 has one, else compacted from its raw objects.

    Objects are streamed to DuckDB (:mod:`src.aggregator.s3_files`); nothing is copied to disk but
    the curated hour a compaction writes. Raises :class:`CompactionFailed` or :class:`SourceUnreadable`.
    """
    from src.aggregator import s3_files  # fsspec and botocore: imported only when S3 is read (0.25 s)

    started = time.perf_counter()
    curated_key = s3_curated_prefix(hour) + curated.PARQUET_NAME
    memory = settings.duckdb_memory_limit_mb
    thresholds = analytics_thresholds(settings)
    with (
        curated.connect(settings.curated_dir, memory, S3_THREADS) as connection,
        s3_files.registered(connection, settings) as files,
    ):
        compaction = None
        if _exists(settings, bucket, curated_key):
            result = HourAggregate(hour, quality=compaction_quality(_s3_manifest(bucket, hour)))
            result.input = Input("s3", bucket.url(curated_key), 1, 1, 0)
            try:
                roll_up_curated(connection, files.paths(bucket.name, [curated_key]), result, thresholds)
            except duckdb.Error as exc:
                raise SourceUnreadable(f"{bucket.url(curated_key)}: {exc}") from None
        else:
            compaction = _compact_s3(connection, files, bucket, settings.curated_dir, hour)
            result = HourAggregate(hour, quality=compaction_quality(compaction))
            listed, stored = len(compaction.raw_files), sum(compaction.raw_files.values())
            result.input = Input("s3", bucket.url(s3_hour_prefix(hour)), listed, listed, stored)
            if compaction.path is not None:
                roll_up_curated(connection, [compaction.path], result, thresholds)
    result.input.seconds = time.perf_counter() - started
    return write_aggregate(result, settings.aggregated_dir), result, compaction


def _compact_s3(
    connection: duckdb.DuckDBPyConnection, files: S3Files, bucket: S3Bucket, curated_dir: Path, hour: datetime
) -> Compaction:
    """Compact the hour's raw objects; listed again once if one vanished while it was read."""
    for attempt in (1, 2):
        objects = list_s3_hour(bucket, hour)
        listing = {obj.name: obj.size for obj in objects}
        try:
            return curated.compact_files(connection, files.paths(bucket.name, objects), listing, curated_dir, hour)
        except CompactionFailed as exc:
            if attempt == 2 or "no such object" not in str(exc):
                raise
            log.warning("an object of hour %s vanished while it was read; listing the hour again", hour_label(hour))
    raise AssertionError("unreachable")  # pragma: no cover


def _exists(settings: AggregatorSettings, bucket: S3Bucket, key: str) -> bool:
    from src.aggregator import s3_files

    try:
        return s3_files.exists(settings, bucket.name, key)
    except OSError as exc:
        raise SourceUnreadable(f"cannot tell whether {bucket.url(key)} exists: {exc}") from None


def _s3_manifest(bucket: S3Bucket, hour: datetime) -> Compaction:
    """The counts the curated hour in S3 was built with (its manifest), for the aggregate's quality block."""
    from botocore.exceptions import BotoCoreError, ClientError

    key = s3_curated_prefix(hour) + curated.MANIFEST_NAME
    try:
        document = orjson.loads(bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read())
    except (BotoCoreError, ClientError, orjson.JSONDecodeError) as exc:
        raise SourceUnreadable(f"{bucket.url(key)}: the curated hour's manifest cannot be read: {exc}") from None
    return curated.Compaction.from_manifest(document, hour)


def curate_and_aggregate_spark(settings: AggregatorSettings, hour: datetime) -> tuple[Path, HourAggregate, Compaction]:
    """:func:`curate_and_aggregate` on Spark (``SPARK_MASTER``, else spark-submit's master, else ``local[*]``)."""
    from src.aggregator import spark  # pyspark is an optional dependency, imported only for this engine

    started = time.perf_counter()
    session = spark.spark_session(settings.spark_master)
    compaction = spark.compact_hour_spark(session, settings.raw_dir, settings.curated_dir, hour)
    result = HourAggregate(hour, quality=compaction_quality(compaction))
    result.input = _local_input(settings.raw_dir, hour, compaction)
    if compaction.path is not None:
        thresholds = analytics_thresholds(settings)
        rollup, blocks = spark.roll_up_spark(session, [compaction.path], thresholds)
        _fill(result, rollup)
        if thresholds is not None and blocks is not None:
            result.analytics = analytics.document(blocks, thresholds)
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


def roll_up_curated(
    connection: duckdb.DuckDBPyConnection,
    files: Sequence[Path | str],
    result: HourAggregate,
    thresholds: analytics.Thresholds | None = None,
) -> None:
    """Per-vehicle statistics of curated ``files`` (:data:`queries.ROLLUP`) into ``result``, and with
    ``thresholds`` their battery analytics (:mod:`src.aggregator.analytics`), over the same connection and files."""
    _fill(result, connection.execute(queries.ROLLUP, [[str(f) for f in files]]).fetchall())
    if thresholds is not None:
        result.analytics = analytics.document(analytics.run_duckdb(connection, files, thresholds), thresholds)


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
    return put_file(bucket, path, s3_aggregated_key(hour), "application/json")


def upload_curated(bucket: S3Bucket, hour_dir: Path, hour: datetime) -> list[str]:
    """Put the curated hour at ``curated/<hive path>/`` in ``bucket``, the Parquet before its manifest; their URLs."""
    prefix = s3_curated_prefix(hour)
    return [
        put_file(bucket, hour_dir / curated.PARQUET_NAME, prefix + curated.PARQUET_NAME, PARQUET_MEDIA_TYPE),
        put_file(bucket, hour_dir / curated.MANIFEST_NAME, prefix + curated.MANIFEST_NAME, "application/json"),
    ]


PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


def put_file(bucket: S3Bucket, path: Path, key: str, content_type: str) -> str:
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
            path, result, compaction = aggregate_from_s3(settings, bucket, hour)
        elif engine == "spark":
            path, result, compaction = curate_and_aggregate_spark(settings, hour)
        else:
            path, result, compaction = curate_and_aggregate(
                settings.raw_dir,
                settings.curated_dir,
                settings.aggregated_dir,
                hour,
                settings.duckdb_memory_limit_mb,
                analytics_thresholds(settings),
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
