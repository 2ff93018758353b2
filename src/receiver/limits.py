"""Reading request bodies without letting a client make the receiver read too much.

The limit is enforced twice: up front from ``Content-Length``, and while streaming, since a
chunked body announces no length. Reading stops at the first byte past the limit.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, status


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"request body exceeds {limit} bytes",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body if it is at most ``limit`` bytes; raises a 413 HTTPException otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)
