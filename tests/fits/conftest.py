"""Fixtures of the butler-fits suite: a repository on each storage that needs no server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

# The whole suite needs the plugin (and what it brings): without it every module here skips
# with this reason, even one that imports astropy at its top.
pytest.importorskip("butler_fits", reason="butler-fits is not installed")

from butler import Butler


@pytest.fixture(params=["posix", "memory"])
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    """A fresh repository on local disk, then in memory (shared ``butler_repo`` cleans up)."""
    return butler_repo(request.param)


@pytest.fixture
def posix_repo(butler_repo: Callable[..., Butler]) -> Butler:
    """A fresh repository on local disk (for tests that open the files directly)."""
    return butler_repo("posix")


class Tools:
    """Helpers to look at and tamper with stored datasets behind butler's back."""

    @staticmethod
    def path(butler: Butler, dataset_type: str, **data_id: Any) -> str:
        """Local path of a dataset in a posix repository."""
        assert butler.storage.type_name == "posix"
        return butler.location(dataset_type, **data_id).uri

    @staticmethod
    def read_bytes(butler: Butler, dataset_type: str, **data_id: Any) -> bytes:
        """A dataset's bytes as stored."""
        return butler.storage.read_bytes(butler.location(dataset_type, **data_id).key)

    @staticmethod
    def replace(
        butler: Butler, dataset_type: str, data: bytes, *, keep_type: bool = True, **data_id: Any
    ) -> None:
        """Replace a dataset's bytes (corruption, truncation); ``keep_type=False`` makes it
        a foreign file, with no butler metadata."""
        key = butler.location(dataset_type, **data_id).key
        storage = butler.storage
        meta = storage.metadata(key) if keep_type and storage.exists(key) else {}
        meta.pop("size", None)
        meta.pop("sha256", None)
        storage.write_bytes(key, data, metadata=meta)


@pytest.fixture
def tools() -> type[Tools]:
    """The `Tools` helpers."""
    return Tools
