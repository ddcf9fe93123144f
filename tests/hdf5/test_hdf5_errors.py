"""Corrupt input is a FormatError naming the dataset; failed writes leave nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

from butler import Butler, DatasetExistsError, FormatError  # noqa: E402


def _define(butler: Butler) -> None:
    butler.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"i": int})
    butler.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})


def _replace_bytes(butler: Butler, dataset_type: str, data: bytes, **data_id: Any) -> None:
    """Overwrite a stored dataset's bytes (keeping its metadata) through the storage."""
    location = butler.location(dataset_type, **data_id)
    meta = butler.storage.metadata(location.key)
    butler.storage.write_bytes(location.key, data, metadata=meta)


@pytest.mark.parametrize("dataset_type", ["arr", "cfg"])
def test_truncated_file(repo: Butler, dataset_type: str) -> None:
    _define(repo)
    value = np.arange(10_000.0) if dataset_type == "arr" else {"a": np.arange(10_000.0)}
    repo.put(value, dataset_type, i=1)
    data = repo.storage.read_bytes(repo.location(dataset_type, i=1).key)
    _replace_bytes(repo, dataset_type, data[: len(data) // 2], i=1)
    with pytest.raises(FormatError, match=rf"dataset '{dataset_type}' {{'i': 1}}.*truncated"):
        repo.get(dataset_type, i=1)


@pytest.mark.parametrize(
    "data",
    [b"", b"not an hdf5 file at all" * 100, b"\x89HDF\r\n\x1a\n" + b"\0" * 50],
    ids=["empty", "text", "magic-only"],
)
def test_not_hdf5(repo: Butler, data: bytes) -> None:
    _define(repo)
    repo.put(np.arange(3), "arr", i=1)
    _replace_bytes(repo, "arr", data, i=1)
    with pytest.raises(FormatError, match=r"dataset 'arr' \{'i': 1\}.*not a readable HDF5 file"):
        repo.get("arr", i=1)


def test_array_dataset_type_on_a_dict_file(repo: Butler) -> None:
    _define(repo)
    repo.put({"data": {"x": 1}}, "cfg", i=1)
    data = repo.storage.read_bytes(repo.location("cfg", i=1).key)
    meta = {"format": "hdf5", "python_type": "numpy.ndarray"}
    repo.storage.write_bytes(repo.location("arr", i=1).key, data, metadata=meta)
    with pytest.raises(FormatError, match=r"'arr'.*'/data' in the HDF5 file is a group"):
        repo.get("arr", i=1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.array([1, "a", None], dtype=object), r"dtype object\) cannot be stored in HDF5"),
        (np.ma.masked_array([1, 2], mask=[0, 1]), r"cannot store masked arrays"),
    ],
    ids=["object", "masked"],
)
def test_failed_array_write_leaves_nothing(
    repo: Butler, leftovers: Any, value: np.ndarray, message: str
) -> None:
    _define(repo)
    with pytest.raises(FormatError, match=rf"cannot write dataset 'arr' .*{message}"):
        repo.put(value, "arr", i=1)
    assert not repo.exists("arr", i=1)
    assert list(repo.datasets("arr")) == []
    assert leftovers(repo) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": np.arange(5), "b": {"c": np.array([object()])}}, r"/b/c: arrays of Python obj"),
        ({"a": np.arange(5), 3: 1}, r"needs string keys; / has the key 3"),
        ({"a": {"x/y": 1}}, r"/a: 'x/y' cannot be an HDF5 name"),
        ({"a": [1, [2]]}, r"/a: the hdf5 format stores lists of numbers"),
        ({"a": object()}, r"/a: the hdf5 format cannot store a 'builtins.object'"),
        ({"a": 2**70}, r"/a: 1180591620717411303424 does not fit a 64-bit integer"),
    ],
    ids=["object-array", "int-key", "slash", "nested-list", "object", "big-int"],
)
def test_failed_dict_write_half_way_leaves_nothing(
    repo: Butler, leftovers: Any, value: dict[Any, Any], message: str
) -> None:
    """The writer fails after other items were written: no dataset, no temporary file."""
    _define(repo)
    with pytest.raises(FormatError, match=rf"cannot write dataset 'cfg' .*{message}"):
        repo.put(value, "cfg", i=1)
    assert not repo.exists("cfg", i=1)
    assert leftovers(repo) == []


def test_failed_overwrite_keeps_the_old_dataset(repo: Butler, leftovers: Any) -> None:
    _define(repo)
    repo.put(np.arange(4), "arr", i=1)
    with pytest.raises(DatasetExistsError, match=r"'arr'.*already exists"):
        repo.put(np.arange(5), "arr", i=1)
    with pytest.raises(FormatError):
        repo.put(np.array([None], dtype=object), "arr", i=1, overwrite=True)
    assert np.array_equal(repo.get("arr", i=1), np.arange(4))
    assert leftovers(repo) == []


def test_write_killed_half_way_leaves_old_file(tmp_path: Path) -> None:
    """A writer killed inside h5py leaves the old dataset and only a hidden temp file."""
    root = tmp_path / "repo"
    butler = Butler.create(str(root))
    _define(butler)
    butler.put(np.arange(4), "arr", i=1)
    script = textwrap.dedent(
        f"""
        import os, numpy as np, h5py
        from butler import Butler
        real = h5py.Dataset.__setitem__
        b = Butler({str(root)!r})
        def die(*args, **kwargs):
            os._exit(9)
        h5py.Group.create_dataset = die
        b.put(np.arange(1000), "arr", i=1, overwrite=True)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert result.returncode == 9, result.stderr.decode()
    assert np.array_equal(butler.get("arr", i=1), np.arange(4))
    assert list(butler.datasets("arr")) == [{"i": 1}]
    hidden = [p for p in os.listdir(root / "arr") if p.startswith(".")]
    assert all("butler-tmp" in p for p in hidden)
