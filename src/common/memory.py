"""Garbage-collector settings for the long-running services (receiver, consumer).

Validation makes about ten short-lived objects per reading, and a busy consumer holds
tens of thousands of readings between receiving and deleting them. With CPython's
default thresholds (700, 10, 10) the cyclic collector then runs hundreds of times a
second and keeps re-scanning the readings in flight: in a consumer draining 150,000
readings it was about a third of the process's CPU (docs/performance.md). Reference
counting frees nearly all of these objects the moment they are done with; the collector
is only needed for reference cycles, which the hot paths do not make. So the services
collect the young generation every 50,000 allocations instead of every 700, and freeze
what startup allocated (modules, settings, clients: never garbage) out of its sight.
Cycles are still collected, only later.
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
