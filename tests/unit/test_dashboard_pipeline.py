"""The pipeline page's figures from fake sources: rates from the kept scrapes, latency over the window,
queue and files, errors, and a source that is down shown as such while the rest carry on."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from src.dashboard.pipeline import Pipeline
from src.dashboard.prometheus import Scrape, parse
from src.dashboard.sources import HourFiles, QueueStatus
from tests.waiting import Tally

RECEIVER = "http://receiver:8000/metrics"
CONSUMERS = ("http://consumer-a:9102/metrics", "http://consumer-b:9102/metrics")


def receiver_at(at: float, accepted: float, ok: int = 0, failed: int = 0) -> Scrape:
    return parse(
        "# TYPE receiver_readings_accepted counter\n"
        f"receiver_readings_accepted_total {accepted}\n"
        "# TYPE receiver_requests counter\n"
        f'receiver_requests_total{{endpoint="/ingest",status="202"}} {ok}\n'
        f'receiver_requests_total{{endpoint="/ingest",status="503"}} {failed}\n'
        f'receiver_requests_total{{endpoint="/ingest",status="422"}} 1\n',
        at,
    )


def consumer_at(
    at: float, written: float, under_1s: float, under_2s: float, slow: float = 0, failures: int = 0
) -> Scrape:
    total = under_1s + under_2s + slow
    return parse(
        "# TYPE consumer_readings_written counter\n"
        f"consumer_readings_written_total {written}\n"
        "# TYPE consumer_messages_deleted counter\n"
        f"consumer_messages_deleted_total {written // 10}\n"
        "# TYPE consumer_files_written counter\n"
        f"consumer_files_written_total {written // 100}\n"
        "# TYPE consumer_write_failures counter\n"
        f"consumer_write_failures_total {failures}\n"
        "# TYPE consumer_e2e_latency_seconds histogram\n"
        f'consumer_e2e_latency_seconds_bucket{{le="1.0"}} {under_1s}\n'
        f'consumer_e2e_latency_seconds_bucket{{le="2.0"}} {under_1s + under_2s}\n'
        f'consumer_e2e_latency_seconds_bucket{{le="+Inf"}} {total}\n'
        f"consumer_e2e_latency_seconds_count {total}\n"
        f"consumer_e2e_latency_seconds_sum 0\n"
        "# TYPE consumer_uploads_pending gauge\n"
        "consumer_uploads_pending 2\n"
        "# TYPE consumer_readings_unflushed gauge\n"
        "consumer_readings_unflushed 7\n",
        at,
    )


class Sources:
    """Fake sources: what each URL answers next (a Scrape or an exception), the queue, the files."""

    def __init__(self) -> None:
        self.answers: dict[str, Scrape | BaseException] = {}
        self.queue: QueueStatus | BaseException = QueueStatus("q", 5, 3, 0, "q-dlq", 1)
        self.files: HourFiles | BaseException = HourFiles("2026-01-01T10", 4, 4096)

    async def fetch(self, url: str) -> Scrape:
        answer = self.answers[url]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def queue_status(self) -> QueueStatus:
        if isinstance(self.queue, BaseException):
            raise self.queue
        return self.queue

    def hour_files(self) -> HourFiles:
        if isinstance(self.files, BaseException):
            raise self.files
        return self.files


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def pipeline_of(sources: Sources, clock: Clock, consumers: tuple[str, ...] = CONSUMERS, **kwargs: Any) -> Pipeline:
    settings: dict[str, Any] = {"refresh_s": 2.0, "window_s": 60.0, "timeout_s": 1.0} | kwargs
    return Pipeline(
        receiver_url=RECEIVER,
        consumer_urls=consumers,
        fetch=sources.fetch,
        queue=sources.queue_status,
        queue_where="q at http://user:secret@sqs.local",
        files=sources.hour_files,
        files_where="/data/raw",
        clock=clock,
        monotonic=clock,
        **settings,
    )


async def two_polls(sources: Sources, clock: Clock, pipeline: Pipeline) -> dict[str, Any]:
    """Polls at t=0 and t=4 s: 200 accepted and 160 written by two consumers in 4 s, 100 latencies observed."""
    sources.answers = {
        RECEIVER: receiver_at(0.0, 1_000, ok=10),
        CONSUMERS[0]: consumer_at(0.0, 800, under_1s=50, under_2s=10),
        CONSUMERS[1]: consumer_at(0.0, 100, under_1s=5, under_2s=0),
    }
    await pipeline.poll()
    clock.now += 4.0
    sources.answers = {
        RECEIVER: receiver_at(4.0, 1_200, ok=20, failed=2),
        CONSUMERS[0]: consumer_at(4.0, 900, under_1s=100, under_2s=40, failures=1),
        CONSUMERS[1]: consumer_at(4.0, 160, under_1s=35, under_2s=0),
    }
    await pipeline.poll()
    return pipeline.view()


async def test_rates_totals_latency_queue_and_files_from_two_polls() -> None:
    sources, clock = Sources(), Clock()
    view = await two_polls(sources, clock, pipeline_of(sources, clock))
    throughput = view["throughput"]
    assert throughput["in_per_s"] == pytest.approx(50.0)
    assert throughput["written_per_s"] == pytest.approx((100 + 60) / 4)
    assert throughput["accepted_total"] == 1_200
    assert throughput["written_total"] == 1_060
    assert throughput["files_total"] == 9 + 1
    # Within the window: 50 + 30 under 1 s, 30 between 1 and 2 s (110 readings).
    latency = view["latency"]
    assert latency["count"] == 110
    assert latency["p50_ms"] == pytest.approx(1000.0 * 55 / 80, abs=0.05)  # ms, to 0.1
    assert latency["p95_ms"] == pytest.approx(1000.0 + 1000.0 * (0.95 * 110 - 80) / 30, abs=0.05)
    assert not latency["beyond_last_bound"] and not latency["p99_ms_is_floor"]
    assert view["queue"] == {
        "name": "q",
        "visible": 5,
        "in_flight": 3,
        "delayed": 0,
        "dlq_name": "q-dlq",
        "dlq_visible": 1,
        "drain_s": pytest.approx(5 / 4),  # 16 messages deleted in 4 s
        "deleted_per_s": pytest.approx(4.0),
    }
    assert view["files"] == {"hour": "2026-01-01T10", "files": 4, "bytes": 4096}
    assert view["uploads"] == {"pending": 4, "unflushed": 14}
    assert view["covered_s"] == pytest.approx(4.0)
    assert all(source["ok"] for source in view["sources"])
    assert "secret" not in str(view)


async def test_errors_show_totals_and_what_came_within_the_window() -> None:
    sources, clock = Sources(), Clock()
    rows = {
        row["label"]: row for row in (await two_polls(sources, clock, pipeline_of(sources, clock)))["errors"]["rows"]
    }
    assert rows["receiver: answers 5xx"] == {"label": "receiver: answers 5xx", "total": 2, "in_window": 2}
    assert rows["receiver: answers 4xx (refused input)"]["total"] == 1
    assert rows["receiver: answers 4xx (refused input)"]["in_window"] == 0
    assert rows["consumer: write failures"] == {"label": "consumer: write failures", "total": 1, "in_window": 1}
    assert "consumer: upload failures" not in rows  # no consumer exports it


async def test_history_has_one_point_per_poll_after_the_first() -> None:
    sources, clock = Sources(), Clock()
    history = (await two_polls(sources, clock, pipeline_of(sources, clock)))["history"]
    assert history["t"] == [1_004.0]
    assert history["in_per_s"] == [pytest.approx(50.0)]
    assert history["written_per_s"] == [pytest.approx(40.0)]
    assert (history["visible"], history["in_flight"], history["dlq"]) == ([5], [3], [1])


async def test_a_stopped_consumer_is_named_and_its_rate_is_not_made_up() -> None:
    sources, clock = Sources(), Clock()
    pipeline = pipeline_of(sources, clock, consumers=CONSUMERS[:1])
    sources.answers = {RECEIVER: receiver_at(0.0, 10), CONSUMERS[0]: consumer_at(0.0, 10, 1, 0)}
    await pipeline.poll()
    clock.now += 2
    sources.answers = {RECEIVER: receiver_at(2.0, 30), CONSUMERS[0]: consumer_at(2.0, 30, 3, 0)}
    await pipeline.poll()
    clock.now += 2
    sources.answers[RECEIVER] = receiver_at(4.0, 50)
    sources.answers[CONSUMERS[0]] = ConnectionRefusedError(111, "Connection refused")
    await pipeline.poll()
    view = pipeline.view()
    consumer = next(s for s in view["sources"] if s["key"] == "consumer-0")
    assert consumer["ok"] is False
    assert "Connection refused" in consumer["error"]
    assert consumer["last_ok"] == 1_002.0
    assert view["throughput"]["written_per_s"] is None  # not the 10/s it last wrote
    assert view["throughput"]["written_total"] is None
    assert view["throughput"]["in_per_s"] == pytest.approx(10.0)
    assert view["history"]["written_per_s"] == [pytest.approx(10.0), None]
    assert view["latency"]["count"] == 2  # what it wrote within the window still counts
    assert view["queue"]["drain_s"] is None  # readings waiting, no known write rate


async def test_every_source_down_still_gives_a_view_naming_each() -> None:
    sources, clock = Sources(), Clock()
    sources.answers = {url: OSError("network unreachable") for url in (RECEIVER, *CONSUMERS)}
    sources.queue = RuntimeError("Could not connect to the endpoint URL: http://admin:hunter2@sqs.local/")
    sources.files = PermissionError(13, "Permission denied")
    pipeline = pipeline_of(sources, clock)
    await pipeline.poll()
    view = pipeline.view()
    assert [s["ok"] for s in view["sources"]] == [False] * 5
    assert view["throughput"] == dict.fromkeys(
        ("in_per_s", "written_per_s", "accepted_total", "written_total", "files_total")
    )
    assert view["queue"] is None and view["files"] is None
    assert view["latency"]["p50_ms"] is None
    assert view["errors"]["rows"] == []
    assert "hunter2" not in str(view)
    sqs = next(s for s in view["sources"] if s["key"] == "sqs")
    assert sqs["where"] == "q at http://sqs.local"


async def test_a_source_that_does_not_answer_in_time_is_cut_off() -> None:
    sources, clock = Sources(), Clock()
    never = asyncio.Event()

    async def hangs(url: str) -> Scrape:
        await never.wait()
        raise AssertionError("unreachable")

    pipeline = pipeline_of(sources, clock, consumers=(), timeout_s=0.05)
    pipeline.fetch = hangs
    await pipeline.poll()
    receiver = pipeline.view()["sources"][0]
    assert receiver == receiver | {"ok": False, "error": "no answer within 0.05 s"}


async def test_polls_older_than_the_window_are_dropped() -> None:
    sources, clock = Sources(), Clock()
    sources.answers = {RECEIVER: receiver_at(0.0, 0)}
    pipeline = pipeline_of(sources, clock, consumers=(), window_s=10.0, refresh_s=1.0)
    for step in range(15):
        sources.answers[RECEIVER] = receiver_at(float(step), 10.0 * step)
        await pipeline.poll()
        clock.now += 1
    assert len(pipeline.polls) == 11
    assert pipeline.view()["covered_s"] == pytest.approx(10.0)


async def test_the_view_before_any_poll_says_nothing_yet() -> None:
    view = pipeline_of(Sources(), Clock()).view()
    assert view["polled_at"] is None
    assert all(source["ok"] is None for source in view["sources"])
    assert view["latency"]["count"] == 0
    assert view["history"]["t"] == []


async def test_run_polls_every_refresh_and_outlives_a_failed_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    sources, clock = Sources(), Clock()
    sources.answers = {RECEIVER: receiver_at(0.0, 0)}
    pipeline = pipeline_of(sources, clock, consumers=(), refresh_s=0.01)
    polls = Tally()
    real_poll: Callable[[], Awaitable[Any]] = pipeline.poll

    async def sometimes_broken() -> Any:
        polls.tick()
        if polls.count == 2:
            raise RuntimeError("a bug in the poll")
        return await real_poll()

    monkeypatch.setattr(pipeline, "poll", sometimes_broken)
    task = asyncio.create_task(pipeline.run())
    await polls.reaches(4, "four polls")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(pipeline.polls) >= 2


async def test_one_poll_gives_totals_but_no_rate_and_an_empty_queue_drains_in_no_time() -> None:
    sources, clock = Sources(), Clock()
    sources.answers = {RECEIVER: receiver_at(0.0, 10), CONSUMERS[0]: consumer_at(0.0, 10, 1, 0)}
    sources.queue = QueueStatus("q", 0, 0, 0, "q-dlq", 0)
    pipeline = pipeline_of(sources, clock, consumers=CONSUMERS[:1])
    await pipeline.poll()
    view = pipeline.view()
    assert (view["throughput"]["in_per_s"], view["throughput"]["written_per_s"]) == (None, None)
    assert (view["throughput"]["accepted_total"], view["throughput"]["written_total"]) == (10, 10)
    assert view["queue"]["drain_s"] == 0.0
    assert view["latency"]["count"] == 0  # a difference needs two scrapes


async def test_latencies_beyond_the_last_bucket_are_marked_as_floors() -> None:
    sources, clock = Sources(), Clock()
    pipeline = pipeline_of(sources, clock, consumers=CONSUMERS[:1])
    sources.answers = {RECEIVER: receiver_at(0.0, 0), CONSUMERS[0]: consumer_at(0.0, 0, 0, 0)}
    await pipeline.poll()
    clock.now += 2
    sources.answers = {RECEIVER: receiver_at(2.0, 0), CONSUMERS[0]: consumer_at(2.0, 100, 90, 0, slow=10)}
    await pipeline.poll()
    latency = pipeline.view()["latency"]
    assert (latency["p50_ms_is_floor"], latency["p95_ms_is_floor"], latency["p99_ms_is_floor"]) == (False, True, True)
    assert latency["p99_ms"] == 2000.0 and latency["beyond_last_bound"]
