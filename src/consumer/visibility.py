"""The visibility heartbeat: held messages stay invisible until they are deleted or given up.

A message is held from the return of its receive until its batch's flush is over; every
``beat_s`` each held message whose window is half gone is extended back to the full
timeout. A failed extension is logged and retried on the next beat, never fatal; a
released message (deleted, or its write given up) is no longer extended. Requires
``beat_s < timeout / 4`` (the settings enforce it). Why and the timing:
docs/architecture.md, "Design notes: consumer".
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
