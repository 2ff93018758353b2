"""Shared helpers of the receiver tests (no tests of its own).

Helpers are plain functions and context managers rather than fixtures, so test modules
can import them by name without fixture-shadowing tricks.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import httpx

from src.common.aws import sync_client
from src.common.envelope import decode_body
from src.common.schema import StoredReading
from src.common.settings import CommonSettings
from src.receiver.app import Receiver
from tests.factories import reading_dict

API_KEY = "test-key-1"
HEADERS = {"X-API-Key": API_KEY}


def make_reading(
    index: int = 0, *, vehicle_id: str | None = None, age: timedelta = timedelta(seconds=1)
) -> dict[str, Any]:
    """A valid reading; ``index`` makes its natural key unique within a test."""
    return reading_dict(vehicle_id or f"veh-{index:05d}", datetime.now(UTC) - age - timedelta(milliseconds=index))


@asynccontextmanager
async def running(app: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an in-process HTTP client.

    ``configure_logging`` is disabled: it replaces the root handlers, which would take
    pytest's log capture (caplog) away from later tests.
    """
    with mock.patch("src.receiver.app.configure_logging"):
        async with app.api.router.lifespan_context(app.api):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
                yield client


def received_bodies(queue_url: str) -> list[str]:
    """Every message body now visible in the queue (received, so hidden for a while after)."""
    sqs = sync_client("sqs", CommonSettings())
    bodies: list[str] = []
    while answer := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
        "Messages", []
    ):
        bodies.extend(message["Body"] for message in answer)
    return bodies


def received_messages(queue_url: str) -> list[list[StoredReading]]:
    """Every message now visible in the queue, each decoded into its records."""
    return [decode_body(body) for body in received_bodies(queue_url)]


def received_records(queue_url: str) -> list[StoredReading]:
    return [record for message in received_messages(queue_url) for record in message]


def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def counting_chunks(chunk: bytes, count: int, consumed: list[int]) -> AsyncIterator[bytes]:
    """A body of ``count`` chunks that records how many the server actually pulled."""
    for _ in range(count):
        consumed[0] += 1
        yield chunk
