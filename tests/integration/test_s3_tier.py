"""The S3 tier as a user runs it: real processes, moto's server as S3.

Protects issue 6's promise: with S3_BUCKET set, every reading that reached disk is also
in S3 under the same hive keys, a consumer killed before its uploads finished catches up
when it starts again, and with the local raw files deleted ``--source s3`` aggregates the
hour to the same bytes as the local files did.
"""

from __future__ import annotations

import asyncio
import gzip
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.common.aws import sync_client
from src.common.layout import aggregated_file_name, hour_label, s3_aggregated_key
from src.embedded.stack import EmbeddedStack, StackConfig
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import send_load, wait_persisted
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.integration

BUCKET = "telemetry-it"
DEADLINE_S = 60.0


@pytest.fixture
def s3_stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """A pipeline with the S3 tier on (bucket created as scripts/setup_s3.py creates it)."""
    config = StackConfig(
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        api_key=secrets.token_hex(16),
        s3_bucket=BUCKET,
        env={"LOG_LEVEL": "INFO"},
    )
    with EmbeddedStack(config) as running:
        yield running


def local_files(raw_dir: Path) -> dict[str, bytes]:
    """Every complete batch file, by its path under raw/ (what its S3 key must be)."""
    return {f"raw/{p.relative_to(raw_dir).as_posix()}": p.read_bytes() for p in raw_dir.rglob("batch-*.jsonl")}


def s3_files(stack: EmbeddedStack) -> dict[str, bytes]:
    """Every raw object, by its key without ``.gz``, decompressed."""
    s3 = sync_client("s3", stack.settings())
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="raw/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
            key = item["Key"].removesuffix(".gz")
            found[key] = gzip.decompress(body) if item["Key"].endswith(".gz") else body
    return found


def wait_uploaded(stack: EmbeddedStack) -> dict[str, bytes]:
    """Wait until S3 holds every local batch file with the same bytes; the local files."""
    raw_dir = stack.config.data_dir / "raw"
    deadline = time.monotonic() + DEADLINE_S
    while True:
        local, remote = local_files(raw_dir), s3_files(stack)
        if local and local == remote:
            return local
        if time.monotonic() > deadline:
            missing = sorted(set(local) - set(remote))
            pytest.fail(f"{len(missing)} of {len(local)} batch files not in S3 after {DEADLINE_S:.0f} s: {missing[:3]}")
        time.sleep(0.3)


def consumer_metrics(stack: EmbeddedStack, name: str = "consumer-0") -> str:
    url = f"http://127.0.0.1:{stack.metrics_ports[name]}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def aggregate(stack: EmbeddedStack, hour: str, source: str) -> bytes:
    command = [sys.executable, "-m", "src.aggregator.hourly_stats", "--hour", hour, "--source", source]
    done = subprocess.run(command, cwd=REPO_ROOT, env=stack.env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path = stack.config.data_dir / "aggregated" / f"aggregated-{hour}.json"
    data = path.read_bytes()
    path.unlink()
    return data


def test_every_stored_reading_is_in_s3_and_a_restart_catches_up(s3_stack: EmbeddedStack) -> None:
    """Every batch file reaches S3 under its hive key, byte for byte; objects a crash lost come back."""
    raw_dir = s3_stack.config.data_dir / "raw"
    index = DiskIndex(raw_dir)
    run = asyncio.run(send_load(s3_stack.receiver_url, s3_stack.config.api_key, 2000, 1000, 20, vehicles=50))
    assert len(run.accepted) == 2000, run.refused
    assert wait_persisted(index, set(run.accepted), timeout_s=DEADLINE_S) == set()
    uploaded = wait_uploaded(s3_stack)
    assert sum(body.count(b"\n") for body in uploaded.values()) >= 2000

    rules = sync_client("s3", s3_stack.settings()).get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    (raw_rule,) = [r for r in rules if r.get("Filter", {}).get("Prefix") == "raw/"]
    days = {t["StorageClass"]: t["Days"] for t in raw_rule["Transitions"]}
    assert days["STANDARD_IA"] >= 30 and days["GLACIER"] > days["STANDARD_IA"]

    metrics = consumer_metrics(s3_stack)
    assert "consumer_readings_written_total" in metrics and "consumer_uploads_pending 0.0" in metrics
    assert 'consumer_e2e_latency_seconds_bucket{le="+Inf"}' in metrics

    # A crash loses uploads in flight: here, every object of the run. The next start finds them missing.
    s3_stack.crash("consumer-0")
    s3 = sync_client("s3", s3_stack.settings())
    for key in list(s3_files(s3_stack)):
        s3.delete_object(Bucket=BUCKET, Key=f"{key}.gz")
    assert s3_files(s3_stack) == {}
    s3_stack.restart("consumer-0")
    assert wait_uploaded(s3_stack) == uploaded
    assert "upload catch-up:" in s3_stack.service("consumer-0").log_text()


def test_source_s3_aggregates_the_same_bytes_without_local_files(s3_stack: EmbeddedStack) -> None:
    """With raw/ deleted locally, --source s3 writes the aggregate --source local wrote; both land in S3."""
    raw_dir = s3_stack.config.data_dir / "raw"
    index = DiskIndex(raw_dir)
    run = asyncio.run(send_load(s3_stack.receiver_url, s3_stack.config.api_key, 1000, 1000, 20, vehicles=20))
    assert wait_persisted(index, set(run.accepted), timeout_s=DEADLINE_S) == set()
    wait_uploaded(s3_stack)

    hours = sorted(index.hours_holding(set(run.accepted)))
    s3 = sync_client("s3", s3_stack.settings())
    from_local = {hour: aggregate(s3_stack, hour_label(hour), "local") for hour in hours}
    for hour, document in from_local.items():
        assert s3.get_object(Bucket=BUCKET, Key=s3_aggregated_key(hour))["Body"].read() == document
        assert s3_aggregated_key(hour) == f"aggregated/{aggregated_file_name(hour)}"
    shutil.rmtree(raw_dir)
    for hour, document in from_local.items():
        assert aggregate(s3_stack, hour_label(hour), "s3") == document
