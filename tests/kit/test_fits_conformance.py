"""butler-fits through the conformance kit (skipped when butler-fits is not installed)."""

from __future__ import annotations

from typing import Any

import pytest

from butler.testing import SerializerConformance

pytest.importorskip("butler_fits", reason="butler-fits is not installed")
np = pytest.importorskip("numpy")


class TestFitsArray(SerializerConformance):
    format = "fits"
    python_type = "numpy.ndarray"
    heavy_modules = ("astropy", "numpy")
    storages = ("posix", "memory", "s3")

    def make_objects(self) -> list[Any]:
        return [np.arange(12, dtype=">f4").reshape(3, 4), np.zeros((2, 5), ">i2")]

    def make_invalid_objects(self) -> list[Any]:
        return [np.array([object(), None], dtype=object), np.array(["text"])]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        np.testing.assert_array_equal(actual, expected)


class TestFitsTable(SerializerConformance):
    format = "fits"
    python_type = "astropy.table.Table"
    heavy_modules = ("astropy", "numpy")
    storages = ("posix", "memory")

    def make_objects(self) -> list[Any]:
        from astropy.table import Table

        return [Table({"a": [1, 2, 3], "b": [0.5, 1.5, 2.5], "c": ["x", "yy", "zzz"]})]

    def make_invalid_objects(self) -> list[Any]:
        from astropy.table import Table

        return [Table({"obj": np.array([object(), {}], dtype=object)})]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        assert actual.colnames == expected.colnames
        for name in expected.colnames:
            np.testing.assert_array_equal(np.asarray(actual[name]), np.asarray(expected[name]))
