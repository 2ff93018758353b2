"""One logging setup for every process: the level asked for, the AWS libraries' chatter quieted."""

from __future__ import annotations

import logging

import pytest

from src.common.logs import LOG_FORMAT, configure_logging

NOISY = ("botocore", "aiobotocore", "urllib3", "asyncio")


@pytest.mark.parametrize(
    ("level", "expected"), [("INFO", logging.INFO), ("debug", logging.DEBUG), ("Warning", logging.WARNING)]
)
def test_configure_logging_sets_the_root_level_case_insensitively(level: str, expected: int) -> None:
    configure_logging(level)
    assert logging.getLogger().level == expected


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_configure_logging_quiets_botocore_and_friends_below_warning(level: str) -> None:
    configure_logging(level)
    for name in NOISY:
        assert logging.getLogger(name).level == logging.WARNING
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
    assert logging.getLogger("src.consumer").isEnabledFor(logging.getLevelName(level))


def test_configure_logging_does_not_make_libraries_louder_than_the_root() -> None:
    configure_logging("ERROR")
    for name in NOISY:
        assert logging.getLogger(name).level == logging.ERROR


def test_configure_logging_uses_the_shared_format() -> None:
    configure_logging("INFO")
    formats = [h.formatter._fmt for h in logging.getLogger().handlers if h.formatter is not None]
    assert LOG_FORMAT in formats


def test_configure_logging_replaces_earlier_setup_rather_than_doubling_lines() -> None:
    configure_logging("INFO")
    configure_logging("DEBUG")
    ours = [h for h in logging.getLogger().handlers if h.formatter is not None and h.formatter._fmt == LOG_FORMAT]
    assert len(ours) == 1
    assert logging.getLogger().level == logging.DEBUG


def test_configure_logging_rejects_unknown_level() -> None:
    with pytest.raises(ValueError):
        configure_logging("LOUD")
