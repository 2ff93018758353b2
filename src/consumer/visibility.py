"""The visibility heartbeat: held messages stay invisible until they are deleted or given up.

SQS hides a received message for the queue's visibility timeout (30 s) and then hands
it out again. A message the consumer holds (buffered in a batch, waiting for a flush
slot, or being written: a slow fsync, a retried write) must not reappear meanwhile, or
it is delivered twice and, at worst, written by a second consumer while the first write
is still going. So every message is *held* from the moment its receive returns until
its batch's flush is over, and every ``beat_s`` the keeper extends the visibility of
each held message whose current window is half gone back to the full timeout
(``ChangeMessageVisibilityBatch``, 10 per call). A batch whose write gave up is released
like a flushed one: extending stops and its messages come back after the timeout.

A failed extension is logged with the batch and retried on the next beat; it is never
fatal. Timing: a message's window is renewed between ``timeout / 2`` and ``timeout / 2 +
beat_s`` after it started, and the settings keep ``beat_s`` below ``timeout / 4``, which
leaves at least a quarter of the timeout for the call itself. Rounds do not wait for each
other: a slow call delays only its own messages (which are not sent again while it is in
flight), and it is given up once their window is over, so the next beat retries them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from src.consumer.batching import ReceivedMessage
from src.consumer.metrics import ConsumerStats
from src.consumer.receiving import ExtendOutcome, QueueClient

log = logging.getLogger("src.consumer.visibility")


@dataclass
class Lease:
    """One held message: its batch (for the logs) and when its current visibility window began."""

    message: ReceivedMessage
    batch_id: str
    renewed_at: float
    """The keeper's clock when the message was received or last extended."""
    extending: bool = False
    """A call extending it is in flight (the next rounds leave it alone)."""


class VisibilityKeeper:
    """Tracks held messages and extends their visibility from a background task (:meth:`run`).

    :meth:`hold` and :meth:`release` are synchronous and called on the event loop; the
    keeper only touches SQS from :meth:`beat`.
    """

    def __init__(
        self,
        queue: QueueClient,
        timeout_s: int,
        beat_s: float,
        stats: ConsumerStats,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._queue = queue
        self.timeout_s = timeout_s
        self.beat_s = beat_s
        self._extend_after_s = timeout_s / 2
        self._stats = stats
        self._clock = clock
        self._leases: dict[str, Lease] = {}

    @property
    def held(self) -> int:
        """Messages held right now."""
        return len(self._leases)

    def hold(self, message: ReceivedMessage, batch_id: str) -> None:
        """Start keeping ``message`` invisible; its window started when its receive returned (now)."""
        self._leases[message.receipt_handle] = Lease(message, batch_id, self._clock())

    def release(self, messages: Iterable[ReceivedMessage]) -> None:
        """Stop extending ``messages``: deleted, or left in SQS to come back after the timeout."""
        for message in messages:
            self._leases.pop(message.receipt_handle, None)

    async def run(self) -> None:
        """Start a round every ``beat_s`` until cancelled; nothing that goes wrong in a round ends the loop."""
        rounds: set[asyncio.Task[int]] = set()
        try:
            while True:
                await asyncio.sleep(self.beat_s)
                task = asyncio.create_task(self.beat(), name="visibility-round")
                rounds.add(task)
                task.add_done_callback(self._round_done)
                task.add_done_callback(rounds.discard)
        finally:
            for task in rounds:
                task.cancel()
            await asyncio.gather(*rounds, return_exceptions=True)

    @staticmethod
    def _round_done(task: asyncio.Task[int]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "visibility heartbeat: round failed unexpectedly; trying again next beat", exc_info=task.exception()
            )

    async def beat(self) -> int:
        """One round: extend every held message whose window is half gone; returns how many were extended."""
        started = self._clock()
        due: dict[str, list[Lease]] = {}
        for lease in self._leases.values():
            if not lease.extending and started - lease.renewed_at >= self._extend_after_s:
                due.setdefault(lease.batch_id, []).append(lease)
        if not due:
            return 0
        extended = await asyncio.gather(*(self._extend(batch_id, leases, started) for batch_id, leases in due.items()))
        return sum(extended)

    async def _extend(self, batch_id: str, leases: list[Lease], started: float) -> int:
        messages = [lease.message for lease in leases]
        oldest = min(lease.renewed_at for lease in leases)
        # Once the oldest window is over, a late answer helps nobody: give up, the next beat retries.
        call_timeout_s = max(self.beat_s, oldest + self.timeout_s - started)
        for lease in leases:
            lease.extending = True
        try:
            outcome = await asyncio.wait_for(self._queue.extend(messages, self.timeout_s), call_timeout_s)
        except TimeoutError:
            reason = f"no answer within {call_timeout_s:.1f} s"
            outcome = ExtendOutcome(extended=[], failed=[(m, reason) for m in messages])
        finally:
            for lease in leases:
                lease.extending = False
        extended = 0
        for message in outcome.extended:
            current = self._leases.get(message.receipt_handle)
            if current is not None:  # not released while the call was in flight
                current.renewed_at = started
                extended += 1
        # A message released meanwhile was deleted (or given up): its failure does not matter.
        failed = [(m, reason) for m, reason in outcome.failed if m.receipt_handle in self._leases]
        self._stats.visibility_extensions += extended
        self._stats.visibility_extension_failures += len(failed)
        if extended:
            log.info(
                "batch %s: visibility extended to %d s for %d message(s) (held up to %.1f s since last renewal)",
                batch_id,
                self.timeout_s,
                extended,
                started - oldest,
            )
        if failed:
            reasons = sorted({reason for _, reason in failed})
            log.warning(
                "batch %s: extending visibility failed for %d of %d message(s) (%s); retrying next beat",
                batch_id,
                len(failed),
                len(messages),
                "; ".join(reasons),
            )
        return extended
