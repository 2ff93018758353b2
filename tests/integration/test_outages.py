"""Outages: SQS gone, the disk gone. Nothing acknowledged is lost, and nobody needs a restart.

The receiver must say no (503, promptly) rather than hang or accept what it cannot
queue; the consumer must keep what it cannot write in SQS and carry on by itself once
SQS or the disk is back.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.error
import urllib.request

import pytest

from src.common.aws import sync_client
from src.embedded.stack import EmbeddedStack
from src.loadtest.disk_index import DiskIndex
from src.loadtest.run import send_load, wait_persisted
from src.ops.queues import provision_queues

pytestmark = pytest.mark.integration


def status_of(url: str) -> tuple[int, float]:
    """The HTTP status of a GET and how long the answer took."""
    request = urllib.request.Request(url)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, time.monotonic() - started


def send(stack: EmbeddedStack, readings: int, seed: int) -> set:
    run = asyncio.run(send_load(stack.receiver_url, stack.config.api_key, readings, 200, 1, vehicles=10, seed=seed))
    assert len(run.accepted) == readings, run.refused
    return set(run.accepted)


def test_sqs_outage_gives_prompt_503s_and_both_services_resume_without_restart(
    quick_redelivery_stack: EmbeddedStack,
) -> None:
    """SQS down: ingest 503 within seconds, /health 503; SQS back: readings flow again through the same processes."""
    with quick_redelivery_stack as stack:
        index = DiskIndex(stack.config.data_dir / "raw")
        before = send(stack, 200, seed=1)
        assert wait_persisted(index, before, timeout_s=60) == set()
        receiver, consumer = stack.service("receiver").process.pid, stack.service("consumer-0").process.pid

        stack.crash("moto")
        health, health_s = status_of(f"{stack.receiver_url}/health")
        assert health == 503 and health_s < 5
        started = time.monotonic()
        down = asyncio.run(send_load(stack.receiver_url, stack.config.api_key, 20, 20, 1, vehicles=2, seed=2))
        assert not down.accepted and set(down.refused) == {"503"}, down.refused
        # 20 requests over 1 s, each refused within SQS_TIMEOUT_S (3 s), not after the client's 30 s.
        assert time.monotonic() - started < 10

        stack.restart("moto")
        provision_queues(stack.settings())  # a new moto remembers nothing
        after = send(stack, 200, seed=3)
        assert wait_persisted(index, after, timeout_s=60) == set()
        assert (stack.service("receiver").process.pid, stack.service("consumer-0").process.pid) == (receiver, consumer)
        assert "receive failed" in stack.service("consumer-0").log_text()


def test_disk_outage_keeps_readings_in_sqs_until_the_disk_is_back(quick_redelivery_stack: EmbeddedStack) -> None:
    """The consumer cannot write (a file where its raw directory should be): nothing is deleted; fixed: all on disk."""
    with quick_redelivery_stack as stack:
        raw = stack.config.data_dir / "raw"
        shutil.rmtree(raw, ignore_errors=True)
        raw.write_text("not a directory")  # every write fails with an OSError, even for root
        accepted = send(stack, 100, seed=4)

        assert stack.queues is not None
        sqs = sync_client("sqs", stack.settings())
        deadline = time.monotonic() + 30
        log = stack.service("consumer-0")
        while "write failed again" not in log.log_text():
            assert time.monotonic() < deadline, log.log_text()[-3000:]
            time.sleep(0.2)
        attributes = sqs.get_queue_attributes(
            QueueUrl=stack.queues.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert sum(int(value) for value in attributes.values()) > 0, "nothing may be deleted while unwritten"

        raw.unlink()
        assert wait_persisted(DiskIndex(raw), accepted, timeout_s=60) == set()
