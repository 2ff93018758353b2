"""``POST /ingest`` and ``POST /ingest/batch``, served as plain ASGI rather than by FastAPI.

Same answers as FastAPI would give (tests pin them); FastAPI's per-request cost is why
(docs/performance.md). Order of checks: the key, before any body byte is read; the size,
from ``Content-Length`` and while streaming; one parse-and-validate pass (422 for anything
refused, never a 5xx); the stamp; ``202`` only once SQS holds every reading.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import orjson
from pydantic import Field, TypeAdapter, ValidationError
from starlette.types import Receive, Scope, Send

from src.common.schema import Freshness, Reading
from src.common.settings import ReceiverSettings
from src.receiver.auth import API_KEY_HEADER, API_KEY_HEADER_ASGI, KeyChecker
from src.receiver.limits import BodyTooLarge, ClientDisconnected, read_body
from src.receiver.metrics import Metrics
from src.receiver.publisher import GroupCommitPublisher, PublishError
from src.receiver.stamping import stored_records

RETRY_AFTER_S = b"1"
CONTENT_TYPE_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True)
class Answer:
    """A complete HTTP answer with a JSON body."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def json(cls, status: int, content: Any, *headers: tuple[bytes, bytes]) -> Answer:
        return cls(status, orjson.dumps(content), headers)

    async def send(self, send: Send) -> None:
        headers = [CONTENT_TYPE_JSON, (b"content-length", str(len(self.body)).encode()), *self.headers]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


UNAUTHORIZED = Answer.json(
    401, {"detail": "missing or invalid API key"}, (b"www-authenticate", API_KEY_HEADER.encode())
)
METHOD_NOT_ALLOWED = Answer.json(405, {"detail": "Method Not Allowed"}, (b"allow", b"POST"))
QUEUE_UNAVAILABLE = Answer.json(503, {"detail": "queue unavailable, retry later"}, (b"retry-after", RETRY_AFTER_S))
STARTING = Answer.json(503, {"detail": "the receiver is starting, retry later"}, (b"retry-after", RETRY_AFTER_S))


def accepted(count: int) -> Answer:
    return Answer.json(202, {"status": "accepted", "accepted": count})


def too_large(limit: int) -> Answer:
    return Answer.json(413, {"detail": f"request body exceeds {limit} bytes"})


def invalid(exc: ValidationError) -> Answer:
    """FastAPI's 422 shape: every problem with ``loc`` starting at ``"body"``, inputs left out (they may be huge)."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return Answer.json(422, {"detail": [{**error, "loc": ("body", *error["loc"])} for error in errors]})


@dataclass(frozen=True)
class Endpoint:
    """What differs between the two ingest endpoints: the body limit and what the body must be."""

    max_bytes: int
    adapter: TypeAdapter[Any]
    """Parses and validates the body: into one ``Reading``, or a list of them."""
    single: bool


class Ingestion:
    """Answers ingest requests; made by the app's lifespan once the queue client is open."""

    def __init__(
        self, settings: ReceiverSettings, keys: KeyChecker, publisher: GroupCommitPublisher, metrics: Metrics
    ) -> None:
        self._keys = keys
        self._publisher = publisher
        self._metrics = metrics
        self._max_skew = timedelta(seconds=settings.max_clock_skew_s)
        self._max_age = timedelta(hours=settings.max_reading_age_h)
        batch = Annotated[list[Reading], Field(min_length=1, max_length=settings.max_batch_readings)]
        self.endpoints = {
            "/ingest": Endpoint(settings.max_reading_bytes, TypeAdapter(Reading), single=True),
            "/ingest/batch": Endpoint(settings.max_batch_bytes, TypeAdapter(batch), single=False),
        }

    async def answer(self, scope: Scope, receive: Receive) -> Answer | None:
        """The answer to one request to an ingest path; None if the client left mid-body."""
        if scope["method"] != "POST":
            return METHOD_NOT_ALLOWED
        endpoint = self.endpoints[scope["path"]]
        key: bytes | None = None
        declared_length: bytes | None = None
        for name, value in scope["headers"]:
            if name == API_KEY_HEADER_ASGI and key is None:
                key = value
            elif name == b"content-length":
                declared_length = value
        if not self._keys.accepts(key):
            return UNAUTHORIZED
        try:
            body = await read_body(receive, endpoint.max_bytes, declared_length)
        except BodyTooLarge as exc:
            return too_large(exc.limit)
        except ClientDisconnected:
            return None
        freshness = Freshness(datetime.now(UTC), self._max_skew, self._max_age)
        try:
            validated = endpoint.adapter.validate_json(body, context={"freshness": freshness})
        except ValidationError as exc:
            return invalid(exc)
        return await self.accept([validated] if endpoint.single else validated)

    async def accept(self, readings: list[Reading]) -> Answer:
        """Stamp, queue and answer: 202 only once SQS holds every reading, 503 otherwise."""
        records = stored_records(readings, datetime.now(UTC))
        started = time.perf_counter()
        try:
            await self._publisher.publish(records)
        except PublishError:
            return QUEUE_UNAVAILABLE
        finally:
            self._metrics.publish_seconds.observe(time.perf_counter() - started)
        self._metrics.readings_accepted.inc(len(records))
        return accepted(len(records))
