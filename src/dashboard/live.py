"""Each vehicle's latest reading, from this hour's raw batch files, read once each as they appear.

The consumer writes a batch file atomically, so a file that exists is complete and never
changes: :class:`Tailer` lists the hour's partition every poll, reads only the files it has
not read, and keeps one :class:`Latest` per vehicle. A scan is blocking (listing, reading,
parsing with orjson): the caller runs it in a worker thread, one scan at a time.

Bounded: at most ``budget_bytes`` of new files per scan (after a restart mid-hour the newest
files are read and older ones skipped: only the latest values and two minutes of history
matter), at most ``max_vehicles`` vehicles, and only the current hour's files (and the
previous hour's for ``grace_s`` after the hour turns, for batches of its last seconds still
being written). A vehicle whose latest reading was received before the previous hour is
dropped, so the rows are the vehicles of this hour and the last one.

"What it is doing" follows the hourly analytics (docs/battery-analytics.md, "States"):
charging within a charging session (a run of charging readings at least ``session_min_s``
long, with pauses of at most ``session_merge_s`` and no discharge), parked at rest
(|current| <= ``rest_current_a``), driving otherwise (discharge, regeneration, and the first
``session_min_s`` of a charge, which the analytics also counts as driving until it lasts).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from src.common.layout import batch_file_ms, batch_files, hour_start
from src.common.schema import SIGNALS

log = logging.getLogger(__name__)

DRIVING, CHARGING, PARKED = "driving", "charging", "parked"
BUDGET_BYTES = 64 * 1024 * 1024
"""New batch files read per scan at most (a consumer's file is at most FILE_ROTATION_MB, 5 MB by default)."""
MAX_VEHICLES = 20_000
GRACE_S = 120.0
"""How long after the hour turns the previous hour's partition is still listed."""


@dataclass(frozen=True)
class Rules:
    """The analytics' thresholds that decide a state (the aggregate's ``analytics.thresholds`` records them)."""

    rest_current_a: float
    session_merge_s: float
    session_min_s: float


@dataclass(slots=True)
class Latest:
    """One vehicle's newest reading (by its timestamp) and the state the readings so far put it in."""

    at: datetime
    received_at: str
    values: tuple[float, ...]
    """The seven signals, in :data:`SIGNALS` order."""
    state: str
    charging_since: datetime | None = None
    last_charging: datetime | None = None


def next_state(
    previous: Latest | None, at: datetime, current: float, rules: Rules
) -> tuple[str, datetime | None, datetime | None]:
    """(state, charging_since, last_charging) after a reading of ``current`` amperes at ``at``."""
    since, last = (previous.charging_since, previous.last_charging) if previous is not None else (None, None)
    open_session = since is not None and last is not None and at - last <= timedelta(seconds=rules.session_merge_s)
    if current > rules.rest_current_a:
        start = since if open_session and since is not None else at
        lasted = (at - start).total_seconds() >= rules.session_min_s
        return (CHARGING if lasted else DRIVING), start, at
    if current < -rules.rest_current_a:
        return DRIVING, None, None
    if open_session and previous is not None:  # a pause within a session: its state holds until it ends
        return (CHARGING if previous.state == CHARGING else PARKED), since, last
    return PARKED, None, None


def parse_line(line: bytes) -> tuple[str, datetime, str, tuple[float, ...]] | None:
    """(vehicle_id, timestamp, ingest_received_at, signals) of one stored record; None if it is not one."""
    try:
        record = orjson.loads(line)
        payload = record["payload"]
        values = tuple(float(payload[name]) for name in SIGNALS)
        vehicle_id, received = record["vehicle_id"], record["ingest_received_at"]
        at = datetime.fromisoformat(record["timestamp"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(vehicle_id, str) or not isinstance(received, str) or at.tzinfo is None:
        return None
    if not all(math.isfinite(v) for v in values) or any(isinstance(payload[n], bool) for n in SIGNALS):
        return None
    return vehicle_id, at.astimezone(UTC), received, values


@dataclass
class Counts:
    """What the tailer has done since it started (shown on the page's status line)."""

    files_read: int = 0
    files_skipped: int = 0
    readings: int = 0
    lines_skipped: int = 0
    vehicles_dropped: int = 0


@dataclass
class Tailer:
    """Reads each new batch file of the current hour once and keeps every vehicle's latest reading."""

    raw_dir: Path
    rules: Rules
    budget_bytes: int = BUDGET_BYTES
    max_vehicles: int = MAX_VEHICLES
    grace_s: float = GRACE_S
    latest: dict[str, Latest] = field(default_factory=dict)
    seen: dict[datetime, set[str]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    scanned_at: datetime | None = None

    def hours(self, now: datetime) -> list[datetime]:
        """The partitions to list at ``now``: this hour, and the previous one just after the hour turned."""
        this = hour_start(now)
        previous = this - timedelta(hours=1)
        return [previous, this] if (now - this).total_seconds() < self.grace_s else [this]

    def new_files(self, hours: Iterable[datetime]) -> list[tuple[datetime, Path, int]]:
        """The batch files not read yet, oldest first, with their sizes (a file gone since the listing is left out)."""
        found = []
        for hour in hours:
            seen = self.seen.setdefault(hour, set())
            for path in batch_files(self.raw_dir, hour):
                if path.name in seen:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    found.append((hour, path, path.stat().st_size))
        return sorted(found, key=lambda item: (batch_file_ms(item[1].name) or 0, item[1].name))

    def within_budget(self, files: list[tuple[datetime, Path, int]]) -> list[tuple[datetime, Path, int]]:
        """The newest files whose sizes fit the budget (at least the newest one); the rest are marked read."""
        kept: list[tuple[datetime, Path, int]] = []
        total = 0
        for item in reversed(files):
            if kept and total + item[2] > self.budget_bytes:
                break
            kept.append(item)
            total += item[2]
        for hour, path, _ in files[: len(files) - len(kept)]:
            self.seen[hour].add(path.name)
            self.counts.files_skipped += 1
        return kept[::-1]

    def scan(self, now: datetime) -> None:
        """Read the files that appeared since the last scan; blocking (run it in a worker thread)."""
        hours = self.hours(now)
        for stale in [hour for hour in self.seen if hour not in hours]:
            del self.seen[stale]
        for hour, path, _ in self.within_budget(self.new_files(hours)):
            self.seen[hour].add(path.name)
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # pruned between listing and reading: nothing to show from it
                continue
            self.counts.files_read += 1
            self.take(data.splitlines())
        self.forget_before(hour_start(now) - timedelta(hours=1))
        self.scanned_at = now

    def take(self, lines: Iterable[bytes]) -> None:
        """Fold stored records into the vehicles' latest readings; older or repeated timestamps change nothing."""
        for line in lines:
            if not line.strip():
                continue
            parsed = parse_line(line)
            if parsed is None:
                self.counts.lines_skipped += 1
                continue
            vehicle_id, at, received, values = parsed
            self.counts.readings += 1
            previous = self.latest.get(vehicle_id)
            if previous is None and len(self.latest) >= self.max_vehicles:
                self.counts.vehicles_dropped += 1
                continue
            if previous is not None and at <= previous.at:
                continue
            state, since, last = next_state(previous, at, values[2], self.rules)
            self.latest[vehicle_id] = Latest(at, received, values, state, since, last)

    def forget_before(self, cutoff: datetime) -> None:
        """Drop vehicles whose latest reading is older than ``cutoff`` (they no longer send)."""
        for vehicle_id in [v for v, latest in self.latest.items() if latest.at < cutoff]:
            del self.latest[vehicle_id]


def live_row(vehicle_id: str, latest: Latest) -> dict[str, Any]:
    """The live columns of one vehicle's row: its latest reading and its state."""
    soc, voltage, current, v_min, v_max, _, t_max = latest.values
    return {
        "vehicle_id": vehicle_id,
        "at": latest.at.isoformat().replace("+00:00", "Z"),
        "soc": soc,
        "voltage_v": voltage,
        "current_a": current,
        "spread_mv": round((v_max - v_min) * 1000.0, 3),
        "temp_max_c": t_max,
        "state": latest.state,
    }
