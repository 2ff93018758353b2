"""The battery management system's CAN frames, read from ``bms.dbc``: encode, decode, quantise.

A reading is what a gateway reports after decoding one group of the BMS's three frames
(0x1F0, 0x1F1, 0x1F2). The DBC is the single source of every signal's resolution and range:
nothing here hard-codes a factor or a bound, so the simulator cannot report a value the
frames could not carry. :func:`decode` reports values at the signal's resolution (the
nearest double to the decimal value) and ``encode(decode(frames)) == frames``;
:func:`quantise` gives the same numbers for whole arrays. Why and how: docs/can-dbc.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Final, cast

import numpy as np
import numpy.typing as npt
from cantools.database.can import Database, Message, Signal

from src.common.schema import SIGNALS

FloatArray = npt.NDArray[np.float64]

DBC_PATH: Final = Path(__file__).with_name("bms.dbc")
"""The BMS's DBC, next to this module (the project runs from its checkout)."""

PRIMARY_FRAME_ID: Final = 0x1F0
"""``BMS_PackStatus``: the frame a reading is named after."""

PRIMARY_CAN_ID: Final = f"0x{PRIMARY_FRAME_ID:X}"
"""A reading's ``can_id``: the primary frame's identifier as the schema writes it."""


@dataclass(frozen=True)
class CanFrame:
    """One classic CAN data frame: an identifier and up to 8 data bytes."""

    frame_id: int
    data: bytes


@dataclass(frozen=True)
class SignalSpec:
    """One payload signal as the DBC defines it: where it travels and how it is scaled.

    ``factor_units`` and ``offset_units`` are the factor and offset in steps of the
    resolution ``10**-decimals``: exact integers, so quantising is exact integer arithmetic
    followed by a single correctly rounded division.
    """

    name: str
    frame_name: str
    frame_id: int
    scale: float
    offset: float
    minimum: float
    maximum: float
    unit: str
    decimals: int
    factor_units: int
    offset_units: int


@dataclass(frozen=True)
class _FrameSpec:
    """A BMS frame and the payload signals it carries, in the DBC's bit order."""

    frame_id: int
    signals: tuple[str, ...]


@dataclass(frozen=True)
class _Grid:
    """Quantisation parameters shaped to broadcast against the values: (k, 1) columns for k signals' rows."""

    minimum: FloatArray
    maximum: FloatArray
    offset: FloatArray
    scale: FloatArray
    factor_units: FloatArray
    offset_units: FloatArray
    divisor: FloatArray

    @classmethod
    def of(cls, specs: Sequence[SignalSpec]) -> _Grid:
        def column(values: Iterable[float]) -> FloatArray:
            return np.array(list(values), dtype=np.float64).reshape(-1, 1)

        return cls(
            minimum=column(s.minimum for s in specs),
            maximum=column(s.maximum for s in specs),
            offset=column(s.offset for s in specs),
            scale=column(s.scale for s in specs),
            factor_units=column(s.factor_units for s in specs),
            offset_units=column(s.offset_units for s in specs),
            divisor=column(10.0**s.decimals for s in specs),
        )

    def row(self, index: int) -> _Grid:
        """One signal's parameters as 0-d arrays, which keep the shape of the values they meet."""
        return _Grid(*(np.asarray(getattr(self, field.name)[index, 0]) for field in fields(self)))


@cache
def database() -> Database:
    """The parsed DBC, loaded once with cantools' strict checks (overlapping or oversized signals fail)."""
    db = Database(strict=True)
    db.add_dbc_file(DBC_PATH)
    return db


@cache
def signal_specs() -> tuple[SignalSpec, ...]:
    """Every payload signal's spec, in ``SIGNALS`` order, built from the DBC."""
    return specs_of(database())


def specs_of(db: Database) -> tuple[SignalSpec, ...]:
    """The signal specs a DBC defines; refuses one whose signals are not exactly the payload's.

    A signal the payload lacks (a counter, a checksum) would make a decoded group differ
    from a reading, and a range wider than the signal's bits would let a saturated value
    overflow its field: both are errors in the DBC, so they stop the load.
    """
    specs = [_spec(message, signal) for message in db.messages for signal in message.signals]
    names = sorted(spec.name for spec in specs)  # a list, so a signal sent in two frames is refused too
    if names != sorted(SIGNALS):
        raise ValueError(f"DBC signals {names} are not the payload's {sorted(SIGNALS)}")
    return tuple(sorted(specs, key=lambda spec: SIGNALS.index(spec.name)))


def _spec(message: Message, signal: Signal) -> SignalSpec:
    """A signal's spec, its decimals read from the factor and offset as the DBC writes them."""
    if signal.minimum is None or signal.maximum is None:
        raise ValueError(f"signal {signal.name} has no range in the DBC")
    scale, offset = Decimal(repr(signal.scale)), Decimal(repr(signal.offset))
    decimals = max(_decimal_places(scale), _decimal_places(offset))
    spec = SignalSpec(
        name=signal.name,
        frame_name=message.name,
        frame_id=message.frame_id,
        scale=float(signal.scale),
        offset=float(signal.offset),
        minimum=float(signal.minimum),
        maximum=float(signal.maximum),
        unit=signal.unit or "",
        decimals=decimals,
        factor_units=int(scale.scaleb(decimals)),
        offset_units=int(offset.scaleb(decimals)),
    )
    _check_range_fits(spec, signal.length, signal.is_signed)
    return spec


def _decimal_places(value: Decimal) -> int:
    """Digits after the point of a number as the DBC writes it (0.1 -> 1, 0.001 -> 3, 10 -> 0)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -int(exponent))


def _check_range_fits(spec: SignalSpec, length: int, signed: bool) -> None:
    """Saturating to the range must give raw values the signal's bits can hold (cantools does not check)."""
    lowest, highest = (-(1 << (length - 1)), (1 << (length - 1)) - 1) if signed else (0, (1 << length) - 1)
    raws = [round((bound - spec.offset) / spec.scale) for bound in (spec.minimum, spec.maximum)]
    if not all(lowest <= raw <= highest for raw in raws):
        raise ValueError(f"signal {spec.name}: range [{spec.minimum}, {spec.maximum}] does not fit in {length} bits")


def signal_spec(name: str) -> SignalSpec:
    """One signal's spec by payload name; KeyError for a name the payload does not have."""
    return signal_specs()[_index(name)]


def _index(name: str) -> int:
    try:
        return SIGNALS.index(name)
    except ValueError:
        raise KeyError(name) from None


@cache
def _frames() -> tuple[_FrameSpec, ...]:
    return tuple(
        _FrameSpec(message.frame_id, tuple(signal.name for signal in message.signals))
        for message in sorted(database().messages, key=lambda message: message.frame_id)
    )


def encode(payload: Mapping[str, float]) -> list[CanFrame]:
    """A reading's payload as the BMS's frames, in identifier order (cantools, strict).

    The payload must hold exactly the seven signals, each within its DBC range (cantools
    raises ``EncodeError`` otherwise; :func:`quantise` saturates first if that is wanted).
    """
    if set(payload) != set(SIGNALS):
        raise ValueError(f"payload signals {sorted(payload)} are not {sorted(SIGNALS)}")
    db = database()
    return [
        CanFrame(frame.frame_id, db.encode_message(frame.frame_id, {name: payload[name] for name in frame.signals}))
        for frame in _frames()
    ]


def decode(frames: Iterable[CanFrame]) -> dict[str, float]:
    """The payload one group of BMS frames carries, each value at its signal's resolution.

    The group must hold each BMS frame exactly once, in any order. ``decode_choices=False``
    keeps every value a number (the DBC defines no value tables anyway).
    """
    group = list(frames)
    expected = sorted(frame.frame_id for frame in _frames())
    if sorted(frame.frame_id for frame in group) != expected:
        got = [hex(frame.frame_id) for frame in group]
        raise ValueError(f"a frame group holds each of {[hex(i) for i in expected]} once, got {got}")
    db = database()
    merged: dict[str, float] = {}
    for frame in group:
        decoded = cast("dict[str, float]", db.decode_message(frame.frame_id, frame.data, decode_choices=False))
        merged.update(decoded)
    return {spec.name: round(merged[spec.name], spec.decimals) for spec in signal_specs()}


def quantise(name: str, values: npt.ArrayLike) -> FloatArray:
    """What ``decode(encode(...))`` reports for each value of one signal, saturated to its range (NaN stays NaN)."""
    return _quantised(np.asarray(values, dtype=np.float64), _signal_grid(_index(name)))


def quantise_columns(columns: Sequence[npt.ArrayLike]) -> FloatArray:
    """All seven signals at once: ``columns[i]`` holds ``SIGNALS[i]``'s values; returns a (7, n) array.

    Bit for bit the same as :func:`quantise`, in one numpy pass instead of seven.
    """
    if len(columns) != len(SIGNALS):
        raise ValueError(f"{len(columns)} columns for {len(SIGNALS)} signals")
    return _quantised(np.asarray(columns, dtype=np.float64), _grid())


@cache
def _grid() -> _Grid:
    return _Grid.of(signal_specs())


@cache
def _signal_grid(index: int) -> _Grid:
    return _grid().row(index)


def _quantised(values: FloatArray, grid: _Grid) -> FloatArray:
    """Saturate, then cantools' raw value, then that raw value as a correctly rounded decimal.

    Same IEEE operations and half-to-even rounding as cantools' encoder, so the raw value is
    identical; the numerator is an exact integer, and the result is never -0.0 (docs/can-dbc.md, "Rounding").
    """
    saturated = np.minimum(np.maximum(values, grid.minimum), grid.maximum)
    raw = np.rint((saturated - grid.offset) / grid.scale)
    result: FloatArray = (raw * grid.factor_units + grid.offset_units) / grid.divisor
    return result
