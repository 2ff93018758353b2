"""Integration fixtures: the real processes (moto server, uvicorn, consumer) on free loopback ports."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from src.embedded.stack import EmbeddedStack, StackConfig


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[EmbeddedStack]:
    """A whole pipeline of our own, stopped (consumer drained first) when the test ends."""
    config = StackConfig(
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        api_key=secrets.token_hex(16),
        env={"LOG_LEVEL": "INFO"},
    )
    with EmbeddedStack(config) as running:
        yield running


REDELIVERY_S = 4
"""The queue's visibility timeout in ``quick_redelivery_stack``: messages a killed consumer
held, or a failed write gave up, come back within a test rather than after 30 s."""


@pytest.fixture
def quick_redelivery_stack(tmp_path: Path) -> EmbeddedStack:
    """A pipeline not yet started (the test enters it), with redelivery after a few seconds."""
    config = StackConfig(
        data_dir=tmp_path / "data",
        log_dir=tmp_path / "logs",
        api_key=secrets.token_hex(16),
        env={"LOG_LEVEL": "INFO", "SQS_TIMEOUT_S": "3"},
        visibility_timeout_s=REDELIVERY_S,
    )
    return EmbeddedStack(config)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium of its own for a browser test (tests/integration/browser.py); skips without one."""
    from tests.integration.browser import chromium  # imported here: it skips the test where Chromium is missing

    with chromium(tmp_path) as driver:
        yield driver
