"""Curated hours: an hour's raw JSONL compacted by DuckDB into one sorted, deduplicated zstd Parquet file.

``DATA_DIR/curated/<hive hour path>/readings.parquet``: one row per natural key (the copy
with the earliest ``ingest_received_at``), sorted by ``vehicle_id``, ``timestamp``,
``can_id``, with typed columns (:data:`COLUMNS`). Beside it ``_manifest.json`` names the raw
files (and their sizes) the hour was built from, so a later run can tell whether the hour
changed. Both are written atomically (temporary name, fsync, rename), the Parquet first: a
crash leaves the previous complete hour, or a new one whose manifest is missing or stale,
which ``--catch-up`` rebuilds. The same raw files always give the same rows. Lines that are
not a reading are counted and skipped, never fatal; a raw file that cannot be read fails
the hour (:class:`CompactionFailed`, naming it) and writes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from src.aggregator import queries
from src.common.files import fsync_dir, fsync_file, write_atomically
from src.common.layout import batch_file_sizes, hour_label, hour_partition, hour_partitions, partition_hour

log = logging.getLogger(__name__)

PARQUET_NAME = "readings.parquet"
MANIFEST_NAME = "_manifest.json"  # a leading underscore: Spark, Hive and Athena skip it when they read the hour
SPILL_DIR_NAME = "_spill"
SPARK_WRITE_DIR_PREFIX = "_spark-"
"""Spark writes the hour into ``<hour dir>/_spark-<pid>``: readers skip names starting with ``_``."""
MAX_LOGGED_SKIPS = 20


class CompactionFailed(RuntimeError):
    """The hour could not be read completely; nothing was written. ``listing``: the files it tried."""

    def __init__(self, message: str, listing: dict[str, int]) -> None:
        super().__init__(message)
        self.listing = listing


@dataclass
class Compaction:
    """What one hour's compaction read and wrote."""

    hour: datetime
    path: Path | None  # None: the hour has no raw files, so nothing was written
    raw_files: dict[str, int] = field(default_factory=dict)  # batch file name -> size in bytes
    lines_read: int = 0
    lines_skipped: int = 0
    duplicates_dropped: int = 0
    rows: int = 0

    def manifest(self) -> dict[str, Any]:
        document = asdict(self)
        document["hour"] = hour_label(self.hour)
        del document["path"]
        return document

    @classmethod
    def from_manifest(cls, document: dict[str, Any], hour: datetime) -> Compaction:
        """What a manifest says of the compaction that wrote it (``path`` unknown: None)."""
        counts = {name: int(document[name]) for name in ("lines_read", "lines_skipped", "duplicates_dropped", "rows")}
        return cls(hour, None, dict(document["raw_files"]), **counts)


def curated_hour_dir(curated_dir: Path, hour: datetime) -> Path:
    return curated_dir / hour_partition(hour)


def read_manifest(curated_dir: Path, hour: datetime) -> dict[str, Any] | None:
    """The manifest of the curated hour, or None if there is none (or it cannot be read)."""
    path = curated_hour_dir(curated_dir, hour) / MANIFEST_NAME
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError:
        log.warning("%s is not valid JSON: the hour is treated as never curated", path)
        return None
    return document if isinstance(document, dict) else None


def is_current(raw_dir: Path, curated_dir: Path, hour: datetime) -> bool:
    """Whether the curated hour was built from exactly the raw files the hour holds now."""
    manifest = read_manifest(curated_dir, hour)
    return manifest is not None and manifest.get("raw_files") == batch_file_sizes(raw_dir, hour)


def stale_hours(raw_dir: Path, curated_dir: Path) -> list[datetime]:
    """Every raw hour whose curated hour is missing or was built from other raw files, oldest first."""
    hours = [hour for partition in hour_partitions(raw_dir) if (hour := partition_hour(partition)) is not None]
    return sorted(hour for hour in hours if not is_current(raw_dir, curated_dir, hour))


@contextlib.contextmanager
def connect(curated_dir: Path, memory_limit_mb: int, threads: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB held to ``memory_limit_mb``, spilling to a directory of this process's own.

    Spill directories of processes that are gone (``kill -9``, the OOM killer) are removed first.
    """
    spill_root = curated_dir / SPILL_DIR_NAME
    remove_dead_spill_dirs(spill_root)
    spill = spill_root / str(os.getpid())
    spill.mkdir(parents=True, exist_ok=True)
    connection = duckdb.connect(config={"memory_limit": f"{memory_limit_mb}MB", "temp_directory": str(spill)})
    try:
        connection.execute("SET TimeZone = 'UTC'")  # a timestamp without a zone means UTC, on every machine
        connection.execute("SET preserve_insertion_order = false")  # every output is explicitly ordered
        if threads is not None:
            connection.execute(f"SET threads = {int(threads)}")
        yield connection
    finally:
        connection.close()
        shutil.rmtree(spill, ignore_errors=True)


def remove_dead_spill_dirs(spill_root: Path) -> None:
    if not spill_root.is_dir():
        return
    for entry in spill_root.iterdir():
        if entry.name.isdigit() and not _alive(int(entry.name)):
            log.info("removing %s, left by a run that did not finish", entry)
            shutil.rmtree(entry, ignore_errors=True)


def remove_dead_temporaries(target_dir: Path) -> None:
    """Remove what runs that are gone left in an hour's directory: ``.<name>.<pid>.tmp`` files, ``_spark-<pid>``."""
    for entry in target_dir.iterdir():
        pid = _owner(entry.name)
        if pid is not None and not _alive(pid):
            log.info("removing %s, left by a run that did not finish", entry)
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _owner(name: str) -> int | None:
    """The process id in a temporary's name (``.readings.parquet.123.tmp``, ``_spark-123``), or None."""
    if name.startswith(".") and name.endswith(".tmp"):
        pid = name.removesuffix(".tmp").rpartition(".")[2]
    elif name.startswith(SPARK_WRITE_DIR_PREFIX):
        pid = name.removeprefix(SPARK_WRITE_DIR_PREFIX)
    else:
        return None
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def compact_hour(connection: duckdb.DuckDBPyConnection, raw_dir: Path, curated_dir: Path, hour: datetime) -> Compaction:
    """Build the curated hour from the hour's local raw files (see the module's contract)."""
    listing = batch_file_sizes(raw_dir, hour)
    files = [str(raw_dir / hour_partition(hour) / name) for name in sorted(listing)]
    return compact_files(connection, files, listing, curated_dir, hour)


def compact_files(
    connection: duckdb.DuckDBPyConnection,
    files: Sequence[str],
    listing: dict[str, int],
    curated_dir: Path,
    hour: datetime,
) -> Compaction:
    """Build the curated hour from ``files`` (paths DuckDB reads); ``listing`` (names, sizes) goes in the manifest."""
    result, target = started(files, listing, curated_dir, hour)
    if target is None:
        return result
    target_dir = target.parent
    tmp = target_dir / f".{PARQUET_NAME}.{os.getpid()}.tmp"
    try:
        connection.execute(queries.PARSE_RAW, [list(files)])
        result.lines_read, valid = _one_row(connection.execute(queries.COUNT_PARSED))
        result.lines_skipped = result.lines_read - valid
        log_skips(hour, connection.execute(queries.SKIPS_BY_FILE, [MAX_LOGGED_SKIPS]).fetchall())
        (result.rows,) = _one_row(connection.execute(queries.copy_curated(str(tmp))))
        result.duplicates_dropped = valid - result.rows
        fsync_file(tmp)
        os.replace(tmp, target)
        fsync_dir(target_dir)
    except duckdb.Error as exc:
        raise CompactionFailed(f"hour {hour_label(hour)}: {exc}", listing) from None
    finally:
        tmp.unlink(missing_ok=True)
        connection.execute("DROP TABLE IF EXISTS parsed")
    return published(result, target, len(files))


def started(
    files: Sequence[str], listing: dict[str, int], curated_dir: Path, hour: datetime
) -> tuple[Compaction, Path | None]:
    """A compaction's result so far, and where its Parquet file goes (directory made); no target without files."""
    result = Compaction(hour, None, listing)
    if not files:
        log.info("hour %s: no raw files, nothing to curate", hour_label(hour))
        return result, None
    target_dir = curated_hour_dir(curated_dir, hour)
    target_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(target_dir)
    return result, target_dir / PARQUET_NAME


def published(result: Compaction, target: Path, files: int, engine: str = "DuckDB") -> Compaction:
    """``result``, its Parquet file now at ``target``: the manifest written beside it (atomically) and logged."""
    result.path = target
    write_atomically(target.parent / MANIFEST_NAME, orjson.dumps(result.manifest(), option=orjson.OPT_INDENT_2))
    log.info(
        "hour %s: curated %d readings from %d files (%d lines, %d skipped, %d duplicates) into %s with %s",
        hour_label(result.hour),
        result.rows,
        files,
        result.lines_read,
        result.lines_skipped,
        result.duplicates_dropped,
        target,
        engine,
    )
    return result


def _one_row(relation: duckdb.DuckDBPyConnection) -> Sequence[int]:
    row = relation.fetchone()
    assert row is not None  # an aggregate without GROUP BY always has one row
    return tuple(int(value) for value in row)


def log_skips(hour: datetime, skips_by_file: Iterable[Sequence[Any]]) -> None:
    """One warning per file with skipped lines (``(file, count)`` rows, at most :data:`MAX_LOGGED_SKIPS`)."""
    for filename, count in skips_by_file:
        log.warning("hour %s: %s: %d line(s) skipped: not a reading", hour_label(hour), Path(filename).name, count)
