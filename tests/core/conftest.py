"""Fixtures for core tests: a fresh repository on each core storage."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from butler import Butler


@pytest.fixture(params=["posix", "memory"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Butler:
    """A new repository on posix (a temp dir) or memory (a unique name)."""
    if request.param == "posix":
        return Butler.create(str(tmp_path / "repo"))
    return Butler.create(f"memory://{uuid.uuid4().hex}")


@pytest.fixture
def posix_repo(tmp_path: Path) -> Butler:
    """A new repository on local disk."""
    return Butler.create(str(tmp_path / "repo"))
