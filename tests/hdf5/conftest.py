"""Fixtures of the butler-hdf5 suite: a repository on each storage that h5py can serve."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# The whole suite needs the plugin (and what it brings): without it every module here skips
# with this reason, even one that imports h5py at its top.
pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")

from butler import Butler


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory used as the process's temporary directory, to spot leftover temp files."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("TMPDIR", str(scratch))
    return scratch


@pytest.fixture(params=["posix", "memory"])
def repo(
    request: pytest.FixtureRequest, butler_repo: Callable[..., Butler], private_tmp: Path
) -> Butler:
    """A fresh repository on local disk or in memory (shared ``butler_repo`` cleans up)."""
    return butler_repo(request.param)


@pytest.fixture
def posix_repo(butler_repo: Callable[..., Butler], private_tmp: Path) -> Butler:
    """A fresh repository on local disk (files can be opened with h5py directly)."""
    return butler_repo("posix")


@pytest.fixture
def file_of() -> Any:
    """``file_of(butler, dataset_type, **data_id)``: local path of a dataset on posix."""

    def find(butler: Butler, dataset_type: str, **data_id: Any) -> str:
        location = butler.location(dataset_type, **data_id)
        path = os.path.join(butler.storage.root, location.key)
        assert os.path.isfile(path), path
        return path

    return find


@pytest.fixture
def leftovers(private_tmp: Path) -> Any:
    """``leftovers(butler)``: temp files a write left (hidden in the repo, or in TMPDIR)."""

    def find(butler: Butler) -> list[str]:
        # butler-s3 keeps one lock file per policy in a private per-user directory there:
        # that is state, not a leftover of the write.
        found = [str(p) for p in private_tmp.rglob("*") if "butler-s3-locks-" not in str(p)]
        if butler.storage.type_name == "posix":
            root = Path(butler.storage.root)
            found += [str(p) for p in root.rglob(".*") if "butler-tmp" in p.name]
        return found

    return find
