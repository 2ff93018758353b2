"""The queue setup operators run: the contract's attributes, from the settings the consumer reads too."""

from __future__ import annotations

import json

from src.common.aws import sync_client
from src.common.settings import CommonSettings, ConsumerSettings, QueueSettings
from src.ops import queues as queues_setup
from src.ops.queues import provision_queues


def test_queue_has_contract_attributes_and_redrive(queues) -> None:
    settings = CommonSettings()
    attrs = sync_client("sqs", settings).get_queue_attributes(QueueUrl=queues.url, AttributeNames=["All"])["Attributes"]
    assert attrs["MessageRetentionPeriod"] == "345600"
    assert attrs["VisibilityTimeout"] == "30"
    assert attrs["ReceiveMessageWaitTimeSeconds"] == "20"
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == queues.dlq_arn
    assert int(redrive["maxReceiveCount"]) == QueueSettings().max_receives == 5
    assert queues.dlq_url.endswith(f"{settings.sqs_queue_name}-dlq")


def test_provisioning_twice_returns_same_queues_and_repairs_attributes(queues) -> None:
    settings = CommonSettings()
    sqs = sync_client("sqs", settings)
    sqs.set_queue_attributes(QueueUrl=queues.url, Attributes={"VisibilityTimeout": "5"})
    again = provision_queues(QueueSettings())
    assert again == queues
    attrs = sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=["VisibilityTimeout"])["Attributes"]
    assert attrs["VisibilityTimeout"] == "30"


def test_the_queue_gets_the_visibility_timeout_the_consumer_reads(queues, monkeypatch) -> None:
    """One owner: VISIBILITY_TIMEOUT_S (and WAIT_TIME_S) set both the queue's attribute and the consumer's."""
    monkeypatch.setenv("VISIBILITY_TIMEOUT_S", "45")
    monkeypatch.setenv("WAIT_TIME_S", "7")
    provision_queues(QueueSettings())
    attrs = sync_client("sqs", CommonSettings()).get_queue_attributes(QueueUrl=queues.url, AttributeNames=["All"])[
        "Attributes"
    ]
    consumer = ConsumerSettings()
    assert (attrs["VisibilityTimeout"], attrs["ReceiveMessageWaitTimeSeconds"]) == ("45", "7")
    assert (consumer.visibility_timeout_s, consumer.wait_time_s) == (45, 7)


def test_setup_sqs_prints_the_queue_url_last(queues, capsys) -> None:
    """``python scripts/setup_sqs.py``: the DLQ's URL on stderr, the queue's URL as the last stdout line."""
    assert queues_setup.main() == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == queues.url
    assert queues.dlq_url in captured.err
