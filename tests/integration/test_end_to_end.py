"""The whole pipeline as a user runs it: real processes, real HTTP, moto's server as AWS.

These tests protect the product's central promise: every reading answered 202 is found
on disk in the hour partition of its ingest time, quickly, and the hourly aggregate counts
exactly what was sent.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from src.common.layout import aggregated_file_name, hour_label
from src.common.schema import NaturalKey
from src.embedded.stack import EmbeddedStack, StackConfig
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import build_report, send_load, wait_persisted
from tests.integration.checks import assert_aggregates_match
from tests.integration.leftovers import processes_with_data_dir
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration


def run_aggregator(stack: EmbeddedStack, index: DiskIndex, keys: set[NaturalKey]) -> dict[str, dict]:
    """Aggregate every hour holding ``keys`` with the real CLI; vehicles of all hours merged."""
    vehicles: dict[str, dict] = {}
    for hour in sorted(index.hours_holding(keys)):
        command = [sys.executable, "-m", "src.aggregator.hourly_stats", "--hour", hour_label(hour)]
        subprocess.run(command, cwd=REPO_ROOT, env=stack.env(), check=True, capture_output=True)
        document = orjson.loads((stack.config.data_dir / "aggregated" / aggregated_file_name(hour)).read_bytes())
        for vehicle in document["vehicles"]:
            assert vehicle["vehicle_id"] not in vehicles, "one test run stays within one hour per vehicle"
            vehicles[vehicle["vehicle_id"]] = vehicle
    return vehicles


def test_thousand_single_readings_at_200_per_second_all_persisted_and_aggregated(stack: EmbeddedStack) -> None:
    """1,000 readings at 200/s through /ingest: none lost, P95 end-to-end under 5 s, exact aggregates."""
    index = DiskIndex(stack.config.data_dir / "raw")
    run = asyncio.run(
        send_load(stack.receiver_url, stack.config.api_key, 1000, 200, 1, vehicles=20, keep_payloads=True)
    )
    assert len(run.accepted) == 1000, run.refused
    missing = wait_persisted(index, set(run.accepted), timeout_s=60)
    report = build_report(run, index, missing, elapsed_s=0)
    assert report["lost"] == 0
    assert report["persisted"] == 1000
    assert report["e2e_ms"]["p95"] < 5000, report

    assert index.misplaced == set(), "every reading sits in the partition of its ingest hour"

    # The aggregator's view equals what was sent, per vehicle and signal.
    assert run.payloads is not None
    assert_aggregates_match(run_aggregator(stack, index, set(run.accepted)), run.payloads)


def test_batch_endpoint_persists_every_reading(stack: EmbeddedStack) -> None:
    """/ingest/batch: 2,000 readings in requests of 50 all reach disk, once each."""
    index = DiskIndex(stack.config.data_dir / "raw")
    run = asyncio.run(send_load(stack.receiver_url, stack.config.api_key, 2000, 1000, 50, vehicles=200))
    assert len(run.accepted) == 2000, run.refused
    missing = wait_persisted(index, set(run.accepted), timeout_s=60)
    report = build_report(run, index, missing, elapsed_s=0)
    assert report["lost"] == 0
    assert report["e2e_ms"]["p95"] < 5000, report


def test_simulator_readings_reach_disk_and_aggregates_count_them(stack: EmbeddedStack, tmp_path: Path) -> None:
    """The simulator CLI against the stack: every accepted reading on disk, counted once per vehicle."""
    accepted_log = tmp_path / "accepted.jsonl"
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", "5", "--duration", "4"]
    command += ["--url", stack.receiver_url, "--accepted-log", str(accepted_log), "--seed", "7"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=stack.env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    keys = {
        NaturalKey(r["vehicle_id"], r["can_id"], r["timestamp"])
        for r in map(orjson.loads, accepted_log.read_bytes().splitlines())
    }
    assert len(keys) >= 5 * 4 * 5 * 0.9  # 5 vehicles x 4 s x 5 Hz, a tick may straddle the end
    index = DiskIndex(stack.config.data_dir / "raw")
    assert wait_persisted(index, keys, timeout_s=60) == set()
    per_vehicle: dict[str, int] = defaultdict(int)
    for key in keys:
        per_vehicle[key.vehicle_id] += 1
    aggregated = run_aggregator(stack, index, keys)
    assert {v: a["message_count"] for v, a in aggregated.items()} == per_vehicle


def test_load_test_cli_embedded_reports_contract_fields(tmp_path: Path) -> None:
    """`load_test.py --embedded` brings up its own stack, sends from two processes, writes the report and its plot."""
    report_path = tmp_path / "report.json"
    command = [sys.executable, "scripts/load_test.py", "--embedded", "--messages", "300", "--rate", "150"]
    command += ["--senders", "2", "--report-json", str(report_path)]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = orjson.loads(report_path.read_bytes())
    expected = {"sent", "accepted", "persisted", "lost", "duplicates", "throughput_rps", "elapsed_s", "e2e_ms"}
    assert set(report) == expected | {"ingest_ms"}
    assert set(report["e2e_ms"]) == {"p50", "p95", "p99", "max"}
    assert report["sent"] == report["accepted"] == report["persisted"] == 300
    assert report["lost"] == 0
    plot = report_path.with_suffix(".png")
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert f"latency plot written to {plot}" in result.stderr
    assert "from 2 sender(s)" in result.stderr
    assert "CPU seconds per second while sending" in result.stderr


def test_demo_runs_the_whole_pipeline_and_reports_nothing_lost(tmp_path: Path) -> None:
    """`make demo`'s script, shortened and on free ports: the dashboard answers while it runs, summary printed
    with the dashboard's URL, exit 0, and (stdin not a terminal) it stops at once, leaving no process behind."""
    from src.embedded.processes import free_port

    dashboard_port = free_port()
    command = [sys.executable, "scripts/demo.py", "--vehicles", "3", "--duration", "3"]
    command += ["--moto-port", str(free_port()), "--receiver-port", str(free_port())]
    command += ["--dashboard-port", str(dashboard_port), "--data-dir", str(tmp_path / "data")]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        demo = subprocess.Popen(command, cwd=REPO_ROOT, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while "[demo] dashboard at " not in out.read_text() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        pipeline = f"http://127.0.0.1:{dashboard_port}/pipeline"
        assert f"[demo] dashboard at {pipeline}" in out.read_text(), out.read_text()
        with urllib.request.urlopen(pipeline, timeout=10) as response:
            assert response.status == 200  # up while the demo runs
        demo.wait(timeout=180)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    result = subprocess.CompletedProcess(command, demo.returncode, out.read_text(), err.read_text())
    assert f"  dashboard  {pipeline}\n" in result.stdout
    assert processes_with_data_dir((tmp_path / "data").resolve()) == [], "every process the demo started ended"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", dashboard_port)) != 0, "nothing listens on the dashboard's port"
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "lost       0" in result.stdout
    assert "aggregate  " in result.stdout
    assert "batch files in S3" in result.stdout and "s3://telemetry-dev/aggregated/" in result.stdout
    assert list((tmp_path / "data" / "aggregated").glob("aggregated-*.json"))
    assert "s3://telemetry-dev/curated/year=" in result.stdout and "read_parquet(" in result.stdout
    curated = [p.name for p in (tmp_path / "data" / "curated").rglob("*.parquet")]
    assert curated and set(curated) == {"readings.parquet"}  # one per hour the demo touched
    # One vehicle has a biased pack-voltage sensor from its first reading; the daily job alerts on it.
    fault = re.search(r"^  fault      (veh-\d+) sensor_bias \(bias_v -?[\d.]+\) from (\S+Z): ", result.stdout, re.M)
    assert fault, result.stdout
    alert = re.search(
        rf"^  alert      {fault[1]} sensor_inconsistency  severity (critical|warning)  first seen (\S+Z)\n"
        r"             evidence: readings_outside \d+, fraction_outside [\d.]+, max_outside_v [\d.]+, hours \[",
        result.stdout,
        re.M,
    )
    assert alert, result.stdout
    assert alert[2] == fault[2]  # first seen: the fault's first reading
    assert "  other alerts  none" in result.stdout
    health = re.search(r"^  fleet health  (\S+fleet-health-(\d{4}-\d\d-\d\d)\.json)$", result.stdout, re.M)
    assert health and Path(health[1]).is_file(), result.stdout
    assert f"s3://telemetry-dev/aggregated/fleet-health-{health[2]}.json" in result.stdout
    document = orjson.loads(Path(health[1]).read_bytes())
    assert [(a["vehicle_id"], a["kind"]) for a in document["alerts"]] == [(fault[1], "sensor_inconsistency")]


def test_two_consumers_share_one_queue_and_data_dir_without_loss_or_collision(tmp_path: Path) -> None:
    """Several consumer instances on one queue and DATA_DIR: every reading once, no file overwritten."""
    config = StackConfig(data_dir=tmp_path / "data", log_dir=tmp_path / "logs", api_key="k", consumers=2)
    with EmbeddedStack(config) as two:
        index = DiskIndex(config.data_dir / "raw")
        run = asyncio.run(send_load(two.receiver_url, "k", 2000, 400, 1, vehicles=50))
        assert len(run.accepted) == 2000, run.refused
        assert wait_persisted(index, set(run.accepted), timeout_s=60) == set()
        writers = {path.name.rsplit("-", 1)[1].split("_")[0] for path in index.files_holding(set(run.accepted))}
    assert len(writers) == 2, "both consumers took part"
    lines = sum(len(p.read_bytes().splitlines()) for p in (config.data_dir / "raw").rglob("batch-*.jsonl"))
    assert lines == 2000 + index.duplicates(set(run.accepted))
