"""Which processes a run left behind: those whose environment names its (unique, temporary) DATA_DIR.

Every process the embedded stack starts (moto, receiver, consumers, dashboard, simulator,
jobs) gets ``DATA_DIR`` in its environment, and each test's is a directory of its own, so
this finds a test's leftovers and nobody else's, whatever their command lines say.
"""

from __future__ import annotations

from pathlib import Path


def processes_with_data_dir(data_dir: Path) -> list[int]:
    """Pids of live processes whose environment holds ``DATA_DIR=<data_dir>`` (Linux /proc)."""
    entry = f"DATA_DIR={data_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if entry in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return sorted(found)
