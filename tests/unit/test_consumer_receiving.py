"""Receiving and deleting: decoding, backoff that recovers, deletes that never raise, backpressure.

These use fakes for the SQS client so the failure paths (throttling, endpoint down,
partial delete failures) are exercised exactly and instantly.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from src.common.envelope import MessageDecodeError, encode_envelope, encode_record, serialize
from src.common.retry import Backoff
from src.common.schema import StoredReading
from src.common.settings import ConsumerSettings
from src.consumer import batch_consumer
from src.consumer.batch_consumer import Consumer
from src.consumer.batching import ReceivedMessage
from src.consumer.receiving import DeleteOutcome, QueueClient, parse_message
from src.consumer.storage import BatchWriter
from tests.factories import stored_reading
from tests.waiting import Tally, eventually

NOW = datetime.now(UTC)


def stored(i: int) -> StoredReading:
    return stored_reading(f"veh-{i}", NOW, NOW)


def raw_message(i: int, body: str | None = None) -> dict[str, Any]:
    return {
        "MessageId": f"id-{i}",
        "ReceiptHandle": f"rh-{i}",
        "Body": body if body is not None else encode_record(stored(i)),
        "Attributes": {"SentTimestamp": "1760883296000", "ApproximateReceiveCount": "3"},
    }


def received(i: int) -> ReceivedMessage:
    return ReceivedMessage(message_id=f"id-{i}", receipt_handle=f"rh-{i}", records=[stored(i)], received_at=0.0)


# -- parse_message -------------------------------------------------------------------


def test_parse_message_reads_ids_and_sqs_attributes() -> None:
    message = parse_message(raw_message(1, encode_envelope([serialize(stored(1)), serialize(stored(2))])), 5.0)
    assert message.message_id == "id-1" and message.receipt_handle == "rh-1"
    assert [r.vehicle_id for r in message.records] == ["veh-1", "veh-2"]
    assert message.sent_at == 1_760_883_296.0 and message.received_at == 5.0 and message.receive_count == 3


def test_parse_message_without_attributes_and_with_poison() -> None:
    bare = {"MessageId": "x", "ReceiptHandle": "r", "Body": encode_record(stored(1))}
    message = parse_message(bare, 1.0)
    assert message.sent_at is None and message.receive_count == 1
    with pytest.raises(MessageDecodeError):
        parse_message(raw_message(2, "[1, 2]"), 1.0)


# -- QueueClient.delete --------------------------------------------------------------


class FakeSQS:
    """Answers delete_message_batch per call from a script of outcomes."""

    def __init__(self, script: list[Callable[[list[dict[str, str]]], dict[str, Any]]]) -> None:
        self.script = script
        self.calls: list[list[dict[str, str]]] = []

    async def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.calls.append(Entries)
        return self.script.pop(0)(Entries)


def all_ok(entries: list[dict[str, str]]) -> dict[str, Any]:
    return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}


def first_fails(entries: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "Successful": [{"Id": e["Id"]} for e in entries[1:]],
        "Failed": [{"Id": entries[0]["Id"], "Code": "ReceiptHandleIsInvalid", "SenderFault": True}],
    }


def endpoint_down(entries: list[dict[str, str]]) -> dict[str, Any]:
    raise ConnectionError("endpoint down")


async def test_delete_chunks_by_ten_and_reports_failures_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    """25 messages -> chunks of 10, 10, 5; Failed entries and a failed call are logged and counted."""
    fake = FakeSQS([all_ok, first_fails, endpoint_down])
    queue = QueueClient(fake, "url", wait_time_s=1)  # type: ignore[arg-type]
    outcome = await queue.delete([received(i) for i in range(25)], "b1")

    assert [len(c) for c in fake.calls] == [10, 10, 5]
    assert outcome == DeleteOutcome(deleted=19, failed=6)
    text = caplog.text
    assert "batch b1: message id-10 not deleted: ReceiptHandleIsInvalid" in text
    assert "batch b1: deleting 5 message(s) failed" in text


# -- the consumer loop with a fake queue ---------------------------------------------


class FakeQueue:
    """A QueueClient stand-in: scripted receive results (exceptions raise), deletes recorded.

    ``receives`` counts every receive call as it starts, and tests can await it
    (``await queue.receives.reaches(n, ...)``).
    """

    def __init__(self, script: list[Any], delete_error: Exception | None = None) -> None:
        self.script = script
        self.receives = Tally()
        self.deleted: list[str] = []
        self.attempted: list[str] = []
        self.delete_error = delete_error

    async def receive(self) -> list[Any]:
        self.receives.tick()
        if not self.script:
            await asyncio.sleep(0.01)
            return []
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item() if callable(item) else item

    async def delete(self, messages: list[ReceivedMessage], batch_id: str) -> DeleteOutcome:
        self.attempted.extend(m.message_id for m in messages)
        if self.delete_error:
            raise self.delete_error
        self.deleted.extend(m.message_id for m in messages)
        return DeleteOutcome(deleted=len(messages), failed=0)


def consumer_for(queue: FakeQueue, tmp_path: Path, sleeps: list[float], **overrides: Any) -> Consumer:
    async def record_sleep(delay: float) -> None:
        sleeps.append(delay)
        await asyncio.sleep(0)

    config = ConsumerSettings(**{"batch_timeout_s": 0.05, "receive_concurrency": 1, **overrides})
    return Consumer(
        config,
        queue,  # type: ignore[arg-type]
        BatchWriter(tmp_path / "raw", "t", rotation_bytes=1 << 20),
        write_retry_delay_s=0.0,
        backoff_factory=lambda: Backoff(base_s=0.2, cap_s=1.0, rng=lambda: 1.0),
        sleep=record_sleep,
    )


async def test_receive_errors_back_off_and_recover(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Throttling or an unreachable endpoint: exponential delays, then receiving resumes by itself."""
    caplog.set_level(logging.INFO, logger="src.consumer")
    errors: list[Any] = [ConnectionError("refused")] * 4
    queue = FakeQueue([*errors, [raw_message(1)]])
    sleeps: list[float] = []
    consumer = consumer_for(queue, tmp_path, sleeps)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: queue.deleted == ["id-1"], "the message after recovery")
    stop.set()
    stats = await asyncio.wait_for(task, 30)

    assert sleeps[:4] == [0.2, 0.4, 0.8, 1.0]
    assert stats.receive_errors == 4 and stats.readings_written == 1 and stats.messages_deleted == 1
    assert "receiving again after 4 failed attempt(s)" in caplog.text


async def test_poison_in_a_receive_is_skipped_and_counted(tmp_path: Path) -> None:
    queue = FakeQueue([[raw_message(1, "{oops"), raw_message(2)]])
    consumer = consumer_for(queue, tmp_path, [])
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: queue.deleted == ["id-2"], "the valid message")
    stop.set()
    stats = await asyncio.wait_for(task, 30)
    assert stats.poison_receives == 1 and "id-1" not in queue.deleted


class PauseLog(logging.Handler):
    """Which task logged each "backpressure" line: a poller logs one as it pauses before a receive.

    (Python 3.11's log records do not carry the task's name.)
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pollers: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("backpressure:"):
            task = asyncio.current_task()
            self.pollers.append(task.get_name() if task is not None else "no task")


async def test_backpressure_pauses_pollers_while_flushes_are_stuck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With writes stalled, pollers stop receiving at ~10 batches' worth of unflushed readings, then resume.

    Nothing waits out a fixed time. Each poller checks the budget right before each
    receive and logs as it pauses there; once all three have (and the stuck write has
    started), a poller that did not really pause would already have called the fake
    queue again, so the receive count must have stopped at the budget. Resuming is
    the fake queue being polled ten more times once the write is let through.
    """
    gate = threading.Event()
    writes = Tally()
    real_write = BatchWriter.write

    def stalled(self: BatchWriter, records: Any) -> Any:
        writes.tick()
        gate.wait(30)
        return real_write(self, records)

    monkeypatch.setattr(BatchWriter, "write", stalled)
    monkeypatch.setattr(batch_consumer, "BACKPRESSURE_MIN_READINGS", 0)  # the budget is then 10 batches' worth
    caplog.set_level(logging.DEBUG, logger="src.consumer")
    pause_log = PauseLog()
    logging.getLogger("src.consumer").addHandler(pause_log)
    counter = iter(range(10_000))
    queue = FakeQueue([lambda: [raw_message(next(counter))]] * 100)
    consumer = consumer_for(queue, tmp_path, [], batch_size=2, receive_concurrency=3)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        budget = 20 + 3  # 10 batches of 2 readings, plus a receive in flight per poller when it was reached
        await eventually(  # or past the budget: then the assert below fails now, not at the deadline
            lambda: len(pause_log.pollers) >= 3 or queue.receives.count > budget, "every poller to pause"
        )
        paused_at = queue.receives.count
        await writes.reaches(1, "the stuck write to start")
        assert queue.receives.count == paused_at <= budget
        assert sorted(pause_log.pollers) == ["poller-0", "poller-1", "poller-2"]  # each paused once, none woke
        gate.set()
        await queue.receives.reaches(paused_at + 10, "receiving to resume")
        stop.set()
        stats = await asyncio.wait_for(task, 30)
    finally:
        gate.set()
        logging.getLogger("src.consumer").removeHandler(pause_log)
    assert len(set(queue.deleted)) == len(queue.deleted) == stats.readings_written > paused_at


async def test_unexpected_flush_error_is_logged_and_the_consumer_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in a flush (here: delete raising) is contained: logged, slot released, shutdown still clean."""
    queue = FakeQueue([[raw_message(1)], [raw_message(2)], [raw_message(3)]], delete_error=RuntimeError("boom"))
    consumer = consumer_for(queue, tmp_path, [], batch_size=1)
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await eventually(lambda: len(queue.attempted) == 3, "every message's flush to fail")
    failures = caplog.text.count("flush failed unexpectedly")
    queue.script.append([raw_message(4)])  # batches ready together share a flush: one more comes after
    await eventually(
        lambda: len(queue.attempted) == 4 and caplog.text.count("flush failed unexpectedly") == failures + 1,
        "a flush after the failures",
    )
    stop.set()
    await asyncio.wait_for(task, 30)
    assert "RuntimeError: boom" in caplog.text
