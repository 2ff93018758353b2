"""The dashboard's static files and its three HTML pages (pipeline, fleet, vehicle), each page read once.

The pages are package data and never change while the app runs, so each is read at import (before the
event loop serves anything) and kept as text; the routes only format or send it.
"""

from __future__ import annotations

import functools
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"


@functools.cache
def page(name: str) -> str:
    """``static/<name>`` as text, read on first use and kept."""
    return (STATIC_DIR / name).read_text(encoding="utf-8")
