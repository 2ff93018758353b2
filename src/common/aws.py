"""AWS clients, created the same way for moto and for real AWS.

``AWS_ENDPOINT_URL`` is the only difference. Credentials from the settings are passed
explicitly: values from ``.env`` are not in ``os.environ``, where botocore would look.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import botocore.session
from botocore.config import Config

from src.common.settings import CommonSettings

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client as SyncS3Client
    from mypy_boto3_sqs.client import SQSClient as SyncSQSClient
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_sqs.client import SQSClient
else:
    S3Client = Any
    SQSClient = Any
    SyncS3Client = Any
    SyncSQSClient = Any


def _client_kwargs(settings: CommonSettings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"region_name": settings.aws_default_region}
    if settings.aws_endpoint_url:
        kwargs["endpoint_url"] = settings.aws_endpoint_url
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    return kwargs


@asynccontextmanager
async def _async_client(service: Literal["sqs", "s3"], settings: CommonSettings, **config: Any) -> AsyncIterator[Any]:
    # Imported here: the aggregator and the scripts need only botocore, and this import is slow.
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    async with get_session().create_client(service, config=AioConfig(**config), **_client_kwargs(settings)) as client:
        yield client


@asynccontextmanager
async def sqs_client(
    settings: CommonSettings,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    max_attempts: int = 3,
    max_pool_connections: int = 50,
) -> AsyncIterator[SQSClient]:
    """One long-lived async SQS client; the caller bounds its timeouts to its own needs."""
    async with _async_client(
        "sqs",
        settings,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    ) as client:
        yield client


@asynccontextmanager
async def s3_client(
    settings: CommonSettings,
    *,
    connect_timeout_s: float = 5.0,
    read_timeout_s: float = 60.0,
    max_attempts: int = 3,
    max_pool_connections: int = 10,
) -> AsyncIterator[S3Client]:
    """One long-lived async S3 client (the consumer's uploads)."""
    async with _async_client(
        "s3",
        settings,
        connect_timeout=connect_timeout_s,
        read_timeout=read_timeout_s,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    ) as client:
        yield client


@overload
def sync_client(service: Literal["sqs"], settings: CommonSettings) -> SyncSQSClient: ...
@overload
def sync_client(service: Literal["s3"], settings: CommonSettings) -> SyncS3Client: ...
def sync_client(service: Literal["sqs", "s3"], settings: CommonSettings) -> SyncSQSClient | SyncS3Client:
    """A blocking client for scripts (setup, redrive, prune) and the aggregator's readers."""
    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 5, "mode": "standard"})
    client = botocore.session.get_session().create_client(service, config=config, **_client_kwargs(settings))
    if service == "s3":
        return cast("SyncS3Client", client)
    return cast("SyncSQSClient", client)


async def resolve_queue_url(client: SQSClient, settings: CommonSettings) -> str:
    """The queue URL from the settings, or looked up by name (one call, at start)."""
    if settings.sqs_queue_url:
        return settings.sqs_queue_url
    response = await client.get_queue_url(QueueName=settings.sqs_queue_name)
    return response["QueueUrl"]
