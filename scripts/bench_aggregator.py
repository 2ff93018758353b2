"""Time the hourly job on one simulated hour: the targets of docs/performance.md, "Hourly job".

    python scripts/bench_aggregator.py                                  # 2,000,000 readings, 1,000 vehicles
    python scripts/bench_aggregator.py --data-dir /tmp/aggbench --repeat 5 --report-json bench.json
    python scripts/bench_aggregator.py --data-dir /tmp/aggbench --baseline /tmp/previous --spark

The hour is made once and reused (``--data-dir``; ``--regenerate`` makes it anew): the
offline simulator produces the readings (``--vehicles`` for as long as ``--readings``
needs at one reading per vehicle per 200 ms), then they are stored as the consumer
stores them: hive-partitioned ``batch-<13-digit ms>-<writer>_<seq>.jsonl`` files of a
few hundred records each, every line the reading plus ``ingest_received_at``, two
writers interleaved, ``--duplicate-rate`` of the readings redelivered into a later file
(SQS delivers at least once) and ``--corrupt`` damaged lines (truncated or garbage).
Every vehicle's clock is offset by a fixed random ``0..--clock-skew-ms`` milliseconds, as
unsynchronised gateways are, so timestamps are not shared by the whole fleet.

Then, ``--repeat`` times each, interleaved, every one a child process: the hourly job (its
command line, as cron runs it: raw JSONL -> curated Parquet + aggregate); with
``--baseline DIR`` the job of another checkout (``git archive <commit> | tar -x -C DIR``),
run from DIR; with ``--spark`` the job with ``--engine spark``; DuckDB aggregating straight
from the raw JSONL (duplicates dropped, no Parquet: re-aggregating without curated hours);
and DuckDB rolling up the curated Parquet (re-aggregating with them). Peak memory is the sum
of the resident sets of the process tree, sampled every 20 ms, and the largest single
process's ``ru_maxrss``. Once: the sizes of raw JSONL, gzipped JSONL (each file, level 6, as
the S3 tier stores it) and curated Parquet, and one vehicle's hour read from the Parquet by
DuckDB (first query, then the median of 20 more). Every aggregate must agree with the job's
(counts, min and max exactly, averages within 1e-6), or the script exits 1.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from src.aggregator import curated, queries
from src.common.layout import batch_file_name, hour_label, hour_partition, parse_hour_label, raw_hour_dir
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
    parser.add_argument(
        "--baseline", type=Path, help="also time the job of this other checkout (e.g. from `git archive`), run from it"
    )
    parser.add_argument("--spark", action="store_true", help="also time the job with --engine spark (needs Java)")
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


def measure(command: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> Measured:
    """Run ``command``; its wall time and peak memory (process tree sampled, largest process exact)."""
    peak = peak_pss = 0
    done = threading.Event()
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

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


# --- DuckDB children ------------------------------------------------------------------------------------------

FROM_RAW = """
WITH readings AS (
    SELECT * FROM read_ndjson(?, columns = {columns}, ignore_errors = true, format = 'newline_delimited')
    WHERE vehicle_id IS NOT NULL AND can_id IS NOT NULL AND "timestamp" IS NOT NULL AND ingest_received_at IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY vehicle_id, can_id, "timestamp" ORDER BY ingest_received_at) = 1
)
SELECT vehicle_id, count(*) AS message_count, {signals}
FROM readings GROUP BY vehicle_id ORDER BY vehicle_id
"""
"""The aggregate straight from raw JSONL, written independently of the job's SQL (a check on it too)."""


def from_raw_query() -> str:
    payload = ", ".join(f"{name} DOUBLE" for name in SIGNALS)
    columns = (
        "{'timestamp': 'TIMESTAMPTZ', 'vehicle_id': 'VARCHAR', 'can_id': 'VARCHAR', "
        f"'ingest_received_at': 'TIMESTAMPTZ', 'payload': 'STRUCT({payload})'}}"
    )
    signals = ", ".join(
        f"min(payload.{n}) AS {n}_min, max(payload.{n}) AS {n}_max, avg(payload.{n}) AS {n}_avg" for n in SIGNALS
    )
    return FROM_RAW.format(columns=columns, signals=signals)


DUCKDB_CHILD = """
import json, sys, time
import duckdb
source, out, query = sys.argv[1:4]
connection = duckdb.connect()
connection.execute("SET TimeZone = 'UTC'")
started = time.perf_counter()
rows = connection.execute(query, [source]).fetchall()
with open(out, "w") as handle:
    json.dump({"rows": rows, "query_s": time.perf_counter() - started}, handle)
"""
"""A child process that imports nothing but duckdb, so its start-up is not handicapped; it also
reports the query's own time, start-up excluded."""

ONE_VEHICLE_CHILD = """
import json, statistics, sys, time
import duckdb
path, vehicles = sys.argv[1], json.loads(sys.argv[2])
connection = duckdb.connect()
query = "SELECT * FROM read_parquet(?) WHERE vehicle_id = ? ORDER BY timestamp"
times, rows = [], []
for vehicle in vehicles:
    started = time.perf_counter()
    rows.append(len(connection.execute(query, [path, vehicle]).fetchall()))
    times.append(time.perf_counter() - started)
print(json.dumps({"first_s": times[0], "median_s": statistics.median(times[1:]), "rows": rows}))
"""
"""One vehicle's hour from the curated file, as an engineer would ask for it: all columns, in time order."""


def duckdb_vehicles(out: Path) -> list[dict[str, Any]]:
    """The DuckDB child's rows as the aggregate's per-vehicle entries."""
    vehicles = []
    for row in orjson.loads(out.read_bytes())["rows"]:
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


def gzipped_size(directory: Path) -> int:
    """The raw hour's bytes gzipped file by file at level 6, as the S3 tier stores it (zlib frees the GIL)."""

    def one(path: Path) -> int:
        return len(gzip.compress(path.read_bytes(), compresslevel=6))

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        return sum(pool.map(one, sorted(directory.glob("batch-*.jsonl"))))


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


class Commands:
    """The timed commands, each with its environment (its own ``DATA_DIR`` when it writes outputs)."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, scratch: Path, directory: Path) -> None:
        self.label = hour_label(parse_hour_label(args.hour))
        self.data_dir, self.scratch = data_dir, scratch
        self.env = {**os.environ, "DATA_DIR": str(data_dir), "LOG_LEVEL": "ERROR"}
        job = ["-m", "src.aggregator.hourly_stats", "--hour", self.label]
        self.commands: dict[str, tuple[list[str], dict[str, str], Path]] = {
            "hourly job": ([sys.executable, *job], self.env, REPO_ROOT)
        }
        if args.baseline:
            self.commands["previous job"] = ([sys.executable, *job], self.own_data_dir("previous"), args.baseline)
        if args.spark:
            spark = [sys.executable, *job, "--engine", "spark"]
            self.commands["hourly job, Spark"] = (spark, self.own_data_dir("spark"), REPO_ROOT)
        glob = str(directory / "batch-*.jsonl")
        self.from_raw = scratch / "from-raw.json"
        self.commands["DuckDB from raw"] = (self.child(glob, self.from_raw, from_raw_query()), self.env, REPO_ROOT)
        curated_file = data_dir / "curated" / hour_partition(parse_hour_label(args.hour)) / curated.PARQUET_NAME
        self.curated_file = curated_file
        self.from_curated = scratch / "from-curated.json"
        rollup = self.child(str(curated_file), self.from_curated, queries.ROLLUP)
        self.commands["DuckDB from curated"] = (rollup, self.env, REPO_ROOT)

    def own_data_dir(self, name: str) -> dict[str, str]:
        """A ``DATA_DIR`` sharing our raw/, so that command's outputs do not replace the job's."""
        (self.scratch / name).mkdir()
        (self.scratch / name / "raw").symlink_to(self.data_dir / "raw")
        return {**self.env, "DATA_DIR": str(self.scratch / name)}

    @staticmethod
    def child(source: str, out: Path, query: str) -> list[str]:
        return [sys.executable, "-c", DUCKDB_CHILD, source, str(out), query]

    def aggregate(self, name: str) -> dict[str, Any]:
        data_dir = Path(self.commands[name][1]["DATA_DIR"])
        return orjson.loads((data_dir / "aggregated" / f"aggregated-{self.label}.json").read_bytes())


def compare(args: argparse.Namespace, data_dir: Path, scratch: Path, directory: Path) -> int:
    setup = Commands(args, data_dir, scratch, directory)
    say("a first run of the job, so the curated hour exists for the rollup (not timed)")
    measure(setup.commands["hourly job"][0], setup.env)
    runs: dict[str, list[Measured]] = {name: [] for name in setup.commands}
    query_s: dict[str, list[float]] = {"DuckDB from raw": [], "DuckDB from curated": []}
    say(f"load average before: {load_average()} ({os.cpu_count()} CPUs)")
    for attempt in range(1, args.repeat + 1):
        for name, (command, env, cwd) in setup.commands.items():
            result = measure(command, env, cwd)
            runs[name].append(result)
            if name in query_s:
                out = setup.from_raw if name == "DuckDB from raw" else setup.from_curated
                query_s[name].append(orjson.loads(out.read_bytes())["query_s"])
            say(
                f"run {attempt}/{args.repeat} {name:<20} {result.seconds:7.2f} s  cpu {result.cpu_seconds:6.2f} s  "
                f"peak RSS {result.peak_tree_mb:6.0f} MB, PSS {result.peak_pss_mb:6.0f} MB  (load {load_average()})"
            )

    document = setup.aggregate("hourly job")
    vehicles = document["vehicles"]
    readings = document["quality"]["readings"]
    problems: list[str] = []
    for name, out in (("DuckDB from raw", setup.from_raw), ("DuckDB from curated", setup.from_curated)):
        problems += [f"{name}: {p}" for p in disagreements(vehicles, duckdb_vehicles(out))]
    for name in ("previous job", "hourly job, Spark"):
        if name in setup.commands:
            problems += [f"{name}: {p}" for p in disagreements(vehicles, setup.aggregate(name)["vehicles"])]

    say("sizes: gzipping the raw files as the S3 tier does")
    raw_bytes = sum(p.stat().st_size for p in directory.glob("batch-*.jsonl"))
    sizes = {
        "raw_jsonl": raw_bytes,
        "gzipped_jsonl": gzipped_size(directory),
        "parquet": setup.curated_file.stat().st_size,
    }
    rng = np.random.default_rng(args.seed)
    sample = [v["vehicle_id"] for v in rng.choice(vehicles, size=min(21, len(vehicles)), replace=False)]
    one = subprocess.run(
        [sys.executable, "-c", ONE_VEHICLE_CHILD, str(setup.curated_file), orjson.dumps(sample).decode()],
        check=True,
        capture_output=True,
    )
    one_vehicle = orjson.loads(one.stdout)

    report: dict[str, Any] = {
        "readings": readings,
        "vehicles": len(vehicles),
        "quality": document["quality"],
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "agree": not problems,
        "sizes_bytes": sizes,
        "one_vehicle_hour_s": {"first": one_vehicle["first_s"], "median": one_vehicle["median_s"]},
        "results": {},
    }
    print()
    print(f"{readings:,} readings from {len(vehicles):,} vehicles, quality {document['quality']}")
    print(*("command".ljust(21), "median s", "  min s", "  cpu s", " peak RSS MB", "PSS MB", "largest MB", "query s"))
    median_of: dict[str, float] = {}
    for name, measured in runs.items():
        seconds = median_of[name] = statistics.median(m.seconds for m in measured)
        cpu = statistics.median(m.cpu_seconds for m in measured)
        peak = max(m.peak_tree_mb for m in measured)
        pss = max(m.peak_pss_mb for m in measured)
        largest = max(m.peak_process_mb for m in measured)
        query = statistics.median(query_s[name]) if name in query_s else None
        print(
            f"{name:<21} {seconds:9.2f} {min(m.seconds for m in measured):7.2f} {cpu:7.2f} "
            f"{peak:12.0f} {pss:6.0f} {largest:10.0f} {'' if query is None else f'{query:7.3f}'}"
        )
        report["results"][name] = {
            "median_s": seconds,
            "runs_s": [m.seconds for m in measured],
            "median_cpu_s": cpu,
            "peak_rss_mb": peak,
            "peak_pss_mb": pss,
            "largest_process_mb": largest,
            **({} if query is None else {"median_query_s": query}),
        }
    if "previous job" in runs:
        paired = statistics.median(
            a.seconds / b.seconds for a, b in zip(runs["hourly job"], runs["previous job"], strict=True)
        )
        report["job_over_previous"] = paired
        print(f"hourly job / previous job: {paired:.2f}x (median of paired runs)")
    speedup = statistics.median(query_s["DuckDB from raw"]) / statistics.median(query_s["DuckDB from curated"])
    report["reaggregation_speedup"] = speedup
    print(f"re-aggregating from curated Parquet: {speedup:.0f}x faster than from raw JSONL (query times)")
    raw_mb, gzipped_mb, parquet_mb = (sizes[k] / 1e6 for k in ("raw_jsonl", "gzipped_jsonl", "parquet"))
    print(
        f"sizes: raw JSONL {raw_mb:,.1f} MB, gzipped JSONL {gzipped_mb:,.1f} MB (1/{raw_mb / gzipped_mb:.1f}), "
        f"Parquet {parquet_mb:,.1f} MB (1/{raw_mb / parquet_mb:.1f} of raw, 1/{gzipped_mb / parquet_mb:.1f} of gzipped)"
    )
    print(
        f"one vehicle's hour ({one_vehicle['rows'][0]:,} rows) from Parquet: first query "
        f"{one_vehicle['first_s'] * 1000:.0f} ms, then median {one_vehicle['median_s'] * 1000:.0f} ms"
    )
    if problems:
        print("RESULTS DISAGREE:\n  " + "\n  ".join(problems[:20]))
    else:
        print("results agree: message counts, min and max exactly, averages within 1e-6")
    if args.report_json:
        args.report_json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
