"""The receiver's stamping shortcut writes exactly the bytes the StoredReading model would."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from src.common.envelope import serialize
from src.common.schema import Reading, StoredReading
from src.receiver.stamping import stored_records
from tests.factories import reading_dict

SIGNAL_BOUNDS = {
    "battery_soc": (0.0, 100.0),
    "battery_voltage": (0.0, 1000.0),
    "battery_current": (-2000.0, 2000.0),
    "cell_voltage_min": (0.0, 2.5),
    "cell_voltage_max": (2.5, 5.0),
    "cell_temp_min": (-60.0, 40.0),
    "cell_temp_max": (40.0, 150.0),
}


def varied_readings(count: int, seed: int) -> list[Reading]:
    """Readings with odd floats, integers-as-floats, bounds, offsets and whole seconds."""
    rng = random.Random(seed)
    readings = []
    for i in range(count):
        zone = timezone(timedelta(minutes=rng.choice([0, 60, -330, 845])))
        taken = datetime(2026, 11, 23, 12, tzinfo=UTC) + timedelta(microseconds=rng.choice([0, rng.randrange(10**10)]))
        payload = {
            name: rng.choice([lo, hi, round(rng.uniform(lo, hi), rng.randrange(0, 7)), rng.uniform(lo, hi)])
            for name, (lo, hi) in SIGNAL_BOUNDS.items()
        }
        document = reading_dict(f"veh_{i}-{rng.randrange(10**6)}", taken.astimezone(zone), **payload)
        document["can_id"] = rng.choice(["0x1F0", "0x1fffffff", "0x0"])
        readings.append(Reading.model_validate(document))
    return readings


@pytest.mark.parametrize(
    "received_at",
    [datetime(2026, 11, 23, 12, 0, 1, 250_000, tzinfo=UTC), datetime(2026, 11, 23, 12, tzinfo=UTC)],
    ids=["fraction of a second", "whole second"],
)
def test_stored_records_equal_the_models_serialization(received_at: datetime) -> None:
    """What the receiver queues is byte for byte the StoredReading JSON the consumer and aggregator expect."""
    readings = varied_readings(500, seed=received_at.microsecond)
    expected = [serialize(StoredReading.stamp(reading, received_at)) for reading in readings]
    assert stored_records(readings, received_at) == expected


def test_stamp_in_another_zone_is_written_in_utc() -> None:
    """The server's clock may be handed over in any zone; the stamp is always UTC."""
    [reading] = varied_readings(1, seed=1)
    at = datetime(2026, 11, 23, 13, 30, tzinfo=timezone(timedelta(hours=1, minutes=30)))
    [record] = stored_records([reading], at)
    assert StoredReading.model_validate_json(record).ingest_received_at == at
    assert record.endswith(b',"ingest_received_at":"2026-11-23T12:00:00Z"}')
