"""The sender: 202 accepted, transient failures retried with bounded jittered backoff, bad input rejected."""

from __future__ import annotations

import logging
import random
import socket

import orjson
import pytest

from src.generator.sender import Outcome, RetryPolicy, Sender, SendStats, _detail
from tests.fakes import API_KEY, FakeReceiver

FAST = RetryPolicy(base_delay_s=0.001, max_delay_s=0.01, max_attempts=5, deadline_s=10.0)


def reading(vehicle: str = "veh-00001", n: int = 0) -> dict[str, object]:
    return {"timestamp": f"2025-10-19T17:00:{n:02d}Z", "vehicle_id": vehicle, "can_id": "0x1F0", "payload": {}}


class RecordingSleep:
    """An injected sleep: records the backoff delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def test_202_is_accepted_and_counted(receiver: FakeReceiver) -> None:
    """The happy path: one request per reading, with the API key, counted as accepted."""
    async with Sender(receiver.url, API_KEY, policy=FAST) as sender:
        assert await sender.send(reading()) is Outcome.ACCEPTED
        assert await sender.send(orjson.dumps(reading(n=1))) is Outcome.ACCEPTED
    assert sender.stats == SendStats(sent=2, accepted=2)
    assert len(receiver.accepted) == 2


async def test_503_then_202_is_retried_and_accepted(receiver: FakeReceiver) -> None:
    """503 means the queue was briefly unreachable: retry, and the reading gets through."""
    sleep = RecordingSleep()
    async with Sender(receiver.url, API_KEY, policy=FAST, sleep=sleep) as sender:
        assert await sender.send(reading("veh-00002")) is Outcome.ACCEPTED
        assert await sender.send(reading("busy")) is Outcome.ACCEPTED  # 429 too
    assert sender.stats.accepted == 2 and sender.stats.retries == 2
    assert len(sleep.delays) == 2


async def test_422_is_rejected_without_retry_and_logged_once(
    receiver: FakeReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Bad input stays bad: resending it only adds load, so reject at once and log the detail once."""
    caplog.set_level(logging.WARNING, logger="src.generator.sender")
    async with Sender(receiver.url, API_KEY, policy=FAST) as sender:
        for n in range(3):
            assert await sender.send(reading("veh-00003", n)) is Outcome.REJECTED
    assert sender.stats == SendStats(sent=3, rejected=3)
    assert receiver.requests == 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "422" in messages[0] and "bad" in messages[0]


async def test_wrong_key_is_rejected(receiver: FakeReceiver) -> None:
    """401 is a configuration error, not a transient one."""
    async with Sender(receiver.url, "wrong", policy=FAST) as sender:
        assert await sender.send(reading()) is Outcome.REJECTED
    assert sender.stats.rejected == 1 and sender.stats.retries == 0


async def test_persistent_503_gives_up_after_max_attempts_with_bounded_full_jitter(receiver: FakeReceiver) -> None:
    """Backoff doubles from the base up to the cap, each delay jittered within [0, bound]; then it gives up."""
    policy = RetryPolicy(base_delay_s=0.1, max_delay_s=0.5, max_attempts=6, deadline_s=1000.0)
    sleep = RecordingSleep()
    async with Sender(receiver.url, API_KEY, policy=policy, sleep=sleep, rng=random.Random(1)) as sender:
        assert await sender.send(reading("down")) is Outcome.GAVE_UP
    assert sender.stats == SendStats(sent=1, gave_up=1, retries=5)
    bounds = [0.1, 0.2, 0.4, 0.5, 0.5]
    assert len(sleep.delays) == len(bounds)
    assert all(0.0 <= d <= b for d, b in zip(sleep.delays, bounds, strict=True))
    assert len(set(sleep.delays)) == len(bounds)  # jittered, not a fixed schedule


async def test_gives_up_when_the_next_retry_would_pass_the_deadline(receiver: FakeReceiver) -> None:
    """A total deadline bounds how long one reading can hold a sender slot, whatever the attempt count."""
    now = [0.0]

    async def sleep(delay: float) -> None:
        now[0] += delay

    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=1.0, max_attempts=1000, deadline_s=5.0)
    rng = random.Random(0)
    rng.random = lambda: 1.0  # type: ignore[method-assign]  # worst case: always the full bound
    async with Sender(receiver.url, API_KEY, policy=policy, sleep=sleep, clock=lambda: now[0], rng=rng) as sender:
        assert await sender.send(reading("down")) is Outcome.GAVE_UP
    assert sender.stats.retries == 5 and now[0] == 5.0


async def test_connection_refused_is_retried_then_given_up() -> None:
    """A receiver that is down (restarting) is transient: retried, then given up, never raised."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sleep = RecordingSleep()
    async with Sender(f"http://127.0.0.1:{port}", API_KEY, policy=FAST, sleep=sleep) as sender:
        assert await sender.send(reading()) is Outcome.GAVE_UP
    assert sender.stats.gave_up == 1 and sender.stats.retries == FAST.max_attempts - 1
    assert sender.stats.in_flight == 0


async def test_timeout_is_retried(receiver: FakeReceiver) -> None:
    """A receiver that does not answer in time is treated like a 503: retried, never hung on."""
    policy = RetryPolicy(base_delay_s=0.001, max_delay_s=0.001, max_attempts=2)
    async with Sender(receiver.url, API_KEY, policy=policy, request_timeout_s=0.05) as sender:
        assert await sender.send(reading("slow")) is Outcome.GAVE_UP
    assert sender.stats.retries == 1


async def test_batch_posts_one_array_and_counts_readings(receiver: FakeReceiver) -> None:
    """/ingest/batch carries many readings in one request; counts stay in readings."""
    async with Sender(receiver.url, API_KEY, policy=FAST) as sender:
        batch = [reading(n=n) for n in range(3)]
        assert await sender.send_batch([batch[0], orjson.dumps(batch[1]), batch[2]]) is Outcome.ACCEPTED
    assert receiver.requests == 1
    assert receiver.accepted == batch
    assert sender.stats.sent == 3 and sender.stats.accepted == 3


async def test_sender_outside_its_context_is_an_error() -> None:
    """The session is opened by 'async with'; using the sender without it is a programming error."""
    with pytest.raises(RuntimeError):
        await Sender("http://127.0.0.1:1", API_KEY).send(reading())


def test_rejection_detail_is_extracted_from_the_body() -> None:
    """The log shows FastAPI's detail when there is one, the raw body otherwise."""
    assert _detail('{"detail": "too large"}') == "too large"
    assert _detail("plain text") == "plain text"
    assert _detail("[1, 2]") == "[1,2]"
