"""Drive the receiver at a fixed rate and prove every accepted reading reached disk.

    python scripts/load_test.py --embedded --messages 1000 --rate 200
    python scripts/load_test.py --messages 10000 --rate 500 --batch-size 50 --report-json report.json

Every reading answered 202 is looked up on disk by natural key; the report (contract,
"load_test report") counts lost, duplicated and misplaced readings and gives latency
percentiles. Without ``--embedded`` it targets a running receiver (``--url``, ``API_KEY``)
whose consumer writes to ``DATA_DIR`` on this machine. With ``--embedded`` each process's
CPU use is printed. Exit status 0 only when nothing accepted was lost or misplaced.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from src.common.schema import NaturalKey
from src.common.settings import GeneratorSettings
from src.loadtest.disk_index import DiskIndex
from src.loadtest.sender import (
    LoadRun,
    ShareSpec,
    default_senders,
    merge_results,
    run_senders,
    send_share,
)

if TYPE_CHECKING:
    from src.embedded.stack import EmbeddedStack
    from src.loadtest.latency_plot import LatencySeries

__all__ = ["LoadRun", "build_report", "percentiles", "send_load", "wait_persisted"]

GENERATOR = "load generator"


async def send_load(
    url: str,
    api_key: str,
    messages: int,
    rate: float,
    batch_size: int,
    vehicles: int,
    seed: int = 0,
    keep_payloads: bool = False,
    senders: int = 1,
    on_start: Callable[[], None] | None = None,
) -> LoadRun:
    """Send ``messages`` readings at ``rate`` per second; requests are scheduled, not paced by replies.

    One sender runs in the calling event loop; more run as spawned processes
    (``run_senders``), waited for in a thread so the caller's loop stays free.
    ``on_start`` is called just before the first request is due.
    """
    spec = ShareSpec(url, api_key, messages, rate, batch_size, vehicles, seed)
    if senders > 1:
        return await asyncio.to_thread(run_senders, spec, senders, progress, keep_payloads, on_start)
    return await send_in_process(spec, keep_payloads, on_start)


async def send_in_process(
    spec: ShareSpec, keep_payloads: bool = False, on_start: Callable[[], None] | None = None
) -> LoadRun:
    """The whole schedule from this process's event loop, progress printed once a second."""
    next_progress = time.monotonic() + 1.0

    def report(sent: int, accepted: int) -> None:
        nonlocal next_progress
        if time.monotonic() >= next_progress:
            progress(f"sending: {sent}/{spec.messages} sent, {accepted} accepted")
            next_progress += 1.0

    if on_start is not None:
        on_start()
    return merge_results([await send_share(spec, progress=report)], keep_payloads)


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


def percentiles(values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    array = np.asarray(values, dtype=np.float64)
    if not array.size:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        "p50": round(float(p50), 1),
        "p95": round(float(p95), 1),
        "p99": round(float(p99), 1),
        "max": round(float(array.max()), 1),
    }


def e2e_by_reading(run: LoadRun, index: DiskIndex) -> np.ndarray:
    """Per accepted reading (in ``run.accepted``'s order): timestamp to durable on disk, ms; NaN if not there."""
    durable = index.durable_ms
    values = (durable.get(key, math.nan) - taken_ms for key, taken_ms in run.accepted.items())
    return np.fromiter(values, dtype=np.float64, count=len(run.accepted))


def build_report(
    run: LoadRun, index: DiskIndex, missing: set[NaturalKey], elapsed_s: float, e2e: np.ndarray | None = None
) -> dict[str, Any]:
    """The contract's report (plus ``refused`` and ``misplaced`` when there are any)."""
    if e2e is None:
        e2e = e2e_by_reading(run, index)
    is_found = np.fromiter((key not in missing for key in run.accepted), dtype=bool, count=len(run.accepted))
    found = [key for key, here in zip(run.accepted, is_found.tolist(), strict=True) if here]
    report: dict[str, Any] = {
        "sent": run.sent,
        "accepted": len(run.accepted),
        "persisted": len(found),
        "lost": len(missing),
        "duplicates": index.duplicates(set(found)),
        "throughput_rps": round(len(run.accepted) / run.window_s, 1) if run.window_s else 0.0,
        "elapsed_s": round(elapsed_s, 2),
        "e2e_ms": percentiles(e2e[is_found]),
        "ingest_ms": percentiles(run.ingest_ms),
    }
    if run.refused:
        report["refused"] = run.refused
    misplaced = index.misplaced & set(found)
    if misplaced:
        report["misplaced"] = len(misplaced)  # outside their ingest hour's partition: a bug, fail the run
    return report


def latency_series(run: LoadRun, e2e: np.ndarray, title: str) -> LatencySeries:
    from src.loadtest.latency_plot import LatencySeries  # matplotlib: imported only when plotting

    taken_ms = np.fromiter(run.accepted.values(), dtype=np.float64, count=len(run.accepted))
    return LatencySeries(
        sent_s=(taken_ms - run.started_unix_ms) / 1000,
        e2e_ms=e2e,
        request_s=(np.asarray(run.request_unix_ms, dtype=np.float64) - run.started_unix_ms) / 1000,
        ingest_ms=np.asarray(run.request_latency_ms, dtype=np.float64),
        title=title,
        refused_s=(np.asarray(run.refused_unix_ms, dtype=np.float64) - run.started_unix_ms) / 1000,
        refused_count=np.asarray(run.refused_count, dtype=np.int64),
    )


def plot_path(args: argparse.Namespace) -> Path | None:
    """``--plot``, else the report's path with ``.png``, else no plot."""
    if args.plot is not None:
        return Path(args.plot)
    if args.report_json is not None:
        return Path(args.report_json).with_suffix(".png")
    return None


def run_load_test(
    args: argparse.Namespace,
    url: str,
    api_key: str,
    data_dir: Path,
    cpu_probe: Callable[[], dict[str, float]] | None = None,
) -> dict[str, Any]:
    """Send, then look for every accepted reading on disk; the report of the contract.

    ``cpu_probe`` gives the CPU seconds each service of the system under test has used so
    far; with it, where the machine's cores went is printed, while sending and overall.
    """
    probe = cpu_probe or dict
    started = time.perf_counter()
    index = DiskIndex(data_dir / "raw")
    index.refresh()  # files from before this run are read once, then ignored
    senders = args.senders or default_senders(args.rate, args.batch_size)
    mode = f"{args.batch_size} per request to /ingest/batch" if args.batch_size > 1 else "one per request to /ingest"
    progress(f"sending {args.messages} readings at {args.rate:g}/s, {mode}, from {senders} sender(s)")
    marks: dict[str, Any] = {}

    def sending_starts() -> None:
        marks.update(cpu=probe(), own_cpu=time.process_time(), wall=time.perf_counter())

    spec = ShareSpec(url, api_key, args.messages, args.rate, args.batch_size, args.vehicles, args.seed)
    if senders > 1:  # from this (main) thread, so that SIGTERM or ^C stops the sender processes at once
        run = run_senders(spec, senders, progress, on_start=sending_starts)
    else:
        run = run_async(send_in_process(spec, on_start=sending_starts))
    cpu_sent, wall_sent = probe(), time.perf_counter()
    lag = percentiles(run.lag_ms)
    progress(
        f"sent {run.sent} readings in {run.window_s:.1f} s; {len(run.accepted)} accepted; "
        f"behind schedule P99 {lag['p99']} ms, max {lag['max']} ms"
    )
    if cpu_probe is not None:
        shares = cpu_shares(marks["cpu"], cpu_sent, wall_sent - marks["wall"])
        shares[GENERATOR] = run.sender_cpu_s / run.window_s if run.window_s else 0.0  # over its own window
        print_cpu_shares(shares, wall_sent - marks["wall"], "while sending")
    missing = wait_persisted(index, set(run.accepted), args.persist_timeout)
    e2e = e2e_by_reading(run, index)
    report = build_report(run, index, missing, time.perf_counter() - started, e2e)
    if cpu_probe is not None:
        wall_s = time.perf_counter() - marks["wall"]
        shares = cpu_shares(marks["cpu"], probe(), wall_s)
        own_cpu = time.process_time() - marks["own_cpu"] + (run.sender_cpu_s if run.spawned else 0.0)
        shares[GENERATOR] = own_cpu / wall_s
        print_cpu_shares(shares, wall_s, "over the whole run")
    path = plot_path(args)
    if path is not None:
        title = (
            f"load_test: {args.messages} readings at {args.rate:g}/s, batch {args.batch_size}, {senders} sender(s); "
            f"{report['throughput_rps']} accepted/s, lost {report['lost']}"
        )
        from src.loadtest.latency_plot import plot_latency

        plot_latency(latency_series(run, e2e, title), path)
        progress(f"latency plot written to {path}")
    return report


def run_async(coroutine: Coroutine[Any, Any, LoadRun]) -> LoadRun:
    """Run on uvloop: its event loop costs the sender less CPU per request than asyncio's."""
    import uvloop

    return uvloop.run(coroutine)


def cpu_shares(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """CPU seconds per second of wall time, per process, between two probes."""
    return {name: (used - before.get(name, 0.0)) / wall_s for name, used in after.items()}


def print_cpu_shares(shares: dict[str, float], wall_s: float, when: str) -> None:
    """Where the machine's cores went: which process to profile first."""
    listed = ", ".join(f"{name} {share:.2f}" for name, share in shares.items())
    progress(f"CPU seconds per second {when} ({wall_s:.1f} s, {os.cpu_count()} cores): {listed}")


def consumer_counters(port: int) -> dict[str, float]:
    """The upload counters one consumer's /metrics shows."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = {"consumer_uploads_total", "consumer_uploads_pending", "consumer_upload_failures_total"}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def wait_uploads(ports: list[int], timeout_s: float) -> dict[str, int]:
    """Wait until no consumer has uploads pending; files uploaded, still pending and failed calls."""
    deadline = time.monotonic() + timeout_s
    while True:
        counters = [consumer_counters(port) for port in ports]
        pending = int(sum(c.get("consumer_uploads_pending", 0) for c in counters))
        if pending == 0 or time.monotonic() > deadline:
            return {
                "files": int(sum(c.get("consumer_uploads_total", 0) for c in counters)),
                "pending": pending,
                "failures": int(sum(c.get("consumer_upload_failures_total", 0) for c in counters)),
            }
        time.sleep(0.5)


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
    parser.add_argument(
        "--senders", type=int, help="sender processes (default: one per 5,000 requests/s, at most one per core)"
    )
    parser.add_argument("--plot", type=Path, help="latency plot (PNG); default: --report-json's path with .png")
    parser.add_argument("--receiver-workers", type=int, default=1, help="--embedded: uvicorn worker processes")
    parser.add_argument("--consumers", type=int, default=1, help="--embedded: consumer processes")
    parser.add_argument(
        "--s3-bucket", help="--embedded: turn the S3 tier on with this bucket (consumers upload every batch file)"
    )
    args = parser.parse_args(argv)
    if args.messages <= 0 or args.rate <= 0 or args.batch_size <= 0 or args.vehicles <= 0:
        parser.error("--messages, --rate, --batch-size and --vehicles must be positive")
    if args.senders is not None and args.senders <= 0:
        parser.error("--senders must be positive")
    if args.receiver_workers <= 0 or args.consumers <= 0:
        parser.error("--receiver-workers and --consumers must be positive")
    return args


def run_embedded(
    args: argparse.Namespace, attach: Callable[[EmbeddedStack], AbstractContextManager[object]] | None = None
) -> dict[str, Any]:
    """``--embedded``: the load test against a stack of its own (temporary DATA_DIR), stopped afterwards.

    ``attach``, when given, is entered once the stack is up and left after the report: what a
    benchmark runs beside the pipeline (scripts/bench_dashboard_cost.py opens the dashboard in a browser).
    """
    from src.embedded.stack import EmbeddedStack, StackConfig

    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp:
        config = StackConfig(
            data_dir=Path(tmp) / "data",
            log_dir=Path(tmp) / "logs",
            api_key=secrets.token_hex(16),
            consumers=args.consumers,
            receiver_workers=args.receiver_workers,
            s3_bucket=args.s3_bucket,
        )
        with EmbeddedStack(config) as stack:
            progress(f"embedded stack up: receiver {stack.receiver_url}, AWS {stack.aws_endpoint}")
            with attach(stack) if attach is not None else contextlib.nullcontext():
                report = run_load_test(args, stack.receiver_url, config.api_key, config.data_dir, stack.cpu_seconds)
            if args.s3_bucket:
                report["s3_uploads"] = wait_uploads(list(stack.metrics_ports.values()), args.persist_timeout)
                progress(f"S3 uploads: {report['s3_uploads']}")
    return report


def main(argv: list[str] | None = None) -> int:
    # Imported here, not at the top: sender processes (spawned) re-import this module.
    from src.embedded.stack import exit_on_sigterm

    args = parse_args(argv)
    exit_on_sigterm()
    if args.embedded:
        report = run_embedded(args)
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
