"""Shared by the benchmarks that compare model files: drop a file from the page cache so the
engine reads it back from disk like any other (how a file was written decides how its cached
pages are mapped, and with it a small model's decode rate: docs/twins.md)."""

from __future__ import annotations

import os
from pathlib import Path


def evict(path: Path) -> None:
    """Drop a file's pages from the page cache (written pages are flushed first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
