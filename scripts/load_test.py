"""Drive the receiver at a fixed rate and prove every accepted reading reached disk.

    python scripts/load_test.py --embedded --messages 1000 --rate 200
    python scripts/load_test.py --messages 10000 --rate 500 --batch-size 50 --report-json report.json

Readings are sent at a fixed rate (``--rate`` readings per second), one per request to
``/ingest`` or ``--batch-size`` per request to ``/ingest/batch``. Every reading answered
202 is then looked up on disk by its natural key; the report (contract, "load_test
report") counts what was lost and duplicated and gives latency percentiles; a reading
found outside its ingest hour's partition is reported as ``misplaced`` and fails the run. Without
``--embedded`` it targets a running receiver (``--url``, ``API_KEY``) whose consumer
writes to ``DATA_DIR`` on this machine. Exit status 0 only when nothing accepted was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from scripts.disk_index import DiskIndex  # noqa: E402
from scripts.embedded_stack import EmbeddedStack, StackConfig, exit_on_sigterm  # noqa: E402
from src.common.schema import NaturalKey, format_timestamp  # noqa: E402
from src.common.settings import GeneratorSettings  # noqa: E402

MAX_IN_FLIGHT = 512


@dataclass
class LoadRun:
    """What the sending phase saw: per accepted reading, its key and when it was taken."""

    sent: int = 0
    accepted: dict[NaturalKey, float] = field(default_factory=dict)  # key -> reading timestamp (unix ms)
    ingest_ms: list[float] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # HTTP status or error -> readings
    window_s: float = 0.0
    payloads: dict[NaturalKey, dict[str, float]] | None = None
    """Accepted readings' payloads, kept only when asked (tests compare aggregates with them)."""


def make_reading(vehicle: int, now: datetime, rng: random.Random) -> dict[str, Any]:
    """A plausible reading; its natural key is unique as long as vehicles outnumber readings per µs."""
    soc = rng.uniform(20.0, 90.0)
    cell = 3.45 + 0.0075 * soc
    current = rng.uniform(-180.0, 40.0)
    temp = rng.uniform(20.0, 35.0)
    return {
        "timestamp": format_timestamp(now),
        "vehicle_id": f"load-{vehicle:05d}",
        "can_id": "0x1F0",
        "payload": {
            "battery_soc": round(soc, 1),
            "battery_voltage": round(96 * cell + 0.05 * current, 1),
            "battery_current": round(current, 1),
            "cell_voltage_min": round(cell - 0.012, 3),
            "cell_voltage_max": round(cell + 0.012, 3),
            "cell_temp_min": round(temp, 1),
            "cell_temp_max": round(temp + rng.uniform(0.5, 3.0), 1),
        },
    }


async def send_load(
    url: str,
    api_key: str,
    messages: int,
    rate: float,
    batch_size: int,
    vehicles: int,
    seed: int = 0,
    keep_payloads: bool = False,
) -> LoadRun:
    """Send ``messages`` readings at ``rate`` per second; requests are scheduled, not paced by replies."""
    run = LoadRun(payloads={} if keep_payloads else None)
    rng = random.Random(seed)
    endpoint = f"{url}/ingest/batch" if batch_size > 1 else f"{url}/ingest"
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    requests = (messages + batch_size - 1) // batch_size
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=30)

    async def one(session: aiohttp.ClientSession, first: int, count: int) -> None:
        async with in_flight:
            now = datetime.now(UTC)
            readings = [make_reading((first + i) % vehicles, now, rng) for i in range(count)]
            body = orjson.dumps(readings if batch_size > 1 else readings[0])
            started = time.perf_counter()
            run.sent += count
            try:
                async with session.post(endpoint, data=body, headers=headers) as response:
                    await response.read()
                    status = str(response.status)
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            if status == "202":
                elapsed_ms = (time.perf_counter() - started) * 1000
                taken_ms = now.timestamp() * 1000
                for reading in readings:
                    key = NaturalKey(reading["vehicle_id"], reading["can_id"], reading["timestamp"])
                    run.accepted[key] = taken_ms
                    if run.payloads is not None:
                        run.payloads[key] = reading["payload"]
                run.ingest_ms.extend([elapsed_ms] * count)
            else:
                run.refused[status] = run.refused.get(status, 0) + count

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        tasks: list[asyncio.Task[None]] = []
        next_progress = start + 1.0
        for j in range(requests):
            due = start + j * batch_size / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            count = min(batch_size, messages - j * batch_size)
            tasks.append(asyncio.create_task(one(session, j * batch_size, count)))
            if time.perf_counter() >= next_progress:
                progress(f"sending: {run.sent}/{messages} sent, {len(run.accepted)} accepted")
                next_progress += 1.0
        await asyncio.gather(*tasks)
        run.window_s = time.perf_counter() - start
    return run


def wait_persisted(index: DiskIndex, keys: set[NaturalKey], timeout_s: float) -> set[NaturalKey]:
    """Poll the disk until every key is there or ``timeout_s`` passes; returns what is missing."""
    deadline = time.monotonic() + timeout_s
    missing = set(keys)
    next_progress = time.monotonic()
    while True:
        index.refresh()
        missing = index.missing(missing)
        if not missing or time.monotonic() > deadline:
            return missing
        if time.monotonic() >= next_progress:
            progress(f"waiting for disk: {len(keys) - len(missing)}/{len(keys)} persisted")
            next_progress += 1.0
        time.sleep(0.2)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "max": round(max(values), 1),
    }


def build_report(run: LoadRun, index: DiskIndex, missing: set[NaturalKey], elapsed_s: float) -> dict[str, Any]:
    found = [key for key in run.accepted if key not in missing]
    e2e = [index.durable_ms[key] - run.accepted[key] for key in found]
    report: dict[str, Any] = {
        "sent": run.sent,
        "accepted": len(run.accepted),
        "persisted": len(found),
        "lost": len(missing),
        "duplicates": index.duplicates(set(found)),
        "throughput_rps": round(len(run.accepted) / run.window_s, 1) if run.window_s else 0.0,
        "elapsed_s": round(elapsed_s, 2),
        "e2e_ms": percentiles(e2e),
        "ingest_ms": percentiles(run.ingest_ms),
    }
    if run.refused:
        report["refused"] = run.refused
    misplaced = index.misplaced & set(found)
    if misplaced:
        report["misplaced"] = len(misplaced)  # outside their ingest hour's partition: a bug, fail the run
    return report


def run_load_test(args: argparse.Namespace, url: str, api_key: str, data_dir: Path) -> dict[str, Any]:
    """Send, then look for every accepted reading on disk; the report of the contract."""
    started = time.perf_counter()
    index = DiskIndex(data_dir / "raw")
    index.refresh()  # files from before this run are read once, then ignored
    run = asyncio.run(send_load(url, api_key, args.messages, args.rate, args.batch_size, args.vehicles, args.seed))
    progress(f"sent {run.sent} readings in {run.window_s:.1f} s; {len(run.accepted)} accepted")
    missing = wait_persisted(index, set(run.accepted), args.persist_timeout)
    return build_report(run, index, missing, time.perf_counter() - started)


def report_cpu_share(before: dict[str, float], after: dict[str, float], wall_s: float) -> None:
    """Where the machine's cores went during the run: which process to profile first."""
    shares = [f"{name} {(after[name] - before.get(name, 0.0)) / wall_s:.2f}" for name in after]
    progress("CPU seconds per second: " + ", ".join(shares))


def progress(message: str) -> None:
    print(f"[load_test] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embedded", action="store_true", help="start moto, receiver and consumer on free ports")
    parser.add_argument("--messages", type=int, required=True, help="readings to send")
    parser.add_argument("--rate", type=float, required=True, help="readings per second")
    parser.add_argument("--batch-size", type=int, default=1, help="readings per request (>1: /ingest/batch)")
    parser.add_argument("--report-json", type=Path, help="also write the report here")
    parser.add_argument("--url", help="receiver to target (default RECEIVER_URL)")
    parser.add_argument("--data-dir", type=Path, help="where the consumer writes (default DATA_DIR)")
    parser.add_argument("--vehicles", type=int, default=1000, help="distinct vehicle ids to spread readings over")
    parser.add_argument("--persist-timeout", type=float, default=60.0, help="seconds to wait for the disk")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.messages <= 0 or args.rate <= 0 or args.batch_size <= 0 or args.vehicles <= 0:
        parser.error("--messages, --rate, --batch-size and --vehicles must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    if args.embedded:
        with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
            config = StackConfig(data_dir=Path(tmp) / "data", log_dir=Path(tmp) / "logs", api_key=secrets.token_hex(16))
            with EmbeddedStack(config) as stack:
                progress(f"embedded stack up: receiver {stack.receiver_url}, AWS {stack.aws_endpoint}")
                cpu_before, own_before, wall_before = stack.cpu_seconds(), time.process_time(), time.perf_counter()
                report = run_load_test(args, stack.receiver_url, config.api_key, config.data_dir)
                cpu_after = {**stack.cpu_seconds(), "load generator": time.process_time()}
                report_cpu_share(
                    {**cpu_before, "load generator": own_before}, cpu_after, time.perf_counter() - wall_before
                )
    else:
        settings = GeneratorSettings()
        api_key = settings.first_api_key
        if not api_key:
            progress("API_KEY is not set: the receiver will refuse every reading")
            return 2
        report = run_load_test(args, args.url or settings.receiver_url, api_key, args.data_dir or settings.data_dir)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.report_json:
        args.report_json.parent.mkdir(parents=True, exist_ok=True)
        args.report_json.write_text(text + "\n")
    return 0 if report["lost"] == 0 and not report.get("misplaced") else 1


if __name__ == "__main__":
    sys.exit(main())
