"""One logging setup for every process: the level asked for, the AWS libraries' chatter quieted."""

from __future__ import annotations

import logging

import orjson
import pytest
from pydantic import ValidationError

from src.common.logs import LOG_FORMAT, JsonFormatter, configure_logging
from src.common.settings import CommonSettings

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


def test_json_format_writes_one_object_per_line_with_context_and_exception(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=json: collectors get ts, level, logger, the message, extra= context and the traceback."""
    configure_logging("INFO", "json")
    log = logging.getLogger("src.consumer")
    log.info("batch %s flushed: readings=%d", "ab12cd", 100, extra={"batch_id": "ab12cd", "readings": 100})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("flush failed")
    first, second = (orjson.loads(line) for line in capsys.readouterr().err.splitlines())
    assert first["message"] == "batch ab12cd flushed: readings=100"
    assert (first["level"], first["logger"], first["batch_id"], first["readings"]) == (
        "INFO",
        "src.consumer",
        "ab12cd",
        100,
    )
    assert first["ts"].endswith("Z")
    assert "RuntimeError: boom" in second["exception"]
    assert all(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def test_log_format_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOG_FORMAT comes from the environment like every setting; anything but text or json is refused."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert CommonSettings().log_format == "json"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        CommonSettings()
