"""The load generator: how the schedule is split, what a request carries, how senders' results are merged."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from src.common.schema import Freshness, NaturalKey, Reading, format_timestamp, natural_key_of
from src.embedded.processes import free_port
from src.loadtest.sender import (
    CAN_ID,
    PAYLOAD_POOL,
    ReadingEncoder,
    SenderResult,
    ShareSpec,
    TimestampFormatter,
    default_senders,
    expand,
    merge_results,
    payload_pool,
    run_senders,
    send_share,
    split,
    vehicle_name,
)
from tests.fakes import API_KEY, FakeReceiver


def spec(**overrides: object) -> ShareSpec:
    fields: dict[str, object] = {
        "url": "http://127.0.0.1:9",
        "api_key": "k",
        "messages": 1000,
        "rate": 1000.0,
        "batch_size": 1,
        "vehicles": 100,
    }
    fields.update(overrides)
    return ShareSpec(**fields)  # type: ignore[arg-type]


def test_timestamps_are_written_exactly_as_format_timestamp_writes_them() -> None:
    formatter = TimestampFormatter()
    rng = random.Random(3)
    base = 1_795_437_912_000_000
    samples = [base, base + 1, base + 999_999, base + 1_000_000, *(base + rng.randrange(10**10) for _ in range(500))]
    for unix_us in samples:
        expected = format_timestamp(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=unix_us))
        assert formatter(unix_us) == expected


def test_the_schedule_is_split_round_robin_over_disjoint_vehicles() -> None:
    whole = spec(messages=1003, batch_size=10, vehicles=50)
    shares = split(whole, 3)
    assert [s.sender for s in shares] == [0, 1, 2]
    requests = sorted(r for s in shares for r in s.requests())
    assert requests == list(range(whole.total_requests)) == list(range(101))
    assert list(shares[1].requests())[:3] == [1, 4, 7]
    vehicles = [set(s.vehicle_ids()) for s in shares]
    assert set.union(*vehicles) == set(range(50))
    assert sum(len(v) for v in vehicles) == 50
    assert sum(s.readings_in(r) for s in shares for r in s.requests()) == 1003
    assert shares[0].readings_in(100) == 3
    assert shares[2].due_s(5) == pytest.approx(5 * 10 / 1000)
    assert all(s.max_in_flight == whole.max_in_flight // 3 for s in shares)


def test_never_more_senders_than_vehicles_or_requests() -> None:
    assert len(split(spec(vehicles=2), 4)) == 2
    assert len(split(spec(messages=3), 4)) == 3
    assert len(split(spec(), 0)) == 1


def test_default_senders_grows_with_requests_per_second_up_to_the_cores() -> None:
    assert default_senders(2000, 1, cpus=2) == 1
    assert default_senders(20000, 100, cpus=2) == 1
    assert default_senders(12000, 1, cpus=2) == 2
    assert default_senders(12000, 1, cpus=8) == 3
    assert default_senders(100000, 1, cpus=8) == 4


def test_a_single_reading_request_is_a_valid_reading_with_the_planned_key() -> None:
    encoder = ReadingEncoder(spec(api_key="secret", vehicles=7, sender=1, senders=2))
    unix_us = int(datetime.now(UTC).timestamp() * 1_000_000)
    request = encoder.request(5, 1, unix_us)
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /ingest HTTP/1.1\r\nHost: 127.0.0.1:9\r\nX-API-Key: secret\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    document = orjson.loads(body)
    now = datetime.now(UTC)
    reading = Reading.model_validate(
        document, context={"freshness": Freshness(now, timedelta(seconds=300), timedelta(hours=1))}
    )
    assert reading.vehicle_id == vehicle_name(encoder.vehicle_of(5)) == vehicle_name(encoder.vehicles[5 % 3])
    assert encoder.vehicles == [1, 3, 5]
    assert natural_key_of(document).timestamp == TimestampFormatter()(unix_us)
    assert document["payload"] == encoder.pool[encoder.payload_of(5)]


def test_a_batch_request_carries_consecutive_microseconds() -> None:
    encoder = ReadingEncoder(spec(batch_size=4))
    request = encoder.request(98, 4, 1_795_437_912_999_998)
    head, body = request.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /ingest/batch HTTP/1.1")
    readings = orjson.loads(body)
    formatter = TimestampFormatter()
    assert [r["timestamp"] for r in readings] == [formatter(1_795_437_912_999_998 + i) for i in range(4)]
    assert readings[2]["timestamp"].endswith(":13Z"), "a whole second has no fraction, as format_timestamp"
    assert [r["vehicle_id"] for r in readings] == [vehicle_name(v) for v in (98, 99, 0, 1)]
    assert {r["can_id"] for r in readings} == {CAN_ID}


def result(share: ShareSpec, requests: list[tuple[int, int, int, float]], **fields: object) -> SenderResult:
    """A sender's result from (first reading, unix µs, count, latency) per accepted request."""
    first, unix_us, count, latency = zip(*requests, strict=True) if requests else ((), (), (), ())
    return SenderResult(
        share,
        first_reading=np.array(first, np.int64),
        unix_us=np.array(unix_us, np.int64),
        count=np.array(count, np.int32),
        latency_ms=np.array(latency, np.float32),
        lag_ms=np.zeros(len(requests), np.float32),
        **fields,  # type: ignore[arg-type]
    )


def test_expand_gives_every_accepted_reading_its_number_and_microsecond() -> None:
    readings, unix_us = expand(result(spec(), [(0, 100, 3, 5.0), (7, 200, 2, 6.0)]))
    assert readings.tolist() == [0, 1, 2, 7, 8]
    assert unix_us.tolist() == [100, 101, 102, 200, 201]
    assert expand(result(spec(), []))[0].size == 0


def test_merging_two_senders_keeps_every_key_once_with_its_time_and_latency() -> None:
    a, b = split(spec(vehicles=4, batch_size=2, messages=8), 2)
    t0 = 1_795_437_912_000_000
    first = result(
        a, [(0, t0, 2, 10.0), (2, t0 + 5000, 2, 20.0)], sent=6, refused={"503": 2}, started_unix_ms=1.0, window_s=2.0
    )
    second = result(b, [(0, t0, 2, 30.0)], sent=4, refused={"503": 1, "TimeoutError": 1}, started_unix_ms=0.5)
    second.window_s, second.cpu_s, first.cpu_s = 3.0, 0.25, 0.5
    first.refused_unix_us, first.refused_count = np.array([t0 + 9000], np.int64), np.array([2], np.int32)
    second.refused_unix_us, second.refused_count = np.array([t0, t0 + 1], np.int64), np.array([1, 1], np.int32)
    run = merge_results([first, second], keep_payloads=True)
    formatter = TimestampFormatter()
    expected = {
        NaturalKey("load-00000", CAN_ID, formatter(t0)): t0 / 1000,
        NaturalKey("load-00002", CAN_ID, formatter(t0 + 1)): (t0 + 1) / 1000,
        NaturalKey("load-00000", CAN_ID, formatter(t0 + 5000)): (t0 + 5000) / 1000,
        NaturalKey("load-00002", CAN_ID, formatter(t0 + 5001)): (t0 + 5001) / 1000,
        NaturalKey("load-00001", CAN_ID, formatter(t0)): t0 / 1000,  # same instant, another sender's vehicle
        NaturalKey("load-00003", CAN_ID, formatter(t0 + 1)): (t0 + 1) / 1000,
    }
    assert run.accepted == expected
    assert list(run.ingest_ms) == [10.0, 10.0, 20.0, 20.0, 30.0, 30.0]
    assert (run.sent, run.refused) == (10, {"503": 3, "TimeoutError": 1})
    assert (run.window_s, run.started_unix_ms, run.sender_cpu_s, run.senders) == (3.0, 0.5, 0.75, 2)
    assert list(run.request_unix_ms) == [t0 / 1000, (t0 + 5000) / 1000, t0 / 1000]
    assert list(run.request_latency_ms) == [10.0, 20.0, 30.0]
    assert list(run.refused_unix_ms) == [(t0 + 9000) / 1000, t0 / 1000, (t0 + 1) / 1000]
    assert list(run.refused_count) == [2, 1, 1]
    assert run.payloads is not None
    pool_b = payload_pool(0, 1)
    assert run.payloads[NaturalKey("load-00003", CAN_ID, formatter(t0 + 1))] == pool_b[1 % PAYLOAD_POOL]


def test_merging_nothing_is_an_empty_run() -> None:
    run = merge_results([])
    assert (run.sent, run.accepted, run.window_s, run.payloads) == (0, {}, 0.0, None)


async def test_a_sender_sends_its_share_on_schedule_to_a_receiver(receiver: FakeReceiver) -> None:
    share = split(spec(url=receiver.url, api_key=API_KEY, messages=60, rate=600, batch_size=3, vehicles=10), 2)[1]
    seen: list[tuple[int, int]] = []
    outcome = await send_share(share, progress=lambda sent, accepted: seen.append((sent, accepted)))
    assert outcome.sent == 30 == int(outcome.count.sum())
    assert outcome.refused == {}
    assert 0.045 <= outcome.window_s < 2
    assert seen[-1] == (30, 30)
    keys = {natural_key_of(r) for r in receiver.accepted}
    assert len(keys) == 30
    assert {k.vehicle_id for k in keys} <= {vehicle_name(v) for v in share.vehicle_ids()}
    # Answers arrive out of order, so sort the requests by stamp: each request's readings take
    # the microseconds from its stamp on, and no two requests' ranges may overlap.
    order = np.argsort(outcome.unix_us)
    stamps, counts = outcome.unix_us[order], outcome.count[order]
    assert np.all(np.diff(stamps) >= counts[:-1]), "every reading of a sender has its own microsecond"


async def test_refusals_and_unreachable_receivers_are_counted_not_raised(receiver: FakeReceiver) -> None:
    wrong_key = await send_share(spec(url=receiver.url, api_key="wrong", messages=5, rate=1000))
    assert (wrong_key.sent, wrong_key.refused, wrong_key.count.size) == (5, {"401": 5}, 0)
    assert wrong_key.refused_count.tolist() == [1] * 5
    assert np.all(wrong_key.refused_unix_us / 1000 >= wrong_key.started_unix_ms - 1)
    nobody = await send_share(spec(url=f"http://127.0.0.1:{free_port()}", messages=4, rate=1000, batch_size=2))
    assert nobody.sent == 4
    assert nobody.refused == {"ConnectionRefusedError": 4}


async def test_a_silent_receiver_times_requests_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outcome = await send_share(spec(url=f"http://127.0.0.1:{port}", messages=2, rate=1000, timeout_s=0.05))
    server.close()
    assert outcome.refused == {"TimeoutError": 2}


def test_spawned_senders_share_one_schedule_and_their_results_merge(receiver: FakeReceiver) -> None:
    said: list[str] = []
    whole = spec(url=receiver.url, api_key=API_KEY, messages=700, rate=500, batch_size=2, vehicles=9)
    run = run_senders(whole, 3, said.append, keep_payloads=True)
    assert run.senders == 3
    assert run.sent == len(run.accepted) == 700
    assert {natural_key_of(r) for r in receiver.accepted} == set(run.accepted)
    assert run.payloads is not None and len(run.payloads) == 700
    assert 1.3 <= run.window_s < 5
    assert run.sender_cpu_s > 0
    assert said and all(line.startswith("sending: ") for line in said)
    assert len(said) <= run.window_s + 2, "one aggregate progress line per second, not one per sender"
