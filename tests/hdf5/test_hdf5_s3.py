"""HDF5 on S3 (moto server process): ranged reads, read options, round trips."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
h5py = pytest.importorskip("h5py")

from butler import Butler, FormatError  # noqa: E402


def _fetched(f: Any) -> int:
    """Bytes a ranged file fetched from S3 (butler-s3 block file or fsspec cache)."""
    if hasattr(f, "bytes_fetched"):
        return int(f.bytes_fetched)
    return int(f.cache.total_requested_bytes)


def test_round_trips(s3_repo: Butler, leftovers: Any) -> None:
    s3_repo.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"i": int})
    s3_repo.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})
    values = np.arange(1000, dtype=">f8").reshape(10, 100)
    values[3, 3] = np.nan
    s3_repo.put(values, "arr", i=1)
    back = s3_repo.get("arr", i=1)
    assert back.dtype == values.dtype
    np.testing.assert_array_equal(back, values)
    nested = {"a": 1, "b": [1.5, 2.5], "c": {"d": "é", "e": np.arange(3)}}
    s3_repo.put(nested, "cfg", i=1)
    got = s3_repo.get("cfg", i=1)
    assert got["a"] == 1 and got["b"] == [1.5, 2.5] and got["c"]["d"] == "é"
    assert np.array_equal(got["c"]["e"], np.arange(3))
    assert leftovers(s3_repo) == []  # the local file used for writing is gone


def test_slice_reads_a_fraction_of_the_object(s3_repo: Butler, opened: list[Any]) -> None:
    s3_repo.register_dataset_type(
        "cube",
        "numpy.ndarray",
        "hdf5",
        dimensions={"i": int},
        serializer_args={"chunks": (64, 64)},
    )
    values = np.random.default_rng(1).random((1024, 1024)).astype("f4")  # 4 MiB
    s3_repo.put(values, "cube", i=1)
    size = s3_repo.storage.size(s3_repo.location("cube", i=1).key)
    selection = (slice(100, 120), slice(10, 60))
    part = s3_repo.get("cube", i=1, parameters={"slice": selection, "block_size": 64 * 1024})
    assert np.array_equal(part, values[selection])
    kwargs, f = opened[-1]
    assert kwargs["block_size"] == 64 * 1024
    assert _fetched(f) < size / 8  # a few chunks and the metadata, not the 4 MiB


@pytest.mark.parametrize("cache_type", ["blocks", "readahead", "bytes", "blockcache"])
def test_cache_type_option(s3_repo: Butler, opened: list[Any], cache_type: str) -> None:
    s3_repo.register_dataset_type(
        "arr",
        "numpy.ndarray",
        "hdf5",
        dimensions={"i": int},
        serializer_args={"per_storage": {"s3": {"cache_type": cache_type, "block_size": 65536}}},
    )
    values = np.arange(50_000, dtype="i4")
    s3_repo.put(values, "arr", i=1)
    assert np.array_equal(s3_repo.get("arr", i=1, parameters={"slice": slice(5, 9)}), values[5:9])
    kwargs, _ = opened[-1]
    assert kwargs["cache_type"] == cache_type and kwargs["block_size"] == 65536


def test_truncated_object(s3_repo: Butler) -> None:
    s3_repo.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"i": int})
    s3_repo.put(np.arange(10_000.0), "arr", i=1)
    key = s3_repo.location("arr", i=1).key
    meta = s3_repo.storage.metadata(key)
    data = s3_repo.storage.read_bytes(key)
    s3_repo.storage.write_bytes(key, data[:3000], metadata=meta)
    with pytest.raises(FormatError, match=r"dataset 'arr' \{'i': 1\}.*truncated"):
        s3_repo.get("arr", i=1)


def test_table_on_s3(s3_repo: Butler) -> None:
    pytest.importorskip("astropy", reason="astropy is not installed")
    import astropy.units as u
    from astropy.table import QTable

    s3_repo.register_dataset_type("cat", "astropy.table.Table", "hdf5", dimensions={"i": int})
    table = QTable({"x": np.arange(4.0) * u.m, "n": ["a", "b", "c", "dé"]}, meta={"k": 1})
    s3_repo.put(table, "cat", i=1)
    back = s3_repo.get("cat", i=1)
    assert type(back) is QTable and back.meta == {"k": 1}
    assert back["x"].unit == u.m and list(back["n"]) == ["a", "b", "c", "dé"]


def test_generic_reader_and_file_content(s3_repo: Butler) -> None:
    """The ``"*"`` reader (``location.open_read()``) works on S3 too; the object is HDF5."""
    import io

    from butler_hdf5 import _arrays

    s3_repo.register_dataset_type(
        "arr",
        "numpy.ndarray",
        "hdf5",
        dimensions={"i": int},
        serializer_args={"compression": "gzip", "chunks": (50,)},
    )
    values = np.arange(500, dtype="u2")
    s3_repo.put(values, "arr", i=1)
    location = s3_repo.location("arr", i=1, parameters={"slice": slice(10, 20)})
    assert np.array_equal(_arrays.read(location), values[10:20])
    data = s3_repo.storage.read_bytes(location.key)
    with h5py.File(io.BytesIO(data), "r") as f:
        assert f["data"].compression == "gzip" and f["data"].chunks == (50,)
        assert np.array_equal(f["data"][()], values)
