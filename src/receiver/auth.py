"""API key checks for the ingest endpoints.

Constant time, and against every configured key without stopping at the first match: the
response time tells nothing about a guess or the key's place in the rotation list.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

API_KEY_HEADER = "X-API-Key"
API_KEY_HEADER_ASGI = API_KEY_HEADER.lower().encode("latin-1")
"""The header's name as ASGI servers pass it: lower-case bytes."""


class KeyChecker:
    """Holds the accepted keys (several during a rotation) as bytes, ready for comparison."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)
        if not self._keys:
            raise ValueError("at least one API key is required")

    def accepts(self, presented: bytes | str | None) -> bool:
        """Whether ``presented`` (the raw header value, or text) is one of the keys."""
        if presented is None:
            return False
        candidate = presented.encode() if isinstance(presented, str) else presented
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched
