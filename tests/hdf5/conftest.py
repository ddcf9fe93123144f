"""Fixtures of the butler-hdf5 suite: a repository on each storage that h5py can serve."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
def repo(request: pytest.FixtureRequest, tmp_path: Path, private_tmp: Path) -> Iterator[Butler]:
    """A fresh repository on local disk or in memory."""
    if request.param == "posix":
        root = str(tmp_path / "repo")
    else:
        root = f"memory://hdf5-{uuid.uuid4().hex}"
    butler = Butler.create(root)
    yield butler
    butler.close()
    if request.param == "memory":
        from butler.storages.memory import MemoryStorage

        MemoryStorage.clear(root[len("memory://") :])


@pytest.fixture
def posix_repo(tmp_path: Path, private_tmp: Path) -> Butler:
    """A fresh repository on local disk (files can be opened with h5py directly)."""
    return Butler.create(str(tmp_path / "repo"))


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
