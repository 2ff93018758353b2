"""The telemetry queue and its dead-letter queue, created or repaired idempotently.

Every attribute comes from :class:`~src.common.settings.QueueSettings`, the same object
the consumer reads, so the queue and the consumer cannot disagree about it.
``python scripts/setup_sqs.py`` prints the queue URL last.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

from src.common.aws import SyncSQSClient, sync_client
from src.common.logs import configure_logging
from src.common.settings import QueueSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Queues:
    url: str
    dlq_url: str
    dlq_arn: str


def queue_attributes(settings: QueueSettings, dlq_arn: str) -> dict[str, str]:
    """The telemetry queue's attributes, redriving to ``dlq_arn``."""
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receives)}
    return {
        "MessageRetentionPeriod": str(settings.queue_retention_s),
        "VisibilityTimeout": str(settings.visibility_timeout_s),
        "ReceiveMessageWaitTimeSeconds": str(settings.wait_time_s),
        "RedrivePolicy": json.dumps(redrive),
    }


def provision_queues(settings: QueueSettings, client: SyncSQSClient | None = None) -> Queues:
    """Create (or bring up to date) the queue and its dead-letter queue; return their URLs.

    ``CreateQueue`` is idempotent only while attributes match, so existing queues get
    their attributes set instead, which also repairs a queue changed by hand.
    """
    sqs = client or sync_client("sqs", settings)
    dlq_url = _ensure(sqs, settings.dlq_name, {"MessageRetentionPeriod": str(settings.dlq_retention_s)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = _ensure(sqs, settings.sqs_queue_name, queue_attributes(settings, dlq_arn))
    return Queues(url=url, dlq_url=dlq_url, dlq_arn=dlq_arn)


def _ensure(sqs: SyncSQSClient, name: str, attributes: dict[str, str]) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except sqs.exceptions.QueueDoesNotExist:
        log.info("creating queue %s", name)
        return sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]  # type: ignore[arg-type]
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)  # type: ignore[arg-type]
    log.info("queue %s exists; attributes set", name)
    return url


def main() -> int:
    """``scripts/setup_sqs.py``: provision both queues, print the DLQ's URL to stderr and the queue's last."""
    settings = QueueSettings()
    configure_logging(settings.log_level, settings.log_format)
    queues = provision_queues(settings)
    print(f"dead-letter queue: {queues.dlq_url}", file=sys.stderr)
    print(queues.url)
    return 0
