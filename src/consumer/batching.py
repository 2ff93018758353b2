"""Grouping received messages into batches by reading count or age.

A batch is ready when it holds ``batch_size`` readings or ``timeout_s`` after its first
reading arrived, whichever comes first. Batches count readings, but never split a
message (SQS deletes whole messages), so a batch may exceed ``batch_size`` by the rest
of one envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from src.common.schema import StoredReading


@dataclass(frozen=True)
class ReceivedMessage:
    """One decoded SQS message: what to store and what to delete afterwards."""

    message_id: str
    receipt_handle: str
    records: list[StoredReading]
    received_at: float
    """Unix seconds when the receive call returned it."""
    sent_at: float | None = None
    """Unix seconds of SQS's ``SentTimestamp``, if SQS reported it."""
    receive_count: int = 1


@dataclass
class Batch:
    """Messages flushed together; ``batch_id`` ties the batch's log lines together."""

    messages: list[ReceivedMessage] = field(default_factory=list)
    batch_id: str = field(default_factory=lambda: secrets.token_hex(3))
    readings: int = 0

    def append(self, message: ReceivedMessage) -> None:
        self.messages.append(message)
        self.readings += len(message.records)

    def records(self) -> Iterator[StoredReading]:
        for message in self.messages:
            yield from message.records


class Batcher:
    """Collects messages and hands out batches ready to flush, in arrival order.

    Producers call :meth:`add` (synchronous, never blocks); one consumer awaits
    :meth:`next_batch`. After :meth:`close`, whatever is buffered comes out as a final
    batch and then ``next_batch`` returns None.
    """

    def __init__(self, batch_size: int, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._batch_size = batch_size
        self._timeout_s = timeout_s
        self._clock = clock
        self._current: Batch | None = None
        self._deadline = 0.0
        self._ready: deque[Batch] = deque()
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def buffered_readings(self) -> int:
        """Readings added but not yet handed out by :meth:`next_batch`."""
        current = self._current.readings if self._current else 0
        return current + sum(batch.readings for batch in self._ready)

    def add(self, message: ReceivedMessage) -> Batch | None:
        """Buffer ``message``; seals the current batch once it reaches the size bound.

        Returns the batch the message joined, or None for a message without records
        (nothing to store, and it is never deleted).
        """
        if self._closed:
            raise RuntimeError("batcher is closed")
        if not message.records:
            return None
        if self._current is None:
            self._current = Batch()
            self._deadline = self._clock() + self._timeout_s
        batch = self._current
        batch.append(message)
        if batch.readings >= self._batch_size:
            self._seal()
        self._changed.set()
        return batch

    def close(self) -> None:
        """No more messages: the partial batch becomes ready, and then the stream ends."""
        self._closed = True
        self._seal()
        self._changed.set()

    async def next_batch(self) -> Batch | None:
        """The next batch to flush, waiting for the size or age trigger; None once closed and drained."""
        while True:
            if self._ready:
                return self._ready.popleft()
            if self._current is not None and self._clock() >= self._deadline:
                self._seal()
                continue
            if self._closed:
                return None
            self._changed.clear()
            timeout = None if self._current is None else max(0.0, self._deadline - self._clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def absorb_ready(self, batch: Batch, max_readings: int) -> Batch:
        """``batch`` plus the batches sealed since, in order, up to ``max_readings`` in all.

        Called when a disk slot frees up; at low load nothing is waiting and ``batch`` comes back alone.
        """
        while self._ready and batch.readings + self._ready[0].readings <= max_readings:
            for message in self._ready.popleft().messages:
                batch.append(message)
        return batch

    def _seal(self) -> None:
        if self._current is not None:
            self._ready.append(self._current)
            self._current = None
