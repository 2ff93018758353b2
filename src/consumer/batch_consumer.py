"""The batch consumer: ``python -m src.consumer.batch_consumer``.

Long-polls SQS, batches readings by count or age, writes each batch as fsynced
hour-partitioned JSONL and only then deletes its messages, which stay invisible until
then (``visibility``). Poison is logged and left for the dead-letter queue; with
``S3_BUCKET`` set, durable files are copied to S3 off the delete path (``uploading``).
At least once: nothing is deleted before it is durable; a crash between write and delete
stores a reading twice (deduplicated downstream). Why: docs/architecture.md, "Design
notes: consumer".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from src.common import memory
from src.common.aws import SQSClient, resolve_queue_url, s3_client, sqs_client
from src.common.envelope import MessageDecodeError
from src.common.logs import configure_logging
from src.common.retry import Backoff
from src.common.schema import StoredReading
from src.common.settings import ConsumerSettings
from src.consumer.batching import Batch, Batcher
from src.consumer.metrics import (
    ConsumerCollector,
    ConsumerStats,
    LatencyHistogram,
    batch_latencies,
    format_latencies,
    serve_metrics,
)
from src.consumer.receiving import QueueClient, parse_message, receive_count
from src.consumer.storage import BatchWriter, WriteResult, new_writer_id
from src.consumer.uploading import Uploader
from src.consumer.visibility import VisibilityKeeper

log = logging.getLogger("src.consumer")

MAX_CONCURRENT_FLUSHES = 2
"""Batches being written at once (their deletes from SQS are not counted)."""
BACKPRESSURE_BATCHES = 10
"""Pollers pause while more than this many batches' worth of readings are unflushed..."""
BACKPRESSURE_MIN_READINGS = 50_000
"""...or this many, if more: one receive of large envelopes alone must not exhaust the budget."""
MAX_MERGED_READINGS = 20_000
"""Most readings one flush takes when it absorbs the batches waiting for the disk."""
WRITE_RETRY_DELAY_S = 0.5
UPLOAD_DRAIN_S = 10.0
"""At shutdown, uploads get this long to finish; the rest wait for the next start's catch-up."""
BYTES_PER_MB = 1024 * 1024

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class _Tasks:
    """The consumer's long-lived tasks, started by ``_start`` and ended by ``_drain``."""

    dispatcher: asyncio.Task[None] | None = None
    heartbeat: asyncio.Task[None] | None = None
    catch_up: asyncio.Task[int] | None = None
    pollers: list[asyncio.Task[None]] = field(default_factory=list)


async def _cancel(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None skipped) and wait until each has ended."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


class Consumer:
    """Pollers, a batcher and flush tasks around one queue and one writer."""

    def __init__(
        self,
        settings: ConsumerSettings,
        queue: QueueClient,
        writer: BatchWriter,
        *,
        uploader: Uploader | None = None,
        write_retry_delay_s: float = WRITE_RETRY_DELAY_S,
        backoff_factory: Callable[[], Backoff] = Backoff,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.writer = writer
        self.uploader = uploader
        self.stats = ConsumerStats()
        self.latency = LatencyHistogram()
        self._batcher = Batcher(settings.batch_size, settings.batch_timeout_s)
        self._write_retry_delay_s = write_retry_delay_s
        self._backoff_factory = backoff_factory
        self._sleep = sleep
        self._max_unflushed = max(BACKPRESSURE_BATCHES * settings.batch_size, BACKPRESSURE_MIN_READINGS)
        self._unflushed = 0
        self._capacity = asyncio.Condition()
        self._flush_slots = asyncio.Semaphore(MAX_CONCURRENT_FLUSHES)
        self._flushes: set[asyncio.Task[None]] = set()
        self.visibility = VisibilityKeeper(queue, settings.visibility_timeout_s, settings.heartbeat_s, self.stats)
        self._tasks = _Tasks()

    async def run(self, stop: asyncio.Event) -> ConsumerStats:
        """Consume until ``stop`` is set, then drain: flush what is buffered and wait for it."""
        self._start()
        try:
            await stop.wait()
        finally:
            await self._drain()
        return self.stats

    def _start(self) -> None:
        """The dispatcher, the visibility heartbeat, the uploader and its catch-up, then the pollers."""
        self._tasks.dispatcher = asyncio.create_task(self._dispatch(), name="dispatcher")
        self._tasks.heartbeat = asyncio.create_task(self.visibility.run(), name="visibility-heartbeat")
        if self.uploader is not None:
            self.uploader.start()
            self._tasks.catch_up = asyncio.create_task(self.uploader.catch_up(), name="upload-catch-up")
        self._tasks.pollers = [
            asyncio.create_task(self._poll(i), name=f"poller-{i}") for i in range(self.settings.receive_concurrency)
        ]

    async def _drain(self) -> None:
        """Stop receiving, flush every buffered reading, then stop the helpers and log the totals.

        A message a cancelled long poll was receiving was never seen, so never deleted: it comes back.
        """
        tasks = self._tasks
        log.info(
            "stopping: cancelling %d long poll(s), flushing %d buffered reading(s)",
            len(tasks.pollers),
            self._batcher.buffered_readings,
        )
        await _cancel(*tasks.pollers)
        self._batcher.close()
        if tasks.dispatcher is not None:
            await tasks.dispatcher
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await _cancel(tasks.heartbeat, tasks.catch_up)
        if self.uploader is not None:
            await self.uploader.drain(UPLOAD_DRAIN_S)
            log.info("uploader stopped: %s", self.uploader.stats.summary())
        log.info("consumer stopped: %s", self.stats.summary())

    # -- receiving ---------------------------------------------------------------------

    async def _poll(self, index: int) -> None:
        """One long-poll loop; receive errors back off (full jitter) and recover by themselves."""
        backoff = self._backoff_factory()
        while True:
            await self._wait_for_capacity()
            try:
                raws = await self.queue.receive()
            except Exception as exc:
                self.stats.receive_errors += 1
                delay = backoff.next_delay()
                log.warning("poller %d: receive failed (%r); retrying in %.2f s", index, exc, delay)
                await self._sleep(delay)
                continue
            if backoff.attempt:
                log.info("poller %d: receiving again after %d failed attempt(s)", index, backoff.attempt)
                backoff.reset()
            received_at = time.time()
            for raw in raws:
                self._accept(raw, received_at)

    def _accept(self, raw: object, received_at: float) -> None:
        try:
            message = parse_message(raw, received_at)
        except MessageDecodeError as exc:
            self.stats.poison_receives += 1
            message_id = raw.get("MessageId") if isinstance(raw, dict) else None
            log.warning(
                "poison message %s (receive count %d) left for the dead-letter queue: %s",
                message_id,
                receive_count(raw),
                exc,
            )
            return
        batch = self._batcher.add(message)
        if batch is not None:
            self._unflushed += len(message.records)
            self.visibility.hold(message, batch.batch_id)

    async def _wait_for_capacity(self) -> None:
        if self._unflushed < self._max_unflushed:
            return
        log.debug("backpressure: %d readings unflushed", self._unflushed)
        async with self._capacity:
            await self._capacity.wait_for(lambda: self._unflushed < self._max_unflushed)

    async def _release(self, readings: int) -> None:
        self._unflushed -= readings
        async with self._capacity:
            self._capacity.notify_all()

    # -- flushing ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        """Hand each ready batch to its own flush task, at most two writing at a time.

        Batches that sealed while both slots were busy join it (:meth:`Batcher.absorb_ready`).
        """
        while (batch := await self._batcher.next_batch()) is not None:
            await self._flush_slots.acquire()
            batch = self._batcher.absorb_ready(batch, max(self.settings.batch_size, MAX_MERGED_READINGS))
            task = asyncio.create_task(self._flush(batch), name=f"flush-{batch.batch_id}")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: Batch) -> None:
        """Write the batch, then delete its messages from SQS; they stay held (invisible) until then."""
        try:
            try:
                result = await self._write(batch)
            finally:
                # Given back before the delete: holding the slot through an SQS round trip made the disk wait.
                self._flush_slots.release()
                await self._release(batch.readings)
            if result is None:
                return
            if self.uploader is not None:
                self.uploader.submit(f.path for f in result.files)
            outcome = await self.queue.delete(batch.messages, batch.batch_id)
            self.stats.batches += 1
            self.stats.readings_written += result.readings
            self.stats.files_written += len(result.files)
            self.stats.messages_deleted += outcome.deleted
            self.stats.delete_failures += outcome.failed
            log.info(
                "batch %s flushed: readings=%d messages=%d files=%d bytes=%d %s%s",
                batch.batch_id,
                result.readings,
                len(batch.messages),
                len(result.files),
                result.bytes,
                format_latencies(batch_latencies(batch, result.durable_at, self.latency)),
                f" delete_failures={outcome.failed}" if outcome.failed else "",
            )
        except Exception:  # a bug must not kill the consumer or leak the flush slot
            log.exception("batch %s: flush failed unexpectedly; its messages stay in SQS", batch.batch_id)
        finally:
            self.visibility.release(batch.messages)  # deleted, or left to come back after the timeout

    async def _write(self, batch: Batch) -> WriteResult | None:
        """Write the batch, retrying once; None means it failed twice and nothing is deleted.

        A retry rewrites the whole batch: a partition written before the failure is stored twice.
        """
        records = list(batch.records())
        outcome = await asyncio.to_thread(self._try_write, records)
        if isinstance(outcome, OSError):
            log.warning("batch %s: write failed (%r); retrying once", batch.batch_id, outcome)
            await self._sleep(self._write_retry_delay_s)
            outcome = await asyncio.to_thread(self._try_write, records)
        if isinstance(outcome, OSError):
            self.stats.write_failures += 1
            log.error(
                "batch %s: write failed again (%r); readings=%d messages=%d left in SQS for redelivery "
                "(no longer extended: they reappear within the visibility timeout)",
                batch.batch_id,
                outcome,
                batch.readings,
                len(batch.messages),
            )
            return None
        return outcome

    def collector(self) -> ConsumerCollector:
        """What ``/metrics`` shows of this consumer."""
        uploader = self.uploader
        return ConsumerCollector(
            self.stats,
            self.latency,
            uploads=uploader.stats if uploader is not None else None,
            uploads_pending=(lambda: uploader.pending) if uploader is not None else None,
            unflushed=lambda: self._unflushed,
        )

    def _try_write(self, records: list[StoredReading]) -> WriteResult | OSError:
        """The blocking write, run in a worker thread; an OSError comes back as a value."""
        try:
            return self.writer.write(records)
        except OSError as exc:
            return exc


async def _resolve_queue(client: SQSClient, settings: ConsumerSettings, stop: asyncio.Event) -> str | None:
    """The queue URL, retrying with backoff while SQS is unreachable; None if stopped first."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            return await resolve_queue_url(client, settings)
        except Exception as exc:
            delay = backoff.next_delay()
            log.warning("cannot resolve queue %s (%r); retrying in %.2f s", settings.sqs_queue_name, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None


async def run(settings: ConsumerSettings, stop: asyncio.Event) -> None:
    """Consume ``settings``' queue into ``settings.raw_dir`` until ``stop`` is set."""
    writer = BatchWriter(
        settings.raw_dir,
        settings.writer_id or new_writer_id(),
        rotation_bytes=max(1, int(settings.file_rotation_mb * BYTES_PER_MB)),
    )
    await asyncio.to_thread(writer.remove_stale_tmp)
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            sqs_client(
                settings,
                read_timeout_s=settings.wait_time_s + 15.0,  # a long poll must not look like a hung socket
                max_pool_connections=settings.receive_concurrency + 4 * MAX_CONCURRENT_FLUSHES + 8,
            )
        )
        uploader = None
        if settings.s3_bucket:
            s3 = await stack.enter_async_context(
                s3_client(settings, max_pool_connections=settings.s3_upload_concurrency + 2)
            )
            uploader = Uploader(
                s3,
                settings.s3_bucket,
                settings.raw_dir,
                gzipped=settings.s3_gzip,
                concurrency=settings.s3_upload_concurrency,
            )
        queue_url = await _resolve_queue(client, settings, stop)
        if queue_url is None:
            return
        log.info(
            "consuming %s into %s%s as writer %s (batch_size=%d batch_timeout_s=%s pollers=%d "
            "visibility_timeout_s=%d heartbeat_s=%g)",
            queue_url,
            settings.raw_dir,
            f" and s3://{settings.s3_bucket}/raw/" if uploader is not None else "",
            writer.writer_id,
            settings.batch_size,
            settings.batch_timeout_s,
            settings.receive_concurrency,
            settings.visibility_timeout_s,
            settings.heartbeat_s,
        )
        queue = QueueClient(client, queue_url, settings.wait_time_s)
        consumer = Consumer(settings, queue, writer, uploader=uploader)
        stop_metrics = serve_metrics(consumer.collector(), settings.metrics_port) if settings.metrics_port else None
        try:
            await consumer.run(stop)
        finally:
            if stop_metrics is not None:
                await asyncio.to_thread(stop_metrics)


async def _serve(settings: ConsumerSettings) -> None:
    """``run`` with SIGINT/SIGTERM setting the stop event (handlers need the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await run(settings, stop)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return None
    return uvloop.new_event_loop


def main() -> int:
    """Entry point: read settings once, log, consume until a signal; 0 after a clean stop."""
    settings = ConsumerSettings()
    configure_logging(settings.log_level, settings.log_format)
    memory.tune_for_throughput()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
