"""The services' garbage-collector settings (measured to matter: docs/performance.md)."""

from __future__ import annotations

import subprocess
import sys

from src.common import memory
from tests.paths import REPO_ROOT


def test_tuning_freezes_the_startup_heap_and_raises_the_thresholds() -> None:
    """Run in a child process: the tuning is process-wide, and this test process must keep CPython's defaults."""
    code = (
        "import gc; from src.common import memory; memory.tune_for_throughput(); "
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60, cwd=REPO_ROOT
    )
    thresholds = (memory.YOUNG_THRESHOLD, memory.MIDDLE_THRESHOLD, memory.OLD_THRESHOLD)
    assert result.stdout.split("\n")[0] == f"{thresholds} True"
