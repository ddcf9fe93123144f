"""butler-hdf5 through the conformance kit (skipped when butler-hdf5 is not installed)."""

from __future__ import annotations

from typing import Any

import pytest

from butler.testing import SerializerConformance

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
np = pytest.importorskip("numpy")


class TestHdf5Array(SerializerConformance):
    format = "hdf5"
    python_type = "numpy.ndarray"
    heavy_modules = ("h5py", "numpy")
    storages = ("posix", "memory", "s3")

    def make_objects(self) -> list[Any]:
        return [np.arange(12, dtype="f4").reshape(3, 4), np.array([1, 2], "u8")]

    def make_invalid_objects(self) -> list[Any]:
        return [np.array([object(), None], dtype=object)]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


class TestHdf5Mapping(SerializerConformance):
    format = "hdf5"
    python_type = dict
    heavy_modules = ("h5py", "numpy")
    storages = ("posix", "memory")

    def make_objects(self) -> list[Any]:
        return [{"gain": 1.5, "name": "ccd", "nested": {"n": 3}}]

    def make_invalid_objects(self) -> list[Any]:
        return [{"unstorable": object()}, {"nested": {"deep": {1, 2}}}]
