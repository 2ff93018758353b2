"""Posting readings to the receiver, with retries only where a retry can help.

One :class:`aiohttp.ClientSession` (reused connections, a connection limit) serves every
request. The receiver's answers split three ways:

* any 2xx: accepted, the reading is in SQS;
* 429, 5xx, connection errors and timeouts: retried with bounded exponential backoff and
  full jitter, until an attempt count or a deadline gives up;
* anything else (``401``, ``413``, ``422`` ...): rejected at once, since a resend would be
  refused again; logged once per status code with the receiver's detail.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
import orjson

from src.common.retry import full_jitter

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]
Clock = Callable[[], float]


class Outcome(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    GAVE_UP = "gave_up"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: delays double from ``base_delay_s`` up to ``max_delay_s``."""

    base_delay_s: float = 0.1
    max_delay_s: float = 5.0
    max_attempts: int = 20  # high enough that the deadline, not the count, ends retries across a receiver restart
    deadline_s: float = 30.0  # from the first attempt; no retry starts after it

    def delay(self, retry: int, rng: random.Random) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**retry)] for the ``retry``-th retry (0-based)."""
        return full_jitter(retry, self.base_delay_s, self.max_delay_s, rng.random)


@dataclass
class SendStats:
    """Counts in readings (a batch of 10 counts 10), except ``retries``, which counts requests."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    gave_up: int = 0
    retries: int = 0
    in_flight: int = 0


@dataclass
class _Answer:
    status: int | None  # None: no answer (connection error or timeout)
    detail: str = ""


def _retryable(answer: _Answer) -> bool:
    return answer.status is None or answer.status == 429 or answer.status >= 500


@dataclass
class Sender:
    """An async client of the receiver; use as ``async with Sender(...) as sender``."""

    base_url: str
    api_key: str
    connection_limit: int = 100
    request_timeout_s: float = 10.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Sleep = asyncio.sleep
    clock: Clock = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    stats: SendStats = field(default_factory=SendStats)
    _session: aiohttp.ClientSession | None = field(default=None, init=False, repr=False)
    _logged_statuses: set[int] = field(default_factory=set, init=False, repr=False)

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(
            base_url=self.base_url.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(limit=self.connection_limit),
            timeout=aiohttp.ClientTimeout(total=self.request_timeout_s),
            headers={"X-API-Key": self.api_key, "Content-Type": "application/json"},
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, reading: bytes | dict[str, Any]) -> Outcome:
        """POST one reading to ``/ingest``."""
        body = reading if isinstance(reading, bytes) else orjson.dumps(reading)
        return await self._deliver("ingest", body, 1)

    async def send_batch(self, readings: Sequence[bytes | dict[str, Any]]) -> Outcome:
        """POST a list of readings to ``/ingest/batch``; the receiver answers for all of them at once."""
        parts = [r if isinstance(r, bytes) else orjson.dumps(r) for r in readings]
        return await self._deliver("ingest/batch", b"[" + b",".join(parts) + b"]", len(parts))

    async def _deliver(self, path: str, body: bytes, count: int) -> Outcome:
        stats = self.stats
        stats.sent += count
        stats.in_flight += count
        try:
            outcome = await self._with_retries(path, body)
        finally:
            stats.in_flight -= count
        if outcome is Outcome.ACCEPTED:
            stats.accepted += count
        elif outcome is Outcome.REJECTED:
            stats.rejected += count
        else:
            stats.gave_up += count
        return outcome

    async def _with_retries(self, path: str, body: bytes) -> Outcome:
        started = self.clock()
        attempt = 0
        while True:
            answer = await self._post(path, body)
            if answer.status is not None and 200 <= answer.status < 300:
                return Outcome.ACCEPTED
            if not _retryable(answer):
                self._log_rejection(answer)
                return Outcome.REJECTED
            attempt += 1
            delay = self.policy.delay(attempt - 1, self.rng)
            if attempt >= self.policy.max_attempts or self.clock() - started + delay > self.policy.deadline_s:
                log.debug("giving up on %s after %d attempts (last: %s)", path, attempt, answer)
                return Outcome.GAVE_UP
            self.stats.retries += 1
            await self.sleep(delay)

    async def _post(self, path: str, body: bytes) -> _Answer:
        if self._session is None:
            raise RuntimeError("Sender used outside 'async with'")
        try:
            async with self._session.post(path, data=body) as response:
                text = await response.text() if response.status >= 300 else ""
                return _Answer(response.status, text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _Answer(None, f"{type(exc).__name__}: {exc}")

    def _log_rejection(self, answer: _Answer) -> None:
        """Log each rejecting status once, with the receiver's detail; the counts say how often."""
        status = answer.status if answer.status is not None else 0
        if status in self._logged_statuses:
            return
        self._logged_statuses.add(status)
        detail = _detail(answer.detail)
        log.warning("receiver rejected a reading with %s: %s (further %s answers not logged)", status, detail, status)


def _detail(text: str) -> str:
    """The ``detail`` of a FastAPI error body if there is one, else the body itself (shortened)."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text[:500]
    detail = document.get("detail", document) if isinstance(document, dict) else document
    return (detail if isinstance(detail, str) else orjson.dumps(detail).decode())[:500]
