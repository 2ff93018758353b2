"""Time the aggregator on one hour read locally and read from S3 (moto's server on loopback).

    python scripts/bench_aggregator.py --generate-only --readings 200000 --data-dir /tmp/agg200k
    python scripts/bench_aggregator_s3.py --data-dir /tmp/agg200k --hour 2026-01-01T10 [--gzip all|none|mixed]

Uploads the hour's batch files to a fresh bucket at the consumer's keys (gzipped as
``--gzip`` says), then runs the aggregator's CLI ``--repeat`` times each way: local files
without S3, local files with the result uploaded, and ``--source s3``. Prints the median
wall and CPU time of each, and checks that all three wrote the same bytes and that the
uploaded aggregate equals the local file. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from src.common.aws import SyncS3Client, sync_client
from src.common.layout import aggregated_file_name, batch_files, parse_hour_label, s3_aggregated_key, s3_raw_key
from src.common.settings import CommonSettings
from src.embedded.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout, for the files this script reads and writes

BUCKET = "aggregator-bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="a DATA_DIR holding the hour's raw files")
    parser.add_argument("--hour", required=True, help="YYYY-MM-DDTHH")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gzip", choices=("all", "none", "mixed"), default="all", help="which objects are gzipped")
    return parser.parse_args(argv)


def upload_hour(s3: SyncS3Client, raw_dir: Path, files: list[Path], gzip_mode: str) -> int:
    """Put the files at the consumer's keys; the bytes stored."""
    stored = 0
    for number, path in enumerate(files):
        zipped = gzip_mode == "all" or (gzip_mode == "mixed" and number % 2 == 0)
        body = gzip.compress(path.read_bytes(), 6, mtime=0) if zipped else path.read_bytes()
        s3.put_object(Bucket=BUCKET, Key=s3_raw_key(path.relative_to(raw_dir), zipped), Body=body)
        stored += len(body)
    return stored


def timed_run(env: dict[str, str], hour: str, source: str) -> tuple[float, float]:
    """One aggregator run: (wall seconds, CPU seconds of the aggregator and its workers)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    command = [sys.executable, "-m", "src.aggregator.hourly_stats", "--hour", hour, "--source", source]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"aggregator failed ({source}):\n{done.stderr}")
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    hour = parse_hour_label(args.hour)
    raw_dir = args.data_dir / "raw"
    files = batch_files(raw_dir, hour)
    if not files:
        print(f"no batch files for {args.hour} under {raw_dir}", file=sys.stderr)
        return 2
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        env |= {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "DATA_DIR": str(args.data_dir),
        }
        settings = CommonSettings(
            aws_endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id="bench", aws_secret_access_key="bench"
        )
        s3 = sync_client("s3", settings)
        deadline = time.monotonic() + 30
        while True:
            try:
                s3.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        stored = upload_hour(s3, raw_dir, files, args.gzip)
        raw_bytes = sum(path.stat().st_size for path in files)
        print(f"{len(files)} objects, {raw_bytes:,} bytes raw, {stored:,} bytes in S3 (gzip: {args.gzip})")
        runs = {
            "local, no S3_BUCKET": (env, "local"),
            "local + upload": (env | {"S3_BUCKET": BUCKET}, "local"),
            "--source s3 + upload": (env | {"S3_BUCKET": BUCKET}, "s3"),
        }
        output = args.data_dir / "aggregated" / aggregated_file_name(hour)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        written: set[bytes] = set()
        for _ in range(args.repeat):
            for name, (run_env, source) in runs.items():
                results[name].append(timed_run(run_env, args.hour, source))
                written.add(output.read_bytes())
        for name, samples in results.items():
            wall = statistics.median(s[0] for s in samples)
            cpu = statistics.median(s[1] for s in samples)
            print(f"{name:<22} median {wall:.2f} s wall, {cpu:.2f} s CPU  ({' '.join(f'{s[0]:.2f}' for s in samples)})")
        uploaded = s3.get_object(Bucket=BUCKET, Key=s3_aggregated_key(hour))["Body"].read()
        same = len(written) == 1
        print(f"outputs identical: {same}; uploaded aggregate equals the local file: {uploaded in written}")
        return 0 if same and uploaded in written else 1
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    sys.exit(main())
