"""Delete local raw batch files that are safely in S3, for hours older than a cut-off.

    python scripts/prune_local.py [--older-than-hours 48] [--dry-run]

A file is deleted only when its hour ended more than ``--older-than-hours`` ago and S3
lists its object under ``raw/`` (gzipped or not); a file S3 lacks is kept and counted.
Emptied partition directories are removed; ``--dry-run`` deletes nothing. Why:
docs/architecture.md, "The S3 tier".
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from src.common.aws import SyncS3Client, sync_client
from src.common.layout import S3_RAW_PREFIX, hour_partitions, partition_batch_files, partition_hour, s3_batch_name
from src.common.logs import configure_logging
from src.common.settings import CommonSettings

EXIT_OK = 0
EXIT_USAGE = 2
DEFAULT_KEEP_HOURS = 48.0


@dataclass
class PruneReport:
    """What a run deleted (or would delete) and what it kept because S3 lacks it."""

    partitions: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    kept_missing_in_s3: int = 0

    def describe(self, dry_run: bool) -> str:
        verb = "would delete" if dry_run else "deleted"
        return (
            f"{verb} {self.deleted} file(s), {self.deleted_bytes / 1e6:.1f} MB, in {self.partitions} partition(s); "
            f"kept {self.kept_missing_in_s3} file(s) not yet in S3"
        )


def names_in_s3(client: SyncS3Client, bucket: str, raw_dir: Path, partition: Path) -> set[str]:
    """The batch file names S3 holds for one local partition (``.gz`` or not)."""
    prefix = f"{S3_RAW_PREFIX}{partition.relative_to(raw_dir).as_posix()}/"
    names: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            name = s3_batch_name(item["Key"])
            if name is not None:
                names.add(name)
    return names


def prune(
    client: SyncS3Client,
    bucket: str,
    raw_dir: Path,
    cutoff: datetime,
    *,
    dry_run: bool,
    say: Callable[[str], None] = print,
) -> PruneReport:
    """Delete local batch files of hours ending at or before ``cutoff`` that S3 holds."""
    report = PruneReport()
    for partition in hour_partitions(raw_dir):
        hour = partition_hour(partition)
        if hour is None or hour + timedelta(hours=1) > cutoff:
            continue
        files = partition_batch_files(partition)
        present = names_in_s3(client, bucket, raw_dir, partition) if files else set()
        safe = [f for f in files if f.name in present]
        missing = len(files) - len(safe)
        report.kept_missing_in_s3 += missing
        if safe:
            report.partitions += 1
            say(
                f"{partition.relative_to(raw_dir)}: {len(safe)} file(s) in S3" + (f", {missing} not" if missing else "")
            )
        for path in safe:
            report.deleted_bytes += path.stat().st_size
            report.deleted += 1
            if not dry_run:
                path.unlink()
        if not dry_run:
            _remove_empty(partition, raw_dir)
    return report


def _remove_empty(directory: Path, root: Path) -> None:
    """Remove ``directory`` and its parents up to ``root`` while they are empty."""
    while directory != root and directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--older-than-hours",
        type=float,
        default=DEFAULT_KEEP_HOURS,
        help=f"prune hours that ended longer ago than this (default {DEFAULT_KEEP_HOURS:g})",
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be deleted, delete nothing")
    args = parser.parse_args(argv)
    if args.older_than_hours < 0:
        parser.error("--older-than-hours must not be negative")
    return args


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> int:
    args = parse_args(argv)
    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.s3_bucket is None:
        print("error: S3_BUCKET is not set: nothing can be known to be safe in S3", file=sys.stderr)
        return EXIT_USAGE
    cutoff = now() - timedelta(hours=args.older_than_hours)
    report = prune(sync_client("s3", settings), settings.s3_bucket, settings.raw_dir, cutoff, dry_run=args.dry_run)
    print(report.describe(args.dry_run))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
