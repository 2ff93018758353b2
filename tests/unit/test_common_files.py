"""Durable writes: a file that exists is complete, and its name survives a power cut."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.common.files import fsync_dir, write_atomically


def test_write_atomically_replaces_the_target_and_fsyncs_file_and_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The new content replaces the old one whole; data and directory entry are both fsynced."""
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert len(synced) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails before the rename leaves readers the previous complete file."""
    target = tmp_path / "out.json"
    target.write_bytes(b"old")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"new")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert target.read_bytes() == b"old"


def test_fsync_dir_closes_what_it_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even when fsync fails, the directory descriptor is closed (no descriptor leak in a long-running consumer)."""
    closed: list[int] = []
    real_close = os.close

    def failing_fsync(fd: int) -> None:
        raise OSError("io error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    monkeypatch.setattr(os, "close", lambda fd: (closed.append(fd), real_close(fd))[1])
    with pytest.raises(OSError, match="io error"):
        fsync_dir(tmp_path)
    assert len(closed) == 1
