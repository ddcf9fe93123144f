"""Fixtures for core tests: a fresh repository on each core storage (the shared
``butler_repo`` factory in tests/conftest.py creates and cleans up)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from butler import Butler


@pytest.fixture(params=["posix", "memory"])
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    """A new repository on posix (a temp dir) or memory (a unique name)."""
    return butler_repo(request.param)


@pytest.fixture
def posix_repo(butler_repo: Callable[..., Butler]) -> Butler:
    """A new repository on local disk."""
    return butler_repo("posix")
