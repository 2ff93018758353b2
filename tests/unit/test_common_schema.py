"""The reading contract (contract.md, "A reading"): what is accepted, what is rejected, how it is keyed."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from src.common.schema import (
    SIGNALS,
    Freshness,
    NaturalKey,
    Reading,
    StoredReading,
    format_timestamp,
    natural_key_of,
    parse_timestamp,
)

# The seed's example (seed/README-seed.md, "Data Contract"), without the receiver's stamp.
SEED_EXAMPLE: dict[str, Any] = {
    "timestamp": "2025-10-19T12:34:56.123Z",
    "vehicle_id": "veh-00123",
    "can_id": "0x1F0",
    "payload": {
        "battery_soc": 85.5,
        "battery_voltage": 400.2,
        "battery_current": -15.3,
        "cell_voltage_min": 3.45,
        "cell_voltage_max": 3.67,
        "cell_temp_min": 28.5,
        "cell_temp_max": 31.2,
    },
}
SEED_RECEIVED_AT = "2025-10-19T12:34:56.200Z"


def reading(**changes: Any) -> dict[str, Any]:
    """The seed example with top-level fields replaced; ``payload`` entries are merged in."""
    document = copy.deepcopy(SEED_EXAMPLE)
    document["payload"].update(changes.pop("payload", {}))
    document.update(changes)
    return document


def validate_json(document: dict[str, Any] | str, **kwargs: Any) -> Reading:
    """Validate as the receiver does: from the JSON text of a request body."""
    text = document if isinstance(document, str) else json.dumps(document)
    return Reading.model_validate_json(text, **kwargs)


def rejection(document: dict[str, Any] | str, **kwargs: Any) -> str:
    """The validation messages of a document that must be rejected, for asserting on."""
    with pytest.raises(ValidationError) as info:
        validate_json(document, **kwargs)
    return " | ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in info.value.errors())


# --- accepted -------------------------------------------------------------------------


def test_seed_example_is_a_valid_reading() -> None:
    parsed = validate_json(SEED_EXAMPLE)
    assert parsed.vehicle_id == "veh-00123"
    assert parsed.can_id == "0x1F0"
    assert parsed.timestamp == datetime(2025, 10, 19, 12, 34, 56, 123000, tzinfo=UTC)
    assert parsed.payload.battery_current == -15.3
    assert tuple(type(parsed.payload).model_fields) == SIGNALS


def test_seed_example_with_receiver_stamp_is_a_valid_stored_reading() -> None:
    stored = StoredReading.model_validate_json(json.dumps({**SEED_EXAMPLE, "ingest_received_at": SEED_RECEIVED_AT}))
    assert stored.ingest_received_at == datetime(2025, 10, 19, 12, 34, 56, 200000, tzinfo=UTC)


def test_seed_example_validates_from_python_objects_as_well() -> None:
    # Consumers validate dicts parsed by orjson, not JSON text.
    assert Reading.model_validate(reading()) == validate_json(SEED_EXAMPLE)


def test_integers_are_accepted_for_float_signals() -> None:
    parsed = validate_json(reading(payload={"battery_soc": 85, "battery_current": 0}))
    assert parsed.payload.battery_soc == 85.0


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"battery_soc": 0.0}, id="soc-0"),
        pytest.param({"battery_soc": 100.0}, id="soc-100"),
        pytest.param({"battery_current": -2000.0}, id="current-min"),
        pytest.param({"battery_current": 2000.0}, id="current-max"),
        pytest.param({"battery_voltage": 1000.0}, id="voltage-max"),
        pytest.param({"cell_voltage_min": 3.5, "cell_voltage_max": 3.5}, id="cell-voltage-min-equals-max"),
        pytest.param({"cell_temp_min": -60.0, "cell_temp_max": 150.0}, id="temp-extremes"),
    ],
)
def test_values_at_the_physical_bounds_are_accepted(payload: dict[str, float]) -> None:
    validate_json(reading(payload=payload))


@pytest.mark.parametrize("vehicle_id", ["a", "A_z-09", "x" * 64])
def test_vehicle_ids_within_the_pattern_are_accepted(vehicle_id: str) -> None:
    assert validate_json(reading(vehicle_id=vehicle_id)).vehicle_id == vehicle_id


@pytest.mark.parametrize("can_id", ["0x0", "0x7FF", "0x1f0", "0x1FFFFFFF"])
def test_hex_can_ids_up_to_29_bits_are_accepted(can_id: str) -> None:
    assert validate_json(reading(can_id=can_id)).can_id == can_id


# --- rejected -------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_in_json_are_rejected(literal: str) -> None:
    text = json.dumps(SEED_EXAMPLE).replace("400.2", literal)
    assert "400.2" not in text
    assert "finite" in rejection(text)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_numbers_from_python_are_rejected(value: float) -> None:
    with pytest.raises(ValidationError, match="finite"):
        Reading.model_validate(reading(payload={"cell_temp_max": value}))


@pytest.mark.parametrize("soc", [-0.1, 100.1, 250.0])
def test_soc_outside_0_to_100_is_rejected(soc: float) -> None:
    assert "payload.battery_soc" in rejection(reading(payload={"battery_soc": soc}))


@pytest.mark.parametrize(
    ("signal", "value"),
    [
        ("battery_voltage", -1.0),
        ("battery_voltage", 1000.1),
        ("battery_current", -2000.1),
        ("battery_current", 2000.1),
        ("cell_voltage_min", -0.01),
        ("cell_voltage_max", 5.01),
        ("cell_temp_min", -60.1),
        ("cell_temp_max", 150.1),
    ],
)
def test_values_outside_physical_bounds_are_rejected(signal: str, value: float) -> None:
    assert f"payload.{signal}" in rejection(reading(payload={signal: value}))


def test_cell_voltage_min_above_max_is_rejected() -> None:
    assert "cell_voltage_min is above cell_voltage_max" in rejection(
        reading(payload={"cell_voltage_min": 3.7, "cell_voltage_max": 3.6})
    )


def test_cell_temp_min_above_max_is_rejected() -> None:
    assert "cell_temp_min is above cell_temp_max" in rejection(
        reading(payload={"cell_temp_min": 32.0, "cell_temp_max": 31.0})
    )


@pytest.mark.parametrize(
    "vehicle_id",
    [
        pytest.param("", id="empty"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("../../etc/passwd", id="path-traversal"),
        pytest.param("veh/001", id="slash"),
        pytest.param("veh\\001", id="backslash"),
        pytest.param("..", id="dot-dot"),
        pytest.param("veh 001", id="space"),
        pytest.param("veh-001\n", id="trailing-newline"),
        pytest.param("véh-001", id="non-ascii"),
        pytest.param("veh.001", id="dot"),
    ],
)
def test_vehicle_id_outside_the_pattern_is_rejected(vehicle_id: str) -> None:
    assert "vehicle_id" in rejection(reading(vehicle_id=vehicle_id))


@pytest.mark.parametrize(
    "can_id",
    [
        pytest.param("1F0", id="no-prefix"),
        pytest.param("0X1F0", id="upper-prefix"),
        pytest.param("0x", id="no-digits"),
        pytest.param("0x1G0", id="not-hex"),
        pytest.param("0x1F0\n", id="trailing-newline"),
        pytest.param(" 0x1F0", id="leading-space"),
        pytest.param("0x123456789", id="nine-digits"),
        pytest.param("496", id="decimal"),
    ],
)
def test_can_id_not_hex_like_0x1f0_is_rejected(can_id: str) -> None:
    assert "can_id" in rejection(reading(can_id=can_id))


@pytest.mark.parametrize("can_id", ["0x20000000", "0xFFFFFFFF"])
def test_can_id_beyond_29_bits_is_rejected(can_id: str) -> None:
    assert "beyond a 29-bit" in rejection(reading(can_id=can_id))


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("2025-10-19T12:34:56.123", id="no-zone"),
        pytest.param("2025-10-19", id="date-only"),
    ],
)
def test_timestamp_without_zone_is_rejected(timestamp: str) -> None:
    assert "timezone" in rejection(reading(timestamp=timestamp))


def test_naive_datetime_object_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        Reading.model_validate(reading(timestamp=datetime(2025, 10, 19, 12, 34, 56)))


def test_timestamp_that_is_not_iso_8601_is_rejected_with_reason() -> None:
    assert "not ISO 8601" in rejection(reading(timestamp="yesterday at noon"))


def test_timestamp_as_unix_number_is_rejected() -> None:
    assert "timestamp" in rejection(reading(timestamp=1760877296))


@pytest.mark.parametrize("signal", SIGNALS)
def test_strings_for_numbers_are_rejected(signal: str) -> None:
    value = SEED_EXAMPLE["payload"][signal]
    assert f"payload.{signal}" in rejection(reading(payload={signal: str(value)}))


@pytest.mark.parametrize("value", [True, False])
def test_bools_for_numbers_are_rejected(value: bool) -> None:
    assert "payload.battery_soc" in rejection(reading(payload={"battery_soc": value}))


@pytest.mark.parametrize(
    ("field", "value"),
    [("vehicle_id", 123), ("can_id", 496), ("payload", "85.5"), ("payload", None)],
)
def test_wrong_types_for_fields_are_rejected(field: str, value: Any) -> None:
    document = reading()
    document[field] = value
    assert field in rejection(document)


def test_extra_top_level_field_is_rejected() -> None:
    assert "Extra inputs" in rejection(reading(ingest_received_at=SEED_RECEIVED_AT))


def test_extra_payload_field_is_rejected() -> None:
    assert "payload.soh" in rejection(reading(payload={"soh": 97.0}))


@pytest.mark.parametrize("field", ["timestamp", "vehicle_id", "can_id", "payload"])
def test_missing_field_is_rejected(field: str) -> None:
    document = reading()
    del document[field]
    assert field in rejection(document)


@pytest.mark.parametrize("signal", SIGNALS)
def test_missing_signal_is_rejected(signal: str) -> None:
    document = reading()
    del document["payload"][signal]
    assert f"payload.{signal}" in rejection(document)


def test_reading_is_immutable() -> None:
    parsed = validate_json(SEED_EXAMPLE)
    with pytest.raises(ValidationError):
        parsed.vehicle_id = "other"  # type: ignore[misc]


# --- freshness ------------------------------------------------------------------------

NOW = datetime(2025, 10, 19, 12, 0, tzinfo=UTC)
FRESHNESS = Freshness(now=NOW, max_skew=timedelta(seconds=300), max_age=timedelta(hours=168))


def at(moment: datetime) -> dict[str, Any]:
    return reading(timestamp=moment.isoformat())


def test_freshness_accepts_readings_within_the_window() -> None:
    context = {"freshness": FRESHNESS}
    for moment in (NOW, NOW + timedelta(seconds=300), NOW - timedelta(hours=168), NOW - timedelta(hours=1)):
        assert validate_json(at(moment), context=context).timestamp == moment


def test_freshness_rejects_reading_more_than_max_skew_ahead() -> None:
    message = rejection(at(NOW + timedelta(seconds=301)), context={"freshness": FRESHNESS})
    assert "more than 300 s in the future" in message


def test_freshness_rejects_reading_older_than_max_age() -> None:
    message = rejection(at(NOW - timedelta(hours=168, seconds=1)), context={"freshness": FRESHNESS})
    assert "older than 168 h" in message


def test_freshness_compares_instants_not_wall_clock_text() -> None:
    # 14:04 at +02:00 is 12:04 UTC: within the skew although its wall clock is 2 h ahead.
    ahead_wall_clock = datetime(2025, 10, 19, 14, 4, tzinfo=timezone(timedelta(hours=2)))
    validate_json(at(ahead_wall_clock), context={"freshness": FRESHNESS})


def test_without_freshness_context_old_and_future_readings_are_accepted() -> None:
    # Stored readings are re-validated later, when they are legitimately old.
    for moment in (datetime(2001, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=30)):
        assert validate_json(at(moment)).timestamp == moment
        assert validate_json(at(moment), context={"other": 1}).timestamp == moment


# --- UTC normalisation and the natural key -------------------------------------------


def test_timestamps_are_normalised_to_utc() -> None:
    parsed = validate_json(reading(timestamp="2025-10-19T14:34:56.123+02:00"))
    assert parsed.timestamp.utcoffset() == timedelta(0)
    assert parsed.timestamp == datetime(2025, 10, 19, 12, 34, 56, 123000, tzinfo=UTC)
    assert json.loads(parsed.model_dump_json())["timestamp"] == "2025-10-19T12:34:56.123000Z"


def test_ingest_received_at_is_normalised_to_utc() -> None:
    stored = StoredReading.model_validate(
        {**reading(), "ingest_received_at": datetime(2025, 10, 19, 7, 34, 56, tzinfo=timezone(timedelta(hours=-5)))}
    )
    assert stored.ingest_received_at == datetime(2025, 10, 19, 12, 34, 56, tzinfo=UTC)
    assert stored.ingest_received_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "timestamp",
    [
        pytest.param("2025-10-19T12:34:56Z", id="no-microseconds"),
        pytest.param("2025-10-19T12:34:56.123Z", id="milliseconds"),
        pytest.param("2025-10-19T12:34:56.000001Z", id="microseconds"),
        pytest.param("2025-10-19T14:34:56.5+02:00", id="offset"),
    ],
)
def test_format_timestamp_matches_what_model_dump_json_writes(timestamp: str) -> None:
    parsed = validate_json(reading(timestamp=timestamp))
    written = json.loads(parsed.model_dump_json())["timestamp"]
    assert format_timestamp(parsed.timestamp) == written


@pytest.mark.parametrize(
    "timestamp",
    ["2025-10-19T12:34:56Z", "2025-10-19T12:34:56.123Z", "2025-10-19T14:34:56.123456+02:00"],
)
def test_natural_key_equals_natural_key_of_the_json_serialisation(timestamp: str) -> None:
    parsed = validate_json(reading(timestamp=timestamp))
    stored = StoredReading.stamp(parsed, NOW)
    assert parsed.natural_key() == natural_key_of(json.loads(parsed.model_dump_json()))
    assert stored.natural_key() == natural_key_of(json.loads(stored.model_dump_json()))
    # ... and of the text the client sent, whatever its spelling of the same instant.
    assert parsed.natural_key() == natural_key_of(reading(timestamp=timestamp))


def test_natural_key_is_vehicle_can_id_and_canonical_timestamp() -> None:
    key = validate_json(SEED_EXAMPLE).natural_key()
    assert key == NaturalKey("veh-00123", "0x1F0", "2025-10-19T12:34:56.123000Z")


def test_same_instant_in_different_zones_has_the_same_natural_key() -> None:
    utc = natural_key_of(reading(timestamp="2025-10-19T12:34:56Z"))
    offset = natural_key_of(reading(timestamp="2025-10-19T13:34:56+01:00"))
    assert utc == offset


def test_parse_timestamp_returns_aware_utc() -> None:
    assert parse_timestamp("2025-10-19T13:34:56+01:00") == datetime(2025, 10, 19, 12, 34, 56, tzinfo=UTC)
    assert parse_timestamp("2025-10-19T12:34:56Z").tzinfo == UTC


def test_parse_timestamp_rejects_text_without_zone() -> None:
    with pytest.raises(ValueError, match="without zone"):
        parse_timestamp("2025-10-19T12:34:56")


def test_natural_key_of_rejects_record_without_zone() -> None:
    with pytest.raises(ValueError, match="without zone"):
        natural_key_of(reading(timestamp="2025-10-19T12:34:56"))


# --- StoredReading --------------------------------------------------------------------


def test_stamp_keeps_every_field_and_adds_utc_received_at() -> None:
    parsed = validate_json(SEED_EXAMPLE)
    received = datetime(2025, 10, 19, 14, 34, 56, 200000, tzinfo=timezone(timedelta(hours=2)))
    stored = StoredReading.stamp(parsed, received)
    assert isinstance(stored, StoredReading)
    assert stored.timestamp == parsed.timestamp
    assert stored.vehicle_id == parsed.vehicle_id
    assert stored.can_id == parsed.can_id
    assert stored.payload == parsed.payload
    assert stored.ingest_received_at == datetime(2025, 10, 19, 12, 34, 56, 200000, tzinfo=UTC)
    assert stored.ingest_received_at.utcoffset() == timedelta(0)
    assert stored.model_extra in (None, {})


def test_stamped_record_serialises_to_the_seed_shape_and_validates_back() -> None:
    stored = StoredReading.stamp(validate_json(SEED_EXAMPLE), parse_timestamp(SEED_RECEIVED_AT))
    document = json.loads(stored.model_dump_json())
    assert document == {
        **SEED_EXAMPLE,
        "timestamp": "2025-10-19T12:34:56.123000Z",
        "ingest_received_at": "2025-10-19T12:34:56.200000Z",
    }
    assert StoredReading.model_validate_json(stored.model_dump_json()) == stored


def test_stored_reading_keeps_extra_fields_from_json() -> None:
    # Later versions may add to a record without breaking older consumers.
    text = json.dumps({**SEED_EXAMPLE, "ingest_received_at": SEED_RECEIVED_AT, "gateway": "gw-7", "seq": 42})
    stored = StoredReading.model_validate_json(text)
    assert stored.model_extra == {"gateway": "gw-7", "seq": 42}
    document = json.loads(stored.model_dump_json())
    assert document["gateway"] == "gw-7"
    assert document["seq"] == 42
    assert stored.natural_key() == natural_key_of(document)


def test_stored_reading_requires_zoned_ingest_received_at() -> None:
    with pytest.raises(ValidationError, match="ingest_received_at"):
        StoredReading.model_validate_json(json.dumps({**SEED_EXAMPLE, "ingest_received_at": "2025-10-19T12:34:56"}))
    with pytest.raises(ValidationError, match="ingest_received_at"):
        StoredReading.model_validate_json(json.dumps(SEED_EXAMPLE))


def test_stored_reading_still_rejects_invalid_readings() -> None:
    with pytest.raises(ValidationError, match="battery_soc"):
        StoredReading.model_validate(
            {**reading(payload={"battery_soc": 101.0}), "ingest_received_at": SEED_RECEIVED_AT}
        )


def test_restamping_a_stored_reading_replaces_received_at_and_keeps_extras() -> None:
    text = json.dumps({**SEED_EXAMPLE, "ingest_received_at": SEED_RECEIVED_AT, "gateway": "gw-7"})
    stored = StoredReading.model_validate_json(text)
    restamped = StoredReading.stamp(stored, NOW)
    assert restamped.ingest_received_at == NOW
    assert restamped.model_extra == {"gateway": "gw-7"}
    assert restamped.natural_key() == stored.natural_key()
