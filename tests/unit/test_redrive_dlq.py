"""scripts/redrive_dlq.py against the embedded SQS: the dry run changes nothing, --apply never loses a message.

Messages are put into the dead-letter queue directly (what SQS's redrive does after five
receives is SQS's business, not this script's).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from src.common.aws import SyncSQSClient, sync_client
from src.common.envelope import encode_envelope, encode_record, serialize
from src.common.schema import StoredReading
from src.common.settings import CommonSettings
from src.ops import redrive as redrive_dlq
from src.ops.queues import Queues
from src.ops.redrive import Options, describe, inspect, main, parse_args, redrive, restore_visibility
from tests.factories import reading_dict
from tests.paths import REPO_ROOT

POISON = "not json at all"


def stored(i: int) -> StoredReading:
    now = datetime.now(UTC)
    return StoredReading.model_validate(reading_dict(f"veh-{i:05d}", now - timedelta(seconds=1), received=now))


VALID_ONE = encode_record(stored(1))
VALID_THREE = encode_envelope([serialize(stored(i)) for i in (2, 3, 4)])


def client() -> SyncSQSClient:
    return sync_client("sqs", CommonSettings())


def put(url: str, *bodies: str) -> list[str]:
    """Send ``bodies`` to the queue at ``url``; their message ids, in order."""
    sqs = client()
    return [sqs.send_message(QueueUrl=url, MessageBody=body)["MessageId"] for body in bodies]


def counts(url: str) -> tuple[int, int]:
    """(visible, in flight) messages of the queue."""
    attrs = client().get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def drain(url: str) -> list[dict[str, Any]]:
    """Every message of the queue (received, not deleted): body and message attributes."""
    sqs = client()
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, VisibilityTimeout=60, MessageAttributeNames=["All"]
    ).get("Messages", []):
        messages.extend(batch)
    return messages


def bodies(url: str) -> list[str]:
    return sorted(message["Body"] for message in drain(url))


@pytest.fixture(autouse=True)
def short_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto answers every receive from one server: the script's last, empty long poll may be instant."""
    monkeypatch.setattr(redrive_dlq, "RECEIVE_WAIT_S", 0)


@pytest.fixture
def dead_letters(queues: Queues) -> list[str]:
    """Two valid messages (v1, and a v2 envelope of three readings) and one poison, in the DLQ."""
    return put(queues.dlq_url, VALID_ONE, VALID_THREE, POISON)


def test_dry_run_lists_every_message_and_changes_nothing(
    queues: Queues, dead_letters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The default only looks: every message listed with its verdict, all of them visible again at once."""
    assert main([]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for message_id, verdict in zip(
        dead_letters,
        ["would move: valid, 1 reading", "would move: valid, 3 readings", "would move: poison: body is not JSON"],
        strict=True,
    ):
        (line,) = [line for line in lines if line.startswith(message_id)]
        assert verdict in line
        assert "receives=1" in line and "sent=20" in line and "Z  bytes=" in line
    assert f"bytes={len(VALID_THREE.encode())}" in out
    assert lines[-1] == "dry run: would move 3, would leave 0; nothing changed (--apply moves)"
    assert counts(queues.dlq_url) == (3, 0)  # visible again at once, not after a visibility timeout
    assert counts(queues.url) == (0, 0)


def test_dry_run_of_only_valid_shows_poison_staying(
    queues: Queues, dead_letters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--only-valid"]) == 0
    out = capsys.readouterr().out
    assert "would leave: poison: body is not JSON" in out
    assert out.splitlines()[-1] == "dry run: would move 2, would leave 1; nothing changed (--apply moves)"
    assert counts(queues.dlq_url) == (3, 0)
    assert counts(queues.url) == (0, 0)


def test_apply_moves_every_message_back_unchanged(
    queues: Queues, dead_letters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--apply: the source queue holds the same bodies, the DLQ nothing."""
    assert main(["--apply"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "moved 3, left 0, failed 0"
    assert counts(queues.dlq_url) == (0, 0)
    assert bodies(queues.url) == sorted([VALID_ONE, VALID_THREE, POISON])


def test_apply_only_valid_leaves_poison_in_the_dlq_visible(
    queues: Queues, dead_letters: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--apply", "--only-valid"]) == 0
    out = capsys.readouterr().out
    assert f"{dead_letters[2]}  " in out and "left: poison: body is not JSON" in out
    assert out.splitlines()[-1] == "moved 2, left 1, failed 0"
    assert counts(queues.dlq_url) == (1, 0)
    assert bodies(queues.dlq_url) == [POISON]
    assert bodies(queues.url) == sorted([VALID_ONE, VALID_THREE])


def test_max_bounds_how_many_are_moved(queues: Queues, capsys: pytest.CaptureFixture[str]) -> None:
    put(queues.dlq_url, *(encode_record(stored(i)) for i in range(14)))
    assert main(["--apply", "--max", "12"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "moved 12, left 0, failed 0"
    assert counts(queues.url) == (12, 0)
    assert counts(queues.dlq_url) == (2, 0)


def test_message_attributes_travel_with_the_message(queues: Queues) -> None:
    client().send_message(
        QueueUrl=queues.dlq_url,
        MessageBody=VALID_ONE,
        MessageAttributes={"origin": {"DataType": "String", "StringValue": "gw-7"}},
    )
    assert main(["--apply"]) == 0
    (moved,) = drain(queues.url)
    assert moved["Body"] == VALID_ONE
    assert moved["MessageAttributes"]["origin"]["StringValue"] == "gw-7"


def failing_client(monkeypatch: pytest.MonkeyPatch, operation: str, body: str) -> None:
    """Make the script's client fail ``operation`` for the message whose body is ``body``."""
    sqs = client()
    real = getattr(sqs, operation)
    handles: set[str] = set()
    real_receive = sqs.receive_message

    def receive_message(**kwargs: Any) -> Any:
        response = real_receive(**kwargs)
        handles.update(m["ReceiptHandle"] for m in response.get("Messages", []) if m["Body"] == body)
        return response

    def failing(**kwargs: Any) -> Any:
        if kwargs.get("MessageBody") == body or kwargs.get("ReceiptHandle") in handles:
            raise ConnectionError(f"{operation} refused")
        return real(**kwargs)

    monkeypatch.setattr(sqs, "receive_message", receive_message)
    monkeypatch.setattr(sqs, operation, failing)
    monkeypatch.setattr(redrive_dlq, "sync_client", lambda service, settings: sqs)


def test_failed_send_keeps_the_message_in_the_dlq_and_exits_non_zero(
    queues: Queues, dead_letters: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing is deleted from the DLQ unless the source queue accepted it first."""
    failing_client(monkeypatch, "send_message", VALID_THREE)
    assert main(["--apply"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (not sent, still in the DLQ: ConnectionError('send_message refused'))" in out
    assert out.splitlines()[-1] == "moved 2, left 0, failed 1"
    assert counts(queues.dlq_url) == (1, 0)  # still there, and visible for the next attempt
    assert bodies(queues.dlq_url) == [VALID_THREE]
    assert bodies(queues.url) == sorted([VALID_ONE, POISON])


def test_failed_delete_after_send_duplicates_rather_than_loses(
    queues: Queues, dead_letters: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    failing_client(monkeypatch, "delete_message", VALID_ONE)
    assert main(["--apply"]) == 1
    out = capsys.readouterr().out
    assert "FAILED (sent, but not deleted from the DLQ (a duplicate remains there)" in out
    assert out.splitlines()[-1] == "moved 2, left 0, failed 1"
    assert bodies(queues.dlq_url) == [VALID_ONE]
    assert bodies(queues.url) == sorted([VALID_ONE, VALID_THREE, POISON])


def test_missing_queue_exits_2(aws_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "queue does not exist" in capsys.readouterr().err


def test_queue_url_from_settings_is_the_destination(
    queues: Queues, dead_letters: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = client().create_queue(QueueName=f"{CommonSettings().sqs_queue_name}-other")["QueueUrl"]
    monkeypatch.setenv("SQS_QUEUE_URL", other)
    assert main(["--apply", "--only-valid"]) == 0
    assert bodies(other) == sorted([VALID_ONE, VALID_THREE])
    assert counts(queues.url) == (0, 0)


def test_messages_that_reappear_are_listed_once_and_end_the_loop(
    queues: Queues,
    dead_letters: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If looking outlasts the visibility timeout, messages come back: never counted twice, never an endless loop."""
    monkeypatch.setattr(redrive_dlq, "LOOK_VISIBILITY_S", 0)
    sqs = client()
    summary = redrive(sqs, queues.dlq_url, queues.url, Options(apply=False, only_valid=False, max_messages=100))
    assert summary == redrive_dlq.Summary(moved=3, left=0, failed=0)
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert any("only messages already looked at came back" in r.getMessage() for r in caplog.records)
    assert counts(queues.dlq_url) == (3, 0)


def test_restoring_visibility_never_raises(queues: Queues, caplog: pytest.LogCaptureFixture) -> None:
    """A handle SQS refuses (or SQS itself failing) is logged: the message reappears after the timeout anyway."""
    sqs = client()
    restore_visibility(sqs, queues.dlq_url, ["not-a-receipt-handle"])
    restore_visibility(sqs, queues.dlq_url + "-missing", ["whatever"])
    messages = [r.getMessage() for r in caplog.records]
    assert any("a message is left hidden for up to 30 s" in m for m in messages)
    assert any("1 message(s) left hidden for up to 30 s" in m for m in messages)


def test_a_message_without_attributes_is_described_with_unknowns() -> None:
    letter = inspect({"MessageId": "m-1", "ReceiptHandle": "h", "Body": orjson.dumps({"v": 3}).decode()})
    assert not letter.valid
    assert describe(letter, "would move") == (
        "m-1  receives=0  sent=?  bytes=7  would move: poison: unknown envelope version 3"
    )


def test_max_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--max", "5"]).max == 5
    assert parse_args([]).max is None
    with pytest.raises(SystemExit):
        parse_args(["--max", "0"])
    assert "must be a positive integer" in capsys.readouterr().err


def test_runs_as_a_script_from_a_checkout(queues: Queues, dead_letters: list[str], isolated_env: Path) -> None:
    """`python scripts/redrive_dlq.py` works without PYTHONPATH, reading settings from the environment."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "redrive_dlq.py"), "--only-valid"],
        cwd=isolated_env,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "dry run: would move 2, would leave 1; nothing changed (--apply moves)"
    assert counts(queues.dlq_url) == (3, 0)
