"""Fixtures the unit tests of more than one module share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from src.common.settings import ReceiverSettings
from src.ops.queues import Queues
from tests.fakes import FakeReceiver
from tests.unit.test_receiver_support import API_KEY


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    """The generator's fake receiver, listening for this test: what the sender and simulator tests send to."""
    fake = FakeReceiver()
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture
def receiver_settings(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> ReceiverSettings:
    """Receiver settings for this test's fresh queue, with the key the receiver test helpers send."""
    monkeypatch.setenv("API_KEY", API_KEY)
    return ReceiverSettings()
