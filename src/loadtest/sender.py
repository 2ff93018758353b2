"""The load test's sending side: readings on one fixed schedule, from one process or several.

Request ``j`` carries readings ``j*B .. j*B+B-1`` and is due ``j*B/rate`` s after a common
start; of ``N`` senders, sender ``s`` sends the requests ``j ≡ s (mod N)`` for the vehicles
``v ≡ s (mod N)``. A request's readings are stamped with consecutive microseconds when it
is written, never overlapping another request's, so natural keys are unique. Senders keep
per-request arrays (``SenderResult``); ``merge_results`` rebuilds the readings from them.
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
"""Requests in flight at once, over all senders; beyond it a sender waits (seen in ``lag_ms``, not e2e)."""
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


class Sender:
    """One sender's share of the schedule, sent from the running event loop.

    ``run`` starts the clock, writes each scheduled request when it is due (one task per
    request, ``_send``), waits for every answer and freezes what it saw into a
    ``SenderResult``. Requests are scheduled, not paced by answers.
    """

    def __init__(self, spec: ShareSpec, progress: Progress | None = None) -> None:
        self.spec = spec
        self.progress = progress
        self.encoder = ReadingEncoder(spec)
        self.pool = ConnectionPool(Target.from_url(spec.url), spec.max_in_flight)
        self.result = SenderResult(spec)
        self.accepted = 0  # readings answered 202 so far
        self._next_reading = 0
        self._last_us = 0  # the last microsecond stamped on a reading; the next request starts after it
        self._tasks: set[asyncio.Task[None]] = set()
        # Per accepted request:
        self._first_reading, self._unix_us = array("q"), array("q")
        self._count, self._latency_ms = array("i"), array("f")
        # Per request written, and per request not accepted:
        self._lag_ms = array("f")
        self._refused_at, self._refused_n = array("q"), array("i")

    async def run(self, start_at: float | None = None) -> SenderResult:
        """Send the share; ``start_at``: request 0 due, on ``time.monotonic`` (machine-wide); default now."""
        if start_at is None:
            start_at = time.monotonic()
        self.result.started_unix_ms = (time.time() - (time.monotonic() - start_at)) * 1000
        cpu_started = time.process_time()
        reporter = asyncio.create_task(self._report_progress())
        try:
            await self._send_on_schedule(start_at)
            await self._wait_for_answers()
        finally:
            reporter.cancel()
            self.pool.close()
        self.result.window_s = time.monotonic() - start_at
        self.result.cpu_s = time.process_time() - cpu_started
        if self.progress is not None:
            self.progress(self.result.sent, self.accepted)
        return self._freeze()

    async def _send_on_schedule(self, start_at: float) -> None:
        """Start one ``_send`` task per request of the share, each when it is due."""
        for i, request in enumerate(self.spec.requests()):
            due = start_at + self.spec.due_s(request)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif i % 32 == 0:
                await asyncio.sleep(0)  # behind schedule: still let answers in now and then
            task = asyncio.create_task(self._send(request, due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _wait_for_answers(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _send(self, request: int, due: float) -> None:
        """Write one request on a pooled connection and record its answer; never raises for I/O."""
        n = self.spec.readings_in(request)
        reading = self._next_reading
        self._next_reading += n
        try:
            connection = await self.pool.acquire()
        except (OSError, TimeoutError) as exc:
            self.result.sent += n
            self._refuse(type(exc).__name__, n, time.time_ns() // 1000)
            return
        try:
            now_us = self._stamp(n)
            data = self.encoder.request(reading, n, now_us)
            started = time.perf_counter()
            self._lag_ms.append((time.monotonic() - due) * 1000)
            self.result.sent += n
            try:
                status = str(await connection.send(data, self.spec.timeout_s))
            except (OSError, TimeoutError, HttpProtocolError) as exc:
                status = type(exc).__name__
        finally:
            self.pool.release(connection)
        if status == "202":
            self._accept(reading, n, now_us, started)
        else:
            self._refuse(status, n, now_us)

    def _stamp(self, n: int) -> int:
        """The first of ``n`` consecutive microseconds from now, after every one stamped before."""
        now_us = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = now_us + n - 1
        return now_us

    def _accept(self, reading: int, n: int, unix_us: int, started: float) -> None:
        self._first_reading.append(reading)
        self._unix_us.append(unix_us)
        self._count.append(n)
        self._latency_ms.append((time.perf_counter() - started) * 1000)
        self.accepted += n

    def _refuse(self, status: str, n: int, at_us: int) -> None:
        self.result.refused[status] = self.result.refused.get(status, 0) + n
        self._refused_at.append(at_us)
        self._refused_n.append(n)

    async def _report_progress(self) -> None:
        while self.progress is not None:
            self.progress(self.result.sent, self.accepted)
            await asyncio.sleep(PROGRESS_EVERY_S)

    def _freeze(self) -> SenderResult:
        """The result, its arrays copied out of the growable buffers."""
        result = self.result
        result.first_reading = np.frombuffer(self._first_reading, np.int64).copy()
        result.unix_us = np.frombuffer(self._unix_us, np.int64).copy()
        result.count = np.frombuffer(self._count, np.int32).copy()
        result.latency_ms = np.frombuffer(self._latency_ms, np.float32).copy()
        result.lag_ms = np.frombuffer(self._lag_ms, np.float32).copy()
        result.refused_unix_us = np.frombuffer(self._refused_at, np.int64).copy()
        result.refused_count = np.frombuffer(self._refused_n, np.int32).copy()
        return result


async def send_share(spec: ShareSpec, start_at: float | None = None, progress: Progress | None = None) -> SenderResult:
    """Send one share on the global schedule (see ``Sender.run``)."""
    return await Sender(spec, progress).run(start_at)


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
