"""Find readings on disk by natural key: how the demo and the load test prove nothing was lost.

Scans ``DATA_DIR/raw`` incrementally (each complete batch file is read once), remembering
for every natural key when its first copy became durable (the unix ms in the batch file
name), how many copies exist (SQS delivers at least once), and whether any copy sits
outside the hour partition of its ``ingest_received_at``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson

from src.common.layout import batch_file_ms, hour_partition
from src.common.schema import NaturalKey, natural_key_of, parse_timestamp


@dataclass
class DiskIndex:
    raw_dir: Path
    durable_ms: dict[NaturalKey, int] = field(default_factory=dict)
    copies: dict[NaturalKey, int] = field(default_factory=dict)
    files_of: dict[NaturalKey, Path] = field(default_factory=dict)
    misplaced: set[NaturalKey] = field(default_factory=set)
    """Readings found outside the partition of their ``ingest_received_at`` hour."""
    _seen_files: set[Path] = field(default_factory=set)

    def refresh(self) -> int:
        """Read batch files not read before; returns how many new files were read."""
        if not self.raw_dir.is_dir():
            return 0
        new_files = 0
        for path in sorted(self.raw_dir.rglob("batch-*.jsonl")):
            durable_ms = batch_file_ms(path.name)
            if durable_ms is None or path in self._seen_files:
                continue
            self._seen_files.add(path)
            new_files += 1
            partition = path.parent.relative_to(self.raw_dir)
            with path.open("rb") as handle:
                for line in handle:
                    record = orjson.loads(line)
                    key = natural_key_of(record)
                    if hour_partition(parse_timestamp(record["ingest_received_at"])) != partition:
                        self.misplaced.add(key)
                    self.copies[key] = self.copies.get(key, 0) + 1
                    if key not in self.durable_ms or durable_ms < self.durable_ms[key]:
                        self.durable_ms[key] = durable_ms
                        self.files_of[key] = path
        return new_files

    def missing(self, keys: set[NaturalKey]) -> set[NaturalKey]:
        return {key for key in keys if key not in self.durable_ms}

    def duplicates(self, keys: set[NaturalKey]) -> int:
        """Copies beyond the first, among ``keys``."""
        return sum(self.copies[key] - 1 for key in keys if key in self.copies)

    def files_holding(self, keys: set[NaturalKey]) -> set[Path]:
        return {self.files_of[key] for key in keys if key in self.files_of}

    def hours_holding(self, keys: set[NaturalKey]) -> set[datetime]:
        """The hour partitions (read back from the hive path) the readings were written to."""
        hours = set()
        for path in self.files_holding(keys):
            parts = dict(part.split("=", 1) for part in path.parent.relative_to(self.raw_dir).parts)
            hours.add(
                datetime(int(parts["year"]), int(parts["month"]), int(parts["day"]), int(parts["hour"]), tzinfo=UTC)
            )
        return hours
