"""The SQS message codec: how stored readings travel through the queue.

Three body forms, all accepted by :func:`decode_body` (contract, "SQS message bodies"):
v1, one stored record; v2, ``{"v": 2, "records": [...]}``; v2 compressed,
``{"v": 2, "encoding": "zlib+base64", "data": "..."}``. A body that decodes holds only
records that validate as :class:`StoredReading` and that :func:`serialize` can write;
anything else is poison, raised as :class:`MessageDecodeError` with the reason.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from src.common.schema import StoredReading

ENVELOPE_VERSION = 2
ZLIB_BASE64 = "zlib+base64"
SQS_MAX_MESSAGE_BYTES = 262_144
"""SQS's limit on a message body (256 KiB)."""
MAX_INFLATED_BYTES = 16 * 1024 * 1024
"""The most a compressed envelope may inflate to (the receiver packs at most 1 MiB); beyond it, poison."""

COMPRESSION_LEVEL = 1
"""zlib's fastest level (why: docs/performance.md, "Packing readings into SQS messages")."""

_records_adapter: TypeAdapter[list[StoredReading]] = TypeAdapter(list[StoredReading])


class MessageDecodeError(ValueError):
    """A message body that is not a valid reading or envelope of readings (poison)."""


def encode_record(record: StoredReading) -> str:
    """A v1 body: one record on its own."""
    return record.model_dump_json()


def serialize(record: StoredReading) -> bytes:
    """A record's compact JSON, as it goes into envelopes and JSONL lines.

    The bytes of ``model_dump_json().encode()``, without the str round trip (a hot path).
    """
    return record.__pydantic_serializer__.to_json(record)


def encode_envelope(records_json: Sequence[bytes], *, compress: bool = False) -> str:
    """A v2 body carrying records already serialized by :func:`serialize`.

    Taking bytes rather than models lets callers size and pack records with one
    serialization each; the caller keeps the body under the SQS size limit (see
    :func:`pack`).
    """
    array = b"[" + b",".join(records_json) + b"]"
    if compress:
        data = base64.b64encode(zlib.compress(array, COMPRESSION_LEVEL)).decode("ascii")
        return orjson.dumps({"v": ENVELOPE_VERSION, "encoding": ZLIB_BASE64, "data": data}).decode()
    return '{"v":2,"records":' + array.decode() + "}"


def decode_body(body: str | bytes) -> list[StoredReading]:
    """Every record a message body carries, validated; raises MessageDecodeError."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageDecodeError(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MessageDecodeError(f"body is a JSON {type(document).__name__}, not an object")
    if "v" not in document:
        return [_validate_one(document)]
    if document["v"] != ENVELOPE_VERSION:
        raise MessageDecodeError(f"unknown envelope version {document['v']!r}")
    return _validate_many(_envelope_records(document))


def _envelope_records(document: dict[str, Any]) -> Any:
    encoding = document.get("encoding")
    if encoding is None:
        if "records" not in document:
            raise MessageDecodeError("v2 envelope without records")
        return document["records"]
    if encoding != ZLIB_BASE64:
        raise MessageDecodeError(f"unknown envelope encoding {encoding!r}")
    try:
        inflater = zlib.decompressobj()
        array = inflater.decompress(base64.b64decode(document["data"], validate=True), MAX_INFLATED_BYTES)
        if inflater.unconsumed_tail:
            raise MessageDecodeError(f"compressed envelope inflates beyond {MAX_INFLATED_BYTES} bytes")
        return orjson.loads(array)
    except (KeyError, TypeError, binascii.Error, zlib.error, orjson.JSONDecodeError) as exc:
        raise MessageDecodeError(f"compressed envelope does not decode: {exc!r}") from None


def _validate_one(document: dict[str, Any]) -> StoredReading:
    try:
        record = StoredReading.model_validate(document)
    except ValidationError as exc:
        raise MessageDecodeError(f"record is not a valid reading: {_summary(exc)}") from None
    if problem := _unstorable(record):
        raise MessageDecodeError(f"record cannot be stored: {problem}")
    return record


def _validate_many(records: Any) -> list[StoredReading]:
    if not isinstance(records, list) or not records:
        raise MessageDecodeError("envelope records is not a non-empty array")
    try:
        validated = _records_adapter.validate_python(records)
    except ValidationError as exc:
        raise MessageDecodeError(f"envelope holds an invalid reading: {_summary(exc)}") from None
    for index, record in enumerate(validated):
        if problem := _unstorable(record):
            raise MessageDecodeError(f"envelope holds a reading that cannot be stored: at {index}: {problem}")
    return validated


_CONTAINERS = (dict, list)


def _unstorable(record: StoredReading) -> str | None:
    """Why :func:`serialize` would fail on ``record`` (which then is poison), or None.

    Only extra fields holding arrays or objects can fail, so only such records pay for a
    trial serialization (why: docs/architecture.md, "Design notes: common").
    """
    extra = record.__pydantic_extra__
    if not extra:
        return None
    for value in extra.values():
        if isinstance(value, _CONTAINERS):
            break
    else:
        return None
    try:
        serialize(record)
    except PydanticSerializationError as exc:
        return str(exc)
    return None


def _summary(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{exc.error_count()} error(s), first at {where or '<root>'}: {first['msg']}"


def pack(records_json: Iterable[bytes], *, max_bytes: int = SQS_MAX_MESSAGE_BYTES) -> list[list[bytes]]:
    """Group serialized records so each group's uncompressed v2 body fits in ``max_bytes``."""
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = _EMPTY_ENVELOPE_BYTES
    for record in records_json:
        if current and size + len(record) + 1 > max_bytes:
            groups.append(current)
            current, size = [], _EMPTY_ENVELOPE_BYTES
        current.append(record)
        size += len(record) + 1
    if current:
        groups.append(current)
    return groups


_EMPTY_ENVELOPE_BYTES = len('{"v":2,"records":[]}')
