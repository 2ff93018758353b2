"""The reading: the one data contract every service shares.

A reading is what a vehicle's gateway reports for one CAN frame. Validation rejects what
cannot be a real reading, so that nothing downstream has to defend against it: the bounds
below are physical limits of an EV traction battery with generous margins, not the limits
of a healthy pack (a fault is data worth keeping, an impossible value is not).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

SIGNALS: tuple[str, ...] = (
    "battery_soc",
    "battery_voltage",
    "battery_current",
    "cell_voltage_min",
    "cell_voltage_max",
    "cell_temp_min",
    "cell_temp_max",
)
"""The seven payload signals, in the seed's order (also the DBC signal names)."""

VEHICLE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CAN_ID_PATTERN = r"^0x[0-9A-Fa-f]{1,8}$"
MAX_CAN_ID = 0x1FFFFFFF  # 29-bit extended frame identifier


def _signal(lo: float, hi: float, unit: str) -> Any:
    return Field(ge=lo, le=hi, description=f"{unit}, {lo} to {hi}")


class Payload(BaseModel):
    """The decoded battery signals of one frame, in SI-ish units the seed uses."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True, frozen=True)

    battery_soc: Annotated[float, _signal(0.0, 100.0, "state of charge, %")]
    battery_voltage: Annotated[float, _signal(0.0, 1000.0, "pack voltage, V")]
    battery_current: Annotated[float, _signal(-2000.0, 2000.0, "pack current, A (negative = discharge)")]
    cell_voltage_min: Annotated[float, _signal(0.0, 5.0, "lowest cell voltage, V")]
    cell_voltage_max: Annotated[float, _signal(0.0, 5.0, "highest cell voltage, V")]
    cell_temp_min: Annotated[float, _signal(-60.0, 150.0, "coldest cell temperature, °C")]
    cell_temp_max: Annotated[float, _signal(-60.0, 150.0, "hottest cell temperature, °C")]

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Payload:
        if self.cell_voltage_min > self.cell_voltage_max:
            raise ValueError("cell_voltage_min is above cell_voltage_max")
        if self.cell_temp_min > self.cell_temp_max:
            raise ValueError("cell_temp_min is above cell_temp_max")
        return self


class Freshness(NamedTuple):
    """How far a client's clock may stray: passed as validation context by the receiver.

    Kept out of the model's defaults because stored readings are re-validated later (by
    the consumer and the aggregator), when they are legitimately old.
    """

    now: datetime
    max_skew: timedelta
    max_age: timedelta


class Reading(BaseModel):
    """One reading as a client sends it."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    timestamp: AwareDatetime = Field(description="When the reading was taken (ISO 8601 with zone)")
    vehicle_id: str = Field(pattern=VEHICLE_ID_PATTERN, examples=["veh-00123"])
    can_id: str = Field(pattern=CAN_ID_PATTERN, examples=["0x1F0"])
    payload: Payload

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, value: Any) -> Any:
        # Strict mode refuses strings for datetimes; JSON has no other way to carry one.
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"timestamp is not ISO 8601: {exc}") from None
        return value

    @field_validator("timestamp")
    @classmethod
    def _to_utc_and_fresh(cls, value: datetime, info: ValidationInfo) -> datetime:
        value = _to_utc(value)
        fresh = info.context.get("freshness") if isinstance(info.context, dict) else None
        if isinstance(fresh, Freshness):
            if value > fresh.now + fresh.max_skew:
                raise ValueError(f"timestamp is more than {fresh.max_skew.total_seconds():.0f} s in the future")
            if value < fresh.now - fresh.max_age:
                raise ValueError(f"timestamp is older than {fresh.max_age.total_seconds() / 3600:.0f} h")
        return value

    @field_validator("can_id")
    @classmethod
    def _can_id_in_range(cls, value: str) -> str:
        if int(value, 16) > MAX_CAN_ID:
            raise ValueError("can_id is beyond a 29-bit CAN identifier")
        return value

    def natural_key(self) -> NaturalKey:
        return NaturalKey(self.vehicle_id, self.can_id, format_timestamp(self.timestamp))


class StoredReading(Reading):
    """A reading as it travels through SQS and lands on disk: stamped by the receiver.

    Extra fields are kept, so later versions can add to a record without breaking
    older consumers.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    ingest_received_at: AwareDatetime = Field(description="Server UTC time the receiver accepted it")

    @field_validator("ingest_received_at", mode="before")
    @classmethod
    def _parse_received(cls, value: Any) -> Any:
        return datetime.fromisoformat(value) if isinstance(value, str) else value

    @field_validator("ingest_received_at")
    @classmethod
    def _received_to_utc(cls, value: datetime) -> datetime:
        return _to_utc(value)

    @classmethod
    def stamp(cls, reading: Reading, received_at: datetime) -> StoredReading:
        return cls.model_construct(**{**dict(reading), "ingest_received_at": received_at.astimezone(UTC)})


def _to_utc(value: datetime) -> datetime:
    """``value`` in UTC; an instant UTC cannot hold (year 1 east of Greenwich, 9999 west of it) is invalid.

    ``astimezone`` raises OverflowError there, which pydantic would not turn into a
    validation error: the receiver would answer 500 to ``0001-01-01T00:00:00+14:00``.
    """
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the instant lies outside the years 1 to 9999 in UTC") from None


class NaturalKey(NamedTuple):
    """Two records with the same key are the same reading (SQS delivers at least once)."""

    vehicle_id: str
    can_id: str
    timestamp: str


def format_timestamp(value: datetime) -> str:
    """The canonical text of a UTC instant: what the pipeline writes and keys by."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def parse_timestamp(text: str) -> datetime:
    """Parse ISO 8601 (with `Z` or an offset) into an aware UTC datetime."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp without zone: {text!r}")
    return value.astimezone(UTC)


def natural_key_of(record: dict[str, Any]) -> NaturalKey:
    """The natural key of a record already parsed from JSON, timestamp canonicalised."""
    return NaturalKey(
        str(record["vehicle_id"]), str(record["can_id"]), format_timestamp(parse_timestamp(record["timestamp"]))
    )
