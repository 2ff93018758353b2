"""Scaling out: two uvicorn workers in front, two consumers behind, one queue and one DATA_DIR.

Each worker process has its own SQS publisher and each consumer its own writer id, so
nothing is shared but the queue and the directory. The promise must hold unchanged:
every reading answered 202 is on disk, unchanged, no batch file overwrites another and
every file is complete, and the hourly aggregates are exact.

A ``503`` is a correct answer on an overloaded machine (the client retries; the reading
may or may not be in SQS), so readings refused that way may or may not be on disk; the
test allows a few and compares the aggregates with what is on disk, deduplicated.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from src.common.layout import aggregated_file_name, hour_label
from src.common.schema import NaturalKey, natural_key_of
from src.embedded.processes import process_cpu_seconds
from src.embedded.stack import EmbeddedStack, StackConfig
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import send_load, wait_persisted
from tests.integration.checks import assert_aggregates_match
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

READINGS = 3000
RATE = 1000  # readings per second, one per request: ~3 s of concurrent requests


def worker_cpu(pids: list[int]) -> dict[int, float]:
    used = {pid: process_cpu_seconds(pid) for pid in pids}
    return {pid: value for pid, value in used.items() if value is not None}


def accepted_total(receiver_url: str) -> float:
    """``receiver_readings_accepted_total`` as one scrape of the receiver's /metrics shows it."""
    with urllib.request.urlopen(f"{receiver_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return next(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "receiver_readings_accepted_total"
    )


def aggregate(stack: EmbeddedStack, hours: set[Any]) -> dict[str, dict[str, Any]]:
    """The real aggregator CLI for every hour touched; its vehicles, all hours merged."""
    vehicles: dict[str, dict[str, Any]] = {}
    for hour in sorted(hours):
        command = [sys.executable, "-m", "src.aggregator.hourly_stats", "--hour", hour_label(hour)]
        subprocess.run(command, cwd=REPO_ROOT, env=stack.env(), check=True, capture_output=True, timeout=60)
        document = orjson.loads((stack.config.data_dir / "aggregated" / aggregated_file_name(hour)).read_bytes())
        for vehicle in document["vehicles"]:
            assert vehicle["vehicle_id"] not in vehicles, "one test run stays within one hour per vehicle"
            vehicles[vehicle["vehicle_id"]] = vehicle
    return vehicles


def test_two_receiver_workers_and_two_consumers_keep_every_reading_exactly(tmp_path: Path) -> None:
    """3,000 concurrent readings through 2 uvicorn workers and 2 consumers: all on disk, files distinct, sums exact."""
    config = StackConfig(
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        api_key=secrets.token_hex(16),
        consumers=2,
        receiver_workers=2,
        env={"LOG_LEVEL": "INFO", "SQS_TIMEOUT_S": "15"},  # a shared, busy machine: few 503s, please
    )
    raw = config.data_dir / "raw"
    with EmbeddedStack(config) as stack:
        workers = stack.receiver_workers()
        assert len(workers) == 2 and stack.service("receiver").process.pid not in workers
        cpu_before = worker_cpu(workers)
        run = asyncio.run(
            send_load(stack.receiver_url, config.api_key, READINGS, RATE, 1, vehicles=100, keep_payloads=True)
        )
        cpu_used = {pid: value - cpu_before[pid] for pid, value in worker_cpu(workers).items()}
        assert len(run.accepted) >= 0.95 * READINGS, run.refused
        index = DiskIndex(raw)
        assert wait_persisted(index, set(run.accepted), timeout_s=45) == set()
        assert index.misplaced == set(), "every reading sits in the partition of its ingest hour"
        aggregated = aggregate(stack, index.hours_holding(set(run.accepted)))
        assert stack.receiver_workers() == workers, "no worker died and was replaced"
        # /metrics sums both workers (multiprocess mode), whichever worker answers the scrape.
        counts = {accepted_total(stack.receiver_url) for _ in range(8)}
        assert counts == {len(run.accepted)}, counts
    # Both workers served: each burned a real share of the receivers' CPU while the load ran.
    assert set(cpu_used) == set(workers)
    total = sum(cpu_used.values())
    assert total > 0.5 and all(used > 0.1 * total for used in cpu_used.values()), cpu_used

    # Every file complete and distinct; both consumers wrote; nothing half-written left behind.
    files = sorted(raw.rglob("batch-*.jsonl"))
    assert len({f.name for f in files}) == len(files), "a batch file name was used twice"
    assert list(config.data_dir.rglob("*.tmp")) == []
    on_disk: dict[NaturalKey, dict[str, float]] = {}
    for path in files:
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} is not complete JSONL"
        for line in data.splitlines():
            record = orjson.loads(line)
            assert "ingest_received_at" in record
            copy = on_disk.setdefault(natural_key_of(record), record["payload"])
            assert copy == record["payload"], "two copies of one reading differ"
    assert set(run.accepted) <= set(on_disk), "every accepted reading is on disk"
    assert len(on_disk) <= run.sent and all(key.vehicle_id.startswith("load-") for key in on_disk)
    assert run.payloads is not None
    assert all(on_disk[key] == payload for key, payload in run.payloads.items()), "stored as sent"
    writers = {path.name.rsplit("-", 1)[1].split("_")[0] for path in files}
    assert len(writers) == 2, f"both consumers took part: {writers}"

    # The aggregates count each reading once, whichever worker took it and whichever consumer wrote it.
    assert_aggregates_match(aggregated, on_disk)
