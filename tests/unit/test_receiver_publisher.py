"""The group-commit publisher on its own, against a fake SQS whose answers the test controls."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import zlib

import orjson
import pytest

from src.common.envelope import SQS_MAX_MESSAGE_BYTES, ZLIB_BASE64
from src.receiver.publisher import (
    COMPRESS_ABOVE_BYTES,
    MAX_DEFLATED_ENVELOPE_BYTES,
    GroupCommitPublisher,
    PublishError,
)


class FakeSqs:
    """Records the bodies it accepts; can be told to fail, or to hold sends until released."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.fail_next = 0
        self.hold = False
        self.released = asyncio.Event()
        self.in_flight = 0
        self.max_in_flight_seen = 0

    async def send(self, body: str) -> None:
        self.in_flight += 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        try:
            if self.hold:
                await self.released.wait()
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("queue down")
            self.bodies.append(body)
        finally:
            self.in_flight -= 1

    def records(self) -> list[bytes]:
        return [orjson.dumps(record) for body in self.bodies for record in envelope_records(body)]


def envelope_records(body: str) -> list[object]:
    """The records of a plain or compressed v2 body (the fake records are not readings, so not decode_body)."""
    document = orjson.loads(body)
    if document.get("encoding") == ZLIB_BASE64:
        records: list[object] = orjson.loads(zlib.decompress(base64.b64decode(document["data"])))
        return records
    plain: list[object] = document["records"]
    return plain


def record(i: int, size: int = 40) -> bytes:
    return orjson.dumps({"n": i, "pad": "x" * size})


async def test_concurrent_publishes_share_one_envelope() -> None:
    """Callers arriving within the linger window are committed together in one SQS message."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5)
    await asyncio.gather(*(publisher.publish([record(i)]) for i in range(50)))
    assert len(sqs.bodies) == 1
    assert sorted(sqs.records()) == sorted(record(i) for i in range(50))


async def test_envelopes_stay_under_the_message_size_limit() -> None:
    """Records are split so that no body exceeds the limit, and every record is sent exactly once."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5, max_message_bytes=1_000, compress_above_bytes=None)
    records = [record(i, size=80) for i in range(100)]
    await publisher.publish(records)
    assert len(sqs.bodies) > 5
    assert all(len(body.encode()) <= 1_000 for body in sqs.bodies)
    assert sorted(sqs.records()) == sorted(records)


async def test_default_limit_is_the_sqs_limit() -> None:
    """By default plain envelopes grow to, but never past, SQS's 256 KiB."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5, compress_above_bytes=None)
    await publisher.publish([record(i, size=1_000) for i in range(600)])
    assert len(sqs.bodies) == 3
    assert all(len(body.encode()) <= SQS_MAX_MESSAGE_BYTES for body in sqs.bodies)


async def test_deflated_envelopes_carry_up_to_a_mebibyte_in_one_message() -> None:
    """Readings' JSON deflates well, so one SQS message carries four times what a plain one could."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5)
    records = [record(i, size=1_000) for i in range(MAX_DEFLATED_ENVELOPE_BYTES // 1_100)]
    await publisher.publish(records)
    assert len(sqs.bodies) == 1
    assert len(sqs.bodies[0].encode()) <= SQS_MAX_MESSAGE_BYTES
    assert sqs.records() == records


async def test_envelope_that_does_not_deflate_under_the_limit_is_split() -> None:
    """Incompressible records still travel within SQS's limit: the envelope goes out in parts, all of them sent."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5)
    rng = random.Random(7)
    records = [orjson.dumps({"n": i, "noise": rng.randbytes(300).hex()}) for i in range(1_500)]
    await publisher.publish(records)
    assert len(sqs.bodies) >= 4
    assert all(len(body.encode()) <= SQS_MAX_MESSAGE_BYTES for body in sqs.bodies)
    assert sqs.records() == records


async def test_buffer_keeps_filling_while_sends_are_in_flight() -> None:
    """With every send slot busy, newcomers collect into one envelope instead of queueing many small ones."""
    sqs = FakeSqs()
    sqs.hold = True
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5, linger_s=0, max_in_flight=2)
    tasks = []
    for i in range(30):  # arrivals spread over many loop turns, each past the linger time
        tasks.append(asyncio.create_task(publisher.publish([record(i)])))
        await asyncio.sleep(0.001)
    assert sqs.in_flight == 2
    sqs.released.set()
    await asyncio.gather(*tasks)
    assert sqs.max_in_flight_seen == 2
    assert len(sqs.bodies) == 3  # two held sends, then everyone who came meanwhile
    assert sorted(sqs.records()) == sorted(record(i) for i in range(30))


async def test_failed_send_fails_every_request_in_it(caplog: pytest.LogCaptureFixture) -> None:
    """No caller is told its records are queued when SQS refused the envelope; the failure is logged once."""
    sqs = FakeSqs()
    sqs.fail_next = 1
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5, queue_name="q-test")
    with caplog.at_level(logging.WARNING):
        results = await asyncio.gather(*(publisher.publish([record(i)]) for i in range(3)), return_exceptions=True)
    assert all(isinstance(result, PublishError) for result in results)
    [line] = [r.getMessage() for r in caplog.records if "SQS send failed" in r.getMessage()]
    assert "3 readings" in line and "q-test" in line and "queue down" in line
    await publisher.publish([record(9)])
    assert sqs.records() == [record(9)]


async def test_request_split_over_envelopes_fails_if_any_envelope_fails() -> None:
    """A partly sent request is still a failure (its retry may duplicate; downstream dedups)."""
    sqs = FakeSqs()
    sqs.fail_next = 1
    publisher = GroupCommitPublisher(
        sqs.send, timeout_s=5, max_message_bytes=500, max_in_flight=1, compress_above_bytes=None
    )
    with pytest.raises(PublishError, match="1 of"):
        await publisher.publish([record(i, size=80) for i in range(20)])
    assert sqs.bodies  # the other envelopes did go out


async def test_send_that_hangs_is_a_publish_error_not_a_hang(caplog: pytest.LogCaptureFixture) -> None:
    """A queue that never answers turns into PublishError after the timeout."""
    sqs = FakeSqs()
    sqs.hold = True
    publisher = GroupCommitPublisher(sqs.send, timeout_s=0.05)
    with caplog.at_level(logging.WARNING), pytest.raises(PublishError):
        await publisher.publish([record(1)])
    await publisher.close()
    assert any("no answer within" in r.getMessage() for r in caplog.records)


async def test_close_flushes_pending_records_and_waits_for_sends() -> None:
    """Graceful shutdown: what was handed to the publisher is sent before close returns."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5, linger_s=60)
    pending = asyncio.create_task(publisher.publish([record(1), record(2)]))
    await asyncio.sleep(0)
    assert sqs.bodies == []
    await publisher.close()
    await pending
    assert sorted(sqs.records()) == [record(1), record(2)]


async def test_publish_after_close_is_refused_and_empty_publish_is_a_no_op() -> None:
    """After shutdown began nothing new is accepted; an empty publish needs no SQS call."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5)
    await publisher.publish([])
    await publisher.close()
    with pytest.raises(PublishError, match="shutting down"):
        await publisher.publish([record(1)])
    assert sqs.bodies == []


async def test_observer_hears_about_every_accepted_envelope() -> None:
    """Metrics see readings and bytes per envelope."""
    seen: list[tuple[int, int]] = []
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(
        sqs.send, timeout_s=5, observer=lambda readings, size, seconds: seen.append((readings, size))
    )
    await publisher.publish([record(1), record(2)])
    assert seen == [(2, len(sqs.bodies[0]))]


async def test_large_envelopes_are_sent_deflated_and_small_ones_plain() -> None:
    """Past COMPRESS_ABOVE_BYTES an envelope goes out compressed, far smaller, carrying the same records."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5)
    small = [record(i) for i in range(10)]
    large = [record(i, size=200) for i in range(10, 10 + COMPRESS_ABOVE_BYTES // 200)]
    await publisher.publish(small)
    await publisher.publish(large)
    plain, compressed = (orjson.loads(body) for body in sqs.bodies)
    assert "records" in plain and "encoding" not in plain
    assert compressed["encoding"] == ZLIB_BASE64
    assert len(sqs.bodies[1]) < sum(len(r) for r in large) / 4
    assert sqs.records() == small + large


async def test_compression_can_be_switched_off() -> None:
    """compress_above_bytes=None keeps every envelope plain JSON (readable as is in the SQS console)."""
    sqs = FakeSqs()
    publisher = GroupCommitPublisher(sqs.send, timeout_s=5, compress_above_bytes=None)
    await publisher.publish([record(i, size=200) for i in range(COMPRESS_ABOVE_BYTES // 200 + 10)])
    assert all("records" in orjson.loads(body) for body in sqs.bodies)
