"""The fleet simulator's command line: live against the receiver, or offline to a JSONL file.

``python -m src.generator.simulator --vehicles 10 --duration 60 [--rate-ms 200] [--seed N]
[--url URL] [--output FILE.jsonl] [--start ISO8601] [--capacity {60,94,120,mixed}] [--accepted-log PATH]
[--report-json PATH] [--aging] [--faults N [--faults-at-start K] [--fault-kinds KIND,...]] [--truth-json FILE]``

Live mode ticks on an absolute schedule (tick k at, and stamped, start + k * period: a slow
tick never shifts the later ones), posts every vehicle's reading of a tick concurrently,
and logs the natural key of every accepted reading (``--accepted-log``). Offline mode runs
the same model in simulated time from ``--start`` as fast as it can; its output is
byte-identical per seed, every timestamp in one fixed form (six fractional digits and ``Z``).

``--aging`` and ``--faults`` (off by default: without them the fleet is the one it always
was) age the packs and give vehicles faults (:mod:`src.generator.health`); ``--truth-json``
writes what was drawn (:mod:`src.generator.truth`), before the first reading, in both modes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import multiprocessing
import signal
import sys
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import orjson

from src.common.logs import configure_logging
from src.common.schema import parse_timestamp
from src.common.settings import GeneratorSettings
from src.generator.battery_model import CAPACITY_VARIANTS_AH, BatteryFleet, FaultExpression, Fleet, PackSnapshot
from src.generator.health import FaultKind, HealthOptions, HealthPlan, draw_health
from src.generator.readings import CAN_ID, jsonl_block, readings, to_json, vehicle_ids
from src.generator.sender import Outcome, RetryPolicy, Sender
from src.generator.truth import truth_document, with_expressions, write_truth

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything one run needs, parsed and checked."""

    vehicles: int
    duration_s: float
    rate_ms: int = 200
    seed: int = 0
    url: str | None = None
    output: Path | None = None
    start: datetime | None = None
    capacity_ah: float | None = 94.0  # None: a fleet mixing the three variants
    accepted_log: Path | None = None
    report_json: Path | None = None
    health: HealthOptions = field(default_factory=HealthOptions)  # --aging, --faults: off by default
    truth_json: Path | None = None
    connection_limit: int = 100
    progress_interval_s: float = 5.0
    drain_timeout_s: float = 40.0  # longer than the sender's retry deadline

    @property
    def period_s(self) -> float:
        return self.rate_ms / 1000.0

    @property
    def ticks(self) -> int:
        """How many ticks fit in the duration (a small epsilon absorbs float noise such as 0.6 * 1000)."""
        return math.floor(self.duration_s * 1000.0 / self.rate_ms + 1e-9)

    def health_plan(self) -> HealthPlan | None:
        """The ageing and faults this run's options ask for, drawn from the seed's own health streams."""
        if not self.health.active:
            return None
        return draw_health(self.vehicles, self.seed, self.health, self.ticks * self.period_s, self.period_s)

    def fleet_factory(self) -> Callable[[], Fleet]:
        """Builds this run's fleet (picklable, for the worker process): the same fleet every call."""
        return partial(Fleet, self.vehicles, self.seed, self.capacity_ah, health=self.health_plan())


@dataclass
class RunReport:
    """Final counts of a run, as printed and written by ``--report-json``."""

    mode: str
    ticks: int
    sent: int
    accepted: int
    rejected: int
    gave_up: int
    retries: int
    elapsed_s: float

    @property
    def rate_per_s(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "ticks": self.ticks,
            "sent": self.sent,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "gave_up": self.gave_up,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate_per_s, 1),
        }

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.rejected == 0 and self.gave_up == 0 else EXIT_FAILED


def parse_start(text: str) -> datetime:
    """ISO 8601 with a zone (``Z`` or an offset); a naive time would be ambiguous."""
    try:
        return parse_timestamp(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--start needs ISO 8601 with a zone (e.g. 'Z' or '+02:00'): {exc}") from None


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def parse_capacity(text: str) -> float | None:
    """One of the pack's capacity variants (Ah), or ``mixed`` for a fleet of all three."""
    if text == "mixed":
        return None
    variants = {f"{v:g}": v for v in CAPACITY_VARIANTS_AH}
    if text not in variants:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(variants)} or mixed")
    return variants[text]


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"cannot be negative: {text}")
    return value


def parse_fault_kinds(text: str) -> tuple[FaultKind, ...]:
    """A comma-separated list of fault kinds (``weak_cell,sensor_bias``), cycled through in that order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = [kind.value for kind in FaultKind]
    unknown = [name for name in names if name not in valid]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(valid)}")
    return tuple(FaultKind(name) for name in names)


def parse_args(argv: Sequence[str] | None = None) -> SimulatorOptions:
    parser = argparse.ArgumentParser(prog="python -m src.generator.simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=_positive_int, required=True, help="fleet size")
    parser.add_argument("--duration", type=_positive_float, required=True, help="seconds to simulate")
    parser.add_argument("--rate-ms", type=_positive_int, default=200, help="period of one reading per vehicle")
    parser.add_argument("--seed", type=int, default=0, help="model seed (same seed, same fleet)")
    parser.add_argument("--url", help="receiver base URL (default: RECEIVER_URL setting)")
    parser.add_argument("--output", type=Path, help="offline: write JSONL here instead of posting")
    parser.add_argument("--start", type=parse_start, help="offline: first timestamp, ISO 8601 with zone (default now)")
    parser.add_argument("--capacity", type=parse_capacity, default=94.0, help="cell Ah: 60, 94, 120 or mixed")
    parser.add_argument("--accepted-log", type=Path, help="live: JSONL of the natural key of every accepted reading")
    parser.add_argument("--report-json", type=Path, help="write the final counts here as JSON")
    parser.add_argument("--aging", action="store_true", help="draw each pack's capacity fade and resistance growth")
    parser.add_argument("--faults", type=_count, default=0, help="give N distinct vehicles one fault each")
    parser.add_argument(
        "--faults-at-start", type=_count, default=0, help="the first K of the faults start with the run (demos)"
    )
    parser.add_argument(
        "--fault-kinds", type=parse_fault_kinds, help="cycle through these kinds instead of a drawn order (demos)"
    )
    parser.add_argument("--truth-json", type=Path, help="write each pack's capacity, resistance and faults here")
    ns = parser.parse_args(argv)
    if ns.faults > ns.vehicles:
        parser.error(f"--faults {ns.faults} needs as many vehicles; --vehicles is {ns.vehicles}")
    if ns.faults_at_start > ns.faults:
        parser.error(f"--faults-at-start {ns.faults_at_start} is more than --faults {ns.faults}")
    health = HealthOptions(
        aging=ns.aging, faults=ns.faults, faults_at_start=ns.faults_at_start, fault_kinds=ns.fault_kinds
    )
    return SimulatorOptions(
        vehicles=ns.vehicles,
        duration_s=ns.duration,
        rate_ms=ns.rate_ms,
        seed=ns.seed,
        url=ns.url,
        output=ns.output,
        start=ns.start,
        capacity_ah=ns.capacity,
        accepted_log=ns.accepted_log,
        report_json=ns.report_json,
        health=health,
        truth_json=ns.truth_json,
    )


# --- offline -----------------------------------------------------------------------------


PARALLEL_MIN_VEHICLES = 100
"""From this fleet size on, offline mode steps the fleet in a worker process (see :func:`stepped_in_worker`)."""


def stepped_inline(fleet: BatteryFleet, ticks: int, period_s: float) -> Generator[PackSnapshot, None, None]:
    """The fleet's snapshots for ``ticks`` steps, computed here as they are consumed."""
    for _ in range(ticks):
        yield fleet.step(period_s)


def _step_and_send(make_fleet: Callable[[], BatteryFleet], ticks: int, period_s: float, pipe: Connection) -> None:
    """The worker process's whole job: build the fleet, step it, send every snapshot."""
    fleet = make_fleet()
    with pipe:
        for _ in range(ticks):
            pipe.send(fleet.step(period_s))
        pipe.send(fleet.fault_expressions() if isinstance(fleet, Fleet) else {})  # for the truth's last word


WORKER_STOP_TIMEOUT_S = 5.0
"""How long an abandoned fleet worker gets to end on SIGTERM before it is killed."""


def stepped_in_worker(
    make_fleet: Callable[[], BatteryFleet],
    ticks: int,
    period_s: float,
    expressions: dict[int, FaultExpression] | None = None,
) -> Generator[PackSnapshot, None, None]:
    """The fleet's snapshots for ``ticks`` steps, computed by a worker process while the caller writes.

    The fleet is built in the worker from the picklable ``make_fleet``, so the output is the
    same as :func:`stepped_inline`'s; the pipe keeps the worker at most a tick or two ahead.
    Once every snapshot has been consumed, ``expressions`` receives the worker fleet's
    :meth:`Fleet.fault_expressions`. Why: docs/battery-model.md, "Speed".
    """
    context = multiprocessing.get_context("spawn")  # no fork: safe whatever the parent holds
    receiving, sending = context.Pipe(duplex=False)
    worker = context.Process(
        target=_step_and_send, args=(make_fleet, ticks, period_s, sending), name="fleet", daemon=True
    )
    worker.start()
    sending.close()  # only the worker writes; its exit then ends the pipe
    try:
        for _ in range(ticks):
            try:
                yield receiving.recv()
            except EOFError:
                worker.join()
                raise RuntimeError(f"the fleet worker process ended early (exit code {worker.exitcode})") from None
        if expressions is not None:
            expressions.update(receiving.recv())
    finally:
        receiving.close()
        if worker.is_alive():
            worker.terminate()
            worker.join(WORKER_STOP_TIMEOUT_S)
            if worker.is_alive():  # SIGTERM can be held up (a handler of its own, a lock): no hang
                worker.kill()
        worker.join()


def write_offline(
    options: SimulatorOptions, out: IO[bytes], fleet: BatteryFleet | None = None, progress_s: float | None = None
) -> int:
    """Write every tick's readings to ``out`` in simulated time; returns the number of readings.

    Timestamps are computed as start + k * period (never accumulated), so they do not drift.
    With ``progress_s``, a progress line goes to stderr that often. With ``options.truth_json``,
    the truth is written first: of ``fleet`` when given (a :class:`Fleet`, not yet stepped),
    else of the fleet the options describe (built here too when a worker steps it); and again at
    the end, with the ``cooling`` faults' expressions, when the plan has any (:mod:`src.generator.truth`).
    """
    truth_of: BatteryFleet | None = fleet
    expressions: dict[int, FaultExpression] = {}  # filled by the worker, when one steps the fleet
    in_worker = fleet is None and options.vehicles >= PARALLEL_MIN_VEHICLES
    if fleet is not None:
        snapshots = stepped_inline(fleet, options.ticks, options.period_s)
    elif in_worker:
        make_fleet = options.fleet_factory()
        snapshots = stepped_in_worker(make_fleet, options.ticks, options.period_s, expressions)
        truth_of = make_fleet() if options.truth_json is not None else None  # the same seed: the same fleet
    else:
        truth_of = options.fleet_factory()()
        snapshots = stepped_inline(truth_of, options.ticks, options.period_s)
    ids = vehicle_ids(fleet.n_vehicles if fleet is not None else options.vehicles)
    start = options.start or _now_ms()
    period = timedelta(milliseconds=options.rate_ms)
    document = None
    if options.truth_json is not None:
        document = _write_truth(options.truth_json, truth_of, ids, start, period)
    began = time.monotonic()
    next_report = began + (progress_s or 0.0)
    count = 0
    # closing(): if a write fails, stop the worker now rather than when the traceback is freed.
    with contextlib.closing(snapshots):
        for k, snapshot in enumerate(snapshots):
            out.write(jsonl_block(snapshot, start + k * period, ids))
            count += len(ids)
            if progress_s is not None and (now := time.monotonic()) >= next_report:
                next_report = now + progress_s
                print(
                    f"[{now - began:6.1f} s] {count} readings, {(k + 1) / options.ticks:.0%} of the simulated time",
                    file=sys.stderr,
                    flush=True,
                )
    if document is not None and options.truth_json is not None and isinstance(truth_of, Fleet):
        stepped = expressions if in_worker else truth_of.fault_expressions()
        _write_final_truth(options.truth_json, document, truth_of, stepped, ids, start, period)
    return count


def _write_truth(
    path: Path, fleet: BatteryFleet | None, ids: Sequence[str], start: datetime, period: timedelta
) -> dict[str, Any]:
    """Write the truth of ``fleet`` before its first step; returns the document."""
    if not isinstance(fleet, Fleet):
        raise TypeError("--truth-json needs the battery model's Fleet, which knows its packs' truth")
    document = truth_document(fleet, ids, start, period)
    write_truth(path, document)
    return document


def _write_final_truth(
    path: Path,
    document: dict[str, Any],
    fleet: Fleet,
    expressions: dict[int, FaultExpression],
    ids: Sequence[str],
    start: datetime,
    period: timedelta,
) -> None:
    """At the run's end, rewrite the truth with its ``cooling`` faults' expressions (only when it has one)."""
    faults = fleet.health.faults
    if any(fault.kind == FaultKind.COOLING for fault in faults):
        write_truth(path, with_expressions(document, faults, expressions, ids, start, period))


def run_offline(options: SimulatorOptions) -> RunReport:
    assert options.output is not None
    began = time.perf_counter()
    options.output.parent.mkdir(parents=True, exist_ok=True)
    with options.output.open("wb", buffering=1 << 20) as out:
        count = write_offline(options, out, progress_s=options.progress_interval_s)
    elapsed = time.perf_counter() - began
    print(f"wrote {count} readings to {options.output} in {elapsed:.2f} s ({count / max(elapsed, 1e-9):.0f}/s)")
    return RunReport("offline", options.ticks, count, count, 0, 0, 0, elapsed)


# --- live --------------------------------------------------------------------------------


class LiveRun:
    """One live run: the tick schedule, the concurrent sends, progress and the accepted log."""

    def __init__(self, options: SimulatorOptions, sender: Sender, accepted_log: IO[bytes] | None) -> None:
        self.options = options
        self.sender = sender
        self.accepted_log = accepted_log
        self.fleet = options.fleet_factory()()
        self.ids = vehicle_ids(options.vehicles)
        self.stopping = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.ticks_done = 0
        self.began = 0.0

    def request_stop(self) -> None:
        """Stop starting ticks (SIGINT/SIGTERM); sends already under way still finish."""
        if not self.stopping.is_set():
            print("stopping: no new ticks, finishing in-flight sends", file=sys.stderr)
            self.stopping.set()

    async def run(self) -> RunReport:
        loop = asyncio.get_running_loop()
        self.began = loop.time()
        wall_start = _now_ms()
        period = timedelta(milliseconds=self.options.rate_ms)
        document = None
        if self.options.truth_json is not None:  # before the first tick, so the truth is there while it runs
            document = _write_truth(self.options.truth_json, self.fleet, self.ids, wall_start, period)
        progress = asyncio.create_task(self._progress())
        try:
            for k in range(self.options.ticks):
                delay = self.began + k * self.options.period_s - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stopping.wait(), delay)
                if self.stopping.is_set():
                    break
                self._tick(wall_start + timedelta(milliseconds=k * self.options.rate_ms))
                await asyncio.sleep(0)  # let this tick's sends start before the next wait
            await self._drain()
        finally:
            progress.cancel()
        if document is not None and self.options.truth_json is not None:
            expressions = self.fleet.fault_expressions()
            _write_final_truth(self.options.truth_json, document, self.fleet, expressions, self.ids, wall_start, period)
        elapsed = loop.time() - self.began
        s = self.sender.stats
        return RunReport("live", self.ticks_done, s.sent, s.accepted, s.rejected, s.gave_up, s.retries, elapsed)

    def _tick(self, at: datetime) -> None:
        """Step the model by one period and post every vehicle's reading concurrently."""
        for reading in readings(self.fleet.step(self.options.period_s), at, self.ids):
            task = asyncio.create_task(self._send(reading))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        self.ticks_done += 1

    async def _send(self, reading: dict[str, Any]) -> None:
        if await self.sender.send(to_json(reading)) is Outcome.ACCEPTED and self.accepted_log is not None:
            key = {"vehicle_id": reading["vehicle_id"], "can_id": CAN_ID, "timestamp": reading["timestamp"]}
            self.accepted_log.write(orjson.dumps(key, option=orjson.OPT_APPEND_NEWLINE))

    async def _drain(self) -> None:
        """Wait (bounded) for in-flight sends; whatever is still pending then counts as given up."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=self.options.drain_timeout_s)
        if pending:
            log.warning("%d sends pending after %.0f s: giving up", len(pending), self.options.drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self.sender.stats.gave_up += len(pending)
            self.sender.stats.in_flight = 0

    async def _progress(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.options.progress_interval_s)
            s = self.sender.stats
            print(
                f"[{loop.time() - self.began:6.1f} s] sent={s.sent} accepted={s.accepted} in_flight={s.in_flight} "
                f"failed={s.rejected + s.gave_up} retries={s.retries}",
                file=sys.stderr,
                flush=True,
            )


async def run_live(options: SimulatorOptions, url: str, api_key: str, policy: RetryPolicy | None = None) -> RunReport:
    """Run live against ``url``; SIGINT/SIGTERM end the run gracefully."""
    loop = asyncio.get_running_loop()
    with contextlib.ExitStack() as stack:
        accepted_log = None
        if options.accepted_log is not None:
            options.accepted_log.parent.mkdir(parents=True, exist_ok=True)
            accepted_log = stack.enter_context(options.accepted_log.open("wb"))  # this run's readings only
        sender = Sender(url, api_key, connection_limit=options.connection_limit, policy=policy or RetryPolicy())
        async with sender:
            live = LiveRun(options, sender, accepted_log)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, live.request_stop)
                stack.callback(loop.remove_signal_handler, sig)
            return await live.run()


# --- entry point -------------------------------------------------------------------------


def _now_ms() -> datetime:
    """Now in UTC, to the millisecond, as a CAN gateway would stamp it."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def print_summary(report: RunReport) -> None:
    print(
        f"sent={report.sent} accepted={report.accepted} rejected={report.rejected} gave_up={report.gave_up} "
        f"retries={report.retries} ticks={report.ticks} elapsed={report.elapsed_s:.1f}s "
        f"rate={report.rate_per_s:.1f}/s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    settings = GeneratorSettings()
    configure_logging(settings.log_level, settings.log_format)
    if options.output is not None:
        report = run_offline(options)
    else:
        api_key = settings.first_api_key
        if api_key is None:
            print("error: live mode needs an API key: set API_KEY (environment or .env)", file=sys.stderr)
            return EXIT_USAGE
        url = options.url or settings.receiver_url
        report = asyncio.run(run_live(options, url, api_key))
        print_summary(report)
    if options.report_json is not None:
        options.report_json.parent.mkdir(parents=True, exist_ok=True)
        options.report_json.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
