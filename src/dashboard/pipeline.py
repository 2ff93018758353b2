"""The pipeline page's figures: one poll of every source every few seconds, the last minutes kept in memory.

:class:`Pipeline` polls (every source at once, each bounded by a timeout), keeps the polls of
the window in a ring buffer, and computes the page's JSON from them (:meth:`Pipeline.view`)
without any I/O, so a page open in many browsers costs the pipeline no more than one.
What each figure means and where it comes from: docs/dashboard.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from src.dashboard.prometheus import Buckets, Labels, Scrape, add_buckets, histogram_increase, increase, quantile, rate
from src.dashboard.sources import HourFiles, QueueStatus, describe, redact

log = logging.getLogger(__name__)

T = TypeVar("T")

RECEIVER_ACCEPTED = "receiver_readings_accepted_total"
RECEIVER_REQUESTS = "receiver_requests_total"
CONSUMER_WRITTEN = "consumer_readings_written_total"
CONSUMER_FILES = "consumer_files_written_total"
CONSUMER_DELETED = "consumer_messages_deleted_total"
E2E_HISTOGRAM = "consumer_e2e_latency_seconds"
UPLOADS_PENDING = "consumer_uploads_pending"
UNFLUSHED = "consumer_readings_unflushed"
CONSUMER_ERRORS = (
    "write_failures",
    "delete_failures",
    "receive_errors",
    "poison_receives",
    "visibility_extension_failures",
    "upload_failures",
    "uploads_abandoned",
)
"""The consumer's failure counters (``consumer_<name>_total``), each shown with its count."""
RATE_SPAN_S = 10.0
"""The current readings/s is the average over (about) this many seconds: a batch lands every couple of seconds."""
QUANTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one source gave in one poll: a value, or the message saying why not."""

    value: T | None = None
    error: str | None = None


@dataclass(frozen=True)
class Poll:
    """Every source, read once; ``wall`` (unix s) places it on the charts, ``mono`` in the window."""

    wall: float
    mono: float
    receiver: Outcome[Scrape]
    consumers: tuple[Outcome[Scrape], ...]
    queue: Outcome[QueueStatus]
    files: Outcome[HourFiles]


@dataclass
class SourceHealth:
    """The panel line of one source: reachable or not, why not, and when it last answered."""

    key: str
    label: str
    where: str
    ok: bool | None = None
    error: str | None = None
    last_ok: float | None = None

    def record(self, outcome: Outcome[Any], wall: float) -> None:
        self.ok = outcome.error is None
        self.error = outcome.error
        if self.ok:
            self.last_ok = wall

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "where": self.where,
            "ok": self.ok,
            "error": self.error,
            "last_ok": self.last_ok,
        }


def status_class(first_digit: str) -> Callable[[Labels], bool]:
    return lambda labels: labels.get("status", "").startswith(first_digit)


class Pipeline:
    """Polls the sources, keeps the window, computes the view. The fetchers are given, so tests pass fakes."""

    def __init__(
        self,
        *,
        receiver_url: str,
        consumer_urls: Sequence[str],
        fetch: Callable[[str], Awaitable[Scrape]],
        queue: Callable[[], Awaitable[QueueStatus]],
        queue_where: str,
        files: Callable[[], HourFiles],
        files_where: str,
        refresh_s: float,
        window_s: float,
        timeout_s: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.receiver_url = receiver_url
        self.consumer_urls = tuple(consumer_urls)
        self.fetch = fetch
        self.queue = queue
        self.files = files
        self.refresh_s = refresh_s
        self.window_s = window_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.monotonic = monotonic
        self.polls: deque[Poll] = deque(maxlen=math.ceil(window_s / refresh_s) + 2)
        self.health = {
            "receiver": SourceHealth("receiver", "receiver /metrics", redact(receiver_url)),
            **{
                f"consumer-{i}": SourceHealth(f"consumer-{i}", f"consumer {i} /metrics", redact(url))
                for i, url in enumerate(self.consumer_urls)
            },
            "sqs": SourceHealth("sqs", "SQS queue attributes", redact(queue_where)),
            "disk": SourceHealth("disk", "batch files (DATA_DIR/raw)", files_where),
        }

    async def _bounded(self, make: Callable[[], Awaitable[T]]) -> Outcome[T]:
        try:
            return Outcome(value=await asyncio.wait_for(make(), self.timeout_s))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return Outcome(error=describe(exc, self.timeout_s))

    async def poll(self) -> Poll:
        """Read every source at once and keep the result; never raises for a source that fails."""
        wall, mono = self.clock(), self.monotonic()

        def fetch_url(url: str) -> Callable[[], Awaitable[Scrape]]:
            return lambda: self.fetch(url)

        receiver, queue, files, consumers = await asyncio.gather(
            self._bounded(fetch_url(self.receiver_url)),
            self._bounded(self.queue),
            self._bounded(lambda: asyncio.to_thread(self.files)),
            asyncio.gather(*(self._bounded(fetch_url(url)) for url in self.consumer_urls)),
        )
        poll = Poll(wall, mono, receiver, tuple(consumers), queue, files)
        for key, outcome in (("receiver", receiver), ("sqs", queue), ("disk", files)):
            self.health[key].record(outcome, wall)
        for index, outcome in enumerate(consumers):
            self.health[f"consumer-{index}"].record(outcome, wall)
        self.polls.append(poll)
        while self.polls and self.polls[0].mono < mono - self.window_s:
            self.polls.popleft()
        return poll

    async def run(self) -> None:
        """Poll every ``refresh_s`` until cancelled; a poll that fails as a whole is logged and retried."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dashboard poll failed")
            await asyncio.sleep(max(0.0, self.refresh_s - (loop.time() - started)))

    # ----- the view: pure computation over the kept polls -----

    def _receivers(self) -> list[Scrape]:
        outcomes = (poll.receiver for poll in self.polls)
        return [outcome.value for outcome in outcomes if outcome.value is not None]

    def _consumer(self, index: int) -> list[Scrape]:
        outcomes = (poll.consumers[index] for poll in self.polls)
        return [outcome.value for outcome in outcomes if outcome.value is not None]

    def view(self) -> dict[str, Any]:
        """The JSON of ``/api/pipeline``: every figure, its source's state, and the charts' series."""
        latest = self.polls[-1] if self.polls else None
        receivers = self._receivers()
        consumers = [self._consumer(i) for i in range(len(self.consumer_urls))]
        # A rate is "now" only for a source that answered the latest poll: a stopped consumer writes nothing.
        answered = [o.value is not None for o in latest.consumers] if latest else [False] * len(consumers)
        written_rate = sum_known(
            [current_rate(c, CONSUMER_WRITTEN) if ok else None for c, ok in zip(consumers, answered, strict=True)]
        )
        deleted_rate = sum_known(
            [current_rate(c, CONSUMER_DELETED) if ok else None for c, ok in zip(consumers, answered, strict=True)]
        )
        queue = latest.queue.value if latest else None
        window = [s for s in (max_span(receivers), *(max_span(c) for c in consumers)) if s is not None]
        return {
            "generated_at": self.clock(),
            "refresh_s": self.refresh_s,
            "window_s": self.window_s,
            "polled_at": latest.wall if latest else None,
            "covered_s": max(window) if window else 0.0,
            "sources": [health.as_dict() for health in self.health.values()],
            "throughput": {
                "in_per_s": current_rate(receivers, RECEIVER_ACCEPTED) if self._fresh_receiver() else None,
                "written_per_s": written_rate,
                "accepted_total": receivers[-1].total(RECEIVER_ACCEPTED) if self._fresh_receiver() else None,
                "written_total": sum_known(self._latest_consumer_totals(CONSUMER_WRITTEN)),
                "files_total": sum_known(self._latest_consumer_totals(CONSUMER_FILES)),
            },
            "latency": self._latency(consumers),
            "queue": self._queue(queue, deleted_rate),
            "files": None if latest is None or latest.files.value is None else vars(latest.files.value),
            "uploads": {
                "pending": sum_known(self._latest_consumer_totals(UPLOADS_PENDING)),
                "unflushed": sum_known(self._latest_consumer_totals(UNFLUSHED)),
            },
            "errors": self._errors(receivers, consumers),
            "history": self._history(),
        }

    def _fresh_receiver(self) -> bool:
        return bool(self.polls) and self.polls[-1].receiver.value is not None

    def _latest_consumer_totals(self, name: str) -> list[float | None]:
        """``name`` from each consumer's scrape of the latest poll (None where it failed or lacks it)."""
        if not self.polls:
            return []
        return [o.value.total(name) if o.value is not None else None for o in self.polls[-1].consumers]

    def _latency(self, consumers: list[list[Scrape]]) -> dict[str, Any]:
        """End-to-end P50/P95/P99 of the readings the consumers made durable within the window."""
        increases = [
            histogram_increase(c[0].buckets(E2E_HISTOGRAM), c[-1].buckets(E2E_HISTOGRAM))
            for c in consumers
            if len(c) >= 2
        ]
        buckets: Buckets | None = add_buckets([b for b in increases if b is not None])
        count = int(buckets[-1][1]) if buckets else 0
        figures: dict[str, Any] = {"count": count, "beyond_last_bound": False}
        for key, q in QUANTILES:
            estimate = quantile(q, buckets) if count else None
            figures[key] = None if estimate is None else round(estimate.value * 1000.0, 1)
            figures[f"{key}_is_floor"] = bool(estimate and estimate.beyond_last_bound)
            figures["beyond_last_bound"] |= figures[f"{key}_is_floor"]
        figures["last_bound_ms"] = round(buckets[-2][0] * 1000.0, 1) if buckets and len(buckets) >= 2 else None
        return figures

    def _queue(self, queue: QueueStatus | None, deleted_rate: float | None) -> dict[str, Any] | None:
        """The queue's depths, and how long the waiting messages would take at the rate consumers now finish them."""
        if queue is None:
            return None
        drain_s = None
        if queue.visible == 0:
            drain_s = 0.0
        elif deleted_rate:
            drain_s = queue.visible / deleted_rate
        return {**vars(queue), "drain_s": drain_s, "deleted_per_s": deleted_rate}

    def _errors(self, receivers: list[Scrape], consumers: list[list[Scrape]]) -> dict[str, Any]:
        """Failure counts since each process started, and how many of them came within the window."""
        rows: list[dict[str, Any]] = []
        if receivers:
            for label, digit in (("receiver: answers 5xx", "5"), ("receiver: answers 4xx (refused input)", "4")):
                select = status_class(digit)
                rows.append(
                    row(
                        label,
                        [
                            (
                                receivers[0].total(RECEIVER_REQUESTS, select),
                                receivers[-1].total(RECEIVER_REQUESTS, select),
                            )
                        ],
                    )
                )
        for name in CONSUMER_ERRORS:
            metric = f"consumer_{name}_total"
            pairs = [(c[0].total(metric), c[-1].total(metric)) for c in consumers if c]
            if any(new is not None for _, new in pairs):
                rows.append(row(f"consumer: {name.replace('_', ' ')}", pairs))
        return {"rows": rows}

    def _history(self) -> dict[str, list[Any]]:
        """Per poll: readings/s as the figures show them (trailing ``RATE_SPAN_S`` average), the queue's depths."""
        series: dict[str, list[Any]] = {
            key: [] for key in ("t", "in_per_s", "written_per_s", "visible", "in_flight", "dlq")
        }
        receivers: list[Scrape] = []
        consumers: list[list[Scrape]] = [[] for _ in self.consumer_urls]
        for index, poll in enumerate(self.polls):
            if poll.receiver.value is not None:
                receivers.append(poll.receiver.value)
            for kept, outcome in zip(consumers, poll.consumers, strict=True):
                if outcome.value is not None:
                    kept.append(outcome.value)
            if index == 0:
                continue
            series["t"].append(poll.wall)
            series["in_per_s"].append(
                current_rate(receivers, RECEIVER_ACCEPTED) if poll.receiver.value is not None else None
            )
            series["written_per_s"].append(
                sum_known(
                    [
                        current_rate(kept, CONSUMER_WRITTEN) if outcome.value is not None else None
                        for kept, outcome in zip(consumers, poll.consumers, strict=True)
                    ]
                )
            )
            queue = poll.queue.value
            series["visible"].append(queue.visible if queue else None)
            series["in_flight"].append(queue.in_flight if queue else None)
            series["dlq"].append(queue.dlq_visible if queue else None)
        return series


def row(label: str, pairs: list[tuple[float | None, float | None]]) -> dict[str, Any]:
    """One error line: the total now (summed over sources) and its increase over the window."""
    total = sum_known([new for _, new in pairs])
    grown = sum_known([increase(old, new) for old, new in pairs])
    return {"label": label, "total": total, "in_window": grown}


def sum_known(values: Sequence[float | None]) -> float | None:
    """The sum of the values that are known; None when none is."""
    known = [value for value in values if value is not None]
    return sum(known) if known else None


def current_rate(series: list[Scrape], name: str) -> float | None:
    """Per second increase of counter ``name`` over the last ``RATE_SPAN_S`` of one source's scrapes."""
    if len(series) < 2:
        return None
    newest = series[-1]
    older = [scrape for scrape in series[:-1] if scrape.at >= newest.at - RATE_SPAN_S]
    return rate(older[0] if older else series[-2], newest, name)


def max_span(series: list[Scrape]) -> float | None:
    return series[-1].at - series[0].at if len(series) >= 2 else None
