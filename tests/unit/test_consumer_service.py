"""The whole consumer against the embedded SQS: every body form lands on disk, and only then is deleted.

These tests run ``run(settings, stop)`` as a task next to moto's server and watch the
observable state (files under DATA_DIR, messages left in the queue), polling with
generous deadlines rather than asserting durations: the machine is shared and noisy.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.common.aws import sync_client
from src.common.envelope import encode_envelope, encode_record, serialize
from src.common.schema import StoredReading
from src.common.settings import CommonSettings, ConsumerSettings
from src.consumer import batch_consumer
from src.consumer.batch_consumer import run
from src.consumer.batching import ReceivedMessage
from src.consumer.receiving import QueueClient
from src.consumer.storage import BatchWriter
from src.consumer.visibility import VisibilityKeeper
from src.ops.queues import Queues
from tests.factories import reading_dict
from tests.waiting import DEADLINE_S, Tally, eventually


def reading(i: int, *, soc: float = 55.0) -> dict[str, Any]:
    now = datetime.now(UTC)
    return reading_dict(f"veh-{i:05d}", now - timedelta(milliseconds=300), received=now, battery_soc=soc)


def stored(i: int) -> StoredReading:
    return StoredReading.model_validate(reading(i))


def send(queues: Queues, *bodies: str) -> None:
    sqs = sync_client("sqs", CommonSettings())
    for body in bodies:
        sqs.send_message(QueueUrl=queues.url, MessageBody=body)


def queue_counts(url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attrs = sync_client("sqs", CommonSettings()).get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def stored_vehicle_ids(data_dir: Path) -> list[str]:
    lines = [
        line for path in sorted((data_dir / "raw").rglob("batch-*.jsonl")) for line in path.read_bytes().splitlines()
    ]
    return sorted(orjson.loads(line)["vehicle_id"] for line in lines)


def tmp_files(data_dir: Path) -> list[Path]:
    return list(data_dir.rglob("*.tmp"))


def settings(**overrides: Any) -> ConsumerSettings:
    values: dict[str, Any] = {"batch_timeout_s": 0.2, "wait_time_s": 1, "receive_concurrency": 2}
    values.update(overrides)
    return ConsumerSettings(**values)


@asynccontextmanager
async def consuming(config: ConsumerSettings) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(run(config, stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE_S)


@pytest.fixture
def data_dir(isolated_env: Path) -> Path:
    return isolated_env / "data"


async def test_v1_v2_and_compressed_v2_bodies_land_on_disk_and_are_deleted(queues: Queues, data_dir: Path) -> None:
    """Every body form the contract allows is stored, one line per reading, then deleted from SQS."""
    send(
        queues,
        encode_record(stored(1)),
        encode_envelope([serialize(stored(i)) for i in (2, 3, 4)]),
        encode_envelope([serialize(stored(i)) for i in (5, 6)], compress=True),
    )
    async with consuming(settings()):
        await eventually(lambda: queue_counts(queues.url) == (0, 0), "all messages deleted", in_thread=True)
    assert stored_vehicle_ids(data_dir) == [f"veh-{i:05d}" for i in range(1, 7)]
    assert tmp_files(data_dir) == []


async def test_a_lone_reading_is_flushed_by_the_timeout(queues: Queues, data_dir: Path) -> None:
    """One reading, far below batch_size, reaches disk within batch_timeout_s while the consumer keeps running."""
    async with consuming(settings(batch_size=100)):
        send(queues, encode_record(stored(7)))
        await eventually(
            lambda: stored_vehicle_ids(data_dir) == ["veh-00007"], "the lone reading on disk", in_thread=True
        )
        await eventually(lambda: queue_counts(queues.url) == (0, 0), "the message deleted", in_thread=True)


async def test_poison_is_not_deleted_and_does_not_block_valid_messages(
    queues: Queues, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Poison stays in SQS (redrive moves it to the DLQ after 5 receives); valid messages flow past it."""
    sqs = sync_client("sqs", CommonSettings())
    sqs.set_queue_attributes(QueueUrl=queues.url, Attributes={"VisibilityTimeout": "1"})
    invalid = reading(9, soc=150.0)
    send(queues, "not json at all", orjson.dumps(invalid).decode(), encode_record(stored(8)))
    caplog.set_level(logging.WARNING, logger="src.consumer")
    async with consuming(settings()):
        await eventually(
            lambda: stored_vehicle_ids(data_dir) == ["veh-00008"], "the valid reading on disk", in_thread=True
        )
        await eventually(
            lambda: queue_counts(queues.dlq_url)[0] == 2, "both poison messages in the DLQ", in_thread=True
        )
    assert set(stored_vehicle_ids(data_dir)) == {"veh-00008"}
    poison_logs = [r.getMessage() for r in caplog.records if "poison message" in r.getMessage()]
    assert any("not JSON" in m for m in poison_logs)
    assert any("not a valid reading" in m and "receive count 1" in m for m in poison_logs)


async def test_failing_writer_is_retried_once_then_nothing_is_deleted(
    queues: Queues, data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A persistent write failure leaves the messages in SQS, to come again after the visibility timeout.

    Nothing waits out a fixed time: a flush ends by releasing its messages from the
    visibility heartbeat, after its write (and retry) and after the delete it would
    have made, so once the release is signalled a third write or a delete would
    already have happened; only then does the test check that neither did.
    """
    calls: list[int] = []
    deletes: list[str] = []
    released = Tally()
    real_delete, real_release = QueueClient.delete, VisibilityKeeper.release

    def broken(self: BatchWriter, records: Any) -> Any:
        calls.append(len(list(records)))
        raise OSError(28, "No space left on device")

    async def spy_delete(self: QueueClient, messages: Any, batch_id: str) -> Any:
        deletes.extend(m.message_id for m in messages)
        return await real_delete(self, messages, batch_id)

    def spy_release(self: VisibilityKeeper, messages: Iterable[ReceivedMessage]) -> None:
        real_release(self, messages)
        released.tick()

    monkeypatch.setattr(BatchWriter, "write", broken)
    monkeypatch.setattr(QueueClient, "delete", spy_delete)
    monkeypatch.setattr(VisibilityKeeper, "release", spy_release)
    send(queues, encode_envelope([serialize(stored(i)) for i in (1, 2)]))
    async with consuming(settings()):
        await released.reaches(1, "the flush to give up")
        assert calls == [2, 2]  # the write and its one retry
        assert deletes == []
        assert await asyncio.to_thread(queue_counts, queues.url) == (0, 1)  # received, in flight, not deleted
    assert not (data_dir / "raw").exists() or stored_vehicle_ids(data_dir) == []
    assert any("write failed again" in r.getMessage() and "readings=2" in r.getMessage() for r in caplog.records)


async def test_transient_write_failure_succeeds_on_retry_and_deletes(
    queues: Queues, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One OSError is absorbed by the retry: the batch is stored and then deleted."""
    real_write = BatchWriter.write
    failures = [OSError(5, "I/O error")]

    def flaky(self: BatchWriter, records: Any) -> Any:
        if failures:
            raise failures.pop()
        return real_write(self, records)

    monkeypatch.setattr(BatchWriter, "write", flaky)
    send(queues, encode_record(stored(3)))
    async with consuming(settings()):
        await eventually(lambda: queue_counts(queues.url) == (0, 0), "the message deleted", in_thread=True)
    assert not failures
    assert stored_vehicle_ids(data_dir) == ["veh-00003"]


async def test_stop_flushes_buffered_readings(queues: Queues, data_dir: Path) -> None:
    """Readings buffered when stop arrives are written and deleted before run() returns."""
    send(queues, *(encode_record(stored(i)) for i in range(3)))
    async with consuming(settings(batch_timeout_s=600, batch_size=1000)):
        await eventually(lambda: queue_counts(queues.url) == (0, 3), "all three received", in_thread=True)
        assert stored_vehicle_ids(data_dir) == []  # buffered, not yet flushed
    assert stored_vehicle_ids(data_dir) == [f"veh-{i:05d}" for i in range(3)]
    assert queue_counts(queues.url) == (0, 0)


async def test_many_messages_in_size_triggered_batches(queues: Queues, data_dir: Path) -> None:
    """A backlog of many batches is drained and deleted, nothing lost (batches ready at once share a file)."""
    bodies = [encode_envelope([serialize(stored(m * 5 + i)) for i in range(5)]) for m in range(12)]
    send(queues, *bodies)
    async with consuming(settings(batch_size=10, batch_timeout_s=30)):
        await eventually(lambda: len(stored_vehicle_ids(data_dir)) == 60, "all 60 readings on disk", in_thread=True)
        await eventually(lambda: queue_counts(queues.url) == (0, 0), "all messages deleted", in_thread=True)
    assert sorted(set(stored_vehicle_ids(data_dir))) == stored_vehicle_ids(data_dir)  # each reading once


async def test_unreachable_sqs_is_retried_until_stopped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With SQS down at start, the consumer keeps retrying (never crashes) and still stops cleanly."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: connection refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    caplog.set_level(logging.WARNING, logger="src.consumer")
    async with consuming(settings()):
        await eventually(lambda: any("cannot resolve queue" in r.getMessage() for r in caplog.records), "a retry")


def test_main_installs_signal_handlers_and_exits_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    """main(): settings read once, SIGTERM sets the stop event run() waits on, exit code 0."""
    seen: list[ConsumerSettings] = []

    async def fake_run(config: ConsumerSettings, stop: asyncio.Event) -> None:
        seen.append(config)
        os.kill(os.getpid(), signal.SIGTERM)  # safe: main's handler is installed before run() starts
        await asyncio.wait_for(stop.wait(), DEADLINE_S)

    logging_calls: list[tuple[str, str]] = []
    monkeypatch.setattr(batch_consumer, "run", fake_run)
    monkeypatch.setattr(  # keep pytest's logging intact
        batch_consumer, "configure_logging", lambda level, log_format: logging_calls.append((level, log_format))
    )
    monkeypatch.setenv("BATCH_SIZE", "42")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    assert batch_consumer.main() == 0
    assert [s.batch_size for s in seen] == [42]
    assert logging_calls == [("DEBUG", "text")]


def test_sigterm_to_the_process_flushes_and_exits_zero(queues: Queues, data_dir: Path, isolated_env: Path) -> None:
    """`python -m src.consumer.batch_consumer` stops on SIGTERM after flushing what it buffered."""
    send(queues, encode_envelope([serialize(stored(i)) for i in range(4)]))
    env = {
        **os.environ,
        "BATCH_TIMEOUT_S": "600",
        "WAIT_TIME_S": "1",
        "LOG_LEVEL": "INFO",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "src.consumer.batch_consumer"],
        cwd=isolated_env,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        end = time.monotonic() + DEADLINE_S
        while queue_counts(queues.url) != (0, 1):
            assert process.poll() is None, process.communicate()[0].decode()
            assert time.monotonic() < end, "the consumer never received the message"
            time.sleep(0.05)
        assert stored_vehicle_ids(data_dir) == []
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=DEADLINE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output.decode()
    assert stored_vehicle_ids(data_dir) == [f"veh-{i:05d}" for i in range(4)]
    assert queue_counts(queues.url) == (0, 0)
    text = output.decode()
    assert "received SIGTERM" in text and "flushed: readings=4 messages=1" in text and "readings_written=4" in text


def deeply_nested_body(i: int, depth: int) -> str:
    """A v1 body that is valid JSON and a valid reading, with an extra field nested ``depth`` levels.

    Built as text: orjson refuses to encode more than 254 levels, but decodes up to 1023.
    """
    document = orjson.dumps(reading(i)).decode()
    return document[:-1] + ',"deep":' + "[" * depth + "1" + "]" * depth + "}"


async def test_unserialisable_nesting_is_poison_and_does_not_stall_the_valid_batch(
    queues: Queues, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reading whose extras nest too deep to be written is poison at decode, not a failed flush.

    It once passed decoding and made every flush of its batch fail, holding the valid
    readings received with it in SQS until the poison reached the dead-letter queue.
    """
    sqs = sync_client("sqs", CommonSettings())
    sqs.set_queue_attributes(QueueUrl=queues.url, Attributes={"VisibilityTimeout": "1"})
    send(queues, encode_record(stored(1)), deeply_nested_body(2, 300), encode_record(stored(3)))
    caplog.set_level(logging.WARNING, logger="src.consumer")
    async with consuming(settings(receive_concurrency=1)):
        await eventually(
            lambda: stored_vehicle_ids(data_dir) == ["veh-00001", "veh-00003"], "the valid readings", in_thread=True
        )
        assert not any("flush failed" in r.getMessage() for r in caplog.records)
        await eventually(lambda: queue_counts(queues.dlq_url)[0] == 1, "the deep message in the DLQ", in_thread=True)
    assert stored_vehicle_ids(data_dir) == ["veh-00001", "veh-00003"]
    assert not any("flush failed" in r.getMessage() for r in caplog.records)
    poison_logs = [r.getMessage() for r in caplog.records if "poison message" in r.getMessage()]
    assert any("receive count 1" in m and "record cannot be stored" in m for m in poison_logs)
