"""Batching: by reading count or first-reading age, never splitting a message (deletion is per message)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from src.common.schema import StoredReading
from src.consumer.batching import Batch, Batcher, ReceivedMessage
from tests.factories import stored_reading

NOW = datetime.now(UTC)


def record(i: int) -> StoredReading:
    return stored_reading(f"veh-{i}", NOW - timedelta(seconds=1), NOW)


def message(readings: int, name: str = "m") -> ReceivedMessage:
    return ReceivedMessage(
        message_id=name, receipt_handle=f"rh-{name}", records=[record(i) for i in range(readings)], received_at=0.0
    )


async def test_size_trigger_counts_readings_not_messages() -> None:
    """Two envelopes of 3 readings fill a batch of 5: the flush is by readings, whatever the message count."""
    batcher = Batcher(batch_size=5, timeout_s=60)
    batcher.add(message(3, "a"))
    assert batcher.buffered_readings == 3
    batcher.add(message(3, "b"))

    batch = await asyncio.wait_for(batcher.next_batch(), 5)
    assert batch is not None
    assert batch.readings == 6 and [m.message_id for m in batch.messages] == ["a", "b"]
    assert len(list(batch.records())) == 6
    assert batcher.buffered_readings == 0


async def test_message_records_are_never_split_across_batches() -> None:
    """A message's records all travel in one batch, since SQS deletes whole messages."""
    batcher = Batcher(batch_size=4, timeout_s=60)
    batcher.add(message(3, "a"))
    batcher.add(message(7, "b"))  # overflows the size bound rather than splitting
    batcher.add(message(4, "c"))

    first = await asyncio.wait_for(batcher.next_batch(), 5)
    second = await asyncio.wait_for(batcher.next_batch(), 5)
    assert first is not None and second is not None
    assert [(m.message_id, len(m.records)) for m in first.messages] == [("a", 3), ("b", 7)]
    assert [(m.message_id, len(m.records)) for m in second.messages] == [("c", 4)]


async def test_timeout_trigger_flushes_a_lone_reading() -> None:
    """A batch below the size bound still flushes once its first reading is timeout_s old."""
    batcher = Batcher(batch_size=100, timeout_s=0.05)
    waiter = asyncio.create_task(batcher.next_batch())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # nothing buffered: nothing to flush
    batcher.add(message(1))

    batch = await asyncio.wait_for(waiter, 5)
    assert batch is not None and batch.readings == 1


async def test_timeout_runs_from_the_first_reading_not_the_last() -> None:
    """Steady trickles cannot postpone a flush forever: the deadline is set by the first reading."""
    now = [0.0]
    batcher = Batcher(batch_size=100, timeout_s=1.0, clock=lambda: now[0])
    batcher.add(message(1, "first"))
    now[0] = 0.9
    batcher.add(message(1, "second"))
    now[0] = 1.0

    batch = await asyncio.wait_for(batcher.next_batch(), 5)
    assert batch is not None and [m.message_id for m in batch.messages] == ["first", "second"]


async def test_close_flushes_the_partial_batch_then_ends() -> None:
    """On stop, buffered readings come out as a final batch, then next_batch returns None."""
    batcher = Batcher(batch_size=100, timeout_s=60)
    batcher.add(message(2))
    batcher.close()

    batch = await asyncio.wait_for(batcher.next_batch(), 5)
    assert batch is not None and batch.readings == 2
    assert await asyncio.wait_for(batcher.next_batch(), 5) is None
    with pytest.raises(RuntimeError):
        batcher.add(message(1))


async def test_close_wakes_a_waiting_consumer() -> None:
    batcher = Batcher(batch_size=10, timeout_s=60)
    waiter = asyncio.create_task(batcher.next_batch())
    await asyncio.sleep(0.01)
    batcher.close()
    assert await asyncio.wait_for(waiter, 5) is None


async def test_empty_message_adds_nothing() -> None:
    batcher = Batcher(batch_size=1, timeout_s=60)
    assert batcher.add(message(0)) is None
    assert batcher.buffered_readings == 0


async def test_add_returns_the_batch_the_message_joined() -> None:
    """The consumer ties each held message to its batch id (visibility heartbeat logs)."""
    batcher = Batcher(batch_size=5, timeout_s=60)
    first = batcher.add(message(3, "a"))
    second = batcher.add(message(3, "b"))  # fills and seals the batch
    third = batcher.add(message(1, "c"))
    assert first is not None and first is second and third is not None and third is not first
    assert await asyncio.wait_for(batcher.next_batch(), 5) is first


def test_batches_get_short_distinct_ids() -> None:
    ids = {Batch().batch_id for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 6 for i in ids)


async def test_batches_waiting_for_the_disk_are_written_as_one_up_to_a_bound() -> None:
    """Sealed batches join the one being written, in order, while the total stays within the bound."""
    batcher = Batcher(batch_size=2, timeout_s=60)
    for name in "abcde":
        batcher.add(message(2, name))  # five sealed batches of 2 readings
    first = await asyncio.wait_for(batcher.next_batch(), 5)
    assert first is not None

    merged = batcher.absorb_ready(first, max_readings=7)
    assert merged is first and [m.message_id for m in merged.messages] == ["a", "b", "c"]
    assert merged.readings == 6 and batcher.buffered_readings == 4
    rest = await asyncio.wait_for(batcher.next_batch(), 5)
    assert rest is not None and batcher.absorb_ready(rest, max_readings=100).readings == 4
    assert batcher.buffered_readings == 0


async def test_with_nothing_waiting_a_batch_is_written_alone() -> None:
    """At low load nothing is sealed behind the batch, so absorbing changes nothing."""
    batcher = Batcher(batch_size=2, timeout_s=60)
    batcher.add(message(2, "a"))
    batcher.add(message(1, "b"))  # the open batch is not ready and is never absorbed
    batch = await asyncio.wait_for(batcher.next_batch(), 5)
    assert batch is not None
    assert [m.message_id for m in batcher.absorb_ready(batch, max_readings=100).messages] == ["a"]
    assert batcher.buffered_readings == 1
