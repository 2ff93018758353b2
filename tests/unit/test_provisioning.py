"""The queue setup operators run: the contract's attributes, a redrive to the DLQ, idempotent."""

from __future__ import annotations

import json

from src.common.aws import sync_client
from src.common.provisioning import MAX_RECEIVES, provision_queues
from src.common.settings import CommonSettings


def test_queue_has_contract_attributes_and_redrive(queues) -> None:
    settings = CommonSettings()
    attrs = sync_client("sqs", settings).get_queue_attributes(QueueUrl=queues.url, AttributeNames=["All"])["Attributes"]
    assert attrs["MessageRetentionPeriod"] == "345600"
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == queues.dlq_arn
    assert int(redrive["maxReceiveCount"]) == MAX_RECEIVES
    assert queues.dlq_url.endswith(f"{settings.sqs_queue_name}-dlq")


def test_provisioning_twice_returns_same_queues_and_repairs_attributes(queues) -> None:
    settings = CommonSettings()
    sqs = sync_client("sqs", settings)
    sqs.set_queue_attributes(QueueUrl=queues.url, Attributes={"VisibilityTimeout": "5"})
    again = provision_queues(settings)
    assert again == queues
    attrs = sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"
