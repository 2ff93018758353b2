"""The storage layout of the contract: hive-style hour partitions and batch file names.

The consumer writes this layout, the aggregator and the load test read it; keeping the
naming in one place means they cannot drift apart.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HOUR_LABEL_FORMAT = "%Y-%m-%dT%H"
HourKey = tuple[int, int, int, int]
"""A UTC hour as ``(year, month, day, hour)``: see :func:`hour_key`."""
BATCH_FILE_RE = re.compile(r"^batch-(?P<ms>\d{13})(?:-(?P<writer>[A-Za-z0-9_]+))?\.jsonl$")
PARTITION_RE = re.compile(r"year=(?P<y>\d{4})/month=(?P<m>\d{2})/day=(?P<d>\d{2})/hour=(?P<h>\d{2})$")
AGGREGATED_RE = re.compile(r"^aggregated-(?P<hour>\d{4}-\d{2}-\d{2}T\d{2})\.json$")
FLEET_HEALTH_RE = re.compile(r"^fleet-health-(?P<day>\d{4}-\d{2}-\d{2})\.json$")
S3_RAW_PREFIX = "raw/"
S3_AGGREGATED_PREFIX = "aggregated/"
S3_CURATED_PREFIX = "curated/"
GZIP_SUFFIX = ".gz"


def hour_start(moment: datetime) -> datetime:
    """The UTC hour ``moment`` falls in."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_partition(moment: datetime) -> Path:
    """``year=YYYY/month=MM/day=DD/hour=HH`` for the UTC hour of ``moment``."""
    h = moment.astimezone(UTC)
    return Path(f"year={h:%Y}", f"month={h:%m}", f"day={h:%d}", f"hour={h:%H}")


def hour_key(moment: datetime) -> HourKey:
    """The UTC hour of ``moment`` as ``(year, month, day, hour)``: equal keys, equal partitions.

    For grouping many moments by hour and building one :func:`hour_partition` per group:
    the key costs a fraction of the Path. Moments already in UTC, as every stored record's
    are, skip the conversion.
    """
    utc = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return utc.year, utc.month, utc.day, utc.hour


def hour_of_key(key: HourKey) -> datetime:
    """The start of the UTC hour :func:`hour_key` named ``key``."""
    return datetime(*key, tzinfo=UTC)


def hour_label(moment: datetime) -> str:
    """``YYYY-MM-DDTHH``: how the CLI and the aggregated file names name an hour."""
    return moment.astimezone(UTC).strftime(HOUR_LABEL_FORMAT)


def parse_hour_label(label: str) -> datetime:
    """The start of the UTC hour named ``YYYY-MM-DDTHH``; raises ValueError otherwise."""
    return datetime.strptime(label, HOUR_LABEL_FORMAT).replace(tzinfo=UTC)


def previous_full_hour(now: datetime) -> datetime:
    """The last hour that has fully ended at ``now`` (the aggregator's default)."""
    return hour_start(now) - timedelta(hours=1)


def batch_file_name(durable_at_ms: int, writer_id: str | None = None) -> str:
    """``batch-<13-digit unix ms>[-<writer id>].jsonl``."""
    suffix = f"-{writer_id}" if writer_id else ""
    return f"batch-{durable_at_ms:013d}{suffix}.jsonl"


def batch_file_ms(name: str) -> int | None:
    """The unix ms a batch file name carries, or None if ``name`` is not a batch file."""
    match = BATCH_FILE_RE.match(name)
    return int(match["ms"]) if match else None


def raw_hour_dir(raw_dir: Path, hour: datetime) -> Path:
    return raw_dir / hour_partition(hour)


def batch_files(raw_dir: Path, hour: datetime) -> list[Path]:
    """The complete batch files of one hour, oldest first (temporary files excluded)."""
    directory = raw_hour_dir(raw_dir, hour)
    if not directory.is_dir():
        return []
    return partition_batch_files(directory)


def batch_file_sizes(raw_dir: Path, hour: datetime) -> dict[str, int]:
    """The hour's batch files now, by name, with their sizes (a file that vanished since the listing is left out)."""
    listing: dict[str, int] = {}
    for path in batch_files(raw_dir, hour):
        with contextlib.suppress(FileNotFoundError):
            listing[path.name] = path.stat().st_size
    return listing


def hour_partitions(raw_dir: Path) -> list[Path]:
    """Every hour partition directory under ``raw_dir``, oldest first."""
    if not raw_dir.is_dir():
        return []
    return sorted(p for p in raw_dir.glob("year=*/month=*/day=*/hour=*") if p.is_dir())


def partition_hour(partition: Path) -> datetime | None:
    """The UTC hour a ``.../year=YYYY/month=MM/day=DD/hour=HH`` directory holds; None if it is not one."""
    match = PARTITION_RE.search(partition.as_posix())
    if match is None:
        return None
    try:
        return datetime(int(match["y"]), int(match["m"]), int(match["d"]), int(match["h"]), tzinfo=UTC)
    except ValueError:
        return None


def partition_batch_files(partition: Path) -> list[Path]:
    """The complete batch files of one partition directory, oldest first (temporary files excluded)."""
    return sorted(p for p in partition.iterdir() if batch_file_ms(p.name) is not None)


def raw_hours(raw_dir: Path) -> list[datetime]:
    """The hours under ``raw_dir`` whose partition holds at least one complete batch file, oldest first."""
    return [
        hour
        for partition in hour_partitions(raw_dir)
        if (hour := partition_hour(partition)) is not None and partition_batch_files(partition)
    ]


def aggregated_file_name(hour: datetime) -> str:
    return f"aggregated-{hour_label(hour)}.json"


def fleet_health_file_name(day: date) -> str:
    """``fleet-health-YYYY-MM-DD.json``: the daily job's document for ``day``."""
    return f"fleet-health-{day.isoformat()}.json"


def aggregated_hour(name: str) -> datetime | None:
    """The hour an ``aggregated-<YYYY-MM-DDTHH>.json`` name stands for, or None for any other name."""
    match = AGGREGATED_RE.match(name)
    if match is None:
        return None
    with contextlib.suppress(ValueError):
        return parse_hour_label(match["hour"])
    return None


def fleet_health_day(name: str) -> date | None:
    """The day a ``fleet-health-YYYY-MM-DD.json`` name stands for, or None for any other name."""
    match = FLEET_HEALTH_RE.match(name)
    if match is None:
        return None
    with contextlib.suppress(ValueError):
        return date.fromisoformat(match["day"])
    return None


# -- S3 keys: the local layout under ``raw/`` and ``aggregated/`` (contract, "Storage layout") --


def s3_raw_key(relative: Path, gzipped: bool) -> str:
    """``raw/<hive path>/<file name>[.gz]`` for a batch file at ``relative`` under ``raw_dir``."""
    return S3_RAW_PREFIX + relative.as_posix() + (GZIP_SUFFIX if gzipped else "")


def s3_hour_prefix(hour: datetime) -> str:
    """``raw/year=YYYY/month=MM/day=DD/hour=HH/``: every object of one hour's partition."""
    return f"{S3_RAW_PREFIX}{hour_partition(hour).as_posix()}/"


def s3_batch_name(key: str) -> str | None:
    """The local batch file name an S3 raw key stands for (``.gz`` dropped), or None if it is not one."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(GZIP_SUFFIX):
        name = name[: -len(GZIP_SUFFIX)]
    return name if batch_file_ms(name) is not None else None


def s3_curated_prefix(hour: datetime) -> str:
    """The curated hour's S3 prefix: ``curated/year=…/hour=HH/``."""
    return f"{S3_CURATED_PREFIX}{hour_partition(hour).as_posix()}/"


def s3_aggregated_key(hour: datetime) -> str:
    """``aggregated/aggregated-<YYYY-MM-DDTHH>.json``."""
    return S3_AGGREGATED_PREFIX + aggregated_file_name(hour)
