"""The Spark engine: curated hours and per-vehicle rollups by PySpark, equal to DuckDB's.

Same contract as :mod:`src.aggregator.curated` and :data:`src.aggregator.queries.ROLLUP`: the same
files (``readings.parquet``, zstd, :data:`~src.aggregator.queries.COLUMNS`, and ``_manifest.json``),
the same rows, the same counts; rollup counts, minima and maxima equal DuckDB's exactly, means to
within a rounding of the last bit. Its SQL is below, in one place, run over temporary views.

Locally Spark runs in this process's JVM (``local[*]``); on a cluster, named by ``master`` or by
``spark-submit``, the executors read and write the same paths, so ``DATA_DIR`` must be a file
system they all mount at the same path (the driver moves the written file into place).

How a raw line becomes a reading follows DuckDB's ``read_ndjson`` as :data:`queries.PARSE_RAW` uses
it: a line is parsed as a JSON variant (``try_parse_json``) and its fields cast as DuckDB casts JSON
values (a number as text stays text, ``"1.5"`` or ``true`` as a signal is a number, ``"NaN"`` is
not finite). Known differences, none of which a line the consumer writes can have: a line holding
one JSON value followed by more text is read by its first value (DuckDB skips it), an object with a
repeated key is skipped (DuckDB takes the first), and timestamps in unusual ISO 8601 spellings
(no seconds, ``24:00``, a decimal point without digits) that DuckDB accepts are not readings here,
while a year past 9999 (``+12025-…``), which DuckDB refuses, is one.

Only this module imports pyspark: the rest of the package works without it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.errors import PySparkException  # type: ignore[import-not-found, unused-ignore]  # pyspark: optional
from pyspark.sql import DataFrame, SparkSession  # type: ignore[import-not-found, unused-ignore]

from src.aggregator import analytics, queries
from src.aggregator.curated import (
    MAX_LOGGED_SKIPS,
    SPARK_WRITE_DIR_PREFIX,
    Compaction,
    CompactionFailed,
    log_skips,
    published,
    started,
)
from src.common.files import fsync_dir, fsync_file
from src.common.layout import batch_file_sizes, hour_label, hour_partition
from src.common.schema import SIGNALS

log = logging.getLogger(__name__)

APP_NAME = "telemetry-aggregator"

# --- The SQL -------------------------------------------------------------------------------------
# Temporary views: ``raw_lines`` (value: one line of text, filename: its file's name), ``parsed``
# (built by PARSE_RAW, cached), ``curated_files`` (the Parquet files a rollup reads).

_NAMES = [name for name, _ in queries.COLUMNS]
_QUOTED = ", ".join(f"`{name}`" for name in _NAMES)


def _field(path: str, spark_type: str) -> str:
    """A field of the line's JSON, cast as DuckDB casts a JSON value; NULL if it is missing or does not cast."""
    return f"try_variant_get(line, '$.{path}', '{spark_type}')"


def _instant(text: str) -> str:
    """An ISO 8601 text as a UTC instant; NULL without a zone (``Z`` or ``±HH[:]MM`` at the very end)."""
    return f"CASE WHEN {text} RLIKE '(Z|[+-][0-9]{{2}}:?[0-9]{{2}})\\\\z' THEN try_cast({text} AS TIMESTAMP) END"


# ``abs(x) < Infinity`` is false for ±Infinity and for NaN (Spark orders NaN above every number).
_IS_READING = " AND ".join(
    [f"`{name}` IS NOT NULL" for name in ("vehicle_id", "can_id", "timestamp", "ingest_received_at")]
    + [f"abs({signal}) < CAST('Infinity' AS DOUBLE)" for signal in SIGNALS]
)

PARSE_RAW = f"""
CACHE TABLE parsed AS
SELECT *, coalesce({_IS_READING}, false) AS is_reading
FROM (
    SELECT
        {_field("vehicle_id", "string")} AS vehicle_id,
        {_field("can_id", "string")} AS can_id,
        {_instant(_field("timestamp", "string"))} AS `timestamp`,
        {_instant(_field("ingest_received_at", "string"))} AS ingest_received_at,
        {", ".join(f"{_field(f'payload.{signal}', 'double')} AS {signal}" for signal in SIGNALS)},
        filename
    FROM (SELECT try_parse_json(value) AS line, filename FROM raw_lines WHERE value NOT RLIKE '^\\\\s*$')
)
"""
"""Every non-blank line, typed (a line blank but for whitespace is not counted, as in DuckDB); a line
that is not valid JSON or lacks a field, or whose signal is not a finite number, has ``is_reading`` false."""

COUNT_PARSED = "SELECT count(*), count_if(is_reading) FROM parsed"

SKIPS_BY_FILE = f"""
SELECT filename, count(*) FROM parsed WHERE NOT is_reading GROUP BY filename ORDER BY filename LIMIT {MAX_LOGGED_SKIPS}
"""

CURATED_SELECT = f"""
SELECT /*+ REPARTITION(1) */ {_QUOTED}
FROM (
    SELECT *, row_number() OVER (
        PARTITION BY vehicle_id, can_id, `timestamp`
        ORDER BY ingest_received_at, {", ".join(SIGNALS)}
    ) AS copy
    FROM parsed
    WHERE is_reading
)
WHERE copy = 1
SORT BY vehicle_id, `timestamp`, can_id
"""
"""One row per natural key, the copy received first (ties: the values), as in DuckDB; one
partition, sorted within it, so one sorted file (``SORT BY`` sorts the one partition: no ordering
depends on how partitions are concatenated)."""


def _mean(signal: str) -> str:
    """DuckDB's ``avg(x::DECIMAL(18, 6))::DOUBLE``: each value rounded half away from zero to millionths
    of ``x * 1e6`` (as DuckDB casts a double to a decimal), summed exactly, divided once."""
    return f"CAST(sum(CAST(round({signal} * 1000000D) AS DECIMAL(18, 0))) AS DOUBLE) / (count(*) * 1000000D)"


ROLLUP = f"""
SELECT
    vehicle_id,
    count(*) AS message_count,
    {", ".join(f"min({s}), max({s}), {_mean(s)}" for s in SIGNALS)}
FROM curated_files
GROUP BY vehicle_id
ORDER BY vehicle_id
"""
"""Per vehicle: the count, then min, max and mean of each signal (:data:`queries.ROLLUP`'s shape)."""

# --- The session ---------------------------------------------------------------------------------


def spark_session(master: str | None = None) -> SparkSession:
    """A session for the hourly job: on ``master`` if given, else on the master ``spark-submit`` (or
    ``spark-defaults.conf``) set, else ``local[*]`` (Spark's own default); UTC, microsecond Parquet
    timestamps, and shuffles sized for one hour's data (twice the default parallelism)."""
    builder = SparkSession.builder.appName(APP_NAME).config("spark.ui.showConsoleProgress", "false")
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    # Runtime settings, set on the session even if it existed already:
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # a timestamp's text without a zone is never a reading
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")  # not INT96: as DuckDB writes
    spark.conf.set("spark.sql.shuffle.partitions", str(2 * spark.sparkContext.defaultParallelism))
    return spark


# --- Compaction and rollup -----------------------------------------------------------------------


def spark_path(path: Path) -> str:
    """A local path as Spark names it: explicitly on the local file system, whatever the default is."""
    return f"file://{path.resolve()}"


def compact_hour_spark(spark: SparkSession, raw_dir: Path, curated_dir: Path, hour: datetime) -> Compaction:
    """Build the curated hour from the hour's local raw files, as :func:`curated.compact_hour` does."""
    listing = batch_file_sizes(raw_dir, hour)
    files = [spark_path(raw_dir / hour_partition(hour) / name) for name in sorted(listing)]
    return compact_files_spark(spark, files, listing, curated_dir, hour)


def compact_files_spark(
    spark: SparkSession, files: Sequence[str], listing: dict[str, int], curated_dir: Path, hour: datetime
) -> Compaction:
    """Build the curated hour from ``files`` (paths Spark reads); ``listing`` (names, sizes) goes in the manifest."""
    result, target = started(files, listing, curated_dir, hour)
    if target is None:
        return result
    target_dir = target.parent
    write_dir = target_dir / f"{SPARK_WRITE_DIR_PREFIX}{os.getpid()}"
    try:
        raw = spark.read.option("lineSep", "\n").text(list(files))  # "\n" only, as DuckDB splits lines
        raw.selectExpr("value", "_metadata.file_name AS filename").createOrReplaceTempView("raw_lines")
        spark.sql(PARSE_RAW)
        lines_read, valid = _one_row(spark.sql(COUNT_PARSED))
        result.lines_read, result.lines_skipped = lines_read, lines_read - valid
        log_skips(hour, spark.sql(SKIPS_BY_FILE).collect())
        spark.sql(CURATED_SELECT).write.option("compression", "zstd").parquet(spark_path(write_dir))
        parts = sorted(write_dir.glob("part-*.parquet"))  # one partition: one file, even without rows
        if len(parts) != 1:
            raise CompactionFailed(f"hour {hour_label(hour)}: Spark wrote {len(parts)} data files, not 1", listing)
        part = parts[0]
        (result.rows,) = _one_row(spark.read.parquet(spark_path(part)).selectExpr("count(*)"))
        result.duplicates_dropped = valid - result.rows
        fsync_file(part)
        os.replace(part, target)
        fsync_dir(target_dir)
    except PySparkException as exc:  # Spark's errors, the JVM's among them
        raise CompactionFailed(f"hour {hour_label(hour)}: {exc}", listing) from None
    finally:
        shutil.rmtree(write_dir, ignore_errors=True)
        for view in ("parsed", "raw_lines"):
            spark.catalog.dropTempView(view)  # uncached too
    return published(result, target, len(files), "Spark")


def roll_up_spark(
    spark: SparkSession, files: Sequence[Path], thresholds: analytics.Thresholds | None = None
) -> tuple[list[tuple[object, ...]], dict[str, dict[str, Any]] | None]:
    """Per-vehicle statistics of curated ``files`` (rows shaped as :data:`queries.ROLLUP`'s, by vehicle
    id) and, with ``thresholds``, their battery analytics by vehicle id (:func:`analytics.run_spark`)."""
    if not files:
        return [], None
    spark.read.parquet(*(spark_path(path) for path in files)).createOrReplaceTempView("curated_files")
    try:
        rollup = [tuple(row) for row in spark.sql(ROLLUP).collect()]
        blocks = None if thresholds is None else analytics.run_spark(spark, "curated_files", thresholds)
        return rollup, blocks
    finally:
        spark.catalog.dropTempView("curated_files")


def _one_row(frame: DataFrame) -> tuple[int, ...]:
    row = frame.first()
    assert row is not None  # an aggregate without GROUP BY always has one row
    return tuple(int(value) for value in row)
