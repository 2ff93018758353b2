"""Move dead letters back from the dead-letter queue to the telemetry queue, once their cause is fixed.

    python scripts/redrive_dlq.py [--apply] [--only-valid] [--max N]

Lists every message with what ``decode_body`` makes of it today. Without ``--apply``
nothing changes (messages looked at are made visible again); with it, each message is
sent to the source queue and deleted from the DLQ only after the send succeeded, so a
failure may duplicate a message, never lose one. Exit status: 0, or 1 if any move
failed, 2 if a queue does not exist. More: docs/architecture.md, "Design notes: operator tools".
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from src.common.aws import SyncSQSClient, sync_client
from src.common.envelope import MessageDecodeError, decode_body
from src.common.logs import configure_logging
from src.common.settings import CommonSettings

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef, MessageTypeDef
else:
    MessageTypeDef = Any

log = logging.getLogger("redrive_dlq")

LOOK_VISIBILITY_S = 30
"""How long a message looked at stays hidden if this script dies before making it visible again."""
RECEIVE_WAIT_S = 1
"""A long poll, however short, asks every SQS server; an empty one means the DLQ is done."""
SQS_BATCH = 10  # SQS's limit per ReceiveMessage and ChangeMessageVisibilityBatch
EXIT_MOVE_FAILED = 1
EXIT_NO_QUEUE = 2


@dataclass(frozen=True)
class Options:
    apply: bool
    only_valid: bool
    max_messages: int


@dataclass(frozen=True)
class DeadLetter:
    """One received dead letter and the verdict of today's decoder on it."""

    message_id: str
    receipt_handle: str
    body: str
    message_attributes: dict[str, Any]
    receive_count: int
    sent_at: datetime | None
    valid: bool
    verdict: str

    @property
    def size(self) -> int:
        return len(self.body.encode())


@dataclass
class Summary:
    """What happened (or, in a dry run, would happen) to the messages looked at."""

    moved: int = 0
    left: int = 0
    failed: int = 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--apply", action="store_true", help="move the messages (default: only list them)")
    parser.add_argument(
        "--only-valid", action="store_true", help="move only messages that decode now; leave poison in the DLQ"
    )
    parser.add_argument("--max", type=_positive, default=None, metavar="N", help="look at most at N messages")
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def judge(body: str) -> tuple[bool, str]:
    """Whether the consumer would store ``body`` now, and the verdict to show."""
    try:
        records = decode_body(body)
    except MessageDecodeError as exc:
        return False, f"poison: {exc}"
    return True, f"valid, {len(records)} reading{'s' if len(records) != 1 else ''}"


def inspect(raw: MessageTypeDef) -> DeadLetter:
    attributes = raw.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    body = raw.get("Body", "")
    valid, verdict = judge(body)
    return DeadLetter(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=body,
        message_attributes=dict(raw.get("MessageAttributes", {})),
        receive_count=int(attributes.get("ApproximateReceiveCount", 0)),
        sent_at=datetime.fromtimestamp(int(sent) / 1000, UTC) if sent else None,
        valid=valid,
        verdict=verdict,
    )


def describe(letter: DeadLetter, action: str) -> str:
    sent = letter.sent_at.isoformat(timespec="milliseconds").replace("+00:00", "Z") if letter.sent_at else "?"
    return (
        f"{letter.message_id}  receives={letter.receive_count}  sent={sent}  bytes={letter.size}  "
        f"{action}: {letter.verdict}"
    )


def receive(sqs: SyncSQSClient, dlq_url: str, count: int) -> list[MessageTypeDef]:
    response = sqs.receive_message(
        QueueUrl=dlq_url,
        MaxNumberOfMessages=count,
        WaitTimeSeconds=RECEIVE_WAIT_S,
        VisibilityTimeout=LOOK_VISIBILITY_S,
        MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        MessageAttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def move(sqs: SyncSQSClient, letter: DeadLetter, dlq_url: str, source_url: str) -> str | None:
    """Send ``letter`` to the source queue, then delete it from the DLQ; the failure, or None.

    One at a time: a batch of ten full messages would exceed SQS's limit on a batch's size.
    """
    extra: dict[str, Any] = {"MessageAttributes": letter.message_attributes} if letter.message_attributes else {}
    try:
        sqs.send_message(QueueUrl=source_url, MessageBody=letter.body, **extra)
    except Exception as exc:
        return f"not sent, still in the DLQ: {exc!r}"
    try:
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=letter.receipt_handle)
    except Exception as exc:
        return f"sent, but not deleted from the DLQ (a duplicate remains there): {exc!r}"
    return None


def restore_visibility(sqs: SyncSQSClient, dlq_url: str, receipt_handles: Sequence[str]) -> None:
    """Make messages this run looked at but left in the DLQ visible again at once."""
    for start in range(0, len(receipt_handles), SQS_BATCH):
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
            for i, handle in enumerate(receipt_handles[start : start + SQS_BATCH])
        ]
        try:
            response = sqs.change_message_visibility_batch(QueueUrl=dlq_url, Entries=entries)
        except Exception as exc:
            log.warning("%d message(s) left hidden for up to %d s: %r", len(entries), LOOK_VISIBILITY_S, exc)
            continue
        for entry in response.get("Failed", []):
            log.warning(
                "a message is left hidden for up to %d s: %s %s",
                LOOK_VISIBILITY_S,
                entry["Code"],
                entry.get("Message", ""),
            )


def redrive(sqs: SyncSQSClient, dlq_url: str, source_url: str, options: Options) -> Summary:
    """Look at (and with ``apply``, move) up to ``max_messages`` dead letters, printing each.

    Messages left in the DLQ stay hidden until the end, so that the loop sees each one
    once, and are made visible again however the loop ends. The loop stops at the first
    receive that brings nothing new: an empty DLQ, or (when looking takes longer than
    LOOK_VISIBILITY_S) only messages that reappeared, which would otherwise come back for ever.
    """
    summary = Summary()
    seen: set[str] = set()
    left_hidden: dict[str, str] = {}  # message id -> latest receipt handle
    try:
        while len(seen) < options.max_messages:
            letters = [inspect(raw) for raw in receive(sqs, dlq_url, min(SQS_BATCH, options.max_messages - len(seen)))]
            for letter in letters:  # a message left hidden came back: only its newest handle works
                if letter.message_id in left_hidden:
                    left_hidden[letter.message_id] = letter.receipt_handle
            new = [letter for letter in letters if letter.message_id not in seen]
            if not new:
                if letters:
                    log.warning("only messages already looked at came back; run again for any not listed")
                break
            for letter in new:
                seen.add(letter.message_id)
                print(_handle(sqs, letter, dlq_url, source_url, options, summary, left_hidden), flush=True)
    finally:
        restore_visibility(sqs, dlq_url, list(left_hidden.values()))
    return summary


def _handle(
    sqs: SyncSQSClient,
    letter: DeadLetter,
    dlq_url: str,
    source_url: str,
    options: Options,
    summary: Summary,
    left_hidden: dict[str, str],
) -> str:
    """Decide one message's fate, count it, and return its line."""
    wanted = letter.valid or not options.only_valid
    if not wanted:
        summary.left += 1
        left_hidden[letter.message_id] = letter.receipt_handle
        return describe(letter, "left" if options.apply else "would leave")
    if not options.apply:
        summary.moved += 1
        left_hidden[letter.message_id] = letter.receipt_handle
        return describe(letter, "would move")
    failure = move(sqs, letter, dlq_url, source_url)
    if failure is None:
        summary.moved += 1
        return describe(letter, "moved")
    summary.failed += 1
    left_hidden[letter.message_id] = letter.receipt_handle
    return describe(letter, f"FAILED ({failure})")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = CommonSettings()
    configure_logging(settings.log_level, settings.log_format)
    options = Options(apply=args.apply, only_valid=args.only_valid, max_messages=args.max or sys.maxsize)
    sqs = sync_client("sqs", settings)
    try:
        dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
        source_url = settings.sqs_queue_url or sqs.get_queue_url(QueueName=settings.sqs_queue_name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist as exc:
        print(f"queue does not exist ({exc}); run scripts/setup_sqs.py first", file=sys.stderr)
        return EXIT_NO_QUEUE
    print(f"{'moving' if options.apply else 'dry run, listing'} {dlq_url} -> {source_url}", file=sys.stderr)
    summary = redrive(sqs, dlq_url, source_url, options)
    if options.apply:
        print(f"moved {summary.moved}, left {summary.left}, failed {summary.failed}")
    else:
        print(f"dry run: would move {summary.moved}, would leave {summary.left}; nothing changed (--apply moves)")
    return EXIT_MOVE_FAILED if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main())
