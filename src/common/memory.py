"""Garbage-collector settings for the long-running services (receiver, consumer).

:func:`tune_for_throughput` freezes the startup heap and collects the young generation far
less often; cycles are still collected, only later. Why: docs/architecture.md, "Design
notes: common"; measured in docs/performance.md.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Allocations (minus deallocations) between young-generation collections (CPython: 700)."""
MIDDLE_THRESHOLD = 20
OLD_THRESHOLD = 100


def tune_for_throughput() -> None:
    """Call once, after startup: freeze the startup heap and collect far less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
