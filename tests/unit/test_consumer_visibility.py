"""The visibility heartbeat: held messages stay invisible while their batch waits and is written.

The keeper's rules are tested with a fake SQS client and a fake clock (exact calls, no
waiting); the promise itself, that a write slower than the visibility timeout causes no
redelivery while a write that gave up lets its messages come back, against moto's
server with the timeout shortened to 2-3 s.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from src.common.aws import sqs_client, sync_client
from src.common.envelope import encode_envelope, encode_record, serialize
from src.common.settings import CommonSettings, ConsumerSettings
from src.consumer import batch_consumer, metrics
from src.consumer.batching import ReceivedMessage
from src.consumer.metrics import ConsumerStats
from src.consumer.receiving import ExtendOutcome, QueueClient
from src.consumer.storage import BatchWriter
from src.consumer.visibility import VisibilityKeeper
from src.ops.queues import Queues
from tests.paths import REPO_ROOT
from tests.unit.test_consumer_service import (
    consuming,
    queue_counts,
    send,
    settings,
    stored,
    stored_vehicle_ids,
)
from tests.waiting import Tally, eventually


@pytest.fixture
def data_dir(isolated_env: Path) -> Path:
    return isolated_env / "data"


# -- settings --------------------------------------------------------------------------


def test_defaults_match_the_queue_that_provisioning_creates(queues: Queues) -> None:
    """VISIBILITY_TIMEOUT_S defaults to the contract's 30 s, which setup_sqs.py gives the queue; beat a sixth of it."""
    config = ConsumerSettings()
    attributes = sync_client("sqs", CommonSettings()).get_queue_attributes(
        QueueUrl=queues.url, AttributeNames=["VisibilityTimeout"]
    )["Attributes"]
    assert config.visibility_timeout_s == int(attributes["VisibilityTimeout"]) == 30
    assert config.visibility_beat_s is None and config.heartbeat_s == 5.0


def test_visibility_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISIBILITY_TIMEOUT_S", "2")
    monkeypatch.setenv("VISIBILITY_BEAT_S", "0.2")
    config = ConsumerSettings()
    assert (config.visibility_timeout_s, config.heartbeat_s) == (2, 0.2)
    monkeypatch.setenv("VISIBILITY_BEAT_S", " ")
    assert ConsumerSettings().visibility_beat_s is None


@pytest.mark.parametrize(("timeout", "beat"), [("2", "0.5"), ("30", "10"), ("0", ""), ("43201", ""), ("30", "0")])
def test_a_beat_too_slow_for_the_timeout_is_refused(monkeypatch: pytest.MonkeyPatch, timeout: str, beat: str) -> None:
    """The beat must stay below a quarter of the timeout, or a message reappears before its extension."""
    monkeypatch.setenv("VISIBILITY_TIMEOUT_S", timeout)
    monkeypatch.setenv("VISIBILITY_BEAT_S", beat)
    with pytest.raises(ValidationError):
        ConsumerSettings()


def test_env_example_documents_the_visibility_settings() -> None:
    text = (REPO_ROOT / ".env.example").read_text()
    assert "\nVISIBILITY_TIMEOUT_S=30\n" in text and "# VISIBILITY_BEAT_S=" in text


# -- the keeper against a fake SQS client ----------------------------------------------


def held(i: int) -> ReceivedMessage:
    return ReceivedMessage(message_id=f"id-{i}", receipt_handle=f"rh-{i}", records=[stored(i)], received_at=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSQS:
    """change_message_visibility_batch answered by ``answer`` (all successful by default), calls recorded."""

    def __init__(self, answer: Any = None) -> None:
        self.calls: list[list[dict[str, Any]]] = []
        self.answer = answer

    async def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.calls.append(Entries)
        if self.answer is not None:
            return await self.answer(Entries)
        return {"Successful": [{"Id": e["Id"]} for e in Entries], "Failed": []}

    def handles(self) -> list[list[str]]:
        return [[e["ReceiptHandle"] for e in call] for call in self.calls]


def keeper_for(fake: Any, clock: Clock, timeout_s: int = 30) -> tuple[VisibilityKeeper, ConsumerStats]:
    stats = ConsumerStats()
    queue = QueueClient(fake, "url", wait_time_s=1)
    return VisibilityKeeper(queue, timeout_s, timeout_s / 6, stats, clock=clock), stats


def counter(stats: ConsumerStats, name: str) -> float:
    """The counter as a Prometheus scrape of the consumer would show it."""
    registry = CollectorRegistry()
    registry.register(metrics.ConsumerCollector(stats, metrics.LatencyHistogram()))
    return registry.get_sample_value(f"{name}_total") or 0.0


async def test_only_messages_held_half_the_timeout_are_extended_in_chunks_of_ten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """25 messages of one batch renew together (10+10+5, full timeout each); a younger batch waits its turn."""
    caplog.set_level(logging.INFO, logger="src.consumer")
    fake, clock = FakeSQS(), Clock()
    keeper, stats = keeper_for(fake, clock)
    extensions_before = counter(stats, "consumer_visibility_extensions")
    for i in range(25):
        keeper.hold(held(i), "b1")
    clock.now += 10
    keeper.hold(held(99), "b2")

    clock.now += 4.9  # b1 held 14.9 s: not yet
    assert await keeper.beat() == 0 and fake.calls == []
    clock.now += 0.1  # b1 held 15 s: half the timeout
    assert await keeper.beat() == 25
    assert [len(c) for c in fake.calls] == [10, 10, 5]
    assert fake.calls[0][0] == {"Id": "0", "ReceiptHandle": "rh-0", "VisibilityTimeout": 30}
    assert "batch b1: visibility extended to 30 s for 25 message(s) (held up to 15.0 s" in caplog.text

    fake.calls.clear()
    clock.now += 10  # b2 held 15 s; b1 renewed only 10 s ago
    assert await keeper.beat() == 1 and fake.handles() == [["rh-99"]]
    keeper.release([held(i) for i in range(25)])
    assert keeper.held == 1
    fake.calls.clear()
    clock.now += 15
    assert await keeper.beat() == 1 and fake.handles() == [["rh-99"]]  # released messages are never extended
    assert stats.visibility_extensions == 27 and stats.visibility_extension_failures == 0
    assert counter(stats, "consumer_visibility_extensions") - extensions_before == 27


async def test_extension_failures_are_logged_with_the_batch_and_retried_next_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed call and failed entries: logged (batch id, counts, reasons), never raised, retried; successes not."""
    script: list[Any] = ["first entry fails", "raise"]  # chunk of 10, then chunk of 2

    async def answer(entries: list[dict[str, Any]]) -> dict[str, Any]:
        step = script.pop(0) if script else "ok"
        if step == "raise":
            raise ConnectionError("endpoint down")
        failed = entries[:1] if step == "first entry fails" else []
        return {
            "Successful": [{"Id": e["Id"]} for e in entries if e not in failed],
            "Failed": [
                {"Id": e["Id"], "Code": "InternalError", "Message": "try again", "SenderFault": False} for e in failed
            ],
        }

    fake, clock = FakeSQS(answer), Clock()
    keeper, stats = keeper_for(fake, clock)
    failures_before = counter(stats, "consumer_visibility_extension_failures")
    for i in range(12):
        keeper.hold(held(i), "b7")
    clock.now += 15

    assert await keeper.beat() == 9  # of the 10, the first failed; the call for the last 2 raised
    text = caplog.text
    assert "batch b7: extending visibility failed for 3 of 12 message(s)" in text
    assert "ConnectionError('endpoint down')" in text and "InternalError try again" in text and "retrying" in text
    assert stats.visibility_extension_failures == 3
    assert counter(stats, "consumer_visibility_extension_failures") - failures_before == 3

    fake.calls.clear()
    clock.now += 0.5
    assert await keeper.beat() == 3  # only the failed ones, which are still due
    assert sorted(h for call in fake.handles() for h in call) == ["rh-0", "rh-10", "rh-11"]
    assert stats.visibility_extensions == 12


async def test_a_message_released_during_the_call_is_neither_renewed_nor_reported() -> None:
    """Deleted while its extension was in flight: ReceiptHandleIsInvalid is expected, not a failure."""
    clock = Clock()
    keeper: VisibilityKeeper

    async def delete_meanwhile(entries: list[dict[str, Any]]) -> dict[str, Any]:
        keeper.release([held(0)])
        return {
            "Successful": [{"Id": "1"}],
            "Failed": [{"Id": "0", "Code": "ReceiptHandleIsInvalid", "SenderFault": True}],
        }

    keeper, stats = keeper_for(FakeSQS(delete_meanwhile), clock)
    keeper.hold(held(0), "b1")
    keeper.hold(held(1), "b1")
    clock.now += 15
    assert await keeper.beat() == 1
    assert stats.visibility_extension_failures == 0 and keeper.held == 1


async def test_a_call_without_answer_is_given_up_when_the_window_ends(caplog: pytest.LogCaptureFixture) -> None:
    """No answer before the oldest message's window is over: counted as failed, so the next beat retries."""

    async def hang(entries: list[dict[str, Any]]) -> dict[str, Any]:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    clock = Clock()
    keeper, stats = keeper_for(FakeSQS(hang), clock, timeout_s=1)
    keeper.hold(held(0), "b3")
    clock.now += 0.6  # 0.4 s of the 1 s window left
    started = time.monotonic()
    assert await keeper.beat() == 0
    assert time.monotonic() - started < 5
    assert stats.visibility_extension_failures == 1
    assert "batch b3: extending visibility failed for 1 of 1 message(s) (no answer within 0.4 s)" in caplog.text
    assert not keeper._leases["rh-0"].extending


async def test_a_slow_call_delays_only_its_own_messages() -> None:
    """While one call is in flight its messages are skipped, and later rounds still serve the others."""
    answer = asyncio.Event()

    async def slow_for_b1(entries: list[dict[str, Any]]) -> dict[str, Any]:
        if entries[0]["ReceiptHandle"] == "rh-1":
            await answer.wait()
        return {"Successful": [{"Id": e["Id"]} for e in entries], "Failed": []}

    fake, clock = FakeSQS(slow_for_b1), Clock()
    keeper, stats = keeper_for(fake, clock)
    keeper.hold(held(1), "b1")
    clock.now += 15
    first = asyncio.create_task(keeper.beat())
    await eventually(lambda: len(fake.calls) == 1, "the first call", within_s=5)
    keeper.hold(held(2), "b2")
    clock.now += 15
    assert await keeper.beat() == 1  # b2 only: b1's call is still in flight
    assert fake.handles() == [["rh-1"], ["rh-2"]]
    answer.set()
    assert await first == 1
    assert stats.visibility_extensions == 2


async def test_cancelling_the_heartbeat_cancels_its_calls_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    """A message whose call hangs is not sent again by the next rounds; cancelling ends the call in flight.

    Rounds are counted as they finish instead of waiting out a fixed time: once three
    rounds after the hanging one have looked at the message and finished, any of them
    that did not skip it would have made a second call.
    """

    async def hang(entries: list[dict[str, Any]]) -> dict[str, Any]:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")

    fake = FakeSQS(hang)
    queue = QueueClient(fake, "url", 1)  # type: ignore[arg-type]
    keeper = VisibilityKeeper(queue, 30, 0.01, ConsumerStats(), clock=lambda: 100.0)
    keeper.hold(held(0), "b1")
    keeper._leases["rh-0"].renewed_at = 80.0  # held 20 s of 30: due, and 10 s of window left for the call
    rounds, real_beat = Tally(), keeper.beat

    async def counted_beat() -> int:
        try:
            return await real_beat()
        finally:
            rounds.tick()

    monkeypatch.setattr(keeper, "beat", counted_beat)
    task = asyncio.create_task(keeper.run())
    await eventually(lambda: len(fake.calls) == 1, "the hanging call", within_s=5)
    await rounds.reaches(3, "three more rounds", within_s=5)  # the first round hangs: it never finishes
    assert len(fake.calls) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not keeper._leases["rh-0"].extending


async def test_the_heartbeat_loop_survives_an_unexpected_error(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        async def extend(self, messages: Any, timeout_s: int) -> ExtendOutcome:
            raise RuntimeError("bug")

    keeper = VisibilityKeeper(Broken(), 1, 0.01, ConsumerStats(), clock=lambda: 0.0)  # type: ignore[arg-type]
    keeper.hold(held(0), "b1")
    keeper._leases["rh-0"].renewed_at = -1.0  # due at every beat
    task = asyncio.create_task(keeper.run())
    await eventually(lambda: caplog.text.count("round failed unexpectedly") >= 2, "two failed rounds", within_s=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "RuntimeError: bug" in caplog.text


# -- QueueClient against moto's server -------------------------------------------------


async def test_extend_against_the_embedded_sqs(queues: Queues) -> None:
    """Real ChangeMessageVisibilityBatch: a held message is extended; once deleted, its handle is invalid."""
    sqs = sync_client("sqs", CommonSettings())
    sqs.send_message(QueueUrl=queues.url, MessageBody=encode_record(stored(1)))
    raw = sqs.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=1)["Messages"][0]
    message = ReceivedMessage(raw["MessageId"], raw["ReceiptHandle"], [stored(1)], received_at=time.time())
    async with sqs_client(CommonSettings()) as client:
        queue = QueueClient(client, queues.url, wait_time_s=1)
        outcome = await queue.extend([message], 30)
        assert outcome.extended == [message] and outcome.failed == []
        sqs.delete_message(QueueUrl=queues.url, ReceiptHandle=raw["ReceiptHandle"])
        outcome = await queue.extend([message], 30)
        assert outcome.extended == [] and [m for m, _ in outcome.failed] == [message]
        assert outcome.failed[0][1].startswith("ReceiptHandleIsInvalid")


# -- the whole consumer against moto, with a 2-3 s visibility timeout ------------------


def shorten_visibility(queues: Queues, seconds: int) -> None:
    sync_client("sqs", CommonSettings()).set_queue_attributes(
        QueueUrl=queues.url, Attributes={"VisibilityTimeout": str(seconds)}
    )


def receive_any(url: str) -> list[str]:
    """What another consumer would get right now (a 1 s long poll); it must be nothing."""
    response = sync_client("sqs", CommonSettings()).receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    return [m["MessageId"] for m in response.get("Messages", [])]


async def watch_for_redelivery(url: str, until: threading.Event) -> list[str]:
    stolen: list[str] = []
    while not until.is_set():
        stolen += await asyncio.to_thread(receive_any, url)
    return stolen


class SlowWrites:
    """BatchWriter.write patched to take ``seconds`` longer; records each batch's size and signals start and end."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
        self.writing, self.written = threading.Event(), threading.Event()
        self.calls: list[int] = []
        real_write = BatchWriter.write

        def slow(writer: BatchWriter, records: Any) -> Any:
            records = list(records)
            self.calls.append(len(records))
            self.writing.set()
            time.sleep(seconds)
            try:
                return real_write(writer, records)
            finally:
                self.written.set()

        monkeypatch.setattr(BatchWriter, "write", slow)


async def test_a_write_slower_than_the_visibility_timeout_is_not_redelivered(
    queues: Queues, data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 4.5 s write under a 4 s visibility timeout: nobody else receives the messages, then they are deleted."""
    shorten_visibility(queues, 4)
    slow = SlowWrites(monkeypatch, 4.5)
    caplog.set_level(logging.INFO, logger="src.consumer")
    send(queues, encode_envelope([serialize(stored(i)) for i in range(3)]))
    async with consuming(settings(visibility_timeout_s=4, visibility_beat_s=0.25)):
        await eventually(slow.writing.is_set, "the write to start")
        stolen = await watch_for_redelivery(queues.url, slow.written)
        await eventually(
            lambda: queue_counts(queues.url) == (0, 0), "the message deleted after the write", in_thread=True
        )
    assert stolen == [], "a held message was delivered again while its write was in progress"
    assert slow.calls == [3]
    assert stored_vehicle_ids(data_dir) == [f"veh-{i:05d}" for i in range(3)]
    extended = [
        r.getMessage() for r in caplog.records if "visibility extended to 4 s for 1 message(s)" in r.getMessage()
    ]
    assert len(extended) >= 2  # about every 2 s for 4.5 s
    assert "queue VisibilityTimeout" not in caplog.text  # queue and settings agree: no warning


async def test_a_write_that_gave_up_stops_the_extension_and_the_messages_come_back(
    queues: Queues, data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Extended while the write tried (until extended once, then a retry); after it gave up, the message returns."""
    shorten_visibility(queues, 3)
    calls: list[float] = []
    real_write, real_extend = BatchWriter.write, QueueClient.extend
    extended = threading.Event()

    async def spy(self: QueueClient, messages: Any, timeout_s: int) -> ExtendOutcome:
        outcome = await real_extend(self, messages, timeout_s)
        if outcome.extended:
            extended.set()
        return outcome

    def failing_twice(self: BatchWriter, records: Any) -> Any:
        calls.append(time.monotonic())
        if len(calls) == 1:
            assert extended.wait(20), "the held message was never extended"
        if len(calls) <= 2:
            raise OSError(5, "I/O error")
        return real_write(self, records)

    monkeypatch.setattr(QueueClient, "extend", spy)
    monkeypatch.setattr(BatchWriter, "write", failing_twice)
    caplog.set_level(logging.INFO, logger="src.consumer")
    send(queues, encode_record(stored(4)))
    async with consuming(settings(visibility_timeout_s=3, visibility_beat_s=0.25)):
        # Wait for the third write too: moto's approximate counts can read (0, 0) for a moment
        # while the given-up message is between its visibility windows.
        await eventually(
            lambda: len(calls) == 3 and queue_counts(queues.url) == (0, 0),
            "the redelivered message stored and deleted",
            in_thread=True,
        )
    assert len(calls) == 3
    assert calls[2] - calls[1] < 3 + 5, "came back after about the timeout (+ a poll and a batch timeout)"
    assert stored_vehicle_ids(data_dir) == ["veh-00004"]
    text = caplog.text
    assert "visibility extended to 3 s for 1 message(s)" in text
    assert text.index("visibility extended") < text.index("write failed again")


async def test_an_extension_error_is_retried_on_the_next_beat_without_redelivery(
    queues: Queues, data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first ChangeMessageVisibilityBatch call fails: logged, the next beat extends in time."""
    shorten_visibility(queues, 4)

    class FlakyClient:
        def __init__(self, client: Any) -> None:
            self._client = client
            self.failures = 1

        def __getattr__(self, name: str) -> Any:
            return getattr(self._client, name)

        async def change_message_visibility_batch(self, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("connection reset")
            return await self._client.change_message_visibility_batch(**kwargs)

    class FlakyQueueClient(QueueClient):
        def __init__(self, client: Any, *args: Any) -> None:
            super().__init__(FlakyClient(client), *args)

    monkeypatch.setattr(batch_consumer, "QueueClient", FlakyQueueClient)
    slow = SlowWrites(monkeypatch, 4.5)
    caplog.set_level(logging.INFO, logger="src.consumer")
    send(queues, encode_record(stored(5)))
    async with consuming(settings(visibility_timeout_s=4, visibility_beat_s=0.25)):
        await eventually(slow.writing.is_set, "the write to start")
        stolen = await watch_for_redelivery(queues.url, slow.written)
        await eventually(lambda: queue_counts(queues.url) == (0, 0), "the message deleted", in_thread=True)
    assert stolen == []
    assert stored_vehicle_ids(data_dir) == ["veh-00005"]
    text = caplog.text
    failure = text.index("extending visibility failed for 1 of 1 message(s) (ConnectionError('connection reset'))")
    assert failure < text.index("visibility extended to 4 s for 1 message(s)")
