"""Creating the queues the contract describes, idempotently.

Kept beside the clients rather than in the setup script so that tests, the demo and the
load test provision exactly what operators get from ``scripts/setup_sqs.py``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from src.common.aws import SyncSQSClient, sync_client
from src.common.settings import CommonSettings

log = logging.getLogger(__name__)

RETENTION_S = 345_600  # 4 days
VISIBILITY_TIMEOUT_S = 30
RECEIVE_WAIT_S = 20
MAX_RECEIVES = 5  # then SQS moves the message to the dead-letter queue
DLQ_RETENTION_S = 1_209_600  # 14 days, SQS's maximum: dead letters wait for a human


@dataclass(frozen=True)
class Queues:
    url: str
    dlq_url: str
    dlq_arn: str


def provision_queues(settings: CommonSettings, client: SyncSQSClient | None = None) -> Queues:
    """Create (or bring up to date) the queue and its dead-letter queue; return their URLs.

    ``CreateQueue`` is idempotent only while attributes match, so existing queues get
    their attributes set instead, which also repairs a queue created by hand.
    """
    sqs = client or sync_client("sqs", settings)
    dlq_url = _ensure(sqs, settings.dlq_name, {"MessageRetentionPeriod": str(DLQ_RETENTION_S)})
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = _ensure(
        sqs,
        settings.sqs_queue_name,
        {
            "MessageRetentionPeriod": str(RETENTION_S),
            "VisibilityTimeout": str(VISIBILITY_TIMEOUT_S),
            "ReceiveMessageWaitTimeSeconds": str(RECEIVE_WAIT_S),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVES)}),
        },
    )
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
