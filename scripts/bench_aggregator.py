"""Time the hourly aggregator against DuckDB computing the same aggregate over the same files.

    python scripts/bench_aggregator.py                                  # 2,000,000 readings, 1,000 vehicles
    python scripts/bench_aggregator.py --data-dir /tmp/aggbench --repeat 5 --report-json bench.json

The hour is made once and reused (``--data-dir``; ``--regenerate`` makes it anew): the
offline simulator produces the readings (``--vehicles`` for as long as ``--readings``
needs at one reading per vehicle per 200 ms), then they are stored as the consumer
stores them: hive-partitioned ``batch-<13-digit ms>-<writer>_<seq>.jsonl`` files of a
few hundred records each, every line the reading plus ``ingest_received_at``, two
writers interleaved, ``--duplicate-rate`` of the readings redelivered into a later file
(SQS delivers at least once) and ``--corrupt`` damaged lines (truncated or garbage).
Every vehicle's clock is offset by a fixed random ``0..--clock-skew-ms`` milliseconds, as
unsynchronised gateways are, so timestamps are not shared by the whole fleet.

Then, ``--repeat`` times each, interleaved: our aggregator (its command line, as cron
runs it) and DuckDB (``read_ndjson`` with an explicit schema, duplicates dropped by
natural key, then count/min/max/avg per vehicle of the seven signals) with its default
threads and with one thread. Every command runs as a child process; its peak memory is
the sum of the resident sets of its process tree, sampled every 20 ms, and the largest
single process's ``ru_maxrss``. The results must agree (counts, min and max exactly,
averages within 1e-6), or the script exits 1. DuckDB is a runtime dependency (``requirements.txt``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from src.common.layout import batch_file_name, hour_label, parse_hour_label, raw_hour_dir
from src.common.schema import SIGNALS, format_timestamp

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout, for the files this script reads and writes

MANIFEST = "bench-manifest.json"
PERIOD_MS = 200
AVG_TOLERANCE = 1e-6 + 1e-9
"""Averages are rounded to 6 decimals: two may differ by one unit in the last place (a tie broken by float error)."""
SAMPLE_INTERVAL_S = 0.02
SEGMENT_TICKS = 2_000
"""The simulator runs 400 simulated seconds at a time: the generator holds one segment's lines, not the hour's."""
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="where the hour is made or reused (default: a temporary one)")
    parser.add_argument("--readings", type=int, default=2_000_000, help="distinct readings in the hour")
    parser.add_argument("--vehicles", type=int, default=1_000)
    parser.add_argument("--hour", default="2026-01-01T10", help="UTC hour YYYY-MM-DDTHH")
    parser.add_argument("--duplicate-rate", type=float, default=0.01, help="share of readings stored twice")
    parser.add_argument("--corrupt", type=int, default=6, help="damaged lines (truncated or garbage)")
    parser.add_argument("--clock-skew-ms", type=int, default=200, help="each vehicle's clock offset: 0..this ms")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--regenerate", action="store_true", help="make the hour anew even if it exists")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each command; medians are reported")
    parser.add_argument("--no-single-thread", action="store_true", help="skip DuckDB with threads=1")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also time this other version of src/aggregator/hourly_stats.py (e.g. from `git show`), run as a script",
    )
    parser.add_argument("--report-json", type=Path, help="also write the results here")
    parser.add_argument("--generate-only", action="store_true", help="make (or reuse) the hour, then stop")
    return parser.parse_args(argv)


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


# --- the hour's files -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HourSpec:
    readings: int
    vehicles: int
    hour: str
    duplicate_rate: float
    corrupt: int
    clock_skew_ms: int
    seed: int


def hour_is_there(data_dir: Path, spec: HourSpec) -> bool:
    manifest = data_dir / MANIFEST
    return manifest.exists() and orjson.loads(manifest.read_bytes()) == asdict(spec)


def ensure_hour(data_dir: Path, spec: HourSpec, regenerate: bool) -> Path:
    """The hour's raw directory, made unless an identical one is already there."""
    hour = parse_hour_label(spec.hour)
    directory = raw_hour_dir(data_dir / "raw", hour)
    manifest = data_dir / MANIFEST
    if not regenerate and hour_is_there(data_dir, spec):
        say(f"reusing {directory} ({sum(1 for _ in directory.iterdir())} files)")
        return directory
    manifest.unlink(missing_ok=True)
    if directory.exists():
        for old in directory.iterdir():
            old.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    ticks = -(-spec.readings // spec.vehicles)
    # Start 5 minutes into the hour, earlier if the readings would not fit.
    start = hour + timedelta(seconds=max(0.0, min(300.0, 3600.0 - ticks * PERIOD_MS / 1000 - 60.0)))
    segments = range(0, ticks, SEGMENT_TICKS)
    store = ConsumerLikeStore(directory, spec)
    simulated = data_dir / "simulated.jsonl"
    for number, first_tick in enumerate(segments):
        segment_ticks = min(SEGMENT_TICKS, ticks - first_tick)
        segment_start = start + timedelta(milliseconds=first_tick * PERIOD_MS)
        simulate(simulated, spec.vehicles, segment_ticks, segment_start, spec.seed + number)
        damaged = spec.corrupt // len(segments) + (number < spec.corrupt % len(segments))
        store.add_segment(simulated, spec.readings - store.readings, damaged)
        simulated.unlink()
    size_mb = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
    say(
        f"stored {store.lines:,} lines ({store.redelivered:,} redelivered, {spec.corrupt} damaged) in "
        f"{store.files:,} files, {size_mb:,.0f} MB, under {directory}"
    )
    manifest.write_bytes(orjson.dumps(asdict(spec)))
    return directory


def simulate(target: Path, vehicles: int, ticks: int, start: datetime, seed: int) -> None:
    """Run the offline simulator for ``ticks`` readings per vehicle, showing its progress."""
    duration_s = ticks * PERIOD_MS / 1000
    say(f"simulating {vehicles} vehicles for {duration_s:g} s from {format_timestamp(start)} (offline simulator)")
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", str(vehicles)]
    command += ["--duration", f"{duration_s}", "--output", str(target), "--start", format_timestamp(start)]
    subprocess.run([*command, "--seed", str(seed)], cwd=REPO_ROOT, check=True)


class ConsumerLikeStore:
    """Writes simulated readings as the consumer's batch files (see the module docstring), segment by segment."""

    def __init__(self, directory: Path, spec: HourSpec) -> None:
        self.directory = directory
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.vehicle_offset_us: dict[str, int] = {}  # each gateway's clock error, the same all hour
        self.stamps: dict[int, str] = {}
        self.writers = [f"{int(w):08x}" for w in self.rng.integers(0, 2**32, size=2)]
        self.sequences = [0, 0]
        self.readings = self.redelivered = self.lines = self.files = 0

    def stamp(self, us: int) -> str:
        text = self.stamps.get(us)
        if text is None:
            text = self.stamps[us] = format_timestamp(EPOCH + timedelta(microseconds=us))
        return text

    def add_segment(self, simulated: Path, limit: int, damaged: int) -> None:
        rng = self.rng
        lines: list[bytes] = []
        arrival_ms: list[int] = []
        started = time.monotonic()
        self.stamps.clear()
        with simulated.open("rb") as source:
            for raw in source:
                if len(lines) >= limit:
                    break
                reading = orjson.loads(raw)
                vid = reading["vehicle_id"]
                offset = self.vehicle_offset_us.get(vid)
                if offset is None:
                    offset = self.vehicle_offset_us[vid] = int(rng.integers(0, self.spec.clock_skew_ms + 1)) * 1000
                taken_us = (datetime.fromisoformat(reading["timestamp"]) - EPOCH) // timedelta(microseconds=1) + offset
                received_us = taken_us + int(20_000 + rng.exponential(150_000))
                reading["timestamp"] = self.stamp(taken_us)
                reading["ingest_received_at"] = self.stamp(received_us)
                lines.append(orjson.dumps(reading) + b"\n")
                arrival_ms.append(received_us // 1000 + 10)
                if len(lines) % 500_000 == 0:
                    say(f"  {self.readings + len(lines):>11,} readings stored ({time.monotonic() - started:.1f} s)")
        self.readings += len(lines)
        # Redeliveries: the same line again, after the 30 s visibility timeout, in a later file.
        duplicates = rng.choice(len(lines), size=round(len(lines) * self.spec.duplicate_rate), replace=False)
        for index in duplicates.tolist():
            lines.append(lines[index])
            arrival_ms.append(arrival_ms[index] + 30_000 + int(rng.integers(0, 5_000)))
        self.redelivered += len(duplicates)
        order = np.argsort(np.asarray(arrival_ms), kind="stable").tolist()
        # Damage: a line cut short (a torn write) or garbage, before randomly chosen lines.
        for n, at in enumerate(sorted(rng.choice(len(order), size=damaged, replace=False).tolist(), reverse=True)):
            lines.append(lines[order[at]][: int(rng.integers(5, 60))] + b"\n" if n % 2 else b"\x00\x07garbage\n")
            arrival_ms.append(arrival_ms[order[at]])
            order.insert(at, len(lines) - 1)
        self.lines += len(lines)
        position = 0
        while position < len(order):
            chunk = order[position : position + int(rng.integers(100, 1_001))]
            position += len(chunk)
            writer = int(rng.integers(0, 2))
            name = batch_file_name(arrival_ms[chunk[-1]] + 5, f"{self.writers[writer]}_{self.sequences[writer]:06d}")
            self.sequences[writer] += 1
            (self.directory / name).write_bytes(b"".join(lines[i] for i in chunk))
            self.files += 1


# --- running and measuring a command ----------------------------------------------------------------------------


def tree_memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` and its descendants, in KiB; (0, 0) once it is gone.

    The RSS sum counts pages shared between processes (forked workers) once per process,
    so it overstates; PSS shares them out and sums to the memory the tree really holds.
    """
    rss = pss = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            with open(f"/proc/{current}/smaps_rollup", "rb") as rollup:
                for line in rollup:
                    if line.startswith(b"Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith(b"Pss:"):
                        pss += int(line.split()[1])
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children", "rb") as children:
                    pending.extend(int(c) for c in children.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return rss, pss


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float
    peak_tree_mb: float  # RSS summed over the process tree (shared pages counted in every process)
    peak_pss_mb: float  # PSS summed over the process tree
    peak_process_mb: float  # the largest single process (ru_maxrss)


def measure(command: list[str], env: dict[str, str]) -> Measured:
    """Run ``command``; its wall time and peak memory (process tree sampled, largest process exact)."""
    peak = peak_pss = 0
    done = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def sample() -> None:
        nonlocal peak, peak_pss
        while not done.is_set():
            rss, pss = tree_memory_kb(process.pid)
            peak, peak_pss = max(peak, rss), max(peak_pss, pss)
            done.wait(SAMPLE_INTERVAL_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    out = process.stdout.read() if process.stdout else b""
    err = process.stderr.read() if process.stderr else b""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{out.decode()}\n{err.decode()}")
    largest = usage.ru_maxrss / 1024
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(seconds, cpu, max(peak / 1024, largest), max(peak_pss / 1024, largest), largest)


# --- DuckDB -----------------------------------------------------------------------------------------------------

DUCKDB_QUERY = """
WITH readings AS (
    SELECT * FROM read_ndjson(?, columns = {columns}, ignore_errors = true, format = 'newline_delimited')
    WHERE vehicle_id IS NOT NULL AND can_id IS NOT NULL AND "timestamp" IS NOT NULL
),
distinct_readings AS (
    SELECT DISTINCT ON (vehicle_id, can_id, "timestamp") * FROM readings
)
SELECT vehicle_id, count(*) AS message_count, {signals}
FROM distinct_readings GROUP BY vehicle_id ORDER BY vehicle_id
"""


def duckdb_query() -> str:
    payload = ", ".join(f"{name} DOUBLE" for name in SIGNALS)
    columns = (
        f"{{'timestamp': 'TIMESTAMPTZ', 'vehicle_id': 'VARCHAR', 'can_id': 'VARCHAR', 'payload': 'STRUCT({payload})'}}"
    )
    signals = ", ".join(
        f"min(payload.{n}) AS {n}_min, max(payload.{n}) AS {n}_max, avg(payload.{n}) AS {n}_avg" for n in SIGNALS
    )
    return DUCKDB_QUERY.format(columns=columns, signals=signals)


DUCKDB_CHILD = """
import json, sys
import duckdb
glob, threads, out, query = sys.argv[1:5]
connection = duckdb.connect()
if threads != "default":
    connection.execute(f"SET threads = {int(threads)}")
connection.execute("SET TimeZone = 'UTC'")
with open(out, "w") as handle:
    json.dump(connection.execute(query, [glob]).fetchall(), handle)
"""
"""The DuckDB side: a child process that imports nothing but duckdb, so its start-up is not handicapped."""


def duckdb_vehicles(out: Path) -> list[dict[str, Any]]:
    """The DuckDB child's rows as the aggregate's per-vehicle entries."""
    vehicles = []
    for row in orjson.loads(out.read_bytes()):
        entry: dict[str, Any] = {"vehicle_id": row[0], "message_count": row[1]}
        for i, name in enumerate(SIGNALS):
            entry[name] = {"min": row[2 + 3 * i], "max": row[3 + 3 * i], "avg": row[4 + 3 * i]}
        vehicles.append(entry)
    return vehicles


def disagreements(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[str]:
    """Where the two aggregates differ beyond what the check allows (empty when they agree)."""
    problems: list[str] = []
    if [v["vehicle_id"] for v in ours] != [v["vehicle_id"] for v in theirs]:
        return ["the vehicles differ"]
    for a, b in zip(ours, theirs, strict=True):
        vid = a["vehicle_id"]
        if a["message_count"] != b["message_count"]:
            problems.append(f"{vid}: message_count {a['message_count']} != {b['message_count']}")
        for name in SIGNALS:
            if a[name]["min"] != b[name]["min"] or a[name]["max"] != b[name]["max"]:
                problems.append(f"{vid} {name}: min/max {a[name]} != {b[name]}")
            if abs(a[name]["avg"] - b[name]["avg"]) > AVG_TOLERANCE:
                problems.append(f"{vid} {name}: avg {a[name]['avg']} vs {b[name]['avg']}")
    return problems


# --- the comparison ---------------------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-aggregator-") as scratch:
        data_dir = (args.data_dir or Path(scratch) / "data").resolve()
        spec = HourSpec(
            args.readings, args.vehicles, args.hour, args.duplicate_rate, args.corrupt, args.clock_skew_ms, args.seed
        )
        if args.generate_only:
            ensure_hour(data_dir, spec, args.regenerate)
            return 0
        if args.regenerate or not hour_is_there(data_dir, spec):
            # In a child of its own: the generator's memory must not count towards the measured commands.
            command = [sys.executable, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])]
            subprocess.run([*command, "--generate-only", "--data-dir", str(data_dir)], check=True)
        return compare(args, data_dir, Path(scratch), raw_hour_dir(data_dir / "raw", parse_hour_label(args.hour)))


def compare(args: argparse.Namespace, data_dir: Path, scratch: Path, directory: Path) -> int:
    label = hour_label(parse_hour_label(args.hour))
    env = {**os.environ, "DATA_DIR": str(data_dir), "LOG_LEVEL": "ERROR"}
    envs: dict[str, dict[str, str]] = {}
    commands: dict[str, list[str]] = {
        "aggregator": [sys.executable, "-m", "src.aggregator.hourly_stats", "--hour", label]
    }
    glob = str(directory / "batch-*.jsonl")
    duck = [sys.executable, "-c", DUCKDB_CHILD, glob]
    commands["duckdb"] = [*duck, "default", str(scratch / "duckdb-2.json"), duckdb_query()]
    if not args.no_single_thread:
        commands["duckdb threads=1"] = [*duck, "1", str(scratch / "duckdb-1.json"), duckdb_query()]
    if args.baseline:  # its own DATA_DIR, sharing raw/, so its output does not replace ours
        (scratch / "baseline").mkdir()
        (scratch / "baseline" / "raw").symlink_to(data_dir / "raw")
        envs["baseline"] = {**env, "DATA_DIR": str(scratch / "baseline")}
        commands["baseline"] = [sys.executable, str(args.baseline.resolve()), "--hour", label]
    runs: dict[str, list[Measured]] = {name: [] for name in commands}
    say(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    for attempt in range(1, args.repeat + 1):
        for name, command in commands.items():
            result = measure(command, envs.get(name, env))
            runs[name].append(result)
            say(
                f"run {attempt}/{args.repeat} {name:<17} {result.seconds:7.2f} s  cpu {result.cpu_seconds:6.2f} s  "
                f"peak RSS {result.peak_tree_mb:6.0f} MB, PSS {result.peak_pss_mb:6.0f} MB  (load {load_average()})"
            )

    document = orjson.loads((data_dir / "aggregated" / f"aggregated-{label}.json").read_bytes())
    vehicles = document["vehicles"]
    readings = document["quality"]["readings"]
    problems: list[str] = []
    for name, command in commands.items():
        if name.startswith("duckdb"):
            theirs = duckdb_vehicles(Path(command[-2]))
            problems += [f"{name}: {p}" for p in disagreements(vehicles, theirs)]
    report: dict[str, Any] = {
        "readings": readings,
        "vehicles": len(vehicles),
        "quality": document["quality"],
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "agree": not problems,
        "results": {},
    }
    if args.baseline:
        baseline = orjson.loads((scratch / "baseline" / "aggregated" / f"aggregated-{label}.json").read_bytes())
        report["baseline_identical"] = baseline == document
        report["baseline_disagreements"] = disagreements(vehicles, baseline["vehicles"])
        problems += [f"baseline: {p}" for p in report["baseline_disagreements"]]

    print()
    print(f"{readings:,} readings from {len(vehicles):,} vehicles, quality {document['quality']}")
    print(
        *("command".ljust(18), "median s", "  min s", "  cpu s", " readings/s", " peak RSS MB", "PSS MB", "largest MB")
    )
    median_of: dict[str, float] = {}
    for name, measured in runs.items():
        seconds = median_of[name] = statistics.median(m.seconds for m in measured)
        cpu = statistics.median(m.cpu_seconds for m in measured)
        peak = max(m.peak_tree_mb for m in measured)
        pss = max(m.peak_pss_mb for m in measured)
        largest = max(m.peak_process_mb for m in measured)
        print(
            f"{name:<18} {seconds:9.2f} {min(m.seconds for m in measured):7.2f} {cpu:7.2f} {readings / seconds:11,.0f} "
            f"{peak:12.0f} {pss:6.0f} {largest:10.0f}"
        )
        report["results"][name] = {
            "median_s": seconds,
            "runs_s": [m.seconds for m in measured],
            "median_cpu_s": cpu,
            "readings_per_s": readings / seconds,
            "peak_rss_mb": peak,
            "peak_pss_mb": pss,
            "largest_process_mb": largest,
        }
    for other in (n for n in commands if n != "aggregator"):
        paired = statistics.median(a.seconds / b.seconds for a, b in zip(runs["aggregator"], runs[other], strict=True))
        report[f"ratio_to_{other.replace(' ', '_')}"] = median_of["aggregator"] / median_of[other]
        print(
            f"aggregator / {other:<17} {median_of['aggregator'] / median_of[other]:5.2f}x of medians, "
            f"{paired:5.2f}x median of paired runs"
        )
    if args.baseline:
        print(f"baseline's document identical to ours: {report['baseline_identical']}")
    if problems:
        print("RESULTS DISAGREE:\n  " + "\n  ".join(problems[:20]))
    else:
        print("results agree: message counts, min and max exactly, averages within 1e-6")
    if args.report_json:
        args.report_json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
