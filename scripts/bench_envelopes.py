"""What packing and compressing readings into SQS messages saves: requests, billed requests, moto's CPU.

    python scripts/bench_envelopes.py [--readings 5000] [--report-json PATH]

For each way of carrying readings (v1: one reading per message; v2 envelopes of 10, 100
and as many readings as fit in a message; each v2 size plain and zlib+base64), this
measures, on realistic stored records from the simulator:

* bytes per message, and requests per million readings: SendMessage, ReceiveMessage (10
  messages per call at best) and DeleteMessageBatch (10 per call);
* what AWS bills: every 64 KiB of a request's payload counts as one request, at the
  published SQS Standard price of USD 0.40 per million requests (us-east-1, beyond the
  free tier, at the time of writing);
* the encoder's and decoder's CPU per reading (what the receiver and consumer pay);
* moto's CPU and wall time to take the messages in and hand them out again, measured on
  a real ``moto.server`` process: the embedded SQS is the scarcest resource of the local stack.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from src.common.aws import sync_client
from src.common.envelope import SQS_MAX_MESSAGE_BYTES, decode_body, encode_envelope, pack
from src.common.schema import Reading, StoredReading
from src.common.settings import QueueSettings
from src.embedded.stack import EmbeddedStack, StackConfig
from src.generator.battery_model import Fleet
from src.generator.readings import readings, vehicle_ids
from src.ops.queues import provision_queues

BILLING_CHUNK_BYTES = 64 * 1024
USD_PER_MILLION_REQUESTS = 0.40
MILLION = 1_000_000
QUEUE_DEPTH = 50


@dataclass(frozen=True)
class Variant:
    """One way of carrying readings: readings per message (0 = as many as fit) and compression."""

    per_message: int
    compress: bool

    @property
    def name(self) -> str:
        if self.per_message == 1 and not self.compress:
            return "v1, one reading per message"
        size = "as many as fit" if self.per_message == 0 else str(self.per_message)
        return f"v2, {size}{', zlib' if self.compress else ''}"


@dataclass
class Result:
    """Per variant: sizes, requests and cost per million readings, and measured CPU."""

    variant: str
    readings_per_message: float
    bytes_per_message: float
    send_requests_per_m: float
    all_requests_per_m: float
    billed_requests_per_m: float
    usd_per_m_readings: float
    encode_us_per_reading: float
    decode_us_per_reading: float
    moto_cpu_us_per_reading: float
    moto_wall_us_per_reading: float


def stored_records(count: int) -> list[bytes]:
    """Realistic stored records (simulator readings plus an ingest time), serialized as the receiver does."""
    vehicles = 100
    fleet = Fleet(vehicles, seed=1)
    ids = vehicle_ids(vehicles)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    records: list[bytes] = []
    tick = 0
    while len(records) < count:
        at = start + timedelta(milliseconds=200 * tick)
        for reading in readings(fleet.step(0.2), at, ids):
            stored = StoredReading.stamp(Reading.model_validate(reading), at + timedelta(milliseconds=35))
            records.append(stored.model_dump_json().encode())
        tick += 1
    return records[:count]


def messages_for(records: list[bytes], variant: Variant) -> list[str]:
    if variant.per_message == 1 and not variant.compress:
        return [record.decode() for record in records]
    groups = pack(records, max_bytes=SQS_MAX_MESSAGE_BYTES)
    if variant.per_message:
        groups = [records[i : i + variant.per_message] for i in range(0, len(records), variant.per_message)]
    elif variant.compress:
        # Compressed, far more fits: pack by the compressed size (about a fifth of the plain one).
        groups = pack(records, max_bytes=SQS_MAX_MESSAGE_BYTES * 4)
        while any(len(encode_envelope(g, compress=True)) > SQS_MAX_MESSAGE_BYTES for g in groups):
            groups = [half for g in groups for half in (g[: len(g) // 2], g[len(g) // 2 :]) if half]
    return [encode_envelope(group, compress=variant.compress) for group in groups]


def cpu_per_reading_us(seconds: float, readings_count: int) -> float:
    return seconds * 1e6 / readings_count


def through_moto(stack: EmbeddedStack, settings: QueueSettings, bodies: list[str]) -> tuple[float, float]:
    """Send every body and receive and delete it again; moto's CPU seconds and the wall time it took.

    Messages go through in rounds of ``QUEUE_DEPTH``, so the queue stays as short as it is
    when a consumer keeps up: moto scans its whole queue on every call, and a queue filled
    with thousands of messages first would measure that scan instead of the messages.
    """
    sqs = sync_client("sqs", settings)
    url = provision_queues(settings, sqs).url
    cpu_before = stack.cpu_seconds()["moto"]
    began = time.perf_counter()
    for first in range(0, len(bodies), QUEUE_DEPTH):
        batch = bodies[first : first + QUEUE_DEPTH]
        for body in batch:
            sqs.send_message(QueueUrl=url, MessageBody=body)
        received = 0
        while received < len(batch):
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            if messages:
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
                sqs.delete_message_batch(QueueUrl=url, Entries=entries)  # type: ignore[arg-type]
                received += len(messages)
    return stack.cpu_seconds()["moto"] - cpu_before, time.perf_counter() - began


def measure(stack: EmbeddedStack, settings: QueueSettings, records: list[bytes], variant: Variant) -> Result:
    began = time.process_time()
    bodies = messages_for(records, variant)
    encode_s = time.process_time() - began
    began = time.process_time()
    decoded = sum(len(decode_body(body)) for body in bodies)
    decode_s = time.process_time() - began
    assert decoded == len(records)
    moto_cpu_s, moto_wall_s = through_moto(stack, settings, bodies)
    n, count = len(bodies), len(records)
    sizes = [len(body.encode()) for body in bodies]
    per_m = MILLION / count
    sends = n * per_m
    receives = math.ceil(n / 10) * per_m
    deletes = math.ceil(n / 10) * per_m
    # Billing: each 64 KiB of payload is a request; a receive returns up to 10 messages' payload.
    billed_sends = sum(math.ceil(size / BILLING_CHUNK_BYTES) for size in sizes) * per_m
    billed_receives = (
        sum(max(1, math.ceil(sum(sizes[i : i + 10]) / BILLING_CHUNK_BYTES)) for i in range(0, n, 10)) * per_m
    )
    billed = billed_sends + billed_receives + deletes
    return Result(
        variant=variant.name,
        readings_per_message=count / n,
        bytes_per_message=sum(sizes) / n,
        send_requests_per_m=sends,
        all_requests_per_m=sends + receives + deletes,
        billed_requests_per_m=billed,
        usd_per_m_readings=billed / MILLION * USD_PER_MILLION_REQUESTS,
        encode_us_per_reading=cpu_per_reading_us(encode_s, count),
        decode_us_per_reading=cpu_per_reading_us(decode_s, count),
        moto_cpu_us_per_reading=cpu_per_reading_us(moto_cpu_s, count),
        moto_wall_us_per_reading=cpu_per_reading_us(moto_wall_s, count),
    )


def table(results: list[Result]) -> str:
    header = (
        "| carrying | readings/msg | bytes/msg | SendMessage per 1M readings | all requests per 1M | "
        "billed per 1M | USD per 1M readings | encode µs/reading | decode µs/reading | "
        "moto CPU µs/reading | moto wall µs/reading |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in results:
        lines.append(
            f"| {r.variant} | {r.readings_per_message:.0f} | {r.bytes_per_message:,.0f} | "
            f"{r.send_requests_per_m:,.0f} | {r.all_requests_per_m:,.0f} | {r.billed_requests_per_m:,.0f} | "
            f"{r.usd_per_m_readings:.4f} | {r.encode_us_per_reading:.2f} | {r.decode_us_per_reading:.2f} | "
            f"{r.moto_cpu_us_per_reading:.1f} | {r.moto_wall_us_per_reading:.1f} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=5_000, help="readings per variant")
    parser.add_argument("--report-json", type=Path)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"simulating {args.readings} stored records", file=sys.stderr, flush=True)
    records = stored_records(args.readings)
    variants = [Variant(1, False)] + [Variant(size, compress) for size in (10, 100, 0) for compress in (False, True)]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-envelopes-") as tmp:
        config = StackConfig(data_dir=Path(tmp) / "data", log_dir=Path(tmp) / "logs", api_key="unused")
        config.log_dir.mkdir(parents=True)
        stack = EmbeddedStack(config)  # only its moto server: no receiver or consumer to take the messages
        try:
            stack.start_aws()
            settings = QueueSettings(
                aws_endpoint_url=stack.aws_endpoint,
                aws_default_region="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            for variant in variants:
                print(f"  {variant.name} ...", file=sys.stderr, flush=True)
                results.append(measure(stack, settings, records, variant))
        finally:
            stack.stop()
    print(table(results))
    if args.report_json is not None:
        args.report_json.write_bytes(orjson.dumps([asdict(r) for r in results], option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
