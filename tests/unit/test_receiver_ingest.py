"""POST /ingest: what gets in (202, stamped, in SQS) and what is kept out (401, 413, 422)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from src.common.settings import ReceiverSettings
from src.ops.queues import Queues
from src.receiver.app import create_app
from tests.unit.test_receiver_support import (
    API_KEY,
    HEADERS,
    counting_chunks,
    make_reading,
    received_records,
    running,
)


async def test_accepted_reading_is_in_sqs_stamped_with_server_time(
    receiver_settings: ReceiverSettings, queues: Queues
) -> None:
    """202 means SQS holds the reading, with ingest_received_at from the server's clock."""
    reading = make_reading()
    before = datetime.now(UTC)
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest", json=reading, headers=HEADERS)
    after = datetime.now(UTC)

    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "accepted": 1}
    [record] = received_records(queues.url)
    assert record.vehicle_id == reading["vehicle_id"]
    assert record.timestamp == datetime.fromisoformat(reading["timestamp"])
    assert record.payload.battery_soc == reading["payload"]["battery_soc"]
    assert before <= record.ingest_received_at <= after


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"X-API-Key": API_KEY + "x"}])
async def test_missing_or_wrong_key_is_401(
    receiver_settings: ReceiverSettings, queues: Queues, headers: dict[str, str]
) -> None:
    """Only holders of a configured key may post; nothing of theirs reaches the queue."""
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest", json=make_reading(), headers=headers)
        batch = await client.post("/ingest/batch", json=[make_reading()], headers=headers)
    assert response.status_code == 401
    assert batch.status_code == 401
    assert received_records(queues.url) == []


async def test_key_is_checked_before_the_body_is_read(receiver_settings: ReceiverSettings) -> None:
    """An unauthenticated client cannot make the receiver read (or buffer) its body."""
    consumed = [0]
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", content=counting_chunks(b"x" * 1024, 100, consumed))
    assert response.status_code == 401
    assert consumed[0] == 0


async def test_rotated_keys_are_all_accepted(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """During a rotation API_KEY lists old and new key; both work, others still do not."""
    monkeypatch.setenv("API_KEY", "old-key, new-key")
    async with running(create_app()) as client:
        old = await client.post("/ingest", json=make_reading(1), headers={"X-API-Key": "old-key"})
        new = await client.post("/ingest", json=make_reading(2), headers={"X-API-Key": "new-key"})
        both = await client.post("/ingest", json=make_reading(3), headers={"X-API-Key": "old-key, new-key"})
    assert (old.status_code, new.status_code, both.status_code) == (202, 202, 401)
    assert len(received_records(queues.url)) == 2


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(reading: dict[str, Any]) -> None:
        target = reading
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(reading: dict[str, Any]) -> None:
        target = reading
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _now_offset(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


INVALID_READINGS = {
    "NaN": (_set(("payload", "battery_soc"), float("nan")), ["body", "payload", "battery_soc"]),
    "Infinity": (_set(("payload", "battery_voltage"), float("inf")), ["body", "payload", "battery_voltage"]),
    "-Infinity": (_set(("payload", "battery_current"), float("-inf")), ["body", "payload", "battery_current"]),
    "SOC 101": (_set(("payload", "battery_soc"), 101), ["body", "payload", "battery_soc"]),
    "missing field": (_delete(("payload", "cell_temp_max")), ["body", "payload", "cell_temp_max"]),
    "missing timestamp": (_delete(("timestamp",)), ["body", "timestamp"]),
    "extra field": (_set(("driver",), "alice"), ["body", "driver"]),
    "extra payload field": (_set(("payload", "speed"), 80), ["body", "payload", "speed"]),
    "string for number": (_set(("payload", "battery_soc"), "50"), ["body", "payload", "battery_soc"]),
    "bool for number": (_set(("payload", "battery_soc"), True), ["body", "payload", "battery_soc"]),
    "path-like vehicle id": (_set(("vehicle_id",), "../etc/passwd"), ["body", "vehicle_id"]),
    "65-char vehicle id": (_set(("vehicle_id",), "v" * 65), ["body", "vehicle_id"]),
    "empty vehicle id": (_set(("vehicle_id",), ""), ["body", "vehicle_id"]),
    "number for vehicle id": (_set(("vehicle_id",), 12), ["body", "vehicle_id"]),
    "can id without 0x": (_set(("can_id",), "1F0"), ["body", "can_id"]),
    "timestamp without zone": (_set(("timestamp",), "2024-01-01T12:00:00"), ["body", "timestamp"]),
    "timestamp not a date": (_set(("timestamp",), "yesterday"), ["body", "timestamp"]),
    "1 h in the future": (lambda r: r.update(timestamp=_now_offset(timedelta(hours=1))), ["body", "timestamp"]),
    "8 days old": (lambda r: r.update(timestamp=_now_offset(-timedelta(days=8))), ["body", "timestamp"]),
    "cell min above max": (_set(("payload", "cell_temp_min"), 40.0), ["body", "payload"]),
}


@pytest.mark.parametrize("case", INVALID_READINGS, ids=list(INVALID_READINGS))
async def test_invalid_reading_is_422_naming_the_field(
    receiver_settings: ReceiverSettings, queues: Queues, case: str
) -> None:
    """Impossible readings are refused with FastAPI's usual error shape and never queued."""
    mutate, loc = INVALID_READINGS[case]
    reading = make_reading()
    mutate(reading)
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest", content=json.dumps(reading), headers=HEADERS)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [error["loc"] for error in detail] == [loc]
    assert set(detail[0]) == {"loc", "msg", "type"}
    assert received_records(queues.url) == []


MALFORMED_BODIES = {
    "malformed JSON": b'{"timestamp": ',
    "empty body": b"",
    "deeply nested array": b"[" * 10_000,
    "deeply nested object": b'{"a":' * 3_000,
    "array instead of object": b"[1, 2]",
    "string instead of object": b'"reading"',
    "null": b"null",
    "not UTF-8": b'{"vehicle_id": "\xff\xfe"}',
}


@pytest.mark.parametrize("case", MALFORMED_BODIES, ids=list(MALFORMED_BODIES))
async def test_malformed_body_is_422_not_5xx(receiver_settings: ReceiverSettings, case: str) -> None:
    """Bodies that are not a JSON object at all are the client's fault: 422 at the body."""
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest", content=MALFORMED_BODIES[case], headers=HEADERS)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body"]


async def test_body_over_limit_by_content_length_is_413_unread(receiver_settings: ReceiverSettings) -> None:
    """A declared Content-Length over the limit is refused before any body byte is read."""
    consumed = [0]
    headers = {**HEADERS, "Content-Length": str(receiver_settings.max_reading_bytes + 1)}
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest", content=counting_chunks(b"x", 1, consumed), headers=headers)
        plain = await client.post("/ingest", content=b" " * (receiver_settings.max_reading_bytes + 1), headers=HEADERS)
    assert response.status_code == 413
    assert consumed[0] == 0
    assert plain.status_code == 413


@pytest.mark.parametrize(
    ("path", "limit_setting", "chunk_bytes"),
    [("/ingest", "max_reading_bytes", 1024), ("/ingest/batch", "max_batch_bytes", 65_536)],
)
async def test_streamed_body_over_limit_is_413_and_reading_stops(
    receiver_settings: ReceiverSettings, queues: Queues, path: str, limit_setting: str, chunk_bytes: int
) -> None:
    """A chunked body announces no length; the receiver stops reading once it passes the limit."""
    consumed = [0]
    chunk = b" " * chunk_bytes
    limit = getattr(receiver_settings, limit_setting)
    async with running(create_app(receiver_settings)) as client:
        response = await client.post(path, content=counting_chunks(chunk, 1_000, consumed), headers=HEADERS)
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body exceeds {limit} bytes"}
    assert consumed[0] == limit // len(chunk) + 1
    assert received_records(queues.url) == []


async def test_streamed_body_within_limit_is_accepted(receiver_settings: ReceiverSettings, queues: Queues) -> None:
    """Chunked uploads are fine as long as they stay under the limit."""
    body = json.dumps(make_reading()).encode()
    consumed = [0]
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest", content=counting_chunks(body, 1, consumed), headers=HEADERS)
    assert response.status_code == 202
    assert len(received_records(queues.url)) == 1


async def test_no_5xx_for_odd_requests(receiver_settings: ReceiverSettings) -> None:
    """Odd but harmless request details (content type, bad Content-Length text) never cause a 5xx."""
    async with running(create_app(receiver_settings)) as client:
        response = await client.post(
            "/ingest", content=json.dumps(make_reading()), headers={**HEADERS, "Content-Type": "text/plain"}
        )
        wrong_method = await client.get("/ingest", headers=HEADERS)
    assert response.status_code == 202
    assert wrong_method.status_code == 405


async def test_content_length_that_is_not_a_number_is_no_crash(receiver_settings: ReceiverSettings) -> None:
    """A Content-Length that is not a number is left to the streaming limit, never a 5xx."""
    async with running(create_app(receiver_settings)) as client:
        request = client.build_request("POST", "/ingest", content=b"{}", headers=HEADERS)
        request.headers["Content-Length"] = "abc"
        response = await client.send(request)
    assert response.status_code == 422
