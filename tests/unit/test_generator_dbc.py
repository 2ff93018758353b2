"""The BMS DBC and its codec: the frames a reading is decoded from, and quantising without frames.

Values are checked exhaustively where the range allows (every step of every signal, every
half step between them), and otherwise with seeded random values; the reference is
always cantools itself, never this module's own arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import annotated_types
import cantools
import numpy as np
import pytest
from cantools.database.can import Database, Signal

from src.common.schema import SIGNALS, Payload, Reading
from src.generator import dbc_signals
from src.generator.dbc_signals import (
    DBC_PATH,
    PRIMARY_CAN_ID,
    PRIMARY_FRAME_ID,
    CanFrame,
    FloatArray,
    SignalSpec,
    database,
    decode,
    encode,
    quantise,
    quantise_columns,
    signal_spec,
    signal_specs,
    specs_of,
)

FRAMES = {0x1F0: "BMS_PackStatus", 0x1F1: "BMS_CellVoltages", 0x1F2: "BMS_CellTemperatures"}
SIGNED = {"battery_current", "cell_temp_min", "cell_temp_max"}
SEED = 20261123


def _cantools_signal(name: str) -> Signal:
    return database().get_message_by_frame_id(signal_spec(name).frame_id).get_signal_by_name(name)


def _raw_range(spec: SignalSpec) -> range:
    lo, hi = (round((bound - spec.offset) / spec.scale) for bound in (spec.minimum, spec.maximum))
    return range(lo, hi + 1)


def _decimal(spec: SignalSpec, raw: int) -> float:
    """The value a raw step stands for, parsed from its decimal text: independent of the module's arithmetic."""
    return float(f"{raw * spec.factor_units + spec.offset_units}e-{spec.decimals}")


def _steps(spec: SignalSpec) -> FloatArray:
    """Every value the signal can carry, lowest to highest."""
    return np.array([_decimal(spec, raw) for raw in _raw_range(spec)])


def _via_conversion(signal: Signal, value: float, decimals: int) -> float:
    """cantools' encode arithmetic, then its decode arithmetic, then decode's rounding: decode(encode()) minus bits."""
    scaled = signal.conversion.raw_to_scaled(signal.conversion.numeric_scaled_to_raw(value))
    assert isinstance(scaled, float)
    return round(scaled, decimals)


def _rows(columns: FloatArray) -> Iterator[dict[str, float]]:
    """The payloads a (7, n) array holds, one per column."""
    for row in columns.T.tolist():
        yield dict(zip(SIGNALS, row, strict=True))


def _probes(spec: SignalSpec, rng: np.random.Generator, n: int) -> FloatArray:
    """Awkward values for one signal: anywhere around its range, exact half steps and their neighbours, near zero."""
    raws = _raw_range(spec)
    span = spec.maximum - spec.minimum
    halves = (rng.integers(raws.start, raws.stop - 1, n) + 0.5) * spec.scale + spec.offset
    extremes = [spec.minimum, spec.maximum, 0.0, -0.0, -1e-300, 1e300, -1e300, np.inf, -np.inf]
    extremes += [np.nextafter(spec.minimum, -np.inf), np.nextafter(spec.maximum, np.inf)]
    values = np.concatenate(
        [
            rng.uniform(spec.minimum - 0.1 * span, spec.maximum + 0.1 * span, n),
            halves,
            np.nextafter(halves, np.inf),
            np.nextafter(halves, -np.inf),
            rng.uniform(-spec.scale, spec.scale, n),
            extremes,
        ]
    )
    return rng.permutation(values)


def _saturated(name: str, values: FloatArray) -> FloatArray:
    spec = signal_spec(name)
    return np.clip(values, spec.minimum, spec.maximum)


def _dbc_with(old: str, new: str) -> Database:
    """The real DBC with one piece of text replaced, parsed with cantools' strict checks."""
    text = DBC_PATH.read_text()
    assert old in text
    db = Database(strict=True)
    db.add_dbc_string(text.replace(old, new))
    return db


def test_dbc_parses_with_cantools_strict_checking() -> None:
    """Any CAN tool must be able to read the file; strict loading refuses overlapping or oversized signals."""
    db = cantools.database.load_file(DBC_PATH, database_format="dbc", strict=True)
    assert isinstance(db, Database)
    assert {message.frame_id: message.name for message in db.messages} == FRAMES
    assert Path(dbc_signals.__file__).with_name("bms.dbc") == DBC_PATH  # found wherever the checkout is
    assert database() is database()  # loaded once


def test_primary_frame_carries_the_pack_signals_and_names_the_reading() -> None:
    """0x1F0 is the can_id every reading carries, so it must be the pack status frame."""
    message = database().get_message_by_frame_id(PRIMARY_FRAME_ID)
    assert message.name == "BMS_PackStatus"
    assert [signal.name for signal in message.signals] == ["battery_soc", "battery_voltage", "battery_current"]
    assert PRIMARY_CAN_ID == "0x1F0"
    assert int(PRIMARY_CAN_ID, 16) == PRIMARY_FRAME_ID


def test_frames_are_classic_intel_bms_frames_with_comments() -> None:
    """The layout docs/can-dbc.md documents: 8 bytes at most, little-endian, sent by BMS, explained by comments."""
    db = database()
    assert [node.name for node in db.nodes] == ["BMS", "GATEWAY"]
    assert {message.frame_id: message.length for message in db.messages} == {0x1F0: 6, 0x1F1: 4, 0x1F2: 4}
    for message in db.messages:
        assert not message.is_extended_frame
        assert message.senders == ["BMS"]
        assert message.cycle_time == 200
        assert message.comment
        for signal in message.signals:
            assert (signal.length, signal.byte_order) == (16, "little_endian")
            assert signal.is_signed == (signal.name in SIGNED)
            assert signal.receivers == ["GATEWAY"]
            assert signal.comment
            assert signal.offset == 0


def test_signal_names_are_the_payload_fields_and_nothing_else() -> None:
    """A counter or checksum in a frame would make a decoded frame group differ from a reading."""
    in_frame_order = [
        signal.name
        for message in sorted(database().messages, key=lambda message: message.frame_id)
        for signal in message.signals
    ]
    assert in_frame_order == list(SIGNALS)
    assert [spec.name for spec in signal_specs()] == list(SIGNALS)


def test_dbc_ranges_equal_the_schema_bounds() -> None:
    """The simulator saturates to the DBC range and the receiver validates with the schema: they must agree."""
    for name in SIGNALS:
        metadata = Payload.model_fields[name].metadata
        ge = next(item.ge for item in metadata if isinstance(item, annotated_types.Ge))
        le = next(item.le for item in metadata if isinstance(item, annotated_types.Le))
        signal = _cantools_signal(name)
        assert (signal.minimum, signal.maximum) == (ge, le), name
        assert (signal_spec(name).minimum, signal_spec(name).maximum) == (ge, le), name


def test_specs_are_read_from_the_dbc() -> None:
    """Specs mirror the DBC, with decimals derived from the factor, so nothing is hard-coded twice."""
    decimals = {0.1: 1, 0.001: 3}
    for name in SIGNALS:
        signal, spec = _cantools_signal(name), signal_spec(name)
        assert (spec.scale, spec.offset, spec.unit) == (signal.scale, signal.offset, signal.unit)
        assert spec.frame_id == database().get_message_by_name(spec.frame_name).frame_id
        assert (spec.decimals, spec.factor_units, spec.offset_units) == (decimals[signal.scale], 1, 0)
    with pytest.raises(KeyError):
        signal_spec("rolling_counter")


def test_every_step_decodes_to_its_decimal_and_encodes_back() -> None:
    """Exhaustive over every value each signal can carry: cantools' arithmetic plus decode's rounding is exact."""
    for name in SIGNALS:
        spec, signal = signal_spec(name), _cantools_signal(name)
        for raw in _raw_range(spec):
            scaled = signal.conversion.raw_to_scaled(raw)
            assert isinstance(scaled, float)
            value = round(scaled, spec.decimals)
            assert value == _decimal(spec, raw), (name, raw)
            assert signal.conversion.numeric_scaled_to_raw(value) == raw, (name, raw)
            assert abs(scaled - value) <= 1e-9 * max(1.0, abs(value))
        steps = _steps(spec)
        assert np.array_equal(quantise(name, steps), steps), name


def test_quantise_equals_cantools_on_every_half_step() -> None:
    """Exact half steps are where rounding modes differ: numpy's rint must round them as cantools' round() does."""
    for name in SIGNALS:
        spec, signal = signal_spec(name), _cantools_signal(name)
        raws = _raw_range(spec)
        halves = np.array([_decimal(spec, raw) for raw in raws[:-1]]) + spec.scale / 2
        for probe in (halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf)):
            expected = [_via_conversion(signal, value, spec.decimals) for value in probe.tolist()]
            assert quantise(name, probe).tolist() == expected, name


def test_payloads_round_trip_through_the_frames_exactly() -> None:
    """decode(encode(p)) == p for quantised payloads covering every step of six signals and every 4th of the current.

    Also checks that rounding only removes cantools' binary noise: its unrounded decode is
    within 1e-9 (relative) of ours.
    """
    steps = {name: _steps(signal_spec(name)) for name in SIGNALS}
    steps["battery_current"] = steps["battery_current"][::4]
    n = max(len(values) for values in steps.values())
    rng = np.random.default_rng(SEED)
    columns = np.array([rng.permutation(np.resize(steps[name], n)) for name in SIGNALS])
    db = database()
    for payload in _rows(columns):
        frames = encode(payload)
        assert decode(frames) == payload
        for frame in frames:
            unrounded = db.decode_message(frame.frame_id, frame.data)
            assert isinstance(unrounded, dict)
            for name, value in unrounded.items():
                assert isinstance(value, float)
                assert abs(value - payload[name]) <= 1e-9 * max(1.0, abs(payload[name]))


def test_frames_round_trip_through_decode_exactly() -> None:
    """encode(decode(frames)) == frames for any in-range bits: decoding to the resolution loses nothing."""
    rng = np.random.default_rng(SEED + 1)
    db = database()
    specs = signal_specs()
    raws = np.array([rng.integers(_raw_range(s).start, _raw_range(s).stop, 2000) for s in specs])
    lowest = [[_raw_range(s).start] for s in specs]
    highest = [[_raw_range(s).stop - 1] for s in specs]
    raws = np.hstack([raws, lowest, highest, np.zeros((len(specs), 1), dtype=np.int64)])
    for row in raws.T.tolist():
        raw = dict(zip(SIGNALS, row, strict=True))
        frames = [
            CanFrame(i, db.encode_message(i, {s: raw[s] for s in names}, scaling=False))
            for i, names in ((0x1F0, SIGNALS[:3]), (0x1F1, SIGNALS[3:5]), (0x1F2, SIGNALS[5:]))
        ]
        payload = decode(frames)
        assert encode(payload) == frames
        assert payload == {s.name: _decimal(s, raw[s.name]) for s in specs}


def test_quantise_is_decode_of_encode_bit_for_bit() -> None:
    """quantise(x) == decode(encode(saturated x)) for random, half-step, tiny, huge and infinite values."""
    rng = np.random.default_rng(SEED + 2)
    columns = np.array([_probes(signal_spec(name), rng, 300) for name in SIGNALS])
    quantised = quantise_columns(list(columns))
    saturated = np.array([_saturated(name, column) for name, column in zip(SIGNALS, columns, strict=True)])
    for payload, expected in zip(_rows(saturated), _rows(quantised), strict=True):
        assert decode(encode(payload)) == expected
    for i, name in enumerate(SIGNALS):
        assert quantise(name, columns[i]).tobytes() == quantised[i].tobytes(), name  # bit for bit, signs of zero too


def test_out_of_range_values_saturate_and_the_encoder_refuses_them() -> None:
    """A BMS saturates a measurement beyond its frame's range; cantools' strict encoder would refuse it."""
    for name in SIGNALS:
        spec = signal_spec(name)
        beyond = np.array([spec.minimum - 1, -np.inf, -1e308, spec.maximum + 0.06, np.inf, 1e308])
        assert quantise(name, beyond).tolist() == [spec.minimum] * 3 + [spec.maximum] * 3
    payload = {name: signal_spec(name).maximum for name in SIGNALS}
    assert decode(encode(payload)) == payload
    with pytest.raises(cantools.database.EncodeError):
        encode({**payload, "battery_soc": 100.5})


def test_quantise_never_yields_negative_zero_and_keeps_nan() -> None:
    """A parked car's -0.04 A is reported as 0.0, not -0.0; NaN stays NaN so the schema refuses the reading."""
    values = quantise("battery_current", np.array([-0.04, -0.05, -1e-300, -0.0, np.nan]))
    assert values[:4].tolist() == [0.0] * 4
    assert not np.signbit(values[:4]).any()
    assert np.isnan(values[4])


def test_quantise_columns_needs_all_seven_signals() -> None:
    """Columns are matched to signals by position, so a missing one must fail rather than shift the rest."""
    with pytest.raises(ValueError):
        quantise_columns([np.zeros(3)] * 6)


def test_encode_needs_exactly_the_payload_signals() -> None:
    """A missing or unknown signal is a bug in the caller, not something to encode as zero or drop."""
    payload = {name: 1.0 for name in SIGNALS}
    with pytest.raises(ValueError):
        encode({**payload, "rolling_counter": 1.0})
    del payload["cell_temp_max"]
    with pytest.raises(ValueError):
        encode(payload)


def test_decode_needs_one_frame_of_each_kind() -> None:
    """A reading is a whole frame group: a missing, repeated or foreign frame must not yield a partial payload."""
    frames = encode({name: 1.0 for name in SIGNALS})
    assert decode(reversed(frames)) == decode(frames)
    for group in (frames[:2], [*frames, frames[0]], [*frames[:2], CanFrame(0x100, frames[2].data)]):
        with pytest.raises(ValueError):
            decode(group)


def test_decoded_group_is_a_valid_reading_payload() -> None:
    """What a gateway decodes from the frames passes the receiver's validation unchanged."""
    payload = decode(encode({name: 1.0 for name in SIGNALS}))
    reading = Reading.model_validate(
        {"timestamp": "2026-11-23T14:05:12.400Z", "vehicle_id": "veh-1", "can_id": PRIMARY_CAN_ID, "payload": payload}
    )
    assert reading.payload.model_dump() == payload


def test_specs_refuse_a_dbc_with_extra_signals() -> None:
    """A counter or checksum added to a frame would break 'a reading is the decode of a frame group'."""
    db = _dbc_with(
        "BMS_PackStatus: 6 BMS\n",
        'BMS_PackStatus: 8 BMS\n SG_ rolling_counter : 48|8@1+ (1,0) [0|255] "" GATEWAY\n',
    )
    with pytest.raises(ValueError, match="rolling_counter"):
        specs_of(db)


def test_specs_refuse_a_signal_sent_in_two_frames() -> None:
    """Merging the frames' decodes would silently keep one of the two values."""
    db = _dbc_with(
        "BMS_PackStatus: 6 BMS\n",
        'BMS_PackStatus: 8 BMS\n SG_ cell_temp_max : 48|16@1- (0.1,0) [-60|150] "degC" GATEWAY\n',
    )
    with pytest.raises(ValueError, match="not the payload's"):
        specs_of(db)


def test_specs_refuse_a_range_wider_than_the_signal_bits() -> None:
    """Saturating to such a range would still overflow the field, so the DBC itself is wrong."""
    with pytest.raises(ValueError, match="does not fit"):
        specs_of(_dbc_with('(0.1,0) [0|100] "%"', '(0.1,0) [0|10000] "%"'))


def test_specs_refuse_a_signal_without_a_range() -> None:
    """Without a range there is nothing to saturate to or to compare with the schema."""
    with pytest.raises(ValueError, match="no range"):
        specs_of(_dbc_with('(0.1,0) [0|100] "%"', '(0.1,0) [0|0] "%"'))


def test_specs_handle_factors_and_offsets_that_are_not_powers_of_ten() -> None:
    """A common temperature encoding (0.5 degC per bit, -40 offset) quantises exactly like cantools too."""
    db = _dbc_with("cell_temp_min : 0|16@1- (0.1,0) [-60|150]", "cell_temp_min : 0|16@1- (0.5,-40) [-40|87.5]")
    spec = specs_of(db)[SIGNALS.index("cell_temp_min")]
    assert (spec.decimals, spec.factor_units, spec.offset_units) == (1, 5, -400)
    signal = db.get_message_by_name("BMS_CellTemperatures").get_signal_by_name("cell_temp_min")
    probes = _probes(spec, np.random.default_rng(SEED + 3), 300)
    quantised = dbc_signals._quantised(probes[np.newaxis, :], dbc_signals._Grid.of([spec]))[0]
    clipped = np.clip(probes, spec.minimum, spec.maximum).tolist()
    assert quantised.tolist() == [_via_conversion(signal, value, spec.decimals) for value in clipped]
