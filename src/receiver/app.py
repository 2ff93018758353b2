"""The receiver's FastAPI application: authenticate, bound, validate, stamp, queue, answer.

Bodies are read by hand instead of being declared as pydantic parameters, for three
reasons: the API key is checked before a single body byte is read, the size limit is
enforced while streaming, and the body is parsed and validated in one pass by pydantic's
Rust JSON parser (which also survives absurdly nested JSON with a 422, not a 5xx).

A ``202`` means the readings are in SQS; anything that cannot guarantee that is a ``503``
the client should retry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import Field, TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.common.aws import sqs_client
from src.common.envelope import serialize
from src.common.logs import LOG_FORMAT, configure_logging
from src.common.schema import Freshness, Reading, StoredReading
from src.common.settings import ReceiverSettings
from src.receiver.auth import KeyChecker, require_api_key
from src.receiver.limits import read_body
from src.receiver.models import (
    ERROR_RESPONSES,
    Accepted,
    Health,
    batch_body,
    reading_body,
    reading_components,
)
from src.receiver.publisher import GroupCommitPublisher, PublishError, SqsQueue

log = logging.getLogger("src.receiver")

HEALTH_TIMEOUT_S = 2.0
RETRY_AFTER_S = "1"
ENDPOINTS = frozenset({"/ingest", "/ingest/batch", "/health", "/metrics"})


class Metrics:
    """Prometheus metrics in a registry of their own, so several apps can live in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "receiver_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=self.registry
        )
        self.readings_accepted = Counter(
            "receiver_readings_accepted", "Readings SQS accepted (answered 202)", registry=self.registry
        )
        self.publish_seconds = Histogram(
            "receiver_publish_seconds",
            "How long a request waited for SQS to accept its readings (linger included)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.envelope_bytes = Histogram(
            "receiver_envelope_bytes",
            "Size of the SQS message bodies sent",
            buckets=(1_024, 4_096, 16_384, 65_536, 131_072, 196_608, 262_144),
            registry=self.registry,
        )
        self.sqs_send_seconds = Histogram(
            "receiver_sqs_send_seconds",
            "How long SQS took to accept one envelope (SendMessage alone, without linger or queueing)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.envelope_readings = Histogram(
            "receiver_envelope_readings",
            "Readings per SQS message sent",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500),
            registry=self.registry,
        )

    def envelope_sent(self, readings: int, body_bytes: int, seconds: float) -> None:
        self.envelope_bytes.observe(body_bytes)
        self.envelope_readings.observe(readings)
        self.sqs_send_seconds.observe(seconds)


class RequestCounter:
    """Counts every HTTP answer, including the 401/413/422 that exception handlers produce."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            self.metrics.requests.labels(endpoint, str(status)).inc()


@dataclass(frozen=True)
class Runtime:
    """What the lifespan opens and the handlers use; lives in ``app.state.runtime``."""

    settings: ReceiverSettings
    keys: KeyChecker
    queue: SqsQueue
    publisher: GroupCommitPublisher
    metrics: Metrics
    one: TypeAdapter[Reading]
    batch: TypeAdapter[list[Reading]]

    def validate(self, adapter: TypeAdapter[Any], body: bytes) -> Any:
        """Parse and validate in one pass; any failure is a 422 in FastAPI's usual shape."""
        freshness = Freshness(
            datetime.now(UTC),
            timedelta(seconds=self.settings.max_clock_skew_s),
            timedelta(hours=self.settings.max_reading_age_h),
        )
        try:
            return adapter.validate_json(body, context={"freshness": freshness})
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            raise RequestValidationError([{**error, "loc": ("body", *error["loc"])} for error in errors]) from None

    async def accept(self, readings: list[Reading]) -> Response:
        """Stamp, queue and answer: 202 only once SQS holds every reading."""
        received_at = datetime.now(UTC)
        records = [serialize(StoredReading.stamp(reading, received_at)) for reading in readings]
        started = time.perf_counter()
        try:
            await self.publisher.publish(records)
        except PublishError:
            return JSONResponse(
                status_code=503,
                content={"detail": "queue unavailable, retry later"},
                headers={"Retry-After": RETRY_AFTER_S},
            )
        finally:
            self.metrics.publish_seconds.observe(time.perf_counter() - started)
        self.metrics.readings_accepted.inc(len(records))
        return JSONResponse(status_code=202, content={"status": "accepted", "accepted": len(records)})


def _load_settings() -> ReceiverSettings:
    """Settings from the environment and ``.env``; a missing key is the one common mistake, named plainly."""
    try:
        return ReceiverSettings()
    except ValidationError as exc:
        # The root logger is not configured yet; basicConfig only acts if nobody else did.
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        if any(error["loc"][:1] == ("api_key",) for error in exc.errors()):
            log.error("API_KEY is not set: the receiver refuses to start without one")
            raise RuntimeError("API_KEY is not set: the receiver refuses to start without one") from None
        # Messages only: inputs could be secrets.
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        log.error("invalid receiver settings: %s", problems)
        raise RuntimeError(f"invalid receiver settings: {problems}") from None


def _lifespan(given: ReceiverSettings | None, metrics: Metrics) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = given or _load_settings()
        configure_logging(settings.log_level)
        async with sqs_client(
            settings,
            connect_timeout_s=min(2.0, settings.sqs_timeout_s),
            read_timeout_s=settings.sqs_timeout_s,
            max_attempts=2,
        ) as client:
            queue = SqsQueue(client, settings)
            try:
                await asyncio.wait_for(queue.url(), settings.sqs_timeout_s)
            except Exception as exc:
                log.warning("queue %s not reachable at startup (%r); answering 503 until it is", queue.name, exc)
            publisher = GroupCommitPublisher(
                queue.send, timeout_s=settings.sqs_timeout_s, observer=metrics.envelope_sent, queue_name=queue.name
            )
            app.state.runtime = Runtime(
                settings=settings,
                keys=KeyChecker(settings.api_keys),
                queue=queue,
                publisher=publisher,
                metrics=metrics,
                one=TypeAdapter(Reading),
                batch=TypeAdapter(
                    Annotated[list[Reading], Field(min_length=1, max_length=settings.max_batch_readings)]
                ),
            )
            log.info("receiver ready: queue %s, %d API key(s) configured", queue.name, len(settings.api_keys))
            try:
                yield
            finally:
                await publisher.close()
                log.info("receiver stopped; pending readings flushed")

    return lifespan


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _document_readings(app: FastAPI) -> None:
    """Add ``Reading`` and its parts to the components that the hand-written body schemas reference."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(reading_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ReceiverSettings | None = None) -> FastAPI:
    """A receiver; settings are read at startup when not given, so importing never fails."""
    metrics = Metrics()
    max_batch = settings.max_batch_readings if settings else ReceiverSettings.model_fields["max_batch_readings"].default
    app = FastAPI(
        title="EV battery telemetry receiver",
        version="1.0.0",
        description="Accepts battery readings from vehicles and queues them in SQS.",
        lifespan=_lifespan(settings, metrics),
    )
    app.add_middleware(RequestCounter, metrics=metrics)
    authenticated = [Depends(require_api_key)]

    @app.post(
        "/ingest",
        status_code=202,
        response_model=Accepted,
        responses=ERROR_RESPONSES,
        openapi_extra=reading_body(),
        dependencies=authenticated,
        summary="Queue one reading",
    )
    async def ingest(request: Request) -> Response:
        runtime = _runtime(request)
        body = await read_body(request, runtime.settings.max_reading_bytes)
        reading: Reading = runtime.validate(runtime.one, body)
        return await runtime.accept([reading])

    @app.post(
        "/ingest/batch",
        status_code=202,
        response_model=Accepted,
        responses=ERROR_RESPONSES,
        openapi_extra=batch_body(max_batch),
        dependencies=authenticated,
        summary="Queue a JSON array of readings, all or none",
    )
    async def ingest_batch(request: Request) -> Response:
        runtime = _runtime(request)
        body = await read_body(request, runtime.settings.max_batch_bytes)
        readings: list[Reading] = runtime.validate(runtime.batch, body)
        return await runtime.accept(readings)

    @app.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "The queue does not answer"}},
        summary="Whether the queue answers",
    )
    async def health(request: Request) -> Response:
        queue = _runtime(request).queue
        try:
            messages = await asyncio.wait_for(queue.approximate_messages(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            reason = f"no answer within {HEALTH_TIMEOUT_S} s" if isinstance(exc, TimeoutError) else repr(exc)
            log.warning("health check: queue %s unavailable: %s", queue.name, reason)
            unhealthy = Health(status="unavailable", queue=queue.name, reason=reason)
            return JSONResponse(status_code=503, content=unhealthy.model_dump(exclude_none=True))
        healthy = Health(status="ok", queue=queue.name, approximate_messages=messages)
        return JSONResponse(content=healthy.model_dump(exclude_none=True))

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _document_readings(app)
    return app


app = create_app()
