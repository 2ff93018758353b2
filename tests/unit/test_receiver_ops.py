"""Operating the receiver: startup rules, an unreachable queue, /health, /metrics and /docs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from prometheus_client import generate_latest

from src.common.settings import QueueSettings, ReceiverSettings
from src.ops.queues import Queues, provision_queues
from src.receiver import app as app_module
from src.receiver.app import Receiver, RequestCounter, create_app
from src.receiver.auth import KeyChecker
from src.receiver.metrics import Metrics
from tests.unit.test_receiver_support import API_KEY, HEADERS, closed_port, make_reading, received_records, running


def unreachable_settings(**overrides: Any) -> ReceiverSettings:
    """Settings whose SQS endpoint refuses connections: the queue is down."""
    values: dict[str, Any] = {
        "api_key": API_KEY,
        "aws_endpoint_url": f"http://127.0.0.1:{closed_port()}",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "sqs_timeout_s": 0.5,
        **overrides,
    }
    return ReceiverSettings(**values)


@pytest.mark.parametrize(
    "queue_url", [None, "http://127.0.0.1:1/000000000000/q"], ids=["url to resolve", "url configured"]
)
async def test_unreachable_queue_gives_503_with_retry_after_and_health_503(queue_url: str | None) -> None:
    """The receiver starts without SQS, but never says 202 (or hangs) for readings it could not queue."""
    async with running(create_app(unreachable_settings(sqs_queue_url=queue_url))) as client:
        one = await client.post("/ingest", json=make_reading(), headers=HEADERS)
        batch = await client.post("/ingest/batch", json=[make_reading(1), make_reading(2)], headers=HEADERS)
        health = await client.get("/health")
    for response in (one, batch):
        assert response.status_code == 503
        assert response.json() == {"detail": "queue unavailable, retry later"}
        assert response.headers["Retry-After"] == "1"
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["reason"]


async def test_queue_created_after_startup_is_found_later(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The queue URL is resolved lazily: 503 while the queue is missing, 202 once it exists."""
    monkeypatch.setenv("API_KEY", API_KEY)
    async with running(create_app()) as client:
        before = await client.post("/ingest", json=make_reading(1), headers=HEADERS)
        health_before = await client.get("/health")
        queues = provision_queues(QueueSettings())
        after = await client.post("/ingest", json=make_reading(2), headers=HEADERS)
        health_after = await client.get("/health")
    assert (before.status_code, health_before.status_code) == (503, 503)
    assert (after.status_code, health_after.status_code) == (202, 200)
    assert [r.vehicle_id for r in received_records(queues.url)] == ["veh-00002"]


async def test_health_is_200_when_the_queue_answers(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load balancers and the demo poll /health to know the receiver can queue."""
    monkeypatch.setenv("API_KEY", API_KEY)
    async with running(create_app()) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["approximate_messages"] == 0


async def test_health_is_503_when_the_queue_is_too_slow(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue that does not answer in time counts as unavailable."""
    monkeypatch.setenv("API_KEY", API_KEY)
    monkeypatch.setattr(app_module, "HEALTH_TIMEOUT_S", 1e-9)
    async with running(create_app()) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("no answer within")


async def test_metrics_count_requests_readings_and_envelopes(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics exposes requests by endpoint and status, accepted readings, latency and envelope sizes."""
    monkeypatch.setenv("API_KEY", API_KEY)
    async with running(create_app()) as client:
        await client.post("/ingest", json=make_reading(1), headers=HEADERS)
        await client.post("/ingest/batch", json=[make_reading(2), make_reading(3)], headers=HEADERS)
        await client.post("/ingest", json=make_reading(4))
        await client.get("/nowhere")
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'receiver_requests_total{endpoint="/ingest",status="202"} 1.0' in text
    assert 'receiver_requests_total{endpoint="/ingest/batch",status="202"} 1.0' in text
    assert 'receiver_requests_total{endpoint="/ingest",status="401"} 1.0' in text
    assert 'receiver_requests_total{endpoint="other",status="404"} 1.0' in text
    assert "receiver_readings_accepted_total 3.0" in text
    assert "receiver_publish_seconds_count 2.0" in text
    assert "receiver_envelope_bytes_count 2.0" in text
    assert "receiver_envelope_readings_sum 3.0" in text


async def test_each_app_has_its_own_metrics(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several apps in one process (tests, embedded load test) do not share or clash on metrics."""
    monkeypatch.setenv("API_KEY", API_KEY)
    async with running(create_app()) as first:
        await first.post("/ingest", json=make_reading(1), headers=HEADERS)
    async with running(create_app()) as second:
        text = (await second.get("/metrics")).text
    assert "receiver_readings_accepted_total 0.0" in text


@pytest.mark.parametrize("value", [None, "", " , "], ids=["unset", "empty", "only separators"])
async def test_startup_refuses_without_api_key(
    value: str | None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Running open to the world by accident is worse than not running."""
    if value is not None:
        monkeypatch.setenv("API_KEY", value)
    app = create_app()
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="API_KEY is not set"):
        async with app.api.router.lifespan_context(app.api):
            pass  # pragma: no cover - never reached
    assert "API_KEY is not set: the receiver refuses to start without one" in caplog.text


async def test_other_invalid_settings_are_named_without_secrets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad setting fails startup with the setting's name; no key ever appears in a log."""
    monkeypatch.setenv("API_KEY", "super-secret-key")
    monkeypatch.setenv("MAX_BATCH_READINGS", "0")
    app = create_app()
    with caplog.at_level(logging.ERROR), pytest.raises(RuntimeError, match="max_batch_readings"):
        async with app.api.router.lifespan_context(app.api):
            pass  # pragma: no cover - never reached
    assert "max_batch_readings" in caplog.text
    assert "super-secret-key" not in caplog.text


def test_uvicorn_exits_non_zero_without_api_key(tmp_path: Path) -> None:
    """The contract's command fails loudly, with the reason on stderr, when API_KEY is missing."""
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", "src.receiver.app:app", "--port", str(closed_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "API_KEY is not set: the receiver refuses to start without one" in result.stderr


def test_module_level_app_imports_without_settings() -> None:
    """``uvicorn src.receiver.app:app`` needs an importable app even before settings exist."""
    assert isinstance(app_module.app, Receiver)
    assert {"/health", "/metrics"} <= {getattr(route, "path", "") for route in app_module.app.api.routes}
    assert {"/ingest", "/ingest/batch", "/health", "/metrics"} <= set(app_module.app.api.openapi()["paths"])


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [ref for key, value in node.items() for ref in ([value] if key == "$ref" else _refs(value))]
    if isinstance(node, list):
        return [ref for item in node for ref in _refs(item)]
    return []


def test_openapi_documents_the_hand_parsed_bodies_and_answers() -> None:
    """/docs shows the reading schema and every answer, though bodies are not FastAPI parameters."""
    app = create_app(ReceiverSettings(api_key=API_KEY, max_batch_readings=50))
    document = app.api.openapi()
    assert app.api.openapi() is document
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]
    assert {"Reading", "Payload", "Accepted", "ErrorMessage", "ValidationProblem"} <= set(schemas)
    assert schemas["Reading"]["properties"]["payload"] == {"$ref": "#/components/schemas/Payload"}
    for ref in _refs(document):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref

    one = document["paths"]["/ingest"]["post"]
    assert one["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Reading"}
    assert {"202", "401", "413", "422", "503"} <= set(one["responses"])
    batch = document["paths"]["/ingest/batch"]["post"]
    array = batch["requestBody"]["content"]["application/json"]["schema"]
    assert array == {"type": "array", "items": {"$ref": "#/components/schemas/Reading"}, "minItems": 1, "maxItems": 50}
    assert {"202", "401", "413", "422", "503"} <= set(batch["responses"])
    assert "Retry-After" in batch["responses"]["503"]["headers"]
    assert "APIKeyHeader" in document["components"]["securitySchemes"]


async def test_docs_are_served(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> None:
    """The OpenAPI UI and document are reachable on a running receiver."""
    monkeypatch.setenv("API_KEY", API_KEY)
    async with running(create_app()) as client:
        docs = await client.get("/docs")
        spec = await client.get("/openapi.json")
    assert docs.status_code == 200
    assert "Reading" in spec.json()["components"]["schemas"]


def test_key_checker_needs_a_key_and_compares_whole_keys() -> None:
    """An empty key list would lock everyone out silently; prefixes and extensions of a key are no key."""
    with pytest.raises(ValueError, match="at least one"):
        KeyChecker([])
    checker = KeyChecker(["abc", "défi"])
    assert checker.accepts("abc") and checker.accepts("défi")
    assert not any(checker.accepts(guess) for guess in (None, "", "ab", "abcd", "ABC"))


async def test_request_counter_passes_non_http_traffic_through() -> None:
    """Lifespan and websocket messages are not HTTP requests and are not counted."""
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    metrics = Metrics()
    await RequestCounter(inner, metrics)({"type": "lifespan"}, None, None)
    assert seen == ["lifespan"]
    assert "receiver_requests_total{" not in generate_latest(metrics.registry).decode()


async def test_ingest_before_startup_finished_is_503_with_retry_after(receiver_settings: ReceiverSettings) -> None:
    """Until the lifespan has opened the queue, nothing can be queued: retryable 503, not a crash."""
    app = create_app(receiver_settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        response = await client.post("/ingest", json=make_reading(), headers=HEADERS)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


async def test_client_leaving_mid_body_gets_no_answer_and_is_counted(receiver_settings: ReceiverSettings) -> None:
    """A client gone before its body is complete is not answered (nobody listens) but shows in metrics as 499."""
    app = create_app(receiver_settings)
    messages = iter([{"type": "http.request", "body": b'{"vehicle', "more_body": True}, {"type": "http.disconnect"}])
    sent: list[Any] = []

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/ingest/batch", "headers": [(b"x-api-key", API_KEY.encode())]}
    with mock.patch("src.receiver.app.configure_logging"):
        async with app.api.router.lifespan_context(app.api):
            await app(scope, receive, send)
    assert sent == []
    assert (
        'receiver_requests_total{endpoint="/ingest/batch",status="499"} 1.0'
        in generate_latest(app.metrics.registry).decode()
    )
