"""The SQS message codec (contract.md, "SQS"): every body form round-trips, every poison form is named."""

from __future__ import annotations

import base64
import itertools
import json
import zlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from src.common.envelope import (
    MAX_INFLATED_BYTES,
    SQS_MAX_MESSAGE_BYTES,
    ZLIB_BASE64,
    MessageDecodeError,
    decode_body,
    encode_envelope,
    encode_record,
    pack,
    serialize,
)
from src.common.schema import Reading, StoredReading
from tests.factories import reading_dict

RECEIVED_AT = datetime(2025, 10, 19, 12, 34, 56, 200000, tzinfo=UTC)


def record_dict(i: int = 0, **changes: Any) -> dict[str, Any]:
    """A stored record in the seed's v1 shape; ``i`` makes its natural key distinct."""
    moment = datetime(2025, 10, 19, 12, 34, 56, 123000, tzinfo=UTC) + timedelta(milliseconds=i)
    document = reading_dict(f"veh-{i % 1000:05d}", moment, received=RECEIVED_AT)
    document["timestamp"] = moment.isoformat().replace("+00:00", "Z")  # as the seed wrote it
    document.update(changes)
    return document


def record(i: int = 0, **changes: Any) -> StoredReading:
    return StoredReading.model_validate(record_dict(i, **changes))


def records(n: int) -> list[StoredReading]:
    return [record(i) for i in range(n)]


def compressed(payload: Any) -> str:
    """A compressed v2 body around ``payload`` (normally the records array)."""
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return json.dumps({"v": 2, "encoding": ZLIB_BASE64, "data": base64.b64encode(zlib.compress(raw)).decode()})


# --- round trips ----------------------------------------------------------------------


def test_v1_body_round_trips_one_record() -> None:
    original = record()
    body = encode_record(original)
    assert json.loads(body) == json.loads(original.model_dump_json())
    assert "v" not in json.loads(body)
    assert decode_body(body) == [original]


def test_seed_v1_json_decodes_as_is() -> None:
    # The seed published v1 bodies: a stored record with nothing around it.
    body = json.dumps(record_dict(ingest_received_at="2025-10-19T12:34:56.200Z"))
    (decoded,) = decode_body(body)
    assert decoded.vehicle_id == "veh-00000"
    assert decoded.ingest_received_at == RECEIVED_AT


def test_bytes_bodies_decode_like_text() -> None:
    original = record()
    assert decode_body(encode_record(original).encode()) == [original]


def test_v2_envelope_round_trips_records_in_order() -> None:
    originals = records(5)
    body = encode_envelope([serialize(r) for r in originals])
    document = json.loads(body)
    assert document["v"] == 2
    assert len(document["records"]) == 5
    assert decode_body(body) == originals


def test_compressed_v2_envelope_round_trips_and_names_its_encoding() -> None:
    originals = records(50)
    body = encode_envelope([serialize(r) for r in originals], compress=True)
    document = json.loads(body)
    assert document["v"] == 2
    assert document["encoding"] == ZLIB_BASE64
    assert "records" not in document
    assert len(body) < len(encode_envelope([serialize(r) for r in originals]))
    assert decode_body(body) == originals


def test_extra_fields_survive_every_body_form() -> None:
    original = record(gateway="gw-7")
    line = serialize(original)
    for body in (encode_record(original), encode_envelope([line]), encode_envelope([line], compress=True)):
        (decoded,) = decode_body(body)
        assert decoded.model_extra == {"gateway": "gw-7"}


def test_serialize_is_the_compact_json_of_the_record() -> None:
    original = record()
    line = serialize(original)
    assert isinstance(line, bytes)
    assert b"\n" not in line
    assert b": " not in line
    assert StoredReading.model_validate_json(line) == original


def test_serialize_writes_exactly_what_model_dump_json_writes() -> None:
    """JSONL lines and envelopes keep their bytes: serialize skips model_dump_json's str, nothing else."""
    stamped = StoredReading.stamp(
        Reading.model_validate(reading_dict("veh-1", RECEIVED_AT)),
        datetime(2025, 10, 19, 14, 34, 56, 200000, tzinfo=timezone(timedelta(hours=2))),
    )
    for original in (record(), record(gateway="gw-7", note="été ✓", nested={"a": [1, 2.5, None]}), stamped):
        assert serialize(original) == original.model_dump_json().encode()


def test_decoding_validates_records_from_json_not_trusting_them() -> None:
    # Timestamps in other zones are normalised on the way through the queue, too.
    body = json.dumps(record_dict(timestamp="2025-10-19T14:34:56.123+02:00"))
    (decoded,) = decode_body(body)
    assert decoded.timestamp == datetime(2025, 10, 19, 12, 34, 56, 123000, tzinfo=UTC)


# --- pack -----------------------------------------------------------------------------


def test_pack_keeps_every_record_in_order_under_the_byte_limit() -> None:
    lines = [serialize(r) for r in records(200)]
    max_bytes = 4_000
    groups = pack(lines, max_bytes=max_bytes)
    assert len(groups) > 1
    assert [line for group in groups for line in group] == lines
    for group in groups:
        assert group
        assert len(encode_envelope(group).encode()) <= max_bytes


def test_pack_fills_groups_rather_than_splitting_early() -> None:
    lines = [serialize(r) for r in records(200)]
    max_bytes = 4_000
    groups = pack(lines, max_bytes=max_bytes)
    for group, following in itertools.pairwise(groups):
        # The next record would not have fitted into this group.
        assert len(encode_envelope([*group, following[0]]).encode()) > max_bytes - 1


def test_pack_uses_the_sqs_limit_by_default() -> None:
    lines = [serialize(r) for r in records(1_000)]
    groups = pack(lines)
    assert len(groups) > 1
    assert [line for group in groups for line in group] == lines
    assert all(len(encode_envelope(group).encode()) <= SQS_MAX_MESSAGE_BYTES for group in groups)


def test_pack_of_few_records_is_one_group() -> None:
    lines = [serialize(r) for r in records(3)]
    assert pack(lines) == [lines]


def test_pack_of_nothing_is_no_groups() -> None:
    assert pack([]) == []
    assert pack(iter(())) == []


def test_pack_puts_an_oversized_record_alone_rather_than_dropping_it() -> None:
    lines = [b"x" * 10, b"y" * 100, b"z" * 10]
    assert pack(lines, max_bytes=50) == [[b"x" * 10], [b"y" * 100], [b"z" * 10]]


def test_pack_accepts_any_iterable() -> None:
    lines = [serialize(r) for r in records(4)]
    assert pack(iter(lines)) == [lines]


def test_packed_groups_decode_back_to_the_records() -> None:
    originals = records(60)
    groups = pack([serialize(r) for r in originals], max_bytes=2_000)
    decoded = [r for group in groups for r in decode_body(encode_envelope(group))]
    assert decoded == originals


# --- poison ---------------------------------------------------------------------------

VALID_LINE = serialize(record())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param("", "not JSON", id="empty-body"),
        pytest.param("not json", "not JSON", id="not-json"),
        pytest.param(b"\xff\xfe", "not JSON", id="not-utf8"),
        pytest.param('{"v": 2, "records": [', "not JSON", id="truncated"),
        pytest.param(
            json.dumps(record_dict()).replace("400.2", "NaN"),
            "not JSON",
            id="nan-literal",
        ),
        pytest.param("[" + VALID_LINE.decode() + "]", "JSON list, not an object", id="json-array"),
        pytest.param('"text"', "JSON str, not an object", id="json-string"),
        pytest.param("null", "not an object", id="json-null"),
        pytest.param('{"v": 3, "records": []}', "unknown envelope version 3", id="unknown-version"),
        pytest.param('{"v": "2", "records": []}', "unknown envelope version '2'", id="version-as-string"),
        pytest.param('{"v": 1}', "unknown envelope version 1", id="version-1-as-envelope"),
        pytest.param('{"v": 2}', "v2 envelope without records", id="v2-without-records"),
        pytest.param('{"v": 2, "records": []}', "not a non-empty array", id="empty-records"),
        pytest.param('{"v": 2, "records": null}', "not a non-empty array", id="null-records"),
        pytest.param(
            '{"v": 2, "records": ' + VALID_LINE.decode() + "}",
            "not a non-empty array",
            id="records-is-object",
        ),
        pytest.param(
            '{"v": 2, "encoding": "gzip+base64", "data": ""}', "unknown envelope encoding 'gzip+base64'", id="encoding"
        ),
        pytest.param('{"v": 2, "encoding": "zlib+base64"}', "compressed envelope does not decode", id="no-data"),
        pytest.param(
            '{"v": 2, "encoding": "zlib+base64", "data": "!!not base64!!"}',
            "compressed envelope does not decode",
            id="bad-base64",
        ),
        pytest.param(
            '{"v": 2, "encoding": "zlib+base64", "data": 42}', "compressed envelope does not decode", id="data-not-str"
        ),
        pytest.param(
            json.dumps({"v": 2, "encoding": ZLIB_BASE64, "data": base64.b64encode(b"not zlib at all").decode()}),
            "compressed envelope does not decode",
            id="bad-zlib",
        ),
        pytest.param(compressed(b"not json"), "compressed envelope does not decode", id="compressed-not-json"),
        pytest.param(compressed([]), "not a non-empty array", id="compressed-empty-records"),
        pytest.param(compressed({"a": 1}), "not a non-empty array", id="compressed-object"),
    ],
)
def test_poison_bodies_raise_message_decode_error_with_reason(body: str | bytes, message: str) -> None:
    with pytest.raises(MessageDecodeError, match=message.replace("+", r"\+")):
        decode_body(body)


def test_invalid_v1_record_is_poison_naming_the_field() -> None:
    body = json.dumps(record_dict(vehicle_id="../etc"))
    with pytest.raises(MessageDecodeError, match=r"record is not a valid reading: 1 error\(s\), first at vehicle_id"):
        decode_body(body)


def test_v1_record_without_received_at_is_poison() -> None:
    document = record_dict()
    del document["ingest_received_at"]
    with pytest.raises(MessageDecodeError, match="first at ingest_received_at: Field required"):
        decode_body(json.dumps(document))


def test_empty_object_is_poison() -> None:
    with pytest.raises(MessageDecodeError, match="record is not a valid reading"):
        decode_body("{}")


def test_invalid_record_inside_envelope_is_poison_naming_its_position() -> None:
    bad = json.dumps(record_dict(1, payload={**record_dict()["payload"], "battery_soc": 101.0})).encode()
    body = encode_envelope([VALID_LINE, bad, VALID_LINE])
    with pytest.raises(
        MessageDecodeError, match=r"envelope holds an invalid reading: .*first at 1\.payload\.battery_soc"
    ):
        decode_body(body)


def test_invalid_record_inside_compressed_envelope_is_poison() -> None:
    body = encode_envelope([VALID_LINE, b'{"vehicle_id": "veh-1"}'], compress=True)
    with pytest.raises(MessageDecodeError, match="envelope holds an invalid reading"):
        decode_body(body)


def test_non_object_record_inside_envelope_is_poison() -> None:
    with pytest.raises(MessageDecodeError, match="envelope holds an invalid reading: 1 error"):
        decode_body('{"v": 2, "records": [42]}')


def test_message_decode_error_is_a_value_error() -> None:
    # Callers that catch ValueError for bad input also catch poison.
    assert issubclass(MessageDecodeError, ValueError)


# --- records the writer could not serialize are poison --------------------------------


def nested_line(depth: int, *, opening: str = "[", closing: str = "]", i: int = 0) -> bytes:
    """A valid record whose extra field ``deep`` nests ``depth`` arrays (or objects, ``{"a":``/``}``).

    Built as text: orjson refuses to encode more than 254 levels but decodes up to 1023.
    """
    document = orjson.dumps(record_dict(i)).decode()
    return (document[:-1] + ',"deep":' + opening * depth + "1" + closing * depth + "}").encode()


def every_body_form(line: bytes) -> list[str | bytes]:
    """``line`` as a v1 body, alone in a v2 envelope and in a compressed one, after a valid record."""
    return [line, encode_envelope([VALID_LINE, line]), encode_envelope([VALID_LINE, line], compress=True)]


@pytest.mark.parametrize("depth", [255, 256, 1000])
@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ('{"a":', "}")], ids=["arrays", "objects"])
def test_extras_nested_too_deep_to_serialize_are_poison_in_every_body_form(
    depth: int, opening: str, closing: str
) -> None:
    """orjson decodes them but the writer's serializer cannot write them: they must never enter a batch."""
    line = nested_line(depth, opening=opening, closing=closing)
    with pytest.raises(MessageDecodeError, match=r"record cannot be stored: .*serializ.*depth"):
        decode_body(line)
    for body in every_body_form(line)[1:]:
        with pytest.raises(MessageDecodeError, match=r"envelope holds a reading that cannot be stored: at 1: "):
            decode_body(body)


def test_v1_record_nested_as_deep_as_json_decodes_is_poison() -> None:
    # The record plus 1023 levels: the deepest document orjson decodes at all.
    with pytest.raises(MessageDecodeError, match="record cannot be stored"):
        decode_body(nested_line(1023))
    with pytest.raises(MessageDecodeError, match="body is not JSON"):
        decode_body(nested_line(1024))


@pytest.mark.parametrize("depth", [0, 1, 10, 200, 250, 253, 254, 255, 300, 1021, 1022, 1023])
def test_whatever_decodes_can_be_serialized(depth: int) -> None:
    """The guarantee the consumer relies on: a decoded record never fails in the writer."""
    for body in every_body_form(nested_line(depth)):
        try:
            decoded = decode_body(body)
        except MessageDecodeError:
            continue
        for original in decoded:
            written = orjson.loads(serialize(original))
            assert written["vehicle_id"] == original.vehicle_id
            assert written.get("deep") == (original.model_extra or {}).get("deep")


def test_extras_nested_within_the_serializer_limit_decode_in_every_body_form() -> None:
    line = nested_line(254)
    for body in every_body_form(line):
        *_, decoded = decode_body(body)
        assert decoded.model_extra == {"deep": orjson.loads(line)["deep"]}
        assert serialize(decoded) == decoded.model_dump_json().encode()


def test_scalar_and_empty_extras_of_every_json_kind_decode_and_serialize() -> None:
    # Only extras holding arrays or objects get a trial serialization: every JSON scalar
    # orjson decodes must therefore always write.
    extras: dict[str, Any] = {
        "text": "été ✓ \u0000 \U0001f50b",
        "big": 18446744073709551615,
        "negative": -9223372036854775808,
        "huge": 1e308,
        "tiny": 5e-324,
        "flag": False,
        "nothing": None,
        "empty_list": [],
        "empty_object": {},
    }
    for body in every_body_form(orjson.dumps(record_dict(**extras))):
        *_, decoded = decode_body(body)
        assert decoded.model_extra == extras
        written = orjson.loads(serialize(decoded))
        assert {name: written[name] for name in extras} == extras


def test_compressed_envelope_that_inflates_without_bound_is_poison() -> None:
    """A small body that inflates to gigabytes (a zip bomb) is refused before it is inflated, not held in memory."""
    bomb = zlib.compress(b"[" + b" " * (MAX_INFLATED_BYTES + 1) + b"]", 9)
    body = json.dumps({"v": 2, "encoding": ZLIB_BASE64, "data": base64.b64encode(bomb).decode()})
    assert len(body) < SQS_MAX_MESSAGE_BYTES
    with pytest.raises(MessageDecodeError, match="inflates beyond"):
        decode_body(body)
