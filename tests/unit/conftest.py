"""Fixtures the unit tests of more than one module share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeReceiver


@pytest.fixture
def receiver() -> Iterator[FakeReceiver]:
    """The generator's fake receiver, listening for this test: what the sender and simulator tests send to."""
    fake = FakeReceiver()
    fake.start()
    yield fake
    fake.stop()
