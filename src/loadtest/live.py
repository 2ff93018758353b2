"""`make dashboard`: the embedded stack with a simulated fleet streaming until Ctrl-C, plus the dashboard.

Starts moto's server (port 4566), the queues, the receiver (8000), a consumer and the
dashboard (8050, the contract's uvicorn command), all on 127.0.0.1 and each in a process
group of its own, so a terminal's Ctrl-C reaches only this program, which stops them in
order. The simulator then streams the fleet live (aged packs, the first ``--faults``
vehicles faulty from the start), while the hours before are filled in offline
(:mod:`src.loadtest.history`) so the fleet and vehicle pages have history at once. A few
minutes past every hour the hourly job runs for the hour just ended and the daily job for
its day so far, as cron would. Data goes to DATA_DIR (``data``), logs to DATA_DIR/logs;
S3_BUCKET, when set, turns the S3 tier on.

Ctrl-C (SIGINT) or SIGTERM: the simulator stops first (its sends in flight finish), the
queue is drained into batch files, then the dashboard, the consumer, the receiver and moto
stop; no process is left behind. Exit status 0 after Ctrl-C, 143 after SIGTERM, 1 if a
process ended on its own (its log is named). Why it works so: docs/dashboard.md, "make dashboard".
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from src.common.aws import sync_client
from src.common.layout import hour_label, hour_start
from src.common.settings import GeneratorSettings
from src.embedded.processes import port_is_free
from src.embedded.stack import EmbeddedStack, StackConfig, exit_on_sigterm
from src.loadtest.demo import Fault, read_faults
from src.loadtest.history import (
    HISTORY_RATE_MS,
    FleetOptions,
    history_window,
    newest_raw_hour,
    run_jobs,
    simulate_history,
    unaggregated_hours,
)

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType

LIVE_DURATION_S = 365 * 86400
"""The live simulator's ``--duration``: a year, i.e. until stopped."""
POLL_S = 0.5
"""How often the supervisor looks at its processes and the clock."""
SIMULATOR_STOP_S = 30.0
"""How long the simulator may take to finish its sends in flight after SIGINT."""
DRAIN_TIMEOUT_S = 60.0
"""How long the consumer may take to empty the queue once the simulator stopped."""
HOUR = timedelta(hours=1)


def say(message: str) -> None:
    print(f"[dashboard] {message}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vehicles", type=int, default=10, help="fleet size (default 10)")
    parser.add_argument("--moto-port", type=int, default=4566)
    parser.add_argument("--receiver-port", type=int, default=8000)
    parser.add_argument("--dashboard-port", type=int, default=8050)
    parser.add_argument("--data-dir", type=Path, help="default: DATA_DIR")
    parser.add_argument(
        "--history-hours", type=int, default=3, help="full hours before the current one to simulate offline (0: none)"
    )
    parser.add_argument(
        "--history-rate-ms", type=int, default=HISTORY_RATE_MS, help="the history's period per vehicle (default 1000)"
    )
    parser.add_argument("--faults", type=int, default=2, help="vehicles with a fault from the start (default 2)")
    parser.add_argument(
        "--fault-kinds", default="sensor_bias,weak_cell", help="their kinds, in order (the simulator's --fault-kinds)"
    )
    parser.add_argument("--seed", type=int, default=0, help="the fleet's seed (history and live stream alike)")
    parser.add_argument(
        "--job-delay", type=float, default=120.0, help="seconds past the hour at which the hour's jobs run"
    )
    args = parser.parse_args(argv)
    if args.vehicles <= 0 or args.history_rate_ms <= 0:
        parser.error("--vehicles and --history-rate-ms must be positive")
    if args.history_hours < 0 or args.faults < 0 or args.job_delay < 0:
        parser.error("--history-hours, --faults and --job-delay must not be negative")
    args.faults = min(args.faults, args.vehicles)
    return args


@dataclass
class HourlyJobs:
    """When the hourly and daily jobs are due: for each hour once it ended and ``delay_s`` passed (cron's
    ``5 * * * *`` with the delay as its minute). Hours up to ``done_through`` need no job from here."""

    done_through: datetime
    delay_s: float

    def due(self, now: datetime) -> list[datetime]:
        """The ended hours whose jobs are due at ``now`` and have not run, oldest first; marks them run."""
        hours = []
        while (hour := self.done_through + HOUR) + HOUR + timedelta(seconds=self.delay_s) <= now:
            hours.append(hour)
            self.done_through = hour
        return hours


def drain(stack: EmbeddedStack, timeout_s: float = DRAIN_TIMEOUT_S) -> int:
    """Wait until the queue holds no message, waiting or in flight (the consumer wrote and deleted them all);
    the messages left after ``timeout_s``. Says how many are left every few seconds."""
    assert stack.queues is not None
    client = sync_client("sqs", stack.settings())
    names: list[QueueAttributeNameType] = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    deadline = time.monotonic() + timeout_s
    next_word = time.monotonic() + 3.0
    while True:
        attributes = client.get_queue_attributes(QueueUrl=stack.queues.url, AttributeNames=names)["Attributes"]
        left = sum(int(attributes.get(name) or 0) for name in names)
        if left == 0 or time.monotonic() > deadline:
            return left
        if time.monotonic() >= next_word:
            say(f"draining the queue: {left} message(s) left")
            next_word = time.monotonic() + 3.0
        time.sleep(0.2)


@contextlib.contextmanager
def streaming(stack: EmbeddedStack, args: argparse.Namespace, truth: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The live simulator (in a process group of its own, logging to DATA_DIR/logs/simulator.log) while
    inside; on the way out it is stopped first (SIGINT: no new ticks, sends in flight finish) and the
    queue drained, with further Ctrl-C and SIGTERM ignored so the stop completes in order."""
    command = [sys.executable, "-m", "src.generator.simulator", "--vehicles", str(args.vehicles)]
    command += ["--duration", str(LIVE_DURATION_S), "--url", stack.receiver_url, "--seed", str(args.seed)]
    command += ["--aging", "--truth-json", str(truth), "--report-json", str(truth.with_name("simulator-report.json"))]
    if args.faults:
        command += ["--faults", str(args.faults), "--faults-at-start", str(args.faults)]
        command += ["--fault-kinds", args.fault_kinds] if args.fault_kinds else []
    log_path = stack.config.log_dir / "simulator.log"
    with log_path.open("ab") as log:
        simulator = subprocess.Popen(
            command, env=stack.env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, process_group=0
        )
    try:
        yield simulator
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping: the simulator first, then the queue is drained, then the services")
        if simulator.poll() is None:
            simulator.send_signal(signal.SIGINT)
            try:
                simulator.wait(timeout=SIMULATOR_STOP_S)
            except subprocess.TimeoutExpired:
                simulator.kill()
                simulator.wait()
        left = drain(stack) if stack.service("moto").process.poll() is None else -1
        if left > 0:
            say(f"the queue still holds {left} message(s) after {DRAIN_TIMEOUT_S:g} s; stopping anyway")


def wait_for_truth(truth: Path, simulator: subprocess.Popen[bytes], timeout_s: float = 30.0) -> list[Fault]:
    """The live fleet's faults, once the simulator wrote its truth file (before its first reading)."""
    deadline = time.monotonic() + timeout_s
    while not truth.exists() and simulator.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return read_faults(truth)


def run_hour_jobs(stack: EmbeddedStack, hours: list[datetime]) -> None:
    log_path = stack.config.log_dir / "aggregator.log"
    run_jobs(hours, stack.env(), log_path, say)


def supervise(
    stack: EmbeddedStack,
    simulator: subprocess.Popen[bytes],
    jobs: HourlyJobs,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> str:
    """Run the hourly jobs when due, until a process ends on its own (its name, returned) or a signal stops us."""
    while True:
        due = jobs.due(now())
        if due:
            run_hour_jobs(stack, due)
        if simulator.poll() is not None:
            return "simulator"
        ended = [service.name for service in stack.services if service.process.poll() is not None]
        if ended:
            return ended[0]
        time.sleep(POLL_S)


def print_ready(stack: EmbeddedStack, faults: list[Fault], vehicles: int) -> None:
    base = stack.dashboard_url
    say(f"dashboard: {base}/pipeline   {base}/fleet   {base}/vehicles/veh-00001")
    for fault in faults:
        say(f"  {fault.kind} from the start: {base}/vehicles/{fault.vehicle_id}")
    say(f"streaming {vehicles} vehicles live, one reading each per 200 ms; Ctrl-C stops everything")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored (a background job)
    settings = GeneratorSettings()
    data_dir = (args.data_dir or settings.data_dir).resolve()
    busy = [p for p in (args.moto_port, args.receiver_port, args.dashboard_port) if p and not port_is_free(p)]
    if busy:
        print(f"port(s) {', '.join(map(str, busy))} in use: stop what listens there, or choose others", file=sys.stderr)
        return 2
    config = StackConfig(
        data_dir=data_dir,
        log_dir=data_dir / "logs",
        api_key=settings.first_api_key or secrets.token_hex(16),
        moto_port=args.moto_port,
        receiver_port=args.receiver_port,
        s3_bucket=settings.s3_bucket,
        own_process_groups=True,
    )
    fleet = FleetOptions(args.vehicles, args.faults, args.fault_kinds, args.seed, args.history_rate_ms)
    ended, status = "", 0
    try:
        say(f"starting the embedded stack (data in {data_dir}, logs in {config.log_dir})")
        with EmbeddedStack(config) as stack:
            say(f"embedded AWS at {stack.aws_endpoint}, receiver at {stack.receiver_url}, consumer running")
            if config.s3_bucket:
                say(f"S3 tier on: batch files are copied to s3://{config.s3_bucket}/raw/")
            stack.start_dashboard(args.dashboard_port)
            window = history_window(datetime.now(UTC), args.history_hours, newest_raw_hour(data_dir / "raw"))
            started_at = datetime.now(UTC)
            with streaming(stack, args, config.log_dir / "fleet-truth.json") as simulator:
                print_ready(stack, wait_for_truth(config.log_dir / "fleet-truth.json", simulator), args.vehicles)
                if window is not None:
                    simulate_history(data_dir, window, fleet, say)
                elif args.history_hours:
                    say("history: the hours before are on disk already (an earlier run); none simulated")
                current = hour_start(started_at)
                hours = unaggregated_hours(data_dir, current - args.history_hours * HOUR, current)
                if hours:
                    say(f"running the hourly job for {', '.join(map(hour_label, hours))} and the daily job")
                    run_hour_jobs(stack, hours)
                    say("history ready: the fleet and vehicle pages show these hours")
                ended = supervise(stack, simulator, HourlyJobs(current - HOUR, args.job_delay))
    except KeyboardInterrupt:
        pass
    except SystemExit as stop:  # SIGTERM (exit_on_sigterm): the same orderly stop, its status kept
        status = stop.code if isinstance(stop.code, int) else 1
    if ended:
        print(f"{ended} ended on its own: see {config.log_dir / (ended + '.log')}", file=sys.stderr)
        return 1
    say("stopped: every process it started has ended")
    return status


if __name__ == "__main__":
    sys.exit(main())
