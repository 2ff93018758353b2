"""Reading request bodies without letting a client make the receiver read too much.

The limit is enforced twice: up front from ``Content-Length``, and while streaming, since a
chunked body announces no length. Reading stops at the first byte past the limit.
"""

from __future__ import annotations

from starlette.types import Receive


class BodyTooLarge(Exception):
    """The body is, or announced that it would be, longer than the endpoint's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class ClientDisconnected(Exception):
    """The client went away before its body was complete: there is nobody to answer."""


async def read_body(receive: Receive, limit: int, declared_length: bytes | None) -> bytes:
    """The whole body from ASGI ``receive`` if it is at most ``limit`` bytes.

    ``declared_length`` is the raw ``Content-Length`` header, if any; a value that is not a
    number is ignored here (the streaming limit still holds). Raises :class:`BodyTooLarge`
    or :class:`ClientDisconnected`.
    """
    if declared_length is not None and declared_length.strip().isdigit() and int(declared_length) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body += message.get("body", b"")
        if len(body) > limit:
            raise BodyTooLarge(limit)
        if not message.get("more_body", False):
            return bytes(body)
