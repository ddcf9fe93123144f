"""Real small file systems for the tests that need one (a full disk, no xattrs, read-only).

Mounting needs root (CI runs as root); elsewhere the test skips with the reason.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted(where: Path, fstype: str = "tmpfs", options: str | None = "size=2m") -> Iterator[Path]:
    """Mount a fresh ``fstype`` at ``where`` (created), skipping the test if that fails."""
    where.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", fstype, *(["-o", options] if options else []), fstype, str(where)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {fstype} here: {done.stderr.strip() or done.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def remount_read_only(where: Path) -> None:
    """Make a file system mounted with `mounted` read-only."""
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
