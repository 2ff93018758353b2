"""The embedded stack's own bookkeeping, without starting anything (the integration tests start it)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from src.embedded.stack import EmbeddedStack, StackConfig


def stack(tmp_path: Path, **config: object) -> EmbeddedStack:
    return EmbeddedStack(StackConfig(data_dir=tmp_path / "data", log_dir=tmp_path / "logs", api_key="k", **config))


def test_restart_names_the_services_it_knows(tmp_path: Path) -> None:
    """A typo is an error naming the services, not a silent no-op or a half-started stack."""
    with pytest.raises(ValueError, match="moto, receiver, consumer-N or dashboard"):
        stack(tmp_path).restart("consumer-x")


def test_settings_carry_the_stacks_visibility_timeout_to_the_queue(tmp_path: Path) -> None:
    """The queue the stack provisions and the consumers it starts get the same VISIBILITY_TIMEOUT_S."""
    quick = stack(tmp_path, visibility_timeout_s=3)
    assert quick.settings().visibility_timeout_s == 3
    assert quick.env()["VISIBILITY_TIMEOUT_S"] == "3"
    assert stack(tmp_path).settings().visibility_timeout_s == 30
    assert "VISIBILITY_TIMEOUT_S" not in stack(tmp_path).env()


@pytest.mark.parametrize("own", [True, False])
def test_services_get_process_groups_of_their_own_when_asked(tmp_path: Path, own: bool) -> None:
    """With own_process_groups a terminal's Ctrl-C (sent to the foreground group) reaches only the owner."""
    quick = stack(tmp_path, own_process_groups=own)
    quick.config.log_dir.mkdir()
    service = quick._spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert (os.getpgid(service.process.pid) == service.process.pid) is own
        assert (os.getpgid(service.process.pid) == os.getpgid(0)) is not own
    finally:
        quick.stop()
    assert service.process.returncode is not None


def test_the_dashboard_url_needs_a_started_dashboard_and_a_free_port(tmp_path: Path) -> None:
    quick = stack(tmp_path)
    with pytest.raises(RuntimeError, match="start_dashboard"):
        _ = quick.dashboard_url
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="is in use"):
            quick.start_dashboard(taken.getsockname()[1])
    assert quick.services == []
