"""`make dashboard`'s history: the hours before the live stream, simulated offline and stored as the consumer would.

So that the fleet and vehicle pages have hours to show from the first minute, the hours from
``HISTORY`` hours before the current one up to now are simulated offline (the simulator's
command line, at one reading per vehicle per second), laid out as the consumer stores readings
(one batch file per hour, received when stamped) and moved into ``DATA_DIR/raw`` one complete
file at a time. Then the hourly job runs for every full hour that has raw files but no
aggregate, and the daily job for every day of those hours, each as its own process with the
contract's command line, as cron runs them. Hours already on disk (an earlier run) are never
simulated again: history starts after the newest hour holding raw files.

Simulating and laying out reuse the scorecard's :func:`~src.aggregator.scorecard.simulate` and
:func:`~src.aggregator.scorecard.lay_out` (one definition of "as the consumer stores them");
the jobs run as processes, so nothing here depends on the aggregator's internals.
Why: docs/dashboard.md, "make dashboard".
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from src.common.layout import (
    aggregated_file_name,
    hour_label,
    hour_start,
    partition_batch_files,
    raw_hour_dir,
    raw_hours,
)
from src.common.offline import lay_out, simulate

HISTORY_RATE_MS = 1000
"""The default: one reading per vehicle per second, five times fewer readings than live for the same hours,
which the battery analytics handle as well (docs/battery-analytics.md); 10 vehicles x 3 hours simulate in ~7 s."""
HOUR = timedelta(hours=1)

Say = Callable[[str], None]


@dataclass(frozen=True)
class FleetOptions:
    """The fleet both the history and the live stream simulate: the same seed draws the same packs and faults."""

    vehicles: int
    faults: int
    fault_kinds: str
    seed: int
    history_rate_ms: int = HISTORY_RATE_MS
    """The history's period of one reading per vehicle (live is always the simulator's 200 ms)."""


def newest_raw_hour(raw_dir: Path) -> datetime | None:
    """The newest hour partition under ``raw_dir`` holding a batch file; None when there is none."""
    hours = raw_hours(raw_dir)
    return hours[-1] if hours else None


def history_window(now: datetime, hours: int, newest_on_disk: datetime | None) -> tuple[datetime, datetime] | None:
    """The span to simulate: from ``hours`` full hours before ``now``'s hour, or from the hour after the newest
    one on disk if later, up to ``now``; None when there is nothing to simulate."""
    if hours <= 0:
        return None
    start = hour_start(now) - hours * HOUR
    if newest_on_disk is not None and newest_on_disk >= start:
        start = newest_on_disk + HOUR
    if (now - start).total_seconds() < 1:
        return None
    return start, now


def unaggregated_hours(data_dir: Path, since: datetime, before: datetime) -> list[datetime]:
    """Full hours in [since, before) with raw batch files and no ``aggregated-<hour>.json``, oldest first."""
    hours = []
    hour = hour_start(since)
    while hour < before:
        partition = raw_hour_dir(data_dir / "raw", hour)
        aggregate = data_dir / "aggregated" / aggregated_file_name(hour)
        if partition.is_dir() and partition_batch_files(partition) and not aggregate.exists():
            hours.append(hour)
        hour += HOUR
    return hours


def simulate_history(
    data_dir: Path, window: tuple[datetime, datetime], fleet: FleetOptions, say: Say
) -> list[datetime]:
    """Simulate ``window`` offline and move its hours into ``DATA_DIR/raw``; the hours written.

    Everything is written under a temporary directory inside ``data_dir`` (the same file
    system) and each hour's file renamed into place, so a file under ``raw/`` is always complete,
    as the contract promises for the consumer's files.
    """
    start, end = window
    seconds = int((end - start).total_seconds())
    every = f"one reading per vehicle every {fleet.history_rate_ms / 1000:g} s"
    say(f"history: simulating {hour_label(start)}:00 to {end:%H:%M:%S} UTC offline ({seconds:,} s, {every})")
    with tempfile.TemporaryDirectory(prefix=".history-", dir=data_dir) as tmp:
        staging = Path(tmp)
        jsonl, _ = simulate(
            staging,
            fleet.vehicles,
            0,
            fleet.faults,
            fleet.history_rate_ms,
            fleet.seed,
            duration_s=seconds,
            faults_at_start=fleet.faults,
            fault_kinds=fleet.fault_kinds or None,
            start=start,
            progress=say,
        )
        hours = lay_out(jsonl, staging / "raw")
        for hour in hours:
            target = raw_hour_dir(data_dir / "raw", hour)
            target.mkdir(parents=True, exist_ok=True)
            for path in partition_batch_files(raw_hour_dir(staging / "raw", hour)):
                path.rename(target / path.name)
    say(f"history: {len(hours)} hour(s) of readings in {data_dir / 'raw'}")
    return hours


def run_jobs(hours: Sequence[datetime], env: Mapping[str, str], log_path: Path, say: Say) -> list[str]:
    """The hourly job for each of ``hours``, then the daily job for each of their days (so far), as processes
    with the contract's commands, output appended to ``log_path``; the commands that failed."""
    failed = []
    days: list[date] = sorted({hour.astimezone(UTC).date() for hour in hours})
    commands = [("hourly job", hour_label(h), ["src.aggregator.hourly_stats", "--hour", hour_label(h)]) for h in hours]
    commands += [("daily job", d.isoformat(), ["src.aggregator.fleet_health", "--day", d.isoformat()]) for d in days]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for what, label, args in commands:
        started = time.monotonic()
        with log_path.open("ab") as log:
            status = subprocess.run(
                [sys.executable, "-m", *args], env=dict(env), stdout=log, stderr=subprocess.STDOUT, check=False
            ).returncode
        took = time.monotonic() - started
        if status == 0:
            say(f"{what} {label}: done in {took:.1f} s")
        else:
            say(f"{what} {label}: FAILED with exit status {status} (see {log_path})")
            failed.append(f"{what} {label}")
    return failed
