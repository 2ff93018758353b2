"""Crashes while readings stream in: what was acknowledged survives, and counts once.

SQS delivers at least once; the pipeline's promise on top of it is that a reading
answered 202 reaches disk whatever crashes in between, and that the aggregate counts it
exactly once. These tests ``kill -9`` the consumer and the receiver in the middle of a
simulator run, start them again, and hold the pipeline to that promise.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.common.aws import sync_client
from src.common.schema import NaturalKey
from src.embedded.stack import EmbeddedStack
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import wait_persisted
from tests.integration.test_end_to_end import run_aggregator
from tests.paths import REPO_ROOT

# Timing matters here (the simulator's 30 s deadline, 4 s redelivery): run with the machine to themselves.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

POISON = ["not json", '{"v": 2, "records": [{"vehicle_id": "veh-x"}]}', '{"v": 7, "records": []}']
"""Bodies no consumer can store: SQS's redrive must move them to the DLQ after 5 receives."""


def dead_letters(sqs: Any, dlq_url: str) -> int:
    attributes = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


def start_simulator(
    stack: EmbeddedStack, workdir: Path, vehicles: int, duration_s: int, seed: int
) -> subprocess.Popen[bytes]:
    """The simulator CLI against ``stack`` at 10 readings/s per vehicle, logging what was accepted."""
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", str(vehicles)]
    command += ["--duration", str(duration_s), "--rate-ms", "100", "--seed", str(seed), "--url", stack.receiver_url]
    command += ["--accepted-log", str(workdir / "accepted.jsonl"), "--report-json", str(workdir / "simulator.json")]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def accepted_keys(accepted_log: Path) -> list[NaturalKey]:
    return [
        NaturalKey(r["vehicle_id"], r["can_id"], r["timestamp"])
        for r in map(orjson.loads, accepted_log.read_bytes().splitlines())
    ]


def test_acknowledged_readings_survive_kill_9_of_consumer_three_times_and_receiver_once_and_poison_is_dead_lettered(
    quick_redelivery_stack: EmbeddedStack, tmp_path: Path
) -> None:
    """9,000 readings from the simulator; consumer killed (-9) three times, receiver once, each restarted.

    Every reading the receiver acknowledged is on disk (raw files may hold duplicates),
    the simulator resent what the dead receiver refused or never answered (nothing gave
    up), and the aggregator counts every acknowledged reading exactly once. Poison slipped
    into the stream ends in the dead-letter queue without holding anything up.
    """
    accepted_log, report_path = tmp_path / "accepted.jsonl", tmp_path / "simulator.json"
    with quick_redelivery_stack as stack:
        simulator = start_simulator(stack, tmp_path, vehicles=30, duration_s=30, seed=11)
        crashes = [(5, "consumer-0"), (10, "consumer-0"), (15, "receiver"), (20, "consumer-0")]
        started = time.monotonic()
        time.sleep(2)
        sqs = sync_client("sqs", stack.settings())
        assert stack.queues is not None
        for body in POISON:
            sqs.send_message(QueueUrl=stack.queues.url, MessageBody=body)
        for at_s, name in crashes:
            time.sleep(max(0.0, started + at_s - time.monotonic()))
            stack.crash(name)
            stack.restart(name)
        output, _ = simulator.communicate(timeout=180)
        assert simulator.returncode == 0, output.decode(errors="replace")[-3000:]

        report = orjson.loads(report_path.read_bytes())
        keys = accepted_keys(accepted_log)
        assert report["gave_up"] == 0 and report["rejected"] == 0, report
        assert report["retries"] > 0, "the receiver's crash cost some requests their answer"
        assert len(keys) == len(set(keys)) == report["accepted"] >= 30 * 300 * 0.95
        index = DiskIndex(stack.config.data_dir / "raw")
        assert wait_persisted(index, set(keys), timeout_s=90) == set()
        aggregated = run_aggregator(stack, index, set(keys))
        deadline = time.monotonic() + 60
        while dead_letters(sqs, stack.queues.dlq_url) < len(POISON):
            assert time.monotonic() < deadline, "poison reaches the dead-letter queue after 5 receives"
            time.sleep(0.5)

    per_vehicle = Counter(key.vehicle_id for key in keys)
    assert {vehicle: a["message_count"] for vehicle, a in aggregated.items()} == per_vehicle


def test_sigterm_drains_receiver_and_consumer_mid_stream(quick_redelivery_stack: EmbeddedStack, tmp_path: Path) -> None:
    """A stop (SIGTERM) of either service mid-stream loses nothing acknowledged and leaves nothing half done.

    The receiver answers what it took in before it exits, the consumer flushes what it
    holds; both exit cleanly, and every acknowledged reading is on disk once restarted.
    """
    accepted_log, report_path = tmp_path / "accepted.jsonl", tmp_path / "simulator.json"
    with quick_redelivery_stack as stack:
        simulator = start_simulator(stack, tmp_path, vehicles=20, duration_s=8, seed=12)
        time.sleep(2)
        assert stack.terminate("consumer-0") == 0
        stack.restart("consumer-0")
        time.sleep(2)
        # uvicorn shuts down gracefully, then re-raises the signal: -15 is its clean exit.
        assert stack.terminate("receiver") == -signal.SIGTERM
        stack.restart("receiver")
        output, _ = simulator.communicate(timeout=120)
        assert simulator.returncode == 0, output.decode(errors="replace")[-3000:]  # nothing rejected or given up

        keys = accepted_keys(accepted_log)
        assert orjson.loads(report_path.read_bytes())["accepted"] == len(keys) >= 20 * 80 * 0.95
        index = DiskIndex(stack.config.data_dir / "raw")
        assert wait_persisted(index, set(keys), timeout_s=60) == set()
    consumer_log = (tmp_path / "logs" / "consumer-0.log").read_text()
    assert "stopping: cancelling" in consumer_log and "consumer stopped:" in consumer_log
    assert "receiver stopped; pending readings flushed" in (tmp_path / "logs" / "receiver.log").read_text()
