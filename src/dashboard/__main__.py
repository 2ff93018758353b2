"""``python -m src.dashboard [--host 127.0.0.1] [--port 8050]``: the dashboard under uvicorn, loopback by default.

The same app as ``uvicorn src.dashboard.app:app --port 8050``, with one guard more: it will
not listen beyond loopback unless ``DASHBOARD_TOKEN`` is set.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence

import uvicorn

from src.common.logs import LOG_FORMAT
from src.common.settings import DashboardSettings

log = logging.getLogger("src.dashboard")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8050


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m src.dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not is_loopback(args.host) and DashboardSettings().dashboard_token is None:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        log.error("refusing to listen on %s without DASHBOARD_TOKEN: set one, or keep the default 127.0.0.1", args.host)
        return 2
    uvicorn.run("src.dashboard.app:app", host=args.host, port=args.port, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
