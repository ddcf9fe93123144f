"""Fixtures of the security suites: a fresh repository on every storage, posix both with
extended attributes and with sidecar files (as on file systems without xattrs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ..reliability.conftest import ALL_STORAGES, PROCESS_STORAGES, make_repo
from ..reliability.helpers import Repo


@pytest.fixture(params=[*ALL_STORAGES, "posix-sidecar"])
def storage_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository root and storage options on each available storage."""
    yield from make_repo(request, request.param, tmp_path)


@pytest.fixture(params=[*PROCESS_STORAGES, "posix-sidecar"])
def shared_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """Like `storage_root`, for storages several processes can share (not ``memory``)."""
    yield from make_repo(request, request.param, tmp_path)
