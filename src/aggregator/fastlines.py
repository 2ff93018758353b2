"""Vectorised reading (numpy, 64-bit words) of lines in the consumer's exact layout::

    {"timestamp":"…","vehicle_id":"…","can_id":"…","payload":{"battery_soc":…,…,"cell_temp_max":…},"ingest_received_at":"…"}

:func:`parse_block` accepts a line only if it is printable ASCII without backslashes, has
exactly that layout (``SIGNALS`` in order), a ``…Z`` timestamp to the second or microsecond
naming a real instant, ids of at most 16 characters and signals of at most 8 characters
matching ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?``. Such a line is one
:func:`~src.aggregator.records.parse_line` reads with the same key and values; the rest is
left to the callers' general paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from src.common.schema import SIGNALS

U64 = np.uint64
QUOTES = 32
"""Quotes in a line of the layout: 12 keys and 4 string values, two each."""
MAX_NUMBER = 8
"""Longest signal text decoded here (one 64-bit word)."""
MAX_ID = 16
"""Longest vehicle_id or can_id decoded here (two 64-bit words)."""

_ONES = U64(0x0101010101010101)
_HIGH = U64(0x8080808080808080)
_LOW_BYTES = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [(1 << 64) - 1], dtype=U64)
"""_LOW_BYTES[n]: the lowest n bytes of a word."""
_DIGITS_TO_BINARY_1 = U64(100 + (1_000_000 << 32))
_DIGITS_TO_BINARY_2 = U64(1 + (10_000 << 32))
_PAIRS = U64(0x000000FF000000FF)
_POW10 = 10.0 ** np.arange(MAX_NUMBER)
_ID_MIX = U64(0x9E3779B97F4A7C15)
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
PADDING = bytes(16)
"""What a block passed to :func:`parse_block` ends with, after its last line break (room for 8-byte reads)."""


def _layout() -> list[tuple[int, int, int]]:
    """(quote number, offset from it, expected 8 bytes as an integer) for all fixed text of a line."""
    pieces = [
        (0, -1, b'{"timestamp":"'),
        (3, 0, b'","vehicle_id":"'),
        (7, 0, b'","can_id":"'),
        (11, 0, b'","payload":{"' + SIGNALS[0].encode() + b'":'),
    ]
    pieces += [(14 + 2 * i, -1, b',"' + name.encode() + b'":') for i, name in enumerate(SIGNALS) if i]
    pieces.append((28, -2, b'},"ingest_received_at":"'))
    words = []
    for quote, offset, text in pieces:
        starts = list(range(0, len(text) - 7, 8))
        if len(text) % 8:
            starts.append(len(text) - 8)  # overlapping the previous word: still every byte checked
        words += [(quote, offset + at, int.from_bytes(text[at : at + 8], "little")) for at in starts]
    return words


_LAYOUT = _layout()


@dataclass
class Block:
    """What :func:`parse_block` made of a block: per line whether it was read, and the readings it read.

    Ids come as their zero-padded 16 bytes (two little-endian words) and length, for a
    :class:`Vocabulary` to turn into codes.
    """

    ok: np.ndarray  # bool, one per line
    ends: np.ndarray  # int64, the position of each line's line break
    ts: np.ndarray  # int64 µs since the epoch, one per line read
    vehicle_keys: np.ndarray  # (lines read, 2) uint64
    vehicle_lengths: np.ndarray
    can_keys: np.ndarray
    can_lengths: np.ndarray
    values: np.ndarray  # (lines read, signals) float64


class Vocabulary:
    """Codes for id strings (vehicle or CAN ids), given as names or as the vectorised reader's keys.

    Names get codes in order of appearance. Keys are looked up in a sorted index of a 64-bit
    mix of their two words; the key of the code found is then compared in full, so a mix
    shared by two strings is never taken for a match (the line is reported inexact instead).
    """

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self._mixes = np.empty(0, U64)  # sorted
        self._mix_codes = np.empty(0, np.int64)
        self._keys = np.zeros((0, 2), U64)  # by code; zeros for codes only ever seen by name

    def encode_names(self, names: Sequence[str]) -> np.ndarray:
        codes = self.codes
        try:
            return np.fromiter(map(codes.__getitem__, names), np.int32, len(names))
        except KeyError:  # new names
            for name in dict.fromkeys(names):
                if name not in codes:
                    codes[name] = len(codes)
            return np.fromiter(map(codes.__getitem__, names), np.int32, len(names))

    def encode_keys(self, keys: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes of the strings with these keys, and whether each was matched exactly."""
        mixes = keys[:, 0] ^ (keys[:, 1] * _ID_MIX)
        codes, known = self._look_up(mixes)
        if not known.all():
            self._learn(keys[~known], lengths[~known], mixes[~known])
            codes, known = self._look_up(mixes)
        exact = (self._keys[codes] == keys).all(axis=1)
        return codes.astype(np.int32), exact

    def _look_up(self, mixes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not len(self._mixes):
            return np.zeros(len(mixes), np.int64), np.zeros(len(mixes), bool)
        at = np.minimum(np.searchsorted(self._mixes, mixes), len(self._mixes) - 1)
        return self._mix_codes[at], self._mixes[at] == mixes

    def _learn(self, keys: np.ndarray, lengths: np.ndarray, mixes: np.ndarray) -> None:
        """Add the strings of ``keys`` (one per distinct mix: the first) to the index."""
        mixes, first = np.unique(mixes, return_index=True)
        keys, lengths = keys[first], lengths[first]
        codes = np.array(
            [
                self.codes.setdefault(key.tobytes()[:length].decode("ascii"), len(self.codes))
                for key, length in zip(keys, lengths.tolist(), strict=True)
            ],
            np.int64,
        )
        if len(self.codes) > len(self._keys):
            grown = np.zeros((max(len(self.codes), 2 * len(self._keys)), 2), U64)
            grown[: len(self._keys)] = self._keys
            self._keys = grown
        self._keys[codes] = keys
        self._mixes = np.concatenate([self._mixes, mixes])
        self._mix_codes = np.concatenate([self._mix_codes, codes])
        order = np.argsort(self._mixes, kind="stable")
        self._mixes, self._mix_codes = self._mixes[order], self._mix_codes[order]


def parse_block(buffer: bytes) -> Block:
    """Read the lines that have the exact layout.

    ``buffer`` holds complete lines, each ending with a line break, followed by :data:`PADDING`.
    """
    size = len(buffer) - len(PADDING)
    if size <= 0:
        return _empty()
    padded = np.frombuffer(buffer, np.uint8)
    data = padded[:size]
    # words[i]: the 8 bytes from position i as a little-endian integer (an overlapping, unaligned view).
    # Every index used below stays inside it: a row's 32 quotes lie in the block, and each word
    # read starts well before the row's last quote.
    words = np.ndarray((size + 9,), "<u8", padded, 0, (1,))
    marks = np.flatnonzero((data == ord('"')) | (data == ord("\n")))  # one pass finds both
    is_quote = data[marks] == ord('"')
    quotes, ends = marks[is_quote], marks[~is_quote]
    starts = np.concatenate(([0], ends[:-1] + 1))
    ok = np.zeros(len(ends), bool)
    plain = (
        buffer.isascii()
        and b"\\" not in buffer
        and b"\x7f" not in buffer
        and np.count_nonzero(data < 0x20) == len(ends)  # no control character but the line breaks
    )
    if plain and len(quotes) == QUOTES * len(ends):
        lines = np.arange(len(ends))  # the usual block: checked line by line below all the same
        q = quotes.reshape(-1, QUOTES)
    else:
        quote_line = np.searchsorted(ends, quotes)
        candidate = np.bincount(quote_line, minlength=len(ends)) == QUOTES
        # Bytes outside printable ASCII wrap to above 0x5E when 0x20 is subtracted.
        odd = np.flatnonzero(((data - np.uint8(0x20)) > np.uint8(0x5E)) | (data == ord("\\")))
        candidate[np.searchsorted(ends, odd[data[odd] != ord("\n")])] = False
        lines = np.flatnonzero(candidate)
        q = quotes[candidate[quote_line]].reshape(-1, QUOTES)
    # The first quote right after the line's start, the last right before its end: the line's
    # 32 quotes are exactly this row's (the fixed text checks '{' before and '}' after them).
    good = (q[:, 0] == starts[lines] + 1) & (q[:, QUOTES - 1] == ends[lines] - 2) & (data[ends[lines] - 1] == ord("}"))
    for quote, offset, expected in _LAYOUT:
        good &= words[q[:, quote] + offset] == expected
    signal_start = q[:, 15:28:2] + 2  # after each signal key's '":'
    signal_end = np.empty_like(signal_start)
    signal_end[:, :-1] = q[:, 16:28:2] - 1  # the ',' before the next key
    signal_end[:, -1] = q[:, 28] - 2  # the '}' closing the payload
    values, numbers_ok = _numbers(words, signal_start.ravel(), signal_end.ravel())
    good &= numbers_ok.reshape(-1, len(SIGNALS)).all(axis=1)
    ts, ts_ok = _timestamps(words, q[:, 2] + 1, q[:, 3])
    good &= ts_ok
    vehicle_keys, vehicle_lengths = _ids(words, q[:, 6] + 1, q[:, 7])
    can_keys, can_lengths = _ids(words, q[:, 10] + 1, q[:, 11])
    good &= (vehicle_lengths <= MAX_ID) & (can_lengths <= MAX_ID)
    keep = np.flatnonzero(good)
    ok[lines[keep]] = True
    return Block(
        ok,
        ends,
        ts[keep],
        vehicle_keys[keep],
        vehicle_lengths[keep],
        can_keys[keep],
        can_lengths[keep],
        values.reshape(-1, len(SIGNALS))[keep],
    )


def _empty() -> Block:
    none, keys = np.empty(0, np.int64), np.empty((0, 2), U64)
    return Block(np.empty(0, bool), none, none, keys, none, keys, none, np.empty((0, len(SIGNALS))))


def _has_byte(words: np.ndarray, byte: int) -> np.ndarray:
    """High bit set in each byte of ``words`` equal to ``byte`` (all bytes below 0x80)."""
    differs = words ^ (_ONES * U64(byte))
    return ~(differs + U64(0x7F7F7F7F7F7F7F7F)) & _HIGH


def _are_digits(words: np.ndarray) -> np.ndarray:
    """High bit set in each byte of ``words`` that is an ASCII digit (all bytes below 0x80)."""
    return (words + U64(0x5050505050505050)) & ~(words + U64(0x4646464646464646)) & _HIGH


def _numbers(words: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The JSON numbers in [start, end) as float64, and which of them this decoder takes."""
    length = end - start
    ok = (length >= 1) & (length <= MAX_NUMBER)
    length = np.clip(length, 0, MAX_NUMBER)
    text = words[start] & _LOW_BYTES[length]  # first character in the lowest byte, zeros after the end
    inside = _LOW_BYTES[length] & _HIGH
    digits = _are_digits(text) & inside
    dots = _has_byte(text, ord(".")) & inside
    negative = (text & U64(0xFF)) == U64(ord("-"))
    ok &= (digits | dots | (negative.astype(U64) << U64(7))) == inside  # nothing but digits, '.' and a leading '-'
    has_dot = dots != 0
    ok &= np.bitwise_count(dots) <= 1
    sign_bits = negative.astype(U64) * U64(8)
    text, digits, dots = text >> sign_bits, digits >> sign_bits, dots >> sign_bits
    chars = length - negative  # after the sign
    ok &= (digits & U64(0x80)) != 0  # starts with a digit
    ok &= ~(((text & U64(0xFF)) == U64(ord("0"))) & ((digits & U64(0x8000)) != 0))  # no leading zero
    # The dot's byte index (its high bit is bit 8 * index + 7); a dot needs a digit on each side.
    dot_at = np.where(has_dot, np.frexp(dots.astype(np.float64))[1] - 8, MAX_NUMBER) // 8
    ok &= ~has_dot | (dot_at < chars - 1)
    # Drop the dot: the digits after it move down one byte.
    shift = np.minimum(dot_at, MAX_NUMBER - 1).astype(U64) * U64(8)
    below = (U64(1) << shift) - U64(1)
    text = np.where(has_dot, (text & below) | ((text >> (shift + U64(8))) << shift), text)
    count = chars - has_dot
    # Eight digits to binary (the first digit in the lowest byte), left-padded with zeros.
    value = (text - (U64(0x3030303030303030) & _LOW_BYTES[count])) << ((U64(8) - count.astype(U64)) * U64(8))
    value = value * U64(10) + (value >> U64(8))
    value = ((value & _PAIRS) * _DIGITS_TO_BINARY_1 + ((value >> U64(16)) & _PAIRS) * _DIGITS_TO_BINARY_2) >> U64(32)
    decimals = np.where(has_dot, chars - 1 - dot_at, 0)
    number = value.astype(np.float64) / _POW10[np.clip(decimals, 0, MAX_NUMBER - 1)]
    # '-0' is the integer 0 (so 0.0), '-0.0' is the float -0.0
    return np.where(negative & (has_dot | (value != 0)), -number, number), ok


def _byte(words: np.ndarray, index: int) -> np.ndarray:
    return ((words >> U64(8 * index)) & U64(0xFF)).astype(np.int64)


def _matches(words: np.ndarray, pattern: bytes) -> np.ndarray:
    """Whether each word's 8 characters fit ``pattern``: ``9`` any digit, ``?`` anything, else that character."""
    digits = U64(sum(0x80 << (8 * i) for i, c in enumerate(pattern) if c == ord("9")))
    fixed = U64(sum(0xFF << (8 * i) for i, c in enumerate(pattern) if c not in b"9?"))
    value = U64(sum(c << (8 * i) for i, c in enumerate(pattern) if c not in b"9?"))
    return ((_are_digits(words) & digits) == digits) & ((words & fixed) == value)


def _pairs(words: np.ndarray) -> np.ndarray:
    """Byte i becomes 10 * digit i + digit i+1 (meaningful where both are digits)."""
    values = (words ^ U64(0x3030303030303030)) & U64(0x0F0F0F0F0F0F0F0F)
    return values * U64(10) + (values >> U64(8))


def _timestamps(words: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """µs since the epoch of ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z`` in [start, end), and which parsed."""
    length = end - start
    date, clock, seconds = words[start], words[start + 8], words[start + 16]
    fraction = words[np.maximum(end - 8, 0)]  # the last 8 characters
    ok = _matches(date, b"9999-99-") & _matches(clock, b"99T99:99")
    with_fraction = (length == 27) & _matches(seconds, b":99.9999") & _matches(fraction, b".999999Z")
    ok &= with_fraction | ((length == 20) & _matches(seconds, b":99Z????"))
    date, clock, seconds, fraction = _pairs(date), _pairs(clock), _pairs(seconds), _pairs(fraction)
    year = _byte(date, 0) * 100 + _byte(date, 2)
    month, day = _byte(date, 5), _byte(clock, 0)
    hour, minute, second = _byte(clock, 3), _byte(clock, 6), _byte(seconds, 1)
    micros = np.where(with_fraction, _byte(fraction, 1) * 10_000 + _byte(fraction, 3) * 100 + _byte(fraction, 5), 0)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 0, 12)] + (leap & (month == 2))
    ok &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days)
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59)
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    y = year - (month <= 2)
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    days = era * 146_097 + day_of_era - 719_468
    return ((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros, ok


def _ids(words: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low word, high word) of each string of at most 16 characters in [start, end), and its length."""
    length = end - start
    low = words[start] & _LOW_BYTES[np.clip(length, 0, 8)]
    high = words[start + 8] & _LOW_BYTES[np.clip(length - 8, 0, 8)]
    return np.stack([low, high], axis=1), length
