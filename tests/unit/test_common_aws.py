"""AWS clients: the same code reaches moto and real AWS, pointed only by the settings."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from src.common.aws import _client_kwargs, resolve_queue_url, sqs_client, sync_client
from src.common.settings import CommonSettings
from src.ops.queues import Queues


def write_env(directory: Path, text: str) -> None:
    (directory / ".env").write_text(text, encoding="utf-8")


# --- _client_kwargs -------------------------------------------------------------------


def test_client_kwargs_without_endpoint_or_credentials_leaves_botocore_to_its_chain() -> None:
    # Unset endpoint means real AWS; unset credentials mean botocore's own lookup.
    assert _client_kwargs(CommonSettings()) == {"region_name": "us-east-1"}


def test_client_kwargs_passes_endpoint_region_and_credentials_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-test")
    assert _client_kwargs(CommonSettings()) == {
        "region_name": "eu-central-1",
        "endpoint_url": "http://127.0.0.1:4566",
        "aws_access_key_id": "AKIDTEST",
        "aws_secret_access_key": "secret-test",
    }


def test_client_kwargs_passes_credentials_read_from_dotenv(isolated_env: Path) -> None:
    # .env values are not in os.environ, where botocore would look: they must be passed.
    write_env(isolated_env, "AWS_ACCESS_KEY_ID=from-dotenv\nAWS_SECRET_ACCESS_KEY=dotenv-secret\n")
    kwargs = _client_kwargs(CommonSettings())
    assert kwargs["aws_access_key_id"] == "from-dotenv"
    assert kwargs["aws_secret_access_key"] == "dotenv-secret"


def test_client_kwargs_blank_endpoint_is_not_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    assert "endpoint_url" not in _client_kwargs(CommonSettings())


@pytest.mark.parametrize(
    "variables",
    [
        pytest.param({"AWS_ACCESS_KEY_ID": "AKIDTEST"}, id="key-id-only"),
        pytest.param({"AWS_SECRET_ACCESS_KEY": "secret-test"}, id="secret-only"),
        pytest.param({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "secret-test"}, id="blank-key-id"),
        pytest.param({"AWS_ACCESS_KEY_ID": "AKIDTEST", "AWS_SECRET_ACCESS_KEY": ""}, id="blank-secret"),
    ],
)
def test_client_kwargs_passes_credentials_only_as_a_complete_pair(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    kwargs = _client_kwargs(CommonSettings())
    assert "aws_access_key_id" not in kwargs
    assert "aws_secret_access_key" not in kwargs


# --- clients against the embedded AWS ------------------------------------------------


async def test_async_sqs_client_reaches_the_endpoint_from_settings(aws_env: str) -> None:
    name = f"aws-test-{uuid.uuid4().hex[:10]}"
    async with sqs_client(CommonSettings(), connect_timeout_s=2, read_timeout_s=5, max_attempts=1) as client:
        created = (await client.create_queue(QueueName=name))["QueueUrl"]
        assert created.endswith(f"/{name}")
        assert created.startswith(aws_env)
        listed = await client.list_queues(QueueNamePrefix=name)
        assert listed["QueueUrls"] == [created]
        await client.delete_queue(QueueUrl=created)


async def test_async_sqs_client_sends_and_receives(queues: Queues) -> None:
    async with sqs_client(CommonSettings()) as client:
        await client.send_message(QueueUrl=queues.url, MessageBody="hello")
        response = await client.receive_message(QueueUrl=queues.url, WaitTimeSeconds=1)
        assert [m["Body"] for m in response["Messages"]] == ["hello"]


def test_sync_client_reaches_the_endpoint_from_settings(aws_env: str) -> None:
    name = f"aws-test-{uuid.uuid4().hex[:10]}"
    client = sync_client("sqs", CommonSettings())
    url = client.create_queue(QueueName=name)["QueueUrl"]
    assert url.startswith(aws_env)
    assert client.list_queues(QueueNamePrefix=name)["QueueUrls"] == [url]
    client.delete_queue(QueueUrl=url)


async def test_resolve_queue_url_looks_the_queue_up_by_name(queues: Queues) -> None:
    settings = CommonSettings()
    assert settings.sqs_queue_url is None
    async with sqs_client(settings) as client:
        assert await resolve_queue_url(client, settings) == queues.url


class NoCallsClient:
    """A client that fails the test if anything is asked of it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"resolve_queue_url called {name} although SQS_QUEUE_URL is set")


async def test_resolve_queue_url_uses_sqs_queue_url_without_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQS_QUEUE_URL", "http://127.0.0.1:4566/000000000000/explicit")
    settings = CommonSettings()
    assert await resolve_queue_url(NoCallsClient(), settings) == "http://127.0.0.1:4566/000000000000/explicit"


async def test_resolve_queue_url_prefers_sqs_queue_url_over_name(
    queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SQS_QUEUE_URL", queues.dlq_url)
    settings = CommonSettings()
    async with sqs_client(settings) as client:
        assert await resolve_queue_url(client, settings) == queues.dlq_url


async def test_resolve_queue_url_of_missing_queue_raises(aws_env: str) -> None:
    settings = CommonSettings()  # aws_env names a queue nobody created
    async with sqs_client(settings, max_attempts=1) as client:
        with pytest.raises(client.exceptions.QueueDoesNotExist):
            await resolve_queue_url(client, settings)
