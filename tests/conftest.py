"""Fixtures every test shares: an isolated environment and an embedded AWS.

Unit tests talk to moto through ``ThreadedMotoServer`` (moto's server on a thread in
this process) rather than ``mock_aws``: aiobotocore's async HTTP layer does not go
through the hooks ``mock_aws`` patches, while a real HTTP endpoint works for both the
async and the blocking clients, exactly as the services use them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from pydantic_settings import BaseSettings

from src.common import settings as settings_module
from src.common.aws import sync_client
from src.common.settings import CommonSettings, QueueSettings
from src.ops.queues import Queues, provision_queues

SETTINGS_VARIABLES = tuple(
    sorted(
        {"AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        | {
            name.upper()
            for cls in vars(settings_module).values()
            if isinstance(cls, type) and issubclass(cls, BaseSettings)
            for name in cls.model_fields
        }
    )
)
"""Every variable a process reads: the settings' fields, and botocore's own."""


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in its own empty directory with none of the developer's settings.

    Settings read ``.env`` from the working directory, so a developer's own ``.env``
    must never leak into a test.
    """
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("METRICS_PORT", "0")  # tests that scrape the consumer pick a free port
    return tmp_path


# The libraries configure_logging quiets below WARNING (src/common/logs.py).
QUIETED_LOGGERS = ("botocore", "aiobotocore", "urllib3", "asyncio")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Put the root logger (and the quieted libraries' levels) back as they were.

    main() functions call ``configure_logging``, which replaces the root handlers with
    ones bound to pytest's captured stream for this test; undo it, so later tests do not
    log to a closed stream.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in QUIETED_LOGGERS}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One embedded AWS for the whole session, on a free loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every client at the embedded AWS, with a queue name of this test's own."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("SQS_QUEUE_NAME", f"telemetry-test-{uuid.uuid4().hex[:10]}")
    return moto_endpoint


@pytest.fixture
def bucket(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty bucket on the embedded S3, named in S3_BUCKET."""
    name = f"telemetry-test-{uuid.uuid4().hex[:10]}"
    sync_client("s3", CommonSettings()).create_bucket(Bucket=name)
    monkeypatch.setenv("S3_BUCKET", name)
    return name


@pytest.fixture
def queues(aws_env: str) -> Queues:
    """The contract's queue and dead-letter queue, fresh for this test."""
    return provision_queues(QueueSettings())
