"""Integration fixtures: the real processes (moto server, uvicorn, consumer) on free loopback ports."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.embedded_stack import EmbeddedStack, StackConfig


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
