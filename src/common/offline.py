"""An offline fleet as the pipeline would have stored it, for tools and tests (never for the services).

:func:`simulate` runs the simulator's command line offline (``--output``, ``--aging``, faults and
``--truth-json``) as its own process; :func:`lay_out` writes its lines as the consumer stores them
(``raw/<hive hour>/batch-<ms>.jsonl``, each line the reading plus ``ingest_received_at``, received when
stamped). The battery-analytics scorecard and ``make dashboard``'s history build on them; only the
simulator's command and the contract's layout are shared, no service's internals.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from src.common.layout import raw_hour_dir
from src.common.schema import format_timestamp

START = datetime(2026, 1, 1, tzinfo=UTC)
"""Where an offline run starts unless told otherwise."""

Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""


def simulate(
    directory: Path,
    vehicles: int,
    days: int,
    faults: int,
    rate_ms: int,
    seed: int,
    *,
    duration_s: int | None = None,
    faults_at_start: int = 0,
    fault_kinds: str | None = None,
    start: datetime = START,
    progress: Progress = quiet,
) -> tuple[Path, Path]:
    """Run the simulator offline from ``start``; returns (readings JSONL, truth JSON)."""
    jsonl, truth = directory / "readings.jsonl", directory / "truth.json"
    duration = duration_s if duration_s is not None else days * 86400
    command = [
        sys.executable, "-m", "src.generator.simulator", "--vehicles", str(vehicles), "--duration", str(duration),
        "--rate-ms", str(rate_ms), "--seed", str(seed), "--aging", "--faults", str(faults),
        "--truth-json", str(truth), "--output", str(jsonl), "--start", format_timestamp(start),
    ]  # fmt: skip
    if faults_at_start:
        command += ["--faults-at-start", str(faults_at_start)]
    if fault_kinds:
        command += ["--fault-kinds", fault_kinds]
    expected = vehicles * duration * 1000 // rate_ms
    progress(f"simulating {vehicles} vehicles x {duration} s at {rate_ms} ms: {expected:,} readings")
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as child:
        while True:
            try:
                child.wait(timeout=30)
                break
            except subprocess.TimeoutExpired:
                size = jsonl.stat().st_size if jsonl.exists() else 0
                progress(f"  simulating: {size / 1e6:,.0f} MB written, {time.monotonic() - started:,.0f} s")
        error = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if child.returncode != 0:
        raise RuntimeError(f"the simulator exited {child.returncode}: {error.strip()[-2000:]}")
    progress(f"  simulated in {time.monotonic() - started:,.0f} s")
    return jsonl, truth


def lay_out(jsonl: Path, raw_dir: Path, progress: Progress = quiet) -> list[datetime]:
    """The simulator's offline lines as the consumer stores them: one batch file per hour, received when stamped.

    Lines are edited as bytes (the offline form is fixed: ``{"timestamp":"<27 characters>",...}``), which is
    several times faster than parsing 40 million of them.
    """
    files: dict[datetime, Any] = {}
    marker = b'"timestamp":"'
    count = 0
    try:
        with jsonl.open("rb") as lines:
            for line in lines:
                at = line.index(marker) + len(marker)
                stamp = line[at : line.index(b'"', at)]
                hour = datetime.fromisoformat(stamp[:13].decode() + ":00:00+00:00")
                if hour not in files:
                    directory = raw_hour_dir(raw_dir, hour)
                    directory.mkdir(parents=True, exist_ok=True)
                    files[hour] = (directory / f"batch-{int(hour.timestamp() * 1000)}.jsonl").open("wb")
                    progress(f"  laying out {hour:%Y-%m-%dT%H} ({count:,} readings so far)")
                files[hour].write(line.rstrip()[:-1] + b',"ingest_received_at":"' + stamp + b'"}\n')
                count += 1
    finally:
        for handle in files.values():
            handle.close()
    return sorted(files)
