"""Compact rows to per-vehicle statistics: duplicates dropped, memory bounded, order fixed.

:class:`RowStore` keeps the hour's rows in input order, in memory up to ``memory_rows``,
past that spilled to per-vehicle bucket files (each bucket holds whole vehicles).
:func:`reduce_rows` keeps the first copy read of each natural key and sums in
(vehicle, timestamp, CAN id) order, so the result does not depend on how the work was
split among processes, chunks or buckets.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from src.aggregator.columnar import ROW, Columns
from src.common.schema import SIGNALS

MEMORY_ROWS = 3_000_000
"""Rows held in memory before spilling to disk (72 bytes each, plus the sort's working set)."""
BUCKET_ROWS = 1_000_000
"""Rows a spilled bucket is sized for (from the share of the input read when spilling starts)."""
SPILL_MARGIN = 1.25
"""Headroom on the projected row count when choosing the number of buckets."""


@dataclass
class VehicleTotals:
    """Per vehicle (as codes into the store's vocabulary): count and per-signal min, max and sum."""

    vehicles: np.ndarray  # int32 codes
    counts: np.ndarray  # int64
    mins: np.ndarray  # (vehicles, signals) float64
    maxs: np.ndarray
    sums: np.ndarray
    duplicates: int


class RowStore:
    """The hour's rows in input order: in memory, or spilled into per-vehicle buckets past a budget.

    Chunks come with vocabularies of their own; :meth:`add` maps their codes onto the
    store's, so rows from every chunk share one code per vehicle id and per CAN id.
    """

    def __init__(
        self, spill_parent: Path | None = None, memory_rows: int = MEMORY_ROWS, bucket_rows: int = BUCKET_ROWS
    ) -> None:
        self.spill_parent = spill_parent
        self.memory_rows = memory_rows
        self.bucket_rows = bucket_rows
        self.vehicle_codes: dict[str, int] = {}
        self.can_codes: dict[str, int] = {}
        self.rows = 0
        self._parts: list[Columns] = []
        self._spill_dir: Path | None = None
        self._bucket_files: list[BinaryIO] = []

    @property
    def spilled(self) -> bool:
        return self._spill_dir is not None

    def add(self, readings: Columns, vehicles: Sequence[str], cans: Sequence[str], done: float = 0.0) -> None:
        """Append a chunk's readings; ``done`` is the share of the input read so far (0 if unknown)."""
        if not readings.size:
            return
        vehicle = _codes(self.vehicle_codes, vehicles)[readings.vehicle]
        readings = readings._replace(vehicle=vehicle, can=_codes(self.can_codes, cans)[readings.can])
        self.rows += readings.size
        if not self.spilled and self.rows > self.memory_rows:
            self._start_spilling(done)
        if self.spilled:
            self._spill(readings)
        else:
            self._parts.append(readings)

    def _start_spilling(self, done: float) -> None:
        projected = self.rows / done * SPILL_MARGIN if done > 0 else 2.0 * self.rows
        buckets = max(2, math.ceil(max(projected, self.rows) / self.bucket_rows))
        if self.spill_parent is not None:
            self.spill_parent.mkdir(parents=True, exist_ok=True)
        self._spill_dir = Path(tempfile.mkdtemp(prefix=".aggregate-spill-", dir=self.spill_parent))
        self._bucket_files = [(self._spill_dir / f"bucket-{i:03d}.rows").open("wb") for i in range(buckets)]
        held, self._parts = self._parts, []
        for part in held:
            self._spill(part)

    def _spill(self, readings: Columns) -> None:
        rows = readings.to_rows()
        bucket = readings.vehicle % len(self._bucket_files)
        for i, handle in enumerate(self._bucket_files):
            selected = rows[bucket == i]
            if len(selected):
                handle.write(selected.tobytes())

    def buckets(self) -> Iterator[list[Columns]]:
        """Groups of readings, each holding every reading of its vehicles, in input order; one in memory at a time."""
        for handle in self._bucket_files:
            handle.close()  # complete on disk before it is read back
        if self._spill_dir is None:
            yield self._parts
            return
        for handle in self._bucket_files:
            path = Path(handle.name)
            rows = np.fromfile(path, ROW)
            path.unlink()
            yield [Columns.of_rows(rows)]

    def close(self) -> None:
        """Remove the spill files, if any (also after a failure)."""
        for handle in self._bucket_files:
            handle.close()
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
        self._parts = []

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _codes(codes: dict[str, int], names: Sequence[str]) -> np.ndarray:
    """The store's codes of ``names`` (a chunk's vocabulary), adding names not seen before."""
    return np.array([codes.setdefault(name, len(codes)) for name in names], np.int32)


def ranks(codes: dict[str, int]) -> np.ndarray:
    """For each code, the position of its name in sorted order: a sort key that ignores arrival order."""
    result = np.empty(len(codes), np.int32)
    result[[codes[name] for name in sorted(codes)]] = np.arange(len(codes), dtype=np.int32)
    return result


def reduce_rows(parts: list[Columns], vehicle_rank: np.ndarray, can_rank: np.ndarray) -> VehicleTotals:
    """Statistics per vehicle of ``parts`` (whole vehicles, in input order), each natural key counted once."""
    vehicle = np.concatenate([p.vehicle for p in parts]) if parts else np.empty(0, np.int32)
    if not len(vehicle):
        empty = np.empty((0, len(SIGNALS)))
        return VehicleTotals(np.empty(0, np.int32), np.empty(0, np.int64), empty, empty, empty, 0)
    ts = np.concatenate([p.ts for p in parts])
    can = np.concatenate([p.can for p in parts])
    # Stable: copies of one reading end up adjacent, the first one read first.
    order = np.lexsort((can_rank[can], ts, vehicle_rank[vehicle]))
    vehicle, ts, can = vehicle[order], ts[order], can[order]
    later_copy = np.zeros(len(order), bool)
    later_copy[1:] = (vehicle[1:] == vehicle[:-1]) & (ts[1:] == ts[:-1]) & (can[1:] == can[:-1])
    kept = order[~later_copy]
    vehicle = vehicle[~later_copy]
    del ts, can, order
    starts = np.flatnonzero(np.concatenate(([True], vehicle[1:] != vehicle[:-1])))
    totals = VehicleTotals(
        vehicles=vehicle[starts],
        counts=np.diff(np.append(starts, len(vehicle))),
        mins=np.empty((len(starts), len(SIGNALS))),
        maxs=np.empty((len(starts), len(SIGNALS))),
        sums=np.empty((len(starts), len(SIGNALS))),
        duplicates=int(later_copy.sum()),
    )
    for i in range(len(SIGNALS)):  # one signal at a time: a single column's copy in memory
        column = np.concatenate([p.values[:, i] for p in parts])[kept]
        totals.mins[:, i] = np.minimum.reduceat(column, starts)
        totals.maxs[:, i] = np.maximum.reduceat(column, starts)
        totals.sums[:, i] = np.add.reduceat(column, starts)
    return totals
