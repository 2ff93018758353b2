"""The embedded stack's own bookkeeping, without starting anything (the integration tests start it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.embedded.stack import EmbeddedStack, StackConfig


def stack(tmp_path: Path, **config: object) -> EmbeddedStack:
    return EmbeddedStack(StackConfig(data_dir=tmp_path / "data", log_dir=tmp_path / "logs", api_key="k", **config))


def test_restart_names_the_services_it_knows(tmp_path: Path) -> None:
    """A typo is an error naming the services, not a silent no-op or a half-started stack."""
    with pytest.raises(ValueError, match="moto, receiver or consumer-N"):
        stack(tmp_path).restart("consumer-x")


def test_settings_carry_the_stacks_visibility_timeout_to_the_queue(tmp_path: Path) -> None:
    """The queue the stack provisions and the consumers it starts get the same VISIBILITY_TIMEOUT_S."""
    quick = stack(tmp_path, visibility_timeout_s=3)
    assert quick.settings().visibility_timeout_s == 3
    assert quick.env()["VISIBILITY_TIMEOUT_S"] == "3"
    assert stack(tmp_path).settings().visibility_timeout_s == 30
    assert "VISIBILITY_TIMEOUT_S" not in stack(tmp_path).env()
