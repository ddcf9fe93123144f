"""The kit run against butler-core's own serializers: they must pass it everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from butler import Config
from butler.testing import SerializerConformance


class TestJsonDict(SerializerConformance):
    format = "json"
    python_type = dict
    heavy_modules = ("numpy", "astropy", "h5py", "s3fs", "sqlalchemy")

    def make_objects(self) -> list[Any]:
        return [
            {"a": 1, "b": [1, 2.5, None, True], "nested": {"ü": "ß ✓"}},
            {},
            {"long": "x" * 10_000, "n": list(range(500))},
        ]

    def make_invalid_objects(self) -> list[Any]:
        return [{"a set": {1, 2}}, {"bytes": b"\x00"}]


class TestConfig(SerializerConformance):
    storages = ("posix", "memory")
    format = "config"
    python_type = Config

    def make_objects(self) -> list[Any]:
        return [Config({"gain": 1.5, "amps": [1, 2], "name": "c"}), Config({"x": {"y": None}})]

    def make_invalid_objects(self) -> list[Any]:
        return [Config({"not plain data": object()}), Config({1: "non-string key"})]


@dataclass
class Point:
    x: int
    y: float


class TestJsonDataclassLocal(SerializerConformance):
    """Local classes registered as class objects: storages/registry handle them too."""

    format = "json"
    python_type = Point
    storages = ("memory",)

    def make_objects(self) -> list[Any]:
        return [Point(1, 2.5), Point(-3, 0.0)]

    def make_invalid_objects(self) -> list[Any]:
        return [Point(1, {"a set": {1}})]  # type: ignore[arg-type]


class TestNpy(SerializerConformance):
    format = "npy"
    python_type = "numpy.ndarray"
    heavy_modules = ("numpy",)
    storages = ("posix", "memory", "database")  # S3 is covered by TestJsonDict

    def make_objects(self) -> list[Any]:
        np = pytest.importorskip("numpy")
        return [
            np.arange(12, dtype="i4").reshape(3, 4),
            np.linspace(0, 1, 1000),
            np.array([], dtype="f8"),
            np.array([(1, 2.0)], dtype=[("a", "i2"), ("b", "f4")]),
        ]

    def make_invalid_objects(self) -> list[Any]:
        np = pytest.importorskip("numpy")
        return [np.array([{"a": 1}, None], dtype=object)]  # npy never pickles

    def assert_equal(self, actual: Any, expected: Any) -> None:
        np = pytest.importorskip("numpy")
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)
