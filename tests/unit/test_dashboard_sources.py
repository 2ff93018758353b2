"""The dashboard's sources: /metrics over HTTP, the queue's attributes on the embedded SQS, this hour's files,
and the messages a failing source shows (never a credential)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from src.common.aws import sqs_client, sync_client
from src.common.layout import raw_hour_dir
from src.common.settings import CommonSettings, QueueSettings
from src.dashboard.sources import MAX_METRICS_BYTES, QueueProbe, describe, hour_files, queue_name_of, redact, scrape
from src.embedded.processes import free_port
from src.ops.queues import Queues

METRICS = "# TYPE consumer_readings_written counter\nconsumer_readings_written_total 42\n"


@pytest.fixture
async def metrics_server() -> AsyncIterator[str]:
    """An HTTP server answering /metrics, /broken (500), /html (not Prometheus) and /huge (too big)."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=METRICS)

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    async def huge(_: web.Request) -> web.Response:
        return web.Response(body=b"# x\n" * (MAX_METRICS_BYTES // 4 + 1))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/broken", broken)
    app.router.add_get("/huge", huge)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def test_scrape_parses_an_endpoints_metrics(metrics_server: str) -> None:
    async with aiohttp.ClientSession() as session:
        result = await scrape(session, f"{metrics_server}/metrics", 5.0)
    assert result.total("consumer_readings_written_total") == 42


async def test_scrape_refuses_errors_and_oversized_answers(metrics_server: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientResponseError) as refused:
            await scrape(session, f"{metrics_server}/broken", 5.0)
        assert describe(refused.value, 5.0) == "answered HTTP 500"
        with pytest.raises(ValueError, match="larger than"):
            await scrape(session, f"{metrics_server}/huge", 5.0)


async def test_a_closed_port_is_described_as_such() -> None:
    port = free_port()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await scrape(session, f"http://127.0.0.1:{port}/metrics", 5.0)
    message = describe(refused.value, 5.0)
    assert message.startswith(f"cannot connect to 127.0.0.1:{port}"), message


def test_messages_are_short_and_carry_no_credentials() -> None:
    assert describe(TimeoutError(), 2.0) == "no answer within 2 s"
    failure = RuntimeError('Could not connect to "https://AKIA:s3cr3t@sqs.example.com/queue"')
    assert describe(failure, 2.0) == 'RuntimeError: Could not connect to "https://sqs.example.com/queue"'
    assert describe(ValueError(), 2.0) == "ValueError"
    assert len(describe(OSError("x" * 1000), 2.0)) == 240
    assert redact("see http://user:pw@host:1/x and s3://k@b/p") == "see http://host:1/x and s3://b/p"


def test_queue_names_come_from_urls_and_arns() -> None:
    assert queue_name_of("https://sqs.us-east-1.amazonaws.com/123456789012/telemetry") == "telemetry"
    assert queue_name_of("arn:aws:sqs:us-east-1:123456789012:telemetry-dlq") == "telemetry-dlq"


async def test_the_queue_probe_reads_depths_and_the_dead_letter_queue(queues: Queues) -> None:
    settings = QueueSettings()
    sqs = sync_client("sqs", settings)
    for body in ("a", "b", "c"):
        sqs.send_message(QueueUrl=queues.url, MessageBody=body)
    sqs.send_message(QueueUrl=queues.dlq_url, MessageBody="dead")
    sqs.receive_message(QueueUrl=queues.url, MaxNumberOfMessages=1, VisibilityTimeout=30)
    async with sqs_client(settings) as client:
        status = await QueueProbe(client, settings).status()
    assert (status.name, status.visible, status.in_flight, status.delayed) == (settings.sqs_queue_name, 2, 1, 0)
    assert (status.dlq_name, status.dlq_visible) == (settings.dlq_name, 1)


async def test_the_queue_probe_without_a_redrive_policy_looks_for_name_dlq(aws_env: str) -> None:
    settings = QueueSettings()
    sqs = sync_client("sqs", settings)
    url = sqs.create_queue(QueueName=settings.sqs_queue_name)["QueueUrl"]
    async with sqs_client(settings) as client:
        probe = QueueProbe(client, settings.model_copy(update={"sqs_queue_url": url}))
        assert (await probe.status()).dlq_visible is None  # no redrive policy, no <name>-dlq
        assert probe.name == settings.sqs_queue_name
        sqs.create_queue(QueueName=settings.dlq_name)
        assert (await probe.status()).dlq_visible is None  # known: no dead-letter queue, not looked up again


async def test_the_queue_probe_finds_a_queue_created_after_a_failure(aws_env: str) -> None:
    settings = CommonSettings()
    async with sqs_client(settings, max_attempts=1) as client:
        probe = QueueProbe(client, settings)
        with pytest.raises(client.exceptions.QueueDoesNotExist):
            await probe.status()
        sqs = sync_client("sqs", settings)
        sqs.create_queue(QueueName=settings.dlq_name)
        sqs.create_queue(QueueName=settings.sqs_queue_name)
        status = await probe.status()
    assert (status.visible, status.dlq_name, status.dlq_visible) == (0, settings.dlq_name, 0)


def test_hour_files_count_complete_batch_files_of_the_hour(tmp_path: Path) -> None:
    now = datetime(2026, 3, 1, 14, 30, tzinfo=UTC)
    assert hour_files(tmp_path, now).files == 0  # no partition yet
    folder = raw_hour_dir(tmp_path, now)
    folder.mkdir(parents=True)
    (folder / "batch-1772375400000-w1.jsonl").write_bytes(b"x" * 100)
    (folder / "batch-1772375401000.jsonl").write_bytes(b"y" * 50)
    (folder / ".batch-1772375402000.jsonl.tmp").write_bytes(b"z" * 999)  # a consumer still writing
    (folder / "notes.txt").write_bytes(b"n")
    (folder / "batch-1772375403000.jsonl").symlink_to(folder / "gone.jsonl")  # vanished between listing and stat
    other = raw_hour_dir(tmp_path, datetime(2026, 3, 1, 13, tzinfo=UTC))
    other.mkdir(parents=True)
    (other / "batch-1772371800000.jsonl").write_bytes(b"o")
    counted = hour_files(tmp_path, now)
    assert (counted.hour, counted.files, counted.bytes) == ("2026-03-01T14", 2, 150)


async def test_hour_files_runs_off_the_event_loop(tmp_path: Path) -> None:
    counted = await asyncio.to_thread(hour_files, tmp_path, datetime.now(UTC))
    assert counted.files == 0
