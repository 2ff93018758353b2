"""The vectorised line reader: what it reads it reads exactly as the reference parser, the rest it leaves."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from src.aggregator import fastlines
from src.aggregator.fastlines import PADDING, Vocabulary, parse_block
from src.aggregator.records import SkippedLine, instant_us, parse_line
from src.common.envelope import serialize
from src.common.schema import SIGNALS, Reading, StoredReading


def stored_line(vehicle: str = "veh-00001", second: float = 1.2, **payload: float) -> bytes:
    """A line exactly as the consumer writes it (the pydantic model's JSON)."""
    values = {"battery_soc": 80.5, "battery_voltage": 371.2, "battery_current": -15.3, "cell_voltage_min": 3.85}
    values |= {"cell_voltage_max": 3.89, "cell_temp_min": 28.5, "cell_temp_max": 31.2} | payload
    taken = datetime(2026, 1, 1, 10, tzinfo=UTC) + timedelta(seconds=second)
    reading = Reading.model_validate(
        {"timestamp": taken.isoformat(), "vehicle_id": vehicle, "can_id": "0x1F0", "payload": values}
    )
    return serialize(StoredReading.stamp(reading, taken + timedelta(milliseconds=40)))


def block_of(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines) + PADDING


def reference(line: bytes) -> tuple[str, str, int, tuple[float, ...]] | None:
    try:
        record = parse_line(line)
    except SkippedLine:
        return None
    return record.key.vehicle_id, record.key.can_id, instant_us(record.key.timestamp), record.values


def fast(lines: list[bytes]) -> list[tuple[str, str, int, tuple[float, ...]] | None]:
    """What parse_block made of each line (None: left to the other readers)."""
    block = parse_block(block_of(lines))
    vehicles, cans = Vocabulary(), Vocabulary()
    vehicle_codes, vehicle_exact = vehicles.encode_keys(block.vehicle_keys, block.vehicle_lengths)
    can_codes, can_exact = cans.encode_keys(block.can_keys, block.can_lengths)
    assert vehicle_exact.all() and can_exact.all()
    vehicle_names, can_names = list(vehicles.codes), list(cans.codes)
    read = iter(range(len(block.ts)))
    result: list[tuple[str, str, int, tuple[float, ...]] | None] = []
    for ok in block.ok.tolist():
        if not ok:
            result.append(None)
            continue
        i = next(read)
        values = tuple(block.values[i].tolist())
        result.append((vehicle_names[vehicle_codes[i]], can_names[can_codes[i]], int(block.ts[i]), values))
    return result


def test_the_consumers_own_lines_take_the_vectorised_path() -> None:
    """What the consumer writes must be read the fast way: else the aggregator silently slows down."""
    lines = [
        stored_line(f"veh-{v:05d}", second=s / 5, battery_current=-0.0 if s % 2 else 12.0)
        for v in range(3)
        for s in range(5)
    ]
    lines.append(stored_line(second=7.0))  # a whole second: no fraction in the timestamp
    assert fast(lines) == [reference(line) for line in lines]
    assert None not in fast(lines)


def test_numbers_are_decoded_exactly_as_orjson_does() -> None:
    """Every signal the vectorised path takes must be the very float orjson makes of it (or it must not take it)."""
    rng = random.Random(7)
    texts = ["0", "-0", "0.0", "-0.0", "01", "1.", ".5", "-", "--1", "1.2.3", "12345678", "123456789", "-1234567"]
    texts += ["9.999999", "1e5", "00", "-01.5", "0.05", "10", "-10.25", "1-2", "+1", "0.1", "99999999", "-9999999"]
    texts += ["".join(rng.choice("0123456789.-") for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    texts += [repr(round(rng.uniform(-2000, 2000), rng.randint(0, 5))) for _ in range(3000)]
    line = stored_line()
    decoded = fast([line.replace(b'"battery_soc":80.5', b'"battery_soc":' + text.encode()) for text in texts])
    for text, result in zip(texts, decoded, strict=True):
        try:
            number = orjson.loads(text)
        except orjson.JSONDecodeError:
            number = None
        if result is not None:
            assert isinstance(number, int | float), text
            assert repr(result[3][0]) == repr(float(number)), text  # repr: -0.0 and 0.0 differ
    taken = sum(r is not None for r in decoded)
    assert taken > 3000  # the usual forms are taken, not left to the slow path


@pytest.mark.parametrize(
    ("text", "taken"),
    [
        ("2026-01-01T10:05:00.200000Z", True),
        ("2026-01-01T10:05:00Z", True),
        ("2024-02-29T23:59:59.999999Z", True),  # leap day
        ("2000-02-29T00:00:00Z", True),  # divisible by 400: leap
        ("0001-01-01T00:00:00Z", True),
        ("9999-12-31T23:59:59.999999Z", True),
        ("1969-12-31T23:59:59.999999Z", True),  # before the epoch
        ("2023-02-29T00:00:00Z", False),  # not a leap year: not a date at all
        ("1900-02-29T00:00:00Z", False),
        ("2026-04-31T00:00:00Z", False),
        ("2026-13-01T00:00:00Z", False),
        ("2026-00-01T00:00:00Z", False),
        ("2026-01-00T00:00:00Z", False),
        ("0000-01-01T00:00:00Z", False),
        ("2026-01-01T24:00:00Z", False),
        ("2026-01-01T10:60:00Z", False),
        ("2026-01-01T10:05:60Z", False),
        ("2026-01-01T10:05:00.2Z", False),  # other spellings go the general way
        ("2026-01-01T10:05:00+00:00", False),
        ("2026-01-01T12:05:00.200000+02:00", False),
        ("2026-01-01 10:05:00Z", False),
        ("2026-01-01T10:05:00z", False),
        ("2026-01-01T10:05:00", False),
        ("2026-1-01T10:05:00.2000Z", False),
        ("2026-01-01T10:05:0a.200000Z", False),
    ],
)
def test_timestamps_are_decoded_exactly_as_fromisoformat_does(text: str, taken: bool) -> None:
    """A timestamp the vectorised path takes is the same instant as the reference's; odd ones are left to it."""
    line = stored_line().replace(b"2026-01-01T10:00:01.200000Z", text.encode(), 1)
    (result,) = fast([line])
    assert (result is not None) == taken
    if result is not None:
        assert result == reference(line)


def test_random_timestamps_agree_with_the_reference() -> None:
    """Many instants across the calendar, with and without fractions, give the reference's microseconds."""
    rng = random.Random(3)
    lines = []
    for _ in range(2000):
        moment = datetime(1, 1, 1, tzinfo=UTC) + timedelta(microseconds=rng.randrange(315_537_897_600_000_000))
        if rng.random() < 0.3:
            moment = moment.replace(microsecond=0)
        text = moment.isoformat().replace("+00:00", "Z")
        lines.append(stored_line().replace(b"2026-01-01T10:00:01.200000Z", text.encode(), 1))
    assert fast(lines) == [reference(line) for line in lines]


def test_damaged_lines_are_never_read_differently() -> None:
    """Random edits of a good line: whatever the fast path still takes, the reference reads the same way."""
    rng = random.Random(11)
    good = stored_line()
    alphabet = b'{}[]":,.-+0123456789eEZT \\\t\r\x00\x7f\xc3\xa9az'
    lines = []
    for _ in range(4000):
        line = bytearray(good)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(line))
            action = rng.random()
            if action < 0.4:
                line[at] = rng.choice(alphabet)
            elif action < 0.7:
                del line[at]
            else:
                line.insert(at, rng.choice(alphabet))
        lines.append(bytes(line).replace(b"\n", b" "))
    decoded = fast(lines)
    for line, result in zip(lines, decoded, strict=True):
        if result is not None:
            assert result == reference(line), line
    assert any(result is not None for result in decoded)  # edits inside values keep some lines readable


@pytest.mark.parametrize(
    "line",
    [
        stored_line()[:-1] + b',"extra":1}',  # an extra field
        stored_line()
        .replace(b'"timestamp":', b'"vehicle_id":"veh-00001","timestamp":')
        .replace(b',"vehicle_id":"veh-00001"', b"", 1),  # another field order
        stored_line().replace(b'"timestamp":', b'"timestamp": '),  # whitespace
        stored_line().replace(b"veh-00001", "v\u00e9h-1".encode()),  # non-ASCII: UTF-8 is the general reader's
        stored_line(vehicle="a-very-long-vehicle-identifier"),  # longer than 16 characters
        stored_line(battery_voltage=371.123456789),  # longer than 8 characters
        stored_line(battery_soc=1e-7),  # an exponent
        stored_line().replace(b"veh-00001", b"veh\\u0030001"),  # an escape
        stored_line() + b"\r",
        b"",
        b"   ",
    ],
)
def test_lines_off_the_layout_are_left_to_the_general_readers(line: bytes) -> None:
    """Another field order, extra fields, whitespace, escapes or long values: not read here, however valid."""
    assert fast([stored_line(), line, stored_line(second=2.0)])[1] is None


def test_a_block_without_lines_reads_nothing() -> None:
    """An empty batch is not an error."""
    block = parse_block(PADDING)
    assert len(block.ok) == 0 and len(block.ts) == 0


def test_ids_sharing_a_mix_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ids whose 64-bit mix collides are never merged: the second is reported inexact, not misread."""
    monkeypatch.setattr(fastlines, "_ID_MIX", np.uint64(0))  # the mix is then the first 8 bytes alone
    block = parse_block(
        block_of([stored_line("vehicle-0001"), stored_line("vehicle-0002"), stored_line("vehicle-0001")])
    )
    vocabulary = Vocabulary()
    codes, exact = vocabulary.encode_keys(block.vehicle_keys, block.vehicle_lengths)
    assert exact.tolist() == [True, False, True]
    assert list(vocabulary.codes) == ["vehicle-0001"] and codes[0] == codes[2]


def test_vocabulary_gives_names_and_keys_the_same_codes() -> None:
    """An id first met by name (general reader) and later by key (vectorised reader) keeps one code."""
    vocabulary = Vocabulary()
    assert vocabulary.encode_names(["veh-2", "veh-1", "veh-2"]).tolist() == [0, 1, 0]
    block = parse_block(block_of([stored_line(f"veh-{i}") for i in (1, 3, 2, 3)]))
    codes, exact = vocabulary.encode_keys(block.vehicle_keys, block.vehicle_lengths)
    assert exact.all() and codes.tolist() == [1, 2, 0, 2]
    assert vocabulary.encode_names(["veh-3"]).tolist() == [2]
    assert [name for name, _ in sorted(vocabulary.codes.items(), key=lambda item: item[1])] == [
        "veh-2",
        "veh-1",
        "veh-3",
    ]


def test_signal_order_is_the_schemas() -> None:
    """The layout the fast path expects is built from SIGNALS, in the order the consumer writes them."""
    assert orjson.loads(stored_line())["payload"].keys() == dict.fromkeys(SIGNALS).keys()
