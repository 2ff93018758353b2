"""One logging setup for every process, so their lines read alike side by side.

Text by default, for people at a terminal; with ``LOG_FORMAT=json`` one JSON object per
line, for log collectors: ``ts`` (UTC), ``level``, ``logger``, ``message`` (the same
text), anything passed in ``extra=``, and ``exception`` when there is one.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import orjson

LOG_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"
LogFormat = Literal["text", "json"]

_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
"""What every LogRecord carries; anything else on a record came in through ``extra=``."""


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Log to stderr at ``level``; quiet the AWS and HTTP libraries' chatter below WARNING."""
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, force=True)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    for noisy in ("botocore", "aiobotocore", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
