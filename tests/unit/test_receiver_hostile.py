"""Hostile input (issue 5): whatever a client sends, the answer is 202 or 4xx, never 5xx.

The example-based tests in ``test_receiver_ingest.py`` and ``test_receiver_batch.py`` pin
the answer to each known bad input; here hypothesis and schemathesis look for the inputs
nobody listed. Every property checks the same three things: no 5xx; nothing queued
unless the answer is 202; and what a 202 queued is a valid reading whose timestamp lay
within ``MAX_CLOCK_SKEW_S`` / ``MAX_READING_AGE_H`` of the receiver's clock.

Hypothesis runs derandomized and without its example database, so a run is repeatable
and leaves nothing behind; example counts are kept small enough for the whole module to
take seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, TypeVar
from unittest import mock

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from schemathesis import APIOperation, Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.generation import GenerationMode
from schemathesis.python.asgi import shutdown_lifespans

from src.common.aws import sync_client
from src.common.envelope import MessageDecodeError, decode_body
from src.common.schema import SIGNALS, Freshness, Reading, StoredReading
from src.common.settings import CommonSettings, ReceiverSettings
from src.ops.queues import Queues
from src.receiver.app import Receiver, create_app
from tests.unit.test_receiver_support import (
    API_KEY,
    HEADERS,
    counting_chunks,
    make_reading,
    received_records,
    running,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import DeleteMessageBatchRequestEntryTypeDef

T = TypeVar("T")
RequestHeaders = Mapping[str, str] | Mapping[bytes, bytes]

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Small, repeatable runs: each example is a real request, and a queue check after it."""


class LiveReceiver:
    """The receiver with its lifespan running on an event loop of its own thread.

    Hypothesis drives synchronous functions; with the app on another loop, every example
    reuses one running app (one SQS client, one publisher) instead of starting a lifespan
    per example.
    """

    def __init__(self, app: Receiver, receiver_settings: ReceiverSettings, queue_url: str) -> None:
        self.settings = receiver_settings
        self._queue_url = queue_url
        self._sqs = sync_client("sqs", CommonSettings())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="live-receiver", daemon=True)
        self._thread.start()
        self._stack = AsyncExitStack()
        self._client: httpx.AsyncClient = self._run(self._stack.enter_async_context(running(app)))

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def post(self, path: str, body: bytes, headers: RequestHeaders = HEADERS) -> tuple[int, str]:
        """Status and text of the answer; an exception escaping the app (or no answer) counts as a server's 500."""
        try:
            response = self._run(self._client.post(path, content=body, headers=headers))
        except Exception as exc:
            return 500, f"the app raised or did not answer: {exc!r}"
        return response.status_code, response.text

    def drain(self) -> list[StoredReading]:
        """Every record now in the queue, removed from it (so the next check starts empty)."""
        records: list[StoredReading] = []
        while messages := self._sqs.receive_message(
            QueueUrl=self._queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", []):
            for message in messages:
                records.extend(decode_body(message["Body"]))
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": message["ReceiptHandle"]} for i, message in enumerate(messages)
            ]
            self._sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        return records

    def send_and_check(self, path: str, body: bytes, headers: RequestHeaders = HEADERS) -> int:
        """Post ``body`` and assert the properties every answer must have; returns the status."""
        before = datetime.now(UTC)
        status, text = self.post(path, body, headers)
        after = datetime.now(UTC)
        assert status == 202 or 400 <= status < 500, f"{path} answered {status}: {text[:500]}\nbody: {body[:500]!r}"
        stored = self.drain()
        if status != 202:
            assert stored == [], f"{path} answered {status} but queued {len(stored)} record(s)"
            return status
        assert len(stored) == json.loads(text)["accepted"]
        skew = timedelta(seconds=self.settings.max_clock_skew_s)
        age = timedelta(hours=self.settings.max_reading_age_h)
        for record in stored:
            again = StoredReading.model_validate_json(record.model_dump_json())
            assert before - age <= again.timestamp <= after + skew, f"stale or future reading queued: {again}"
            assert before <= again.ingest_received_at <= after
            fresh_then = Freshness(again.ingest_received_at, skew, age + (after - before))
            Reading.model_validate_json(
                again.model_dump_json(exclude={"ingest_received_at"}), context={"freshness": fresh_then}
            )
        return status

    def close(self) -> None:
        try:
            self._run(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._sqs.close()


@pytest.fixture
def live(receiver_settings: ReceiverSettings, queues: Queues) -> Iterator[LiveReceiver]:
    receiver = LiveReceiver(create_app(receiver_settings), receiver_settings, queues.url)
    yield receiver
    receiver.close()


# ---------------------------------------------------------------- strategies
# Replacement values are JSON *text*, so that literals no Python value serializes to
# (1e400, a 400-digit integer, -0, NaN written by hand) can be sent too.

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
"""Any JSON value; floats include NaN and ±infinity, which json.dumps writes as literals."""

DEEP_NESTING = st.integers(min_value=1, max_value=3_000).flatmap(
    lambda depth: st.sampled_from(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
)
"""Balanced nesting, shallow to absurd (the unbalanced kind is pinned in test_receiver_ingest)."""

ANY_JSON_TEXT = JSON_VALUES.map(json.dumps) | DEEP_NESTING

NUMBER_TEXT = st.one_of(
    st.floats().map(json.dumps),
    st.floats(min_value=-60.0, max_value=100.0).map(json.dumps),
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.sampled_from(
        ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "-0.0", "1" + "0" * 400, "01", "+1", ".5"]
    ),
    st.from_regex(r"-?(0|[1-9][0-9]{0,40})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
)
"""Numbers: in range, out of range, non-finite, beyond float, and malformed number literals."""

ZONES = st.sampled_from(
    [
        UTC,
        timezone(timedelta(hours=14)),
        timezone(-timedelta(hours=12)),
        timezone(timedelta(hours=23, minutes=59)),
        timezone(-timedelta(hours=23, minutes=59)),
    ]
)
ANY_INSTANT = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999))


def _near_now(offset: timedelta) -> str:
    return (datetime.now(UTC) + offset).isoformat()


TIMESTAMP_TEXT = st.one_of(
    ANY_INSTANT.flatmap(lambda instant: ZONES.map(lambda zone: instant.replace(tzinfo=zone).isoformat())),
    ANY_INSTANT.map(datetime.isoformat),  # no zone
    st.timedeltas(min_value=-timedelta(days=9), max_value=timedelta(hours=1)).map(_near_now),
    st.sampled_from(
        [
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59.999999-12:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "10000-01-01T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00+24:00",
            "-2026-01-01T00:00:00Z",
        ]
    ),
    st.text(max_size=40),
).map(json.dumps) | JSON_VALUES.map(json.dumps)
"""Timestamps from year 1 to 9999 in extreme zones, naive ones, ones near the window edges, and non-timestamps."""

ID_TEXT = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z0-9_\-./\\]{1,70}", fullmatch=True),
    st.sampled_from(
        [
            "../etc/passwd",
            "a/b",
            "..",
            ".",
            "veh\\..\\x",
            "v" * 64,
            "v" * 65,
            "veh\n",
            "veh-1\n",
            "veh\x00",
            "véh",
            "\uff10\uff11",
        ]
    ),
).map(json.dumps) | JSON_VALUES.map(json.dumps)
"""Vehicle ids: path-like, too long, unicode look-alikes, trailing newlines, valid ones, non-strings."""

CAN_ID_TEXT = st.one_of(
    st.from_regex(r"0[xX][0-9A-Fa-f_ +-]{0,12}", fullmatch=True),
    st.sampled_from(["0x1F0", "0x1FFFFFFF", "0x20000000", "0xFFFFFFFF", "0x", "1F0", "0x1F0\n", "0x\uff10"]),
    st.text(max_size=12),
).map(json.dumps) | JSON_VALUES.map(json.dumps)

FIELDS: dict[tuple[str, ...], st.SearchStrategy[str]] = {
    ("timestamp",): TIMESTAMP_TEXT,
    ("vehicle_id",): ID_TEXT,
    ("can_id",): CAN_ID_TEXT,
    ("payload",): ANY_JSON_TEXT,
    **{("payload", signal): NUMBER_TEXT | ANY_JSON_TEXT for signal in SIGNALS},
    ("extra",): ANY_JSON_TEXT,
    ("payload", "extra"): ANY_JSON_TEXT,
}

DELETE = "<delete>"
Mutation = tuple[tuple[str, ...], str]
MUTATIONS: st.SearchStrategy[Mutation] = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda path: st.tuples(st.just(path), FIELDS[path] | st.just(DELETE))
)
"""Replace (or delete) one field of a valid reading with hostile JSON text."""


def mutated_reading(index: int, mutations: list[Mutation]) -> str:
    """A fresh valid reading's JSON text with ``mutations`` applied (later ones win)."""
    reading = make_reading(index)
    fragments: dict[str, str] = {}
    for number, (path, text) in enumerate(mutations):
        target = reading
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        if text == DELETE:
            target.pop(path[-1], None)
            continue
        placeholder = f"{uuid.uuid4()}-{number}"  # never in hypothesis's text: replaced by the raw fragment
        fragments[json.dumps(placeholder)] = text
        target[path[-1]] = placeholder
    document = json.dumps(reading)
    for placeholder, text in fragments.items():
        document = document.replace(placeholder, text)
    return document


# ---------------------------------------------------------------- properties


@pytest.mark.parametrize("path", ["/ingest", "/ingest/batch"])
def test_any_json_value_is_refused_without_5xx(live: LiveReceiver, path: str) -> None:
    """Arbitrary JSON documents (NaN, huge numbers, deep nesting included) get a 4xx, and nothing is queued."""

    @PROPERTY_SETTINGS
    @given(body=ANY_JSON_TEXT)
    def property_(body: str) -> None:
        assert live.send_and_check(path, body.encode()) != 202

    property_()


@pytest.mark.parametrize("path", ["/ingest", "/ingest/batch"])
def test_any_bytes_are_refused_without_5xx(live: LiveReceiver, path: str) -> None:
    """Arbitrary bytes (invalid UTF-8, control characters, truncated JSON) get a 4xx, and nothing is queued."""

    @PROPERTY_SETTINGS
    @given(body=st.binary(max_size=512))
    def property_(body: bytes) -> None:
        live.send_and_check(path, body)

    property_()


def test_mutated_readings_are_202_only_when_valid_and_fresh(live: LiveReceiver) -> None:
    """A reading with hostile fields is 4xx and unqueued, or 202 and queued as a valid, fresh reading."""
    statuses: set[int] = set()

    @settings(PROPERTY_SETTINGS, max_examples=150)
    @given(mutations=st.lists(MUTATIONS, max_size=3))
    def property_(mutations: list[Mutation]) -> None:
        statuses.add(live.send_and_check("/ingest", mutated_reading(0, mutations).encode()))

    property_()
    assert {202, 422} <= statuses, "the strategies should reach both outcomes"


def test_mutated_batches_are_all_or_nothing(live: LiveReceiver) -> None:
    """A batch holding any hostile reading is 4xx with nothing queued; otherwise every reading is queued valid."""
    statuses: set[int] = set()

    @settings(PROPERTY_SETTINGS, max_examples=80)
    @given(batch=st.lists(st.lists(MUTATIONS, max_size=2), min_size=1, max_size=4))
    def property_(batch: list[list[Mutation]]) -> None:
        body = "[" + ",".join(mutated_reading(i, mutations) for i, mutations in enumerate(batch)) + "]"
        statuses.add(live.send_and_check("/ingest/batch", body.encode()))

    property_()
    assert {202, 422} <= statuses, "the strategies should reach both outcomes"


def test_any_other_key_is_401_and_nothing_is_queued(live: LiveReceiver) -> None:
    """Any X-API-Key value but a configured key, even near misses and odd bytes, is refused before the body."""
    near_misses = st.sampled_from([API_KEY.upper(), API_KEY + " ", " " + API_KEY, API_KEY[:-1], API_KEY + "\x00"])
    keys = st.binary(max_size=64) | st.text(max_size=32).map(str.encode) | near_misses.map(str.encode)

    @settings(PROPERTY_SETTINGS, max_examples=40)
    @given(key=keys.filter(lambda key: key != API_KEY.encode()), batch=st.booleans())
    def property_(key: bytes, batch: bool) -> None:
        body = json.dumps([make_reading()] if batch else make_reading()).encode()
        path = "/ingest/batch" if batch else "/ingest"
        assert live.send_and_check(path, body, {b"X-API-Key": key}) == 401

    property_()


# ---------------------------------------------------------------- regressions found by the properties

OVERFLOWING_TIMESTAMPS = ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-12:00"]


@pytest.mark.parametrize("timestamp", OVERFLOWING_TIMESTAMPS)
async def test_timestamp_beyond_utc_range_is_422_not_500(
    receiver_settings: ReceiverSettings, queues: Queues, timestamp: str
) -> None:
    """Regression: a valid ISO time whose UTC instant lies before year 1 or after 9999 made astimezone raise
    OverflowError, which escaped validation as a 500; it is a 422 at the timestamp now."""
    reading = {**make_reading(), "timestamp": timestamp}
    async with running(create_app(receiver_settings)) as client:
        one = await client.post("/ingest", json=reading, headers=HEADERS)
        batch = await client.post("/ingest/batch", json=[make_reading(1), reading], headers=HEADERS)
    assert one.status_code == 422, one.text
    assert [error["loc"] for error in one.json()["detail"]] == [["body", "timestamp"]]
    assert batch.status_code == 422, batch.text
    assert [error["loc"] for error in batch.json()["detail"]] == [["body", 1, "timestamp"]]
    assert received_records(queues.url) == []


@pytest.mark.parametrize("timestamp", OVERFLOWING_TIMESTAMPS)
def test_stored_record_beyond_utc_range_is_a_decode_error(timestamp: str) -> None:
    """The same instants in a queued record are poison the consumer reports (MessageDecodeError), not a crash."""
    document = {**make_reading(), "ingest_received_at": datetime.now(UTC).isoformat()}
    with pytest.raises(ValidationError):
        StoredReading.model_validate({**document, "ingest_received_at": timestamp})
    with pytest.raises(MessageDecodeError):
        decode_body(json.dumps({**document, "timestamp": timestamp}))


# ---------------------------------------------------------------- schemathesis


SCHEMATHESIS_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
"""No 5xx; and every answer is one the document lists, with the content type and body it describes."""


def _run_schemathesis(operation: APIOperation, mode: GenerationMode, answers: Counter[int]) -> None:
    """Hypothesis over one operation's generated cases, each sent with a valid key and checked."""

    @settings(PROPERTY_SETTINGS, max_examples=25)
    @given(case=operation.as_strategy(generation_mode=mode, headers=HEADERS))
    def property_(case: Case) -> None:
        response = case.call_and_validate(headers=HEADERS, checks=SCHEMATHESIS_CHECKS)
        answers[response.status_code] += 1

    property_()


def test_schemathesis_finds_no_server_error(receiver_settings: ReceiverSettings, queues: Queues) -> None:
    """Every operation of the OpenAPI document, fed schema-valid and schema-violating requests, never answers 5xx
    (nor anything the document does not describe).

    Schemathesis drives the ASGI app in-process and runs its lifespan itself (against this
    test's moto queue); requests carry a valid key, so the bodies reach validation.
    """
    app = create_app(receiver_settings)
    answers: dict[str, Counter[int]] = {}
    with mock.patch("src.receiver.app.configure_logging"):  # it would take caplog's handlers away
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        try:
            for result in schema.get_all_operations():
                if isinstance(result, Err):
                    raise result.err()
                operation = result.ok()
                answers[operation.label] = Counter()
                # Without a body there is nothing to violate: negative mode would have no cases.
                for mode in GenerationMode if operation.body else [GenerationMode.POSITIVE]:
                    _run_schemathesis(operation, mode, answers[operation.label])
        finally:
            shutdown_lifespans()
    assert set(answers) == {"POST /ingest", "POST /ingest/batch", "GET /health", "GET /metrics"}
    assert all(answers.values()), answers
    skew = timedelta(seconds=receiver_settings.max_clock_skew_s)
    for record in received_records(queues.url):
        assert record.timestamp <= record.ingest_received_at + skew


# ---------------------------------------------------------------- keys and logs


async def test_api_keys_never_reach_the_logs(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No log record, at any level and from any logger, carries a presented key, right or wrong."""
    right, rotated, wrong = "right-key-5b1e0c77", "rotated-key-9d2f4712", "wrong-key-3a8c61e0"
    monkeypatch.setenv("API_KEY", f"{right},{rotated}")
    caplog.set_level(logging.DEBUG)
    statuses: list[int] = []
    async with running(create_app()) as client:
        for path, body, key in [
            ("/ingest", json.dumps(make_reading(1)), right),
            ("/ingest/batch", json.dumps([make_reading(2), make_reading(3)]), rotated),
            ("/ingest", json.dumps(make_reading(4)), wrong),
            ("/ingest/batch", json.dumps([make_reading(5)]), wrong),
            ("/ingest/batch", '[{"vehicle_id": ', right),
            ("/ingest", " " * 20_000, right),
        ]:
            response = await client.post(path, content=body, headers={"X-API-Key": key})
            statuses.append(response.status_code)
            assert key not in response.text
        for path in ("/health", "/metrics"):
            statuses.append((await client.get(path, headers={"X-API-Key": right})).status_code)
    assert statuses == [202, 202, 401, 401, 422, 413, 200, 200]
    assert len(received_records(queues.url)) == 3
    assert caplog.records, "nothing was logged: the check would be vacuous"
    logged = caplog.text + "\n".join(repr(vars(record)) for record in caplog.records)
    for key in (right, rotated, wrong):
        assert key not in logged


# ---------------------------------------------------------------- size limits on /ingest/batch


async def test_batch_declared_over_limit_is_413_unread(receiver_settings: ReceiverSettings) -> None:
    """A Content-Length over MAX_BATCH_BYTES is refused before a single body byte is read."""
    consumed = [0]
    headers = {**HEADERS, "Content-Length": str(receiver_settings.max_batch_bytes + 1)}
    async with running(create_app(receiver_settings)) as client:
        response = await client.post("/ingest/batch", content=counting_chunks(b"[", 1, consumed), headers=headers)
    assert response.status_code == 413
    assert consumed[0] == 0
