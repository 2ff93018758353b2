"""API key checks for the ingest endpoints.

Keys are compared in constant time, and against every configured key without stopping at
the first match, so neither the response time nor the key's position in the rotation list
tells an attacker how close a guess was.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

API_KEY_HEADER = "X-API-Key"

api_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="One of the keys in API_KEY")


class KeyChecker:
    """Holds the accepted keys (several during a rotation) as bytes, ready for comparison."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(key.encode() for key in keys)
        if not self._keys:
            raise ValueError("at least one API key is required")

    def accepts(self, presented: str | None) -> bool:
        if presented is None:
            return False
        candidate = presented.encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        return matched


async def require_api_key(request: Request, presented: str | None = Security(api_key_header)) -> None:
    """A route dependency: runs before the body is read, so unauthenticated bodies cost nothing."""
    checker: KeyChecker = request.app.state.runtime.keys
    if not checker.accepts(presented):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
