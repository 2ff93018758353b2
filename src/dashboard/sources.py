"""Where the dashboard's figures come from: ``/metrics`` over HTTP, the queue's attributes, this hour's files.

Everything here is bounded in time and never blocks the event loop: HTTP through aiohttp,
SQS through the project's aiobotocore client, the directory listing in a worker thread.
A source that fails raises; the caller turns that into a message for its panel
(:func:`describe`), so one source down never hides the others.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp

from src.common.aws import SQSClient
from src.common.layout import batch_file_sizes, hour_label
from src.common.settings import CommonSettings
from src.dashboard.prometheus import Scrape, parse

MAX_METRICS_BYTES = 4 * 1024 * 1024
"""A /metrics answer larger than this is not one of ours (ours are a few kB)."""
USERINFO_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
MAX_MESSAGE_CHARS = 240
QUEUE_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


def redact(text: str) -> str:
    """``text`` without the ``user:password@`` part of any URL in it."""
    return USERINFO_RE.sub(r"\g<scheme>", text)


def describe(exc: BaseException, timeout_s: float) -> str:
    """A short message for a failed source, fit to show: what went wrong, never a credential."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"answered HTTP {exc.status}"
    text = str(exc).strip() or type(exc).__name__
    message = redact(f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text)
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


async def scrape(session: aiohttp.ClientSession, url: str, timeout_s: float) -> Scrape:
    """GET ``url`` and parse it as Prometheus text; raises on a refused connection, a timeout, non-200 or garbage."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.get(url, timeout=timeout, allow_redirects=False) as response:
        response.raise_for_status()
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > MAX_METRICS_BYTES:
                raise ValueError(f"answer larger than {MAX_METRICS_BYTES} bytes: not Prometheus metrics")
    return parse(body.decode("utf-8", errors="replace"), time.monotonic())


@dataclass(frozen=True)
class QueueStatus:
    """What SQS says about the queue and its dead-letter queue (approximate, as SQS counts)."""

    name: str
    visible: int
    in_flight: int
    delayed: int
    dlq_name: str | None
    dlq_visible: int | None
    """None when the queue has no redrive policy and no ``<name>-dlq`` exists."""


def queue_name_of(url_or_arn: str) -> str:
    """The last part of a queue URL (``.../123456789012/name``) or ARN (``arn:aws:sqs:region:account:name``)."""
    return re.split(r"[/:]", url_or_arn.rstrip("/"))[-1]


class QueueProbe:
    """Reads the queue's attributes, and its dead-letter queue's (from its redrive policy, else ``<name>-dlq``).

    URLs are looked up once and kept; after any failure they are looked up again, so a
    queue created (or an SQS started) after the dashboard is found on the next poll.
    """

    def __init__(self, client: SQSClient, settings: CommonSettings) -> None:
        self.client = client
        self.settings = settings
        self._url: str | None = None
        self._dlq_url: str | None = None
        self._dlq_known = False

    @property
    def name(self) -> str:
        return (
            queue_name_of(self.settings.sqs_queue_url) if self.settings.sqs_queue_url else self.settings.sqs_queue_name
        )

    async def status(self) -> QueueStatus:
        try:
            return await self._status()
        except BaseException:
            self._url, self._dlq_url, self._dlq_known = None, None, False
            raise

    async def _status(self) -> QueueStatus:
        if self._url is None:
            self._url = self.settings.sqs_queue_url or await self._lookup(self.settings.sqs_queue_name)
        names = [*QUEUE_ATTRIBUTES, "RedrivePolicy"]
        attributes = (await self.client.get_queue_attributes(QueueUrl=self._url, AttributeNames=names))["Attributes"]  # type: ignore[arg-type]
        if not self._dlq_known:
            self._dlq_url = await self._find_dlq(attributes.get("RedrivePolicy"))
            self._dlq_known = True
        dlq_visible = None
        if self._dlq_url is not None:
            dead = await self.client.get_queue_attributes(
                QueueUrl=self._dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            dlq_visible = int(dead["Attributes"].get("ApproximateNumberOfMessages", 0))
        return QueueStatus(
            name=self.name,
            visible=int(attributes.get("ApproximateNumberOfMessages", 0)),
            in_flight=int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
            delayed=int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
            dlq_name=None if self._dlq_url is None else queue_name_of(self._dlq_url),
            dlq_visible=dlq_visible,
        )

    async def _lookup(self, name: str) -> str:
        return (await self.client.get_queue_url(QueueName=name))["QueueUrl"]

    async def _find_dlq(self, redrive_policy: str | None) -> str | None:
        if redrive_policy:
            return await self._lookup(queue_name_of(json.loads(redrive_policy)["deadLetterTargetArn"]))
        try:
            return await self._lookup(f"{self.name}-dlq")
        except self.client.exceptions.QueueDoesNotExist:
            return None


@dataclass(frozen=True)
class HourFiles:
    """The batch files of one hour's partition under ``DATA_DIR/raw`` (this machine's disk only)."""

    hour: str
    files: int
    bytes: int


def hour_files(raw_dir: Path, now: datetime) -> HourFiles:
    """Count the complete batch files (not the consumers' temporary ones) of ``now``'s hour.

    Blocking: run it in a thread.
    """
    sizes = batch_file_sizes(raw_dir, now)
    return HourFiles(hour=hour_label(now), files=len(sizes), bytes=sum(sizes.values()))
