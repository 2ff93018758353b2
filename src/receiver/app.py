"""The receiver: ``uvicorn src.receiver.app:app``.

``POST /ingest`` and ``/ingest/batch`` are answered from plain ASGI (:mod:`src.receiver.ingest`);
everything else (``/health``, ``/metrics``, ``/docs``) is a FastAPI app whose lifespan opens
the SQS client and publisher both share. A ``202`` means the readings are in SQS; anything
that cannot guarantee that is a ``503`` the client should retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from src.common import memory
from src.common.aws import sqs_client
from src.common.logs import LOG_FORMAT, configure_logging
from src.common.settings import ReceiverSettings
from src.receiver.auth import KeyChecker
from src.receiver.ingest import STARTING, Ingestion
from src.receiver.metrics import Metrics
from src.receiver.models import Health, ingest_components, ingest_operations, security_schemes
from src.receiver.publisher import GroupCommitPublisher, SqsQueue

log = logging.getLogger("src.receiver")

HEALTH_TIMEOUT_S = 2.0
INGEST_PATHS = frozenset({"/ingest", "/ingest/batch"})
ENDPOINTS = INGEST_PATHS | {"/health", "/metrics"}
CLIENT_GONE = 499
"""Counted (nginx's convention) when a client leaves before its body is complete: nobody to answer."""


@dataclass(frozen=True)
class Runtime:
    """What the lifespan opens; lives in ``app.state.runtime`` of the FastAPI layer."""

    settings: ReceiverSettings
    queue: SqsQueue
    publisher: GroupCommitPublisher
    ingestion: Ingestion


class Receiver:
    """The ASGI app uvicorn runs: ingest requests to :class:`Ingestion`, the rest to FastAPI.

    Lifespan events go to FastAPI, which keeps the runtime in its ``state``; until startup
    has finished, ingest requests get a 503 with Retry-After.
    """

    def __init__(self, api: FastAPI, metrics: Metrics) -> None:
        self.api = api
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in INGEST_PATHS:
            await self.api(scope, receive, send)
            return
        status = 500
        try:
            runtime: Runtime | None = getattr(self.api.state, "runtime", None)
            answer = STARTING if runtime is None else await runtime.ingestion.answer(scope, receive)
            if answer is None:
                status = CLIENT_GONE
                return
            status = answer.status
            await answer.send(send)
        finally:
            self.metrics.request(scope["path"], status)


class RequestCounter:
    """Counts every HTTP answer FastAPI gives, including those its exception handlers produce."""

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
            self.metrics.request(endpoint, status)


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


def _lifespan(given: ReceiverSettings | None, metrics: Metrics, tune_memory: bool) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = given or _load_settings()
        configure_logging(settings.log_level, settings.log_format)
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
            ingestion = Ingestion(settings, KeyChecker(settings.api_keys), publisher, metrics)
            app.state.runtime = Runtime(settings=settings, queue=queue, publisher=publisher, ingestion=ingestion)
            if tune_memory:
                memory.tune_for_throughput()
            log.info("receiver ready: queue %s, %d API key(s) configured", queue.name, len(settings.api_keys))
            try:
                yield
            finally:
                await publisher.close()
                log.info("receiver stopped; pending readings flushed")

    return lifespan


def _document_ingest(app: FastAPI, max_batch: int) -> None:
    """Put the ingest endpoints, served outside FastAPI, into its OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema["paths"] = {**ingest_operations(max_batch), **schema.get("paths", {})}
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(ingest_components())
            components["securitySchemes"] = security_schemes()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: ReceiverSettings | None = None, *, serving: bool = False) -> Receiver:
    """A receiver; settings are read at startup when not given, so importing never fails.

    ``serving`` marks the app a server process runs (the module's ``app``): its startup
    also tunes the process's garbage collector (``memory``), which apps made in a test
    process must not do to their host.
    """
    metrics = Metrics()
    max_batch = settings.max_batch_readings if settings else ReceiverSettings.model_fields["max_batch_readings"].default
    api = FastAPI(
        title="EV battery telemetry receiver",
        version="1.0.0",
        description="Accepts battery readings from vehicles and queues them in SQS.",
        lifespan=_lifespan(settings, metrics, tune_memory=serving),
    )
    api.add_middleware(RequestCounter, metrics=metrics)

    @api.get(
        "/health",
        response_model=Health,
        responses={503: {"model": Health, "description": "The queue does not answer"}},
        summary="Whether the queue answers",
    )
    async def health(request: Request) -> Response:
        queue = request.app.state.runtime.queue
        try:
            messages = await asyncio.wait_for(queue.approximate_messages(), HEALTH_TIMEOUT_S)
        except Exception as exc:
            reason = f"no answer within {HEALTH_TIMEOUT_S} s" if isinstance(exc, TimeoutError) else repr(exc)
            log.warning("health check: queue %s unavailable: %s", queue.name, reason)
            unhealthy = Health(status="unavailable", queue=queue.name, reason=reason)
            return JSONResponse(status_code=503, content=unhealthy.model_dump(exclude_none=True))
        healthy = Health(status="ok", queue=queue.name, approximate_messages=messages)
        return JSONResponse(content=healthy.model_dump(exclude_none=True))

    @api.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    _document_ingest(api, max_batch)
    return Receiver(api, metrics)


app = create_app(serving=True)
