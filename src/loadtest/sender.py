"""The load test's sending side: readings at a fixed rate, from one process or several.

The schedule is global: request ``j`` (readings ``j*B .. j*B+B-1``) is due ``j*B/rate``
seconds after a common start. With ``N`` sender processes, sender ``s`` sends the
requests ``j ≡ s (mod N)``, so the aggregate rate stays smooth. Natural keys are unique
by construction: sender ``s`` uses only the vehicles ``v ≡ s (mod N)``, and within a
sender every reading gets its own microsecond (a request's readings take consecutive
microseconds from the moment it is written; the next request starts after them).

A reading's body is assembled from prepared bytes: the vehicle's fields and one of a
pool of payloads are encoded once, only the timestamp is formatted per reading. A sender
records per request only its first reading's number, its timestamp, how many readings
it carried, its answer and its round trip; who sent what is reconstructed afterwards
with numpy (``merge_results``), which is also all that crosses the process boundary.

A reading is stamped when its request is written. Requests wait for a free connection
when ``MAX_IN_FLIGHT`` are unanswered; that wait shows as "behind schedule" (``lag_ms``)
and in the throughput, not in end-to-end latency. Sender processes are started with the
``spawn`` method, run on uvloop and talk HTTP through ``scripts/fast_http.py``.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import multiprocessing.connection
import random
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import orjson

from src.common.schema import NaturalKey
from src.loadtest.fast_http import ConnectionPool, HttpProtocolError, Target, request_head

CAN_ID = "0x1F0"
PAYLOAD_POOL = 1021
"""Distinct payloads per sender; prime, so a vehicle does not see the same few over and over."""
MAX_IN_FLIGHT = 2048
"""Requests in flight at once, over all senders; beyond it a sender waits for an answer."""
REQUEST_TIMEOUT_S = 30.0
START_DELAY_S = 0.2
"""Between every sender reporting ready and the first request being due."""
READY_TIMEOUT_S = 120.0
PROGRESS_EVERY_S = 0.1
"""How often a sender updates its counts (the parent prints them once a second)."""

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""Called with (readings sent, readings accepted) so far."""


def vehicle_name(vehicle: int) -> str:
    return f"load-{vehicle:05d}"


def make_payload(rng: random.Random) -> dict[str, float]:
    """Plausible battery signals (the receiver checks them against physical bounds)."""
    soc = rng.uniform(20.0, 90.0)
    cell = 3.45 + 0.0075 * soc
    current = rng.uniform(-180.0, 40.0)
    temp = rng.uniform(20.0, 35.0)
    return {
        "battery_soc": round(soc, 1),
        "battery_voltage": round(96 * cell + 0.05 * current, 1),
        "battery_current": round(current, 1),
        "cell_voltage_min": round(cell - 0.012, 3),
        "cell_voltage_max": round(cell + 0.012, 3),
        "cell_temp_min": round(temp, 1),
        "cell_temp_max": round(temp + rng.uniform(0.5, 3.0), 1),
    }


def payload_pool(seed: int, sender: int, size: int = PAYLOAD_POOL) -> list[dict[str, float]]:
    rng = random.Random(seed * 1_000_003 + sender)
    return [make_payload(rng) for _ in range(size)]


class TimestampFormatter:
    """Unix microseconds to ``format_timestamp``'s text, the seconds' part cached.

    ``format_timestamp`` goes through ``datetime.isoformat``, which leaves out a zero
    fraction; so does this.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, unix_us: int) -> str:
        second, fraction = divmod(unix_us, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{fraction:06d}Z" if fraction else f"{self._prefix}Z"


@dataclass(frozen=True)
class ShareSpec:
    """One sender's part of the run; everything a sender process needs (picklable)."""

    url: str
    api_key: str
    messages: int
    rate: float
    batch_size: int
    vehicles: int
    seed: int = 0
    sender: int = 0
    senders: int = 1
    max_in_flight: int = MAX_IN_FLIGHT
    timeout_s: float = REQUEST_TIMEOUT_S

    @property
    def total_requests(self) -> int:
        return (self.messages + self.batch_size - 1) // self.batch_size

    def requests(self) -> range:
        """The global request numbers this sender sends."""
        return range(self.sender, self.total_requests, self.senders)

    def vehicle_ids(self) -> list[int]:
        return list(range(self.sender, self.vehicles, self.senders))

    def readings_in(self, request: int) -> int:
        return min(self.batch_size, self.messages - request * self.batch_size)

    def due_s(self, request: int) -> float:
        """When the request is due, in seconds after the start."""
        return request * self.batch_size / self.rate


def split(spec: ShareSpec, senders: int) -> list[ShareSpec]:
    """The run's shares for ``senders`` processes (never more senders than vehicles or requests)."""
    senders = max(1, min(senders, spec.vehicles, spec.total_requests))
    in_flight = max(1, spec.max_in_flight // senders)
    return [
        ShareSpec(
            spec.url,
            spec.api_key,
            spec.messages,
            spec.rate,
            spec.batch_size,
            spec.vehicles,
            spec.seed,
            sender,
            senders,
            in_flight,
            spec.timeout_s,
        )
        for sender in range(senders)
    ]


@dataclass
class SenderResult:
    """What one sender saw, per request, in compact arrays."""

    spec: ShareSpec
    sent: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    started_unix_ms: float = 0.0
    """When the schedule started (request 0 due), unix ms."""
    window_s: float = 0.0
    """From the schedule's start to this sender's last answer."""
    cpu_s: float = 0.0
    """CPU time the sender used while sending (its start-up excluded)."""
    first_reading: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Per accepted request: the sender-local number of its first reading."""
    unix_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Per accepted request: its first reading's timestamp (the others follow, 1 µs apart)."""
    count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """Per accepted request: the HTTP round trip."""
    lag_ms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    """Per request sent: how late it was written compared with the schedule."""
    refused_unix_us: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Per request not accepted: when it was sent (or failed to connect)."""
    refused_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    """Per request not accepted: how many readings it carried."""


@dataclass
class LoadRun:
    """What the sending phase saw: per accepted reading, its key and when it was taken."""

    sent: int = 0
    accepted: dict[NaturalKey, float] = field(default_factory=dict)  # key -> reading timestamp (unix ms)
    ingest_ms: np.ndarray | list[float] = field(default_factory=list)
    """Per accepted reading: the round trip of the request that carried it."""
    refused: dict[str, int] = field(default_factory=dict)  # HTTP status or error -> readings
    window_s: float = 0.0
    payloads: dict[NaturalKey, dict[str, float]] | None = None
    """Accepted readings' payloads, kept only when asked (tests compare aggregates with them)."""
    started_unix_ms: float = 0.0
    request_unix_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per accepted request: when it was written, unix ms."""
    request_latency_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lag_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    refused_unix_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Per request not accepted: when it was sent, unix ms."""
    refused_count: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    senders: int = 1
    sender_cpu_s: float = 0.0
    """CPU time the senders used while sending."""
    spawned: bool = False
    """Whether the senders were processes of their own (else their CPU is this process's)."""


class ReadingEncoder:
    """A sender's request bodies from prepared bytes: vehicles and payloads encoded once."""

    def __init__(self, spec: ShareSpec) -> None:
        self.spec = spec
        self.vehicles = spec.vehicle_ids()
        self.pool = payload_pool(spec.seed, spec.sender)
        self._vehicle_bytes = [
            f'","vehicle_id":"{vehicle_name(v)}","can_id":"{CAN_ID}","payload":'.encode() for v in self.vehicles
        ]
        self._payload_bytes = [orjson.dumps(p) + b"}" for p in self.pool]
        self._format = TimestampFormatter()
        self._batch = spec.batch_size > 1
        target = Target.from_url(spec.url)
        path = "/ingest/batch" if self._batch else "/ingest"
        headers = {"X-API-Key": spec.api_key, "Content-Type": "application/json"}
        self._head = request_head(target, path, headers)

    def vehicle_of(self, reading: int) -> int:
        return self.vehicles[reading % len(self.vehicles)]

    def payload_of(self, reading: int) -> int:
        return reading % PAYLOAD_POOL

    def request(self, first_reading: int, count: int, unix_us: int) -> bytes:
        """The whole HTTP request for readings ``first_reading ..`` stamped from ``unix_us`` on."""
        n_vehicles = len(self.vehicles)
        parts = [b"[" if self._batch else b""]
        for i in range(count):
            reading = first_reading + i
            parts.append(b',{"timestamp":"' if i else b'{"timestamp":"')
            parts.append(self._format(unix_us + i).encode())
            parts.append(self._vehicle_bytes[reading % n_vehicles])
            parts.append(self._payload_bytes[reading % PAYLOAD_POOL])
        if self._batch:
            parts.append(b"]")
        body = b"".join(parts)
        return b"%s%d\r\n\r\n%s" % (self._head, len(body), body)


async def send_share(spec: ShareSpec, start_at: float | None = None, progress: Progress | None = None) -> SenderResult:
    """Send this sender's requests on the global schedule; requests are scheduled, not paced by answers.

    ``start_at`` is when request 0 is due, on the ``time.monotonic`` clock (shared by every
    process on the machine); default: now.
    """
    encoder = ReadingEncoder(spec)
    pool = ConnectionPool(Target.from_url(spec.url), spec.max_in_flight)
    result = SenderResult(spec)
    first_reading, unix_us, count, latency_ms = array("q"), array("q"), array("i"), array("f")
    lag_ms, refused_at, refused_n = array("f"), array("q"), array("i")
    state = {"accepted": 0, "next_reading": 0, "last_us": 0}
    if start_at is None:
        start_at = time.monotonic()
    result.started_unix_ms = (time.time() - (time.monotonic() - start_at)) * 1000
    cpu_started = time.process_time()

    async def one(request: int, due: float) -> None:
        n = spec.readings_in(request)
        reading = state["next_reading"]
        state["next_reading"] += n
        try:
            connection = await pool.acquire()
        except (OSError, TimeoutError) as exc:
            result.sent += n
            refuse(type(exc).__name__, n, time.time_ns() // 1000)
            return
        try:
            now_us = max(time.time_ns() // 1000, state["last_us"] + 1)
            state["last_us"] = now_us + n - 1
            data = encoder.request(reading, n, now_us)
            started = time.perf_counter()
            lag_ms.append((time.monotonic() - due) * 1000)
            result.sent += n
            try:
                status = str(await connection.send(data, spec.timeout_s))
            except (OSError, TimeoutError, HttpProtocolError) as exc:
                status = type(exc).__name__
        finally:
            pool.release(connection)
        if status == "202":
            first_reading.append(reading)
            unix_us.append(now_us)
            count.append(n)
            latency_ms.append((time.perf_counter() - started) * 1000)
            state["accepted"] += n
        else:
            refuse(status, n, now_us)

    def refuse(status: str, n: int, at_us: int) -> None:
        result.refused[status] = result.refused.get(status, 0) + n
        refused_at.append(at_us)
        refused_n.append(n)

    async def report_progress() -> None:
        while progress is not None:
            progress(result.sent, state["accepted"])
            await asyncio.sleep(PROGRESS_EVERY_S)

    tasks: set[asyncio.Task[None]] = set()
    reporter = asyncio.create_task(report_progress())
    try:
        for i, request in enumerate(spec.requests()):
            due = start_at + spec.due_s(request)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 32 == 0:
                await asyncio.sleep(0)  # behind schedule: still let answers in now and then
            task = asyncio.create_task(one(request, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        reporter.cancel()
        pool.close()
    result.window_s = time.monotonic() - start_at
    result.cpu_s = time.process_time() - cpu_started
    if progress is not None:
        progress(result.sent, state["accepted"])
    result.first_reading = np.frombuffer(first_reading, np.int64).copy()
    result.unix_us = np.frombuffer(unix_us, np.int64).copy()
    result.count = np.frombuffer(count, np.int32).copy()
    result.latency_ms = np.frombuffer(latency_ms, np.float32).copy()
    result.lag_ms = np.frombuffer(lag_ms, np.float32).copy()
    result.refused_unix_us = np.frombuffer(refused_at, np.int64).copy()
    result.refused_count = np.frombuffer(refused_n, np.int32).copy()
    return result


def expand(result: SenderResult) -> tuple[np.ndarray, np.ndarray]:
    """Per accepted reading of one sender: its sender-local number and timestamp (unix µs)."""
    total = int(result.count.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.cumsum(result.count, dtype=np.int64) - result.count
    offset = np.arange(total, dtype=np.int64) - np.repeat(starts, result.count)
    readings = np.repeat(result.first_reading, result.count) + offset
    return readings, np.repeat(result.unix_us, result.count) + offset


def merge_results(results: Sequence[SenderResult], keep_payloads: bool = False) -> LoadRun:
    """One LoadRun from every sender's arrays: natural keys, reading times, latencies, counts."""
    run = LoadRun(payloads={} if keep_payloads else None, senders=len(results))
    formatter = TimestampFormatter()
    ingest: list[np.ndarray] = []
    request_ms: list[np.ndarray] = []
    request_latency: list[np.ndarray] = []
    lags: list[np.ndarray] = []
    refused_ms: list[np.ndarray] = []
    refused_count: list[np.ndarray] = []
    for result in results:
        run.sent += result.sent
        for status, n in result.refused.items():
            run.refused[status] = run.refused.get(status, 0) + n
        run.sender_cpu_s += result.cpu_s
        readings, unix_us = expand(result)
        vehicles = result.spec.vehicle_ids()
        names = [vehicle_name(v) for v in vehicles]
        vehicle_index = (readings % len(vehicles)).tolist()
        taken_ms = (unix_us / 1000.0).tolist()
        pool = payload_pool(result.spec.seed, result.spec.sender) if keep_payloads else []
        for i, (vehicle, us, ms) in enumerate(zip(vehicle_index, unix_us.tolist(), taken_ms, strict=True)):
            key = NaturalKey(names[vehicle], CAN_ID, formatter(us))
            run.accepted[key] = ms
            if run.payloads is not None:
                run.payloads[key] = pool[int(readings[i]) % PAYLOAD_POOL]
        ingest.append(np.repeat(result.latency_ms.astype(np.float64), result.count))
        request_ms.append(result.unix_us / 1000.0)
        request_latency.append(result.latency_ms.astype(np.float64))
        lags.append(result.lag_ms.astype(np.float64))
        refused_ms.append(result.refused_unix_us / 1000.0)
        refused_count.append(result.refused_count.astype(np.int64))
    if results:
        run.started_unix_ms = min(r.started_unix_ms for r in results)
        run.window_s = max(r.window_s for r in results)
        run.ingest_ms = np.concatenate(ingest)
        run.request_unix_ms = np.concatenate(request_ms)
        run.request_latency_ms = np.concatenate(request_latency)
        run.lag_ms = np.concatenate(lags)
        run.refused_unix_ms = np.concatenate(refused_ms)
        run.refused_count = np.concatenate(refused_count)
    return run


def default_senders(rate: float, batch_size: int, cpus: int | None = None) -> int:
    """Sender processes for a rate: one per 5,000 requests/s, at most one per core and at most 4."""
    requests_per_s = rate / batch_size
    cpus = cpus or multiprocessing.cpu_count()
    return max(1, min(4, cpus, math.ceil(requests_per_s / 5000)))


def sender_process(spec: ShareSpec, conn: multiprocessing.connection.Connection, counters: Any) -> None:
    """A sender process: report ready, wait for the start time, send, return the result."""
    import uvloop

    slot = 2 * spec.sender

    def report(sent: int, accepted: int) -> None:
        counters[slot] = sent
        counters[slot + 1] = accepted

    try:
        conn.send("ready")
        start_at = conn.recv()
        result = uvloop.run(send_share(spec, start_at, report))
        conn.send(result)
    except BaseException as exc:
        conn.send(RuntimeError(f"sender {spec.sender} failed: {exc!r}"))
        raise
    finally:
        conn.close()


def run_senders(
    spec: ShareSpec,
    senders: int,
    say: Callable[[str], None],
    keep_payloads: bool = False,
    on_start: Callable[[], None] | None = None,
) -> LoadRun:
    """Send the whole run from ``senders`` spawned processes; their results merged.

    ``on_start`` is called once every sender is ready, just before the schedule starts.
    """
    shares = split(spec, senders)
    context = multiprocessing.get_context("spawn")
    counters = context.Array("q", 2 * len(shares), lock=False)
    processes = []
    pipes = []
    try:
        for share in shares:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=sender_process,
                args=(share, child_end, counters),
                name=f"load-sender-{share.sender}",
                daemon=True,  # never outlive the load test
            )
            process.start()
            child_end.close()
            processes.append(process)
            pipes.append(parent_end)
        for pipe, process in zip(pipes, processes, strict=True):
            if not pipe.poll(READY_TIMEOUT_S):
                raise RuntimeError(f"{process.name} did not start in {READY_TIMEOUT_S:.0f} s")
            try:
                _expect(pipe.recv(), str, process.name)
            except EOFError:
                raise RuntimeError(f"{process.name} exited while starting") from None
        if on_start is not None:
            on_start()
        start_at = time.monotonic() + START_DELAY_S
        for pipe in pipes:
            pipe.send(start_at)
        results: dict[int, SenderResult] = {}
        waiting = dict(zip(pipes, shares, strict=True))
        next_progress = start_at + 1.0
        while waiting:
            timeout = max(0.0, next_progress - time.monotonic())
            for ready in multiprocessing.connection.wait(list(waiting), timeout):
                assert isinstance(ready, multiprocessing.connection.Connection)
                share = waiting.pop(ready)
                try:
                    message = ready.recv()
                except EOFError:
                    raise RuntimeError(f"sender {share.sender} exited without a result") from None
                results[share.sender] = _expect(message, SenderResult, f"sender {share.sender}")
            if waiting and time.monotonic() >= next_progress:
                sent, accepted = sum(counters[0::2]), sum(counters[1::2])
                say(f"sending: {sent}/{spec.messages} sent, {accepted} accepted")
                next_progress += 1.0
        for process in processes:
            process.join(timeout=10)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        for pipe in pipes:
            pipe.close()
    run = merge_results([results[s.sender] for s in shares], keep_payloads)
    run.spawned = True
    return run


def _expect(message: object, kind: type[T], who: str) -> T:
    if isinstance(message, BaseException):
        raise RuntimeError(f"{who}: {message}") from message
    if not isinstance(message, kind):
        raise RuntimeError(f"{who} sent {type(message).__name__}, expected {kind.__name__}")
    return message
