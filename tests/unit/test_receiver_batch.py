"""POST /ingest/batch and group commit: all or nothing per request, few large SQS messages."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from src.common.envelope import SQS_MAX_MESSAGE_BYTES, decode_body
from src.common.settings import ReceiverSettings
from src.ops.queues import Queues
from src.receiver.app import create_app
from tests.unit.test_receiver_support import (
    API_KEY,
    HEADERS,
    make_reading,
    received_bodies,
    received_messages,
    received_records,
    running,
)


async def test_batch_is_accepted_with_its_count_and_all_records_queued(
    receiver_settings: ReceiverSettings, queues: Queues
) -> None:
    """202 names how many readings were queued, and every one of them is in SQS, stamped alike."""
    readings = [make_reading(i) for i in range(25)]
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", json=readings, headers=HEADERS)
    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "accepted": 25}
    records = received_records(queues.url)
    assert sorted(r.vehicle_id for r in records) == sorted(r["vehicle_id"] for r in readings)
    assert len({r.ingest_received_at for r in records}) == 1


async def test_batch_with_bad_readings_names_each_index_and_queues_nothing(
    receiver_settings: ReceiverSettings, queues: Queues
) -> None:
    """One bad reading rejects the whole batch; the errors say which ones, by index."""
    readings = [make_reading(i) for i in range(6)]
    readings[1]["payload"]["battery_soc"] = 101
    readings[3]["vehicle_id"] = "../etc/passwd"
    readings[4]["payload"]["battery_voltage"] = float("nan")
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", content=json.dumps(readings), headers=HEADERS)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [
        ["body", 1, "payload", "battery_soc"],
        ["body", 3, "vehicle_id"],
        ["body", 4, "payload", "battery_voltage"],
    ]
    assert received_records(queues.url) == []


@pytest.mark.parametrize(
    ("body", "error_type"),
    [("[]", "too_short"), ("{}", "list_type"), ("[" * 100_000, "json_invalid"), ("[1]", "model_type")],
    ids=["empty array", "object instead of array", "100000 nested arrays", "number instead of reading"],
)
async def test_batch_that_is_not_a_non_empty_array_of_readings_is_422(
    receiver_settings: ReceiverSettings, body: str, error_type: str
) -> None:
    """Empty, non-array and absurdly nested bodies are client errors, never 5xx."""
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", content=body, headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == error_type


async def test_batch_over_max_readings_is_422(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """MAX_BATCH_READINGS bounds the work one request can cause."""
    monkeypatch.setenv("API_KEY", API_KEY)
    monkeypatch.setenv("MAX_BATCH_READINGS", "5")
    async with running(create_app()) as client:
        over = await client.post("/ingest/batch", json=[make_reading(i) for i in range(6)], headers=HEADERS)
        at = await client.post("/ingest/batch", json=[make_reading(i) for i in range(5)], headers=HEADERS)
    assert over.status_code == 422
    assert over.json()["detail"][0] == {
        "type": "too_long",
        "loc": ["body"],
        "msg": "List should have at most 5 items after validation, not 6",
    }
    assert at.status_code == 202
    assert len(received_records(queues.url)) == 5


async def test_batch_over_byte_limit_is_413(receiver_settings: ReceiverSettings) -> None:
    """/ingest/batch has its own, larger body limit."""
    body = b" " * (receiver_settings.max_batch_bytes + 1)
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", content=body, headers=HEADERS)
    assert response.status_code == 413


async def test_batch_larger_than_one_sqs_message_travels_within_the_limit(
    receiver_settings: ReceiverSettings, queues: Queues
) -> None:
    """A batch whose records exceed 256 KiB travels deflated, each message within the SQS limit."""
    readings = [make_reading(i, vehicle_id=f"{i:05d}-" + "v" * 58) for i in range(receiver_settings.max_batch_readings)]
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", json=readings, headers=HEADERS)
    assert response.status_code == 202

    sqs_bodies = received_bodies(queues.url)
    assert all(len(body.encode()) <= SQS_MAX_MESSAGE_BYTES for body in sqs_bodies)
    records = [record for message in map(decode_body, sqs_bodies) for record in message]
    assert sorted(r.vehicle_id for r in records) == sorted(r["vehicle_id"] for r in readings)


async def test_concurrent_requests_share_few_sqs_messages_and_each_reading_lands_once(
    receiver_settings: ReceiverSettings, queues: Queues
) -> None:
    """Group commit: 50 concurrent /ingest calls become far fewer SQS messages, nothing lost or doubled."""
    readings = [make_reading(i) for i in range(50)]
    async with running(create_app(receiver_settings)) as client:
        responses = await asyncio.gather(*(client.post("/ingest", json=r, headers=HEADERS) for r in readings))
    assert [r.status_code for r in responses] == [202] * 50

    messages = received_messages(queues.url)
    assert len(messages) <= 25
    counts = Counter(record.vehicle_id for message in messages for record in message)
    assert counts == Counter(r["vehicle_id"] for r in readings)
