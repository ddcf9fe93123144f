"""Red-team tests of the posix put path (create-only commit without a look first, no
unlink of a renamed temporary name, `exists`/`size` from one ``openat2(O_PATH)``), the
provenance time, the index's cached table names and the composite remove.

Each test names what it attacks; most compare the fast path with the portable one
(``_linux.enabled = False``), which is what the code before the shortcut did.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from butler import ButlerError
from butler.storages.posix import PosixStorage

LINUX = sys.platform.startswith("linux")


def _outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """(exception class name or ``"ok"``, message or repr of the value)."""
    try:
        value = call()
    except ButlerError as exc:
        return type(exc).__name__, str(exc)
    return "ok", repr(value)


def _temporaries(root: Path) -> list[str]:
    """Temporary names left anywhere under ``root``."""
    return sorted(
        os.path.join(d, f) for d, _, files in os.walk(root) for f in files if "butler-tmp" in f
    )


# -- the temporary name after a commit ---------------------------------------------------


@pytest.mark.parametrize("xattrs", [None, False])
def test_overwrite_onto_a_hard_link_of_the_temporary_leaves_no_temporary(
    tmp_path: Path, xattrs: bool | None
) -> None:
    """Attacks ``gone``: rename(2) onto another link of the same file succeeds and does
    nothing, so the temporary name is still there after an overwrite commit."""
    storage = PosixStorage(str(tmp_path / "repo"), xattrs=xattrs)
    storage.write_bytes("a/b.bin", b"old")
    final = storage.path("a/b.bin")
    with storage.atomic_local_path("a/b.bin", overwrite=True) as path:
        Path(path).write_bytes(b"new")
        os.unlink(final)
        os.link(path, final)  # a serializer (or a neighbour) links it into place
    assert storage.read_bytes("a/b.bin") == b"new"
    assert storage.metadata("a/b.bin")["size"] == 3
    assert _temporaries(tmp_path / "repo") == []
    storage.close()
