"""Bounded exponential backoff with full jitter, the one retry rule of every service.

Full jitter (a delay drawn uniformly from zero to the exponential bound) spreads the
retries of many clients, pollers and consumers, so a recovering endpoint is not hit by
all of them in lockstep.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(attempt: int, base_s: float, cap_s: float, rng: Callable[[], float] = random.random) -> float:
    """The delay before retry number ``attempt`` (0-based): uniform in [0, min(cap, base * 2**attempt)]."""
    return min(cap_s, base_s * 2.0 ** min(attempt, 32)) * rng()


class Backoff:
    """:func:`full_jitter` with its attempt counter, for loops that retry until they succeed."""

    def __init__(self, base_s: float = 0.2, cap_s: float = 20.0, rng: Callable[[], float] = random.random) -> None:
        self.base_s = base_s
        self.cap_s = cap_s
        self._rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        delay = full_jitter(self.attempt, self.base_s, self.cap_s, self._rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
