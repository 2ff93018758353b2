"""Talking to SQS: long polls, decoding bodies, deleting what is durable.

Poison (``MessageDecodeError`` from :func:`parse_message`) is never deleted here:
the queue's redrive policy moves it to the dead-letter queue after ``MAX_RECEIVES``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.common.envelope import decode_body
from src.consumer.batching import ReceivedMessage

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.literals import MessageSystemAttributeNameType
    from types_aiobotocore_sqs.type_defs import (
        ChangeMessageVisibilityBatchRequestEntryTypeDef,
        DeleteMessageBatchRequestEntryTypeDef,
    )
else:
    SQSClient = Any

log = logging.getLogger(__name__)

MAX_MESSAGES = 10  # SQS's limit per ReceiveMessage, DeleteMessageBatch and ChangeMessageVisibilityBatch
SYSTEM_ATTRIBUTES: list[MessageSystemAttributeNameType] = ["SentTimestamp", "ApproximateReceiveCount"]


def parse_message(raw: Any, received_at: float) -> ReceivedMessage:
    """A received SQS message, decoded; raises MessageDecodeError for poison."""
    attributes = raw.get("Attributes", {})
    sent = attributes.get("SentTimestamp")
    records = decode_body(raw.get("Body", ""))
    return ReceivedMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        records=records,
        received_at=received_at,
        sent_at=int(sent) / 1000.0 if sent else None,
        receive_count=receive_count(raw),
    )


def receive_count(raw: Any) -> int:
    return int(raw.get("Attributes", {}).get("ApproximateReceiveCount", 1))


@dataclass(frozen=True)
class DeleteOutcome:
    deleted: int
    failed: int


@dataclass(frozen=True)
class ExtendOutcome:
    """Which messages had their visibility extended; the rest failed and keep their old deadline."""

    extended: list[ReceivedMessage]
    failed: list[tuple[ReceivedMessage, str]]
    """Each failed message with the reason: SQS's error code and message, or the call's exception."""


class QueueClient:
    """The consumer's SQS operations (receive, delete, extend visibility) on one shared async client."""

    def __init__(self, client: SQSClient, queue_url: str, wait_time_s: int) -> None:
        self._client = client
        self.queue_url = queue_url
        self.wait_time_s = wait_time_s

    async def receive(self) -> list[Any]:
        """One long poll: up to 10 raw messages (possibly none)."""
        response = await self._client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=MAX_MESSAGES,
            WaitTimeSeconds=self.wait_time_s,
            MessageSystemAttributeNames=SYSTEM_ATTRIBUTES,
        )
        return list(response.get("Messages", []))

    async def delete(self, messages: Sequence[ReceivedMessage], batch_id: str) -> DeleteOutcome:
        """Delete ``messages`` in concurrent chunks of 10; failures are logged, not raised.

        A message not deleted comes back and is stored twice: a duplicate, never a loss.
        """
        chunks = [messages[i : i + MAX_MESSAGES] for i in range(0, len(messages), MAX_MESSAGES)]
        results = await asyncio.gather(*(self._delete_chunk(chunk, batch_id) for chunk in chunks))
        return DeleteOutcome(deleted=sum(r.deleted for r in results), failed=sum(r.failed for r in results))

    async def _delete_chunk(self, chunk: Sequence[ReceivedMessage], batch_id: str) -> DeleteOutcome:
        entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle} for i, m in enumerate(chunk)
        ]
        try:
            response = await self._client.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            log.error("batch %s: deleting %d message(s) failed: %r", batch_id, len(chunk), exc)
            return DeleteOutcome(deleted=0, failed=len(chunk))
        failed = response.get("Failed", [])
        for entry in failed:
            message = chunk[int(entry["Id"])]
            log.error(
                "batch %s: message %s not deleted: %s %s",
                batch_id,
                message.message_id,
                entry.get("Code"),
                entry.get("Message", ""),
            )
        return DeleteOutcome(deleted=len(response.get("Successful", [])), failed=len(failed))

    async def extend(self, messages: Sequence[ReceivedMessage], timeout_s: int) -> ExtendOutcome:
        """Make ``messages`` invisible for ``timeout_s`` more seconds, in concurrent chunks of 10.

        Never raises: a failed call fails its whole chunk, and the caller decides what to
        log (a message deleted meanwhile fails harmlessly with ReceiptHandleIsInvalid).
        """
        chunks = [messages[i : i + MAX_MESSAGES] for i in range(0, len(messages), MAX_MESSAGES)]
        results = await asyncio.gather(*(self._extend_chunk(chunk, timeout_s) for chunk in chunks))
        return ExtendOutcome(
            extended=[m for r in results for m in r.extended], failed=[f for r in results for f in r.failed]
        )

    async def _extend_chunk(self, chunk: Sequence[ReceivedMessage], timeout_s: int) -> ExtendOutcome:
        entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": timeout_s}
            for i, m in enumerate(chunk)
        ]
        try:
            response = await self._client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)
        except Exception as exc:
            return ExtendOutcome(extended=[], failed=[(m, repr(exc)) for m in chunk])
        failed = [
            (chunk[int(entry["Id"])], f"{entry.get('Code')} {entry.get('Message', '')}".rstrip())
            for entry in response.get("Failed", [])
        ]
        extended = [chunk[int(entry["Id"])] for entry in response.get("Successful", [])]
        return ExtendOutcome(extended=extended, failed=failed)
