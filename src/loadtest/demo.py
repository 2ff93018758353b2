"""`make demo`: the whole pipeline on the embedded AWS, then a summary; non-zero if a reading is lost.

Starts moto's server on 127.0.0.1:4566, creates the queues and the bucket (S3_BUCKET,
``telemetry-dev`` by default), starts the receiver on port 8000 and the consumer, runs
the simulator, waits until every accepted reading is on disk and every batch file in
S3, runs the hourly job for every hour the readings touched (curated Parquet and the
aggregate, local and in S3) and the daily fleet-health job for every UTC day they touched
(two near midnight), prints a summary with the faulty vehicle's alert and a DuckDB query over
the curated hours, and stops everything it started. Data goes to DATA_DIR (``data`` by
default), logs to ``DATA_DIR/logs``.

The dashboard (the contract's uvicorn command, port 8050) runs beside the stack from the
start, so its URL, printed at once and in the summary, shows the demo's readings live. When
stdin is a terminal the demo then keeps the stack and the dashboard up until Enter or Ctrl-C
(``--no-wait``: stop at once); otherwise (CI, a pipe) it stops at once (``--wait``: until
SIGINT or SIGTERM). Services run in process groups of their own, so Ctrl-C reaches only
the demo, which stops them in order; no process is left behind.

The fleet is aged (``--aging``) and one vehicle has a fault from its first reading
(``--faults 1 --faults-at-start 1 --fault-kinds KIND``, ``--fault-kind`` here). The default
kind is ``sensor_bias``: the daily job's ``sensor_inconsistency`` alert needs only readings
whose pack voltage lies outside the cells' range, so it shows from the first reading. The
other kinds need what a one-minute drive does not give (docs/battery-analytics.md): a weak
cell ten discharge-side current steps above 30 % SOC, self-discharge a long rest, a cooling
fault the heat of sustained load.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

from src.common.aws import sync_client
from src.common.layout import (
    aggregated_file_name,
    hour_label,
    hour_partition,
    s3_aggregated_key,
    s3_batch_name,
    s3_curated_prefix,
)
from src.common.schema import NaturalKey, parse_timestamp
from src.common.settings import GeneratorSettings
from src.embedded.stack import EmbeddedStack, StackConfig, exit_on_sigterm
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import percentiles, wait_persisted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of simulated driving")
    parser.add_argument("--moto-port", type=int, default=4566)
    parser.add_argument("--receiver-port", type=int, default=8000)
    parser.add_argument("--dashboard-port", type=int, default=8050)
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        help="keep the stack and the dashboard up after the summary until Enter or Ctrl-C "
        "(default: when stdin is a terminal)",
    )
    parser.add_argument("--data-dir", type=Path, help="default: DATA_DIR")
    parser.add_argument("--persist-timeout", type=float, default=60.0)
    parser.add_argument(
        "--fault-kind", choices=sorted(ALERT_OF), default="sensor_bias", help="the faulty vehicle's fault (module doc)"
    )
    return parser.parse_args(argv)


DEFAULT_BUCKET = "telemetry-dev"
ALERT_OF = {
    "sensor_bias": "sensor_inconsistency",
    "weak_cell": "weak_cell",
    "self_discharge": "self_discharge",
    "cooling": "cooling_fault",
}
"""The simulator's fault kinds and the daily job's alert kind for each (docs/battery-analytics.md)."""
WHY = {"sensor_bias": "a biased pack-voltage sensor, visible from the first reading"}
QUERY_INTRO = "Query the curated hours with DuckDB (python -c, the duckdb CLI, or any SQL engine; docs/querying.md):"
DEMO_QUERY = """SELECT vehicle_id, count(*) AS readings, round(min(battery_soc), 1) AS soc_min,
       round(max(battery_soc), 1) AS soc_max, round(max(cell_temp_max), 1) AS hottest_cell_c
FROM read_parquet('{glob}', hive_partitioning = true)
GROUP BY vehicle_id ORDER BY vehicle_id LIMIT 5"""


def say(message: str) -> None:
    print(f"[demo] {message}", flush=True)


@dataclass(frozen=True)
class Fault:
    """The faulty vehicle, as the simulator's truth file gives it."""

    vehicle_id: str
    kind: str
    start: str
    details: dict[str, Any]


def run_simulator(
    stack: EmbeddedStack, args: argparse.Namespace, workdir: Path
) -> tuple[dict[str, int], Path, list[Fault]]:
    accepted_log = workdir / "accepted.jsonl"
    report_path = workdir / "simulator.json"
    truth_path = workdir / "truth.json"
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", str(args.vehicles)]
    command += ["--duration", str(args.duration), "--url", stack.receiver_url]
    command += ["--accepted-log", str(accepted_log), "--report-json", str(report_path)]
    command += ["--aging", "--faults", "1", "--faults-at-start", "1", "--fault-kinds", args.fault_kind]
    command += ["--truth-json", str(truth_path)]
    say(f"simulating {args.vehicles} vehicles for {args.duration:g} s (one reading each per 200 ms)")
    say(f"packs aged; one vehicle has a {args.fault_kind} fault from its first reading")
    subprocess.run(command, env=stack.env(), check=False)
    return orjson.loads(report_path.read_bytes()), accepted_log, read_faults(truth_path)


def read_faults(truth_path: Path) -> list[Fault]:
    """Every fault of the run's truth file (none if the simulator wrote none)."""
    if not truth_path.exists():
        return []
    vehicles = orjson.loads(truth_path.read_bytes())["vehicles"]
    return [
        Fault(vid, f["kind"], f["start"], {k: v for k, v in f.items() if k not in ("kind", "start")})
        for vid, entry in sorted(vehicles.items())
        for f in entry["faults"]
    ]


def read_accepted(path: Path) -> dict[NaturalKey, float]:
    """Accepted readings' natural keys, mapped to when each was taken (unix ms)."""
    accepted: dict[NaturalKey, float] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            key = NaturalKey(record["vehicle_id"], record["can_id"], record["timestamp"])
            accepted[key] = parse_timestamp(record["timestamp"]).timestamp() * 1000
    return accepted


def aggregate_hours(stack: EmbeddedStack, index: DiskIndex, keys: set[NaturalKey], data_dir: Path) -> list[datetime]:
    """Run the hourly job, as cron would, for every hour partition holding the readings: curated and aggregated."""
    hours = sorted(index.hours_holding(keys))
    for hour in hours:
        command = [sys.executable, "-m", "src.aggregator.hourly_stats", "--hour", hour_label(hour)]
        subprocess.run(command, env=stack.env(), check=True, stdout=subprocess.DEVNULL)
    return hours


def daily_health(stack: EmbeddedStack, hours: list[datetime]) -> list[tuple[list[str], dict[str, Any]]]:
    """Run the daily job, as cron would after midnight, for every UTC day of ``hours``: its output and document.

    The output's lines are the local path, the S3 URI and the day's one-line summary.
    """
    found = []
    for day in sorted({hour.date() for hour in hours}):
        command = [sys.executable, "-m", "src.aggregator.fleet_health", "--day", day.isoformat()]
        result = subprocess.run(command, env=stack.env(), check=True, capture_output=True, text=True)
        lines = result.stdout.splitlines()
        found.append((lines, orjson.loads(Path(lines[0]).read_bytes())))
    return found


def evidence_text(evidence: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in evidence.items())


def print_health(faults: list[Fault], health: list[tuple[list[str], dict[str, Any]]]) -> list[str]:
    """The fault, its alert and the other alerts next to the summary; the faults with no alert of their kind."""
    alerts = [alert for _, document in health for alert in document["alerts"]]
    unalerted = []
    for fault in faults:
        details = ", ".join(f"{key} {value}" for key, value in fault.details.items())
        why = WHY.get(fault.kind, "")
        print(
            f"  fault      {fault.vehicle_id} {fault.kind} ({details}) from {fault.start}" + (f": {why}" if why else "")
        )
        mine = [alert for alert in alerts if alert["vehicle_id"] == fault.vehicle_id]
        for alert in mine:
            print(
                f"  alert      {alert['vehicle_id']} {alert['kind']}  severity {alert['severity']}"
                f"  first seen {alert['first_seen']}"
            )
            print(f"             evidence: {evidence_text(alert['evidence'])}")
        if not any(alert["kind"] == ALERT_OF[fault.kind] for alert in mine):
            print(f"  alert      {fault.vehicle_id}: no {ALERT_OF[fault.kind]} alert")
            unalerted.append(fault.vehicle_id)
    faulty = {fault.vehicle_id for fault in faults}
    others = [f"{a['vehicle_id']} {a['kind']} ({a['severity']})" for a in alerts if a["vehicle_id"] not in faulty]
    print(f"  other alerts  {', '.join(others) or 'none'}")
    for lines, _ in health:
        print(f"  fleet health  {lines[0]}")
        for line in lines[1:-1]:
            print(f"                {line}")
    return unalerted


def query_curated(curated_dir: Path) -> tuple[str, list[tuple[object, ...]]]:
    """A DuckDB query a user would type over the curated hours, and its answer."""
    sql = DEMO_QUERY.format(glob=curated_dir / "**" / "*.parquet")
    with duckdb.connect() as connection:
        return sql, connection.execute(sql).fetchall()


def wait_uploaded(stack: EmbeddedStack, files: set[Path], timeout_s: float) -> set[Path]:
    """Wait until S3 holds every one of ``files`` (by batch file name); those still missing."""
    assert stack.config.s3_bucket is not None
    s3 = sync_client("s3", stack.settings())
    deadline = time.monotonic() + timeout_s
    while True:
        in_s3: set[str] = set()
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=stack.config.s3_bucket, Prefix="raw/"):
            in_s3.update(name for item in page.get("Contents", []) if (name := s3_batch_name(item["Key"])))
        missing = {path for path in files if path.name not in in_s3}
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def hold(wait: bool) -> None:
    """With ``wait``, keep everything up until Enter (stdin a terminal) or Ctrl-C/SIGTERM; else return at once."""
    if not wait:
        return
    if sys.stdin.isatty():
        say("the stack and the dashboard stay up: press Enter (or Ctrl-C) to stop them")
        with contextlib.suppress(EOFError, KeyboardInterrupt):
            input()
        return
    say("the stack and the dashboard stay up until SIGINT or SIGTERM")
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (a background job)
    settings = GeneratorSettings()
    data_dir = (args.data_dir or settings.data_dir).resolve()
    config = StackConfig(
        data_dir=data_dir,
        log_dir=data_dir / "logs",
        api_key=settings.first_api_key or secrets.token_hex(16),
        moto_port=args.moto_port,
        receiver_port=args.receiver_port,
        s3_bucket=settings.s3_bucket or DEFAULT_BUCKET,
        own_process_groups=True,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp, EmbeddedStack(config) as stack:
        say(f"embedded AWS at {stack.aws_endpoint}, receiver at {stack.receiver_url}, consumer running")
        say(f"S3 tier on: batch files are copied to s3://{config.s3_bucket}/raw/")
        say(f"data in {data_dir}, logs in {config.log_dir}")
        stack.start_dashboard(args.dashboard_port)
        say(f"dashboard at {stack.dashboard_url}/pipeline: open it to watch the readings arrive")
        index = DiskIndex(data_dir / "raw")
        index.refresh()
        sim, accepted_log, faults = run_simulator(stack, args, Path(tmp))
        accepted = read_accepted(accepted_log)
        missing = wait_persisted(index, set(accepted), args.persist_timeout)
        found = set(accepted) - missing
        e2e = percentiles([index.durable_ms[k] - accepted[k] for k in found])
        files = index.files_holding(found)
        not_uploaded = wait_uploaded(stack, files, args.persist_timeout)
        hours = aggregate_hours(stack, index, found, data_dir)
        health = daily_health(stack, hours)
        print()
        print("Pipeline demo summary")
        print(f"  sent       {sim.get('sent', 0)}")
        print(f"  accepted   {len(accepted)}")
        print(f"  persisted  {len(found)}")
        print(f"  lost       {len(missing)}")
        print(f"  end-to-end latency ms  P50 {e2e['p50']}  P95 {e2e['p95']}  P99 {e2e['p99']}")
        print(f"  batch files written    {len(files)}")
        print(f"  batch files in S3      {len(files) - len(not_uploaded)}  (s3://{config.s3_bucket}/raw/)")
        for hour in hours:
            curated_hour = data_dir / "curated" / hour_partition(hour) / "readings.parquet"
            print(f"  curated    {curated_hour}")
            print(f"             s3://{config.s3_bucket}/{s3_curated_prefix(hour)}readings.parquet")
            print(f"  aggregate  {data_dir / 'aggregated' / aggregated_file_name(hour)}")
            print(f"             s3://{config.s3_bucket}/{s3_aggregated_key(hour)}")
        unalerted = print_health(faults, health)
        if hours:
            sql, answer = query_curated(data_dir / "curated")
            print(f"\n{QUERY_INTRO}")
            print("\n".join(f"  {line}" for line in sql.splitlines()))
            for row in answer:
                print("   ", " | ".join(str(value) for value in row))
        print(f"  dashboard  {stack.dashboard_url}/pipeline")
        print(f"             {stack.dashboard_url}/fleet")
        for vehicle_id in sorted({fault.vehicle_id for fault in faults}):  # the faulty vehicle's page shows its alert
            print(f"             {stack.dashboard_url}/vehicles/{vehicle_id}?window=1h")
        print(f"  took {time.perf_counter() - started:.1f} s", flush=True)
        hold(args.wait if args.wait is not None else sys.stdin.isatty())
    say("stopped every process it started")
    if missing:
        print(f"FAILED: {len(missing)} accepted readings are not on disk", file=sys.stderr)
        return 1
    if not accepted:
        print("FAILED: the receiver accepted no reading", file=sys.stderr)
        return 1
    if not_uploaded:
        print(f"FAILED: {len(not_uploaded)} batch files are not in S3", file=sys.stderr)
        return 1
    if unalerted or not faults:
        print(
            f"FAILED: the daily job raised no alert for the faulty vehicle {unalerted or 'of the truth'}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
