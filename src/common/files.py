"""Durable file writes: what "a file that exists is complete" rests on.

A rename is atomic, but neither the data nor the rename survives a power cut until they
are fsynced: the file before the rename, its directory after it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make the directory's entries (a new file name, a rename) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Make a file's data durable (before it is renamed into place)."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def write_atomically(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` so readers see the old file or the new one, never half of it."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(target.parent)
