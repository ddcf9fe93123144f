"""Nested dicts in HDF5: groups and datasets, read back with the same Python types."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

from butler import Butler  # noqa: E402


class Settings(dict):  # type: ignore[type-arg]
    """A dict subclass that must come back as itself."""


def _nested() -> dict[str, Any]:
    return {
        "int": 42,
        "negative": -(2**63),
        "float": 2.5,
        "nan": math.nan,
        "inf": -math.inf,
        "true": True,
        "false": False,
        "text": "héllo wörld ✓",
        "empty_text": "",
        "bytes": b"\x00\x01\xffend\x00",
        "empty_bytes": b"",
        "none": None,
        "complex": 1.5 - 2j,
        "ints": [1, 2, 3],
        "floats": [0.5, math.nan, 1e300],
        "bools": [True, False],
        "mixed": [1, 2.5, True, -7],
        "strings": ["a", "", "ü"],
        "empty_list": [],
        "pair": (3, 4),
        "array": np.arange(12, dtype=">i2").reshape(3, 4),
        "float_array": np.array([np.nan, 1.0, -0.0], dtype="<f4"),
        "str_array": np.array(["x", "yz"]),
        "records": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i4"), ("b", "f8")]),
        "empty_array": np.zeros((0, 3)),
        "np_float32": np.float32(1.25),
        "np_int8": np.int8(-3),
        "np_bool": np.bool_(True),
        "np_datetime": np.datetime64("2026-11-25T12:00", "m"),
        "group": {
            "nested": {"deeper": {"leaf": 1, "arr": np.ones(3)}},
            "empty": {},
            "z_first": 1,
            "a_second": 2,
        },
    }


def _same(a: Any, b: Any, where: str = "") -> None:
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), where  # insertion order kept
        for key in a:
            _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a == b, where
    else:
        assert a == b, where


def test_nested_round_trip(repo: Butler) -> None:
    repo.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})
    value = _nested()
    repo.put(value, "cfg", i=1)
    _same(repo.get("cfg", i=1), value)


def test_file_layout(posix_repo: Butler, file_of: Any) -> None:
    posix_repo.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})
    posix_repo.put(_nested(), "cfg", i=1)
    with h5py.File(file_of(posix_repo, "cfg", i=1), "r") as f:
        assert f.attrs["butler.python_type"] == "builtins.dict"
        assert isinstance(f["group/nested/deeper"], h5py.Group)
        assert list(f["group"]) == ["nested", "empty", "z_first", "a_second"]
        assert f["int"][()] == 42 and f["int"].dtype == np.int64
        assert f["text"].asstr()[()] == "héllo wörld ✓"
        assert f["ints"][()].tolist() == [1, 2, 3]
        assert f["strings"].asstr()[()].tolist() == ["a", "", "ü"]
        assert np.array_equal(f["array"][()], np.arange(12).reshape(3, 4))
        assert f["array"].dtype == np.dtype(">i2")
        assert f["none"].shape is None  # an HDF5 null dataspace
        assert f["group/nested/deeper/arr"].attrs["butler.kind"] == "ndarray"


def test_subclass_and_path(repo: Butler) -> None:
    repo.register_dataset_type(
        "cfg",
        dict,
        "hdf5",
        dimensions={"i": int},
        additional_data={"path": "calib/settings"},
        serializer_args={"compression": "gzip", "chunks": (8,)},
    )
    value = Settings(gain=1.5, table=np.arange(100.0), grid=np.zeros((4, 4)))
    repo.put(value, "cfg", i=1)
    back = repo.get("cfg", i=1)
    assert type(back) is Settings
    _same(dict(back), dict(value))
    if repo.storage.type_name == "posix":
        path = f"{repo.storage.root}/{repo.location('cfg', i=1).key}"
        with h5py.File(path, "r") as f:
            assert list(f) == ["calib"]
            table = f["calib/settings/table"]
            assert table.compression == "gzip" and table.chunks == (8,)
            grid = f["calib/settings/grid"]  # rank 2: chunks chosen by h5py
            assert grid.compression == "gzip" and grid.chunks is not None


def test_foreign_file_reads_as_plain_data(posix_repo: Butler, file_of: Any) -> None:
    """A file written by another program (no butler attributes) reads as a dict."""
    posix_repo.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})
    posix_repo.put({"x": 1}, "cfg", i=1)
    path = file_of(posix_repo, "cfg", i=1)
    meta = posix_repo.storage.metadata(posix_repo.location("cfg", i=1).key)
    with h5py.File(path, "w") as f:
        f["image"] = np.arange(6).reshape(2, 3)
        f["scalar"] = 2.5
        f["names"] = np.array(["ab", "cde"], dtype=object).astype(h5py.string_dtype())
        f["title"] = "a title"
        f.create_group("sub")["n"] = np.int16(7)
    with open(path, "rb") as raw:
        data = raw.read()
    posix_repo.storage.write_bytes(posix_repo.location("cfg", i=1).key, data, metadata=meta)
    back = posix_repo.get("cfg", i=1)
    assert sorted(back) == ["image", "names", "scalar", "sub", "title"]
    assert np.array_equal(back["image"], np.arange(6).reshape(2, 3))
    assert back["scalar"] == 2.5 and isinstance(back["scalar"], np.float64)
    assert back["names"].tolist() == ["ab", "cde"]
    assert back["title"] == "a title"
    assert back["sub"] == {"n": 7} and back["sub"]["n"].dtype == np.int16


def test_mixed_list_precision_guard(repo: Butler) -> None:
    from butler import FormatError

    repo.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})
    with pytest.raises(FormatError, match=r"/l: 9007199254740993 mixed with floats"):
        repo.put({"l": [2**53 + 1, 0.5]}, "cfg", i=1)
