"""Batch files on disk: hour partitions, size rotation, atomic and durable writes.

Each file is written as a ``.batch-*.tmp`` dot-file in its final directory (readers
ignore those), fsynced, renamed into place and its directory fsynced: a file that exists
under a batch name is complete and durable. Everything here blocks; the consumer calls
it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from src.common.envelope import serialize
from src.common.files import fsync_dir
from src.common.layout import HourKey, batch_file_name, hour_key, hour_of_key, hour_partition
from src.common.schema import StoredReading

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
STALE_TMP_AGE_S = 600.0
"""A temporary file this old belongs to a crashed writer (a write takes milliseconds)."""


def new_writer_id() -> str:
    """A random 8-hex id, so consumers sharing a DATA_DIR never pick the same file name."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class WrittenFile:
    path: Path
    readings: int
    bytes: int


@dataclass(frozen=True)
class WriteResult:
    """What one batch became on disk; ``durable_at`` (unix seconds) is after the last fsync."""

    files: tuple[WrittenFile, ...]
    durable_at: float

    @property
    def readings(self) -> int:
        return sum(f.readings for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)


class BatchWriter:
    """Writes batches of records under ``raw_dir``; safe to call from several threads.

    File names are ``batch-<ms>-<writer_id>_<seq>.jsonl``: the millisecond the file's data
    became durable, plus this process's writer id and a per-process sequence number, so
    neither concurrent flushes nor several consumers on one DATA_DIR can collide.
    """

    def __init__(
        self,
        raw_dir: Path,
        writer_id: str,
        rotation_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rotation_bytes <= 0:
            raise ValueError("rotation_bytes must be positive")
        self.raw_dir = raw_dir
        self.writer_id = writer_id
        self.rotation_bytes = rotation_bytes
        self._clock = clock
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def write(self, records: Iterable[StoredReading]) -> WriteResult:
        """Write ``records`` grouped by the UTC hour of ``ingest_received_at``; raises OSError."""
        written: list[WrittenFile] = []
        for partition, lines in lines_by_partition(records).items():
            directory = self.raw_dir / partition
            self._ensure_dir(directory)
            for chunk in split_lines(lines, self.rotation_bytes):
                written.append(self._write_file(directory, chunk))
        return WriteResult(files=tuple(written), durable_at=self._clock())

    def remove_stale_tmp(self, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
        """Delete temporary files older than ``max_age_s``: a crashed writer's leftovers.

        Their messages were never deleted from SQS, so the readings come again; a younger
        temporary file may belong to another live consumer and is left alone.
        """
        if not self.raw_dir.is_dir():
            return []
        cutoff = self._clock() - max_age_s
        removed: list[Path] = []
        for path in self.raw_dir.rglob(f".*{TMP_SUFFIX}"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:  # another consumer cleaned it first
                continue
        if removed:
            log.warning("removed %d stale temporary file(s) under %s", len(removed), self.raw_dir)
        return removed

    def _next_seq(self) -> int:
        with self._lock:
            return next(self._seq)

    def _write_file(self, directory: Path, lines: Sequence[bytes]) -> WrittenFile:
        seq = self._next_seq()
        tag = f"{self.writer_id}_{seq:06d}"
        tmp = directory / f".batch-{tag}{TMP_SUFFIX}"
        data = b"".join(lines)
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            final = directory / batch_file_name(int(self._clock() * 1000), tag)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(directory)
        return WrittenFile(path=final, readings=len(lines), bytes=len(data))

    @staticmethod
    def _ensure_dir(directory: Path) -> None:
        """Create missing directories, fsyncing each new one's parent so the entry persists."""
        missing: list[Path] = []
        probe = directory
        while not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            try:
                path.mkdir()
            except FileExistsError:  # a concurrent flush made it
                continue
            fsync_dir(path.parent)


def lines_by_partition(records: Iterable[StoredReading]) -> dict[Path, list[bytes]]:
    """Each record's JSONL line under the hour partition of its ``ingest_received_at``.

    Partitions come in the order of their first record, lines in the order of their
    records. One Path per partition, not per record: this is the consumer's hot path.
    """
    groups: defaultdict[HourKey, list[bytes]] = defaultdict(list)
    for record in records:
        groups[hour_key(record.ingest_received_at)].append(serialize(record) + b"\n")
    return {hour_partition(hour_of_key(key)): lines for key, lines in groups.items()}


def split_lines(lines: Sequence[bytes], max_bytes: int) -> list[list[bytes]]:
    """Consecutive groups of ``lines`` of at most ``max_bytes`` each (a longer line stands alone)."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        if current and size + len(line) > max_bytes:
            groups.append(current)
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        groups.append(current)
    return groups
