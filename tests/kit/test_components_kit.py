"""Every component declaration butler ships, through the components conformance kit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from butler.testing import ComponentConformance

np = pytest.importorskip("numpy")


@dataclass
class Settings:
    gain: float
    names: list


@dataclass
class MoreSettings(Settings):
    level: int = 3


class TestDataclassComponents(ComponentConformance):
    format = "json"
    python_type = Settings
    storages = ("posix", "memory", "database")
    component_formats = {}

    def make_objects(self) -> list[Any]:
        return [Settings(1.5, ["a", "b"]), MoreSettings(2.0, [], level=7)]


class TestDictComponentsJson(ComponentConformance):
    format = "json"
    python_type = dict
    storages = ("posix", "memory")
    component_formats = {}

    def make_objects(self) -> list[Any]:
        return [{"gain": 1.5, "amps": {"A": 1, "B": [1, 2]}, "name": "x"}]


class TestDictOfArraysNpy(ComponentConformance):
    """A dict of arrays: whole in HDF5, or disassembled with each array its own npy dataset."""

    format = "hdf5"
    python_type = dict
    storages = ("posix", "s3")
    component_formats = {"image": "npy", "weights": "npy", "meta": "json"}

    def make_objects(self) -> list[Any]:
        return [{"image": np.arange(6.0).reshape(2, 3), "weights": np.ones(4), "meta": {"k": 1}}]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        assert list(actual) == list(expected)
        for key in expected:
            if isinstance(expected[key], np.ndarray):
                np.testing.assert_array_equal(actual[key], expected[key])
            else:
                assert actual[key] == expected[key]


class TestDictComponentsHdf5(ComponentConformance):
    format = "hdf5"
    python_type = dict
    heavy_modules = ("h5py",)
    storages = ("posix", "s3")
    component_formats = {"image": "npy"}

    def setup_method(self) -> None:
        pytest.importorskip("butler_hdf5")

    def make_objects(self) -> list[Any]:
        return [{"image": np.arange(6.0).reshape(2, 3), "calib": {"gain": 1.5, "v": np.ones(2)}}]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        self.assert_component_equal("(whole)", actual, expected)

    def assert_component_equal(self, name: str, actual: Any, expected: Any) -> None:
        if isinstance(expected, dict):
            assert list(actual) == list(expected)
            for key in expected:
                self.assert_component_equal(f"{name}.{key}", actual[key], expected[key])
        else:
            super().assert_component_equal(name, actual, expected)


def _ccd(cls: type | None = None) -> Any:
    from astropy.nddata import CCDData, StdDevUncertainty
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [1.0, 2.0]
    data = np.arange(20.0).reshape(4, 5)
    return (cls or CCDData)(
        data,
        unit="adu",
        mask=data > 10,
        uncertainty=StdDevUncertainty(np.sqrt(data)),
        wcs=w,
        meta={"OBJECT": "X"},
    )


class TestCCDDataComponents(ComponentConformance):
    format = "fits"
    python_type = "astropy.nddata.CCDData"
    heavy_modules = ("astropy", "numpy")
    storages = ("posix", "s3", "database")
    component_formats = {"meta": "json", "unit": "json"}

    def setup_method(self) -> None:
        pytest.importorskip("butler_fits")

    def make_objects(self) -> list[Any]:
        return [_ccd()]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        np.testing.assert_array_equal(actual.data, expected.data)
        np.testing.assert_array_equal(actual.mask, expected.mask)
        np.testing.assert_array_equal(actual.uncertainty.array, expected.uncertainty.array)
        assert actual.wcs.to_header() == expected.wcs.to_header()
        assert actual.unit == expected.unit
        assert dict(actual.meta) == dict(expected.meta)

    def assert_component_equal(self, name: str, actual: Any, expected: Any) -> None:
        if name == "wcs":
            assert actual.to_header() == expected.to_header()
        elif name == "uncertainty":
            assert type(actual) is type(expected)
            np.testing.assert_array_equal(actual.array, expected.array)
        elif name in ("meta", "header"):
            assert dict(actual) == dict(expected)
        else:
            super().assert_component_equal(name, actual, expected)


class TestHDUListComponents(ComponentConformance):
    """Disassembled: each HDU its own FITS file (an extension after an empty primary)."""

    format = "fits"
    python_type = "astropy.io.fits.HDUList"
    heavy_modules = ("astropy", "numpy")
    storages = ("posix", "memory")
    component_formats = {}

    def setup_method(self) -> None:
        pytest.importorskip("butler_fits")

    def make_objects(self) -> list[Any]:
        from astropy.io import fits

        return [
            fits.HDUList(
                [
                    fits.PrimaryHDU(np.arange(4.0)),
                    fits.ImageHDU(np.ones((2, 2)), name="SCI"),
                    fits.BinTableHDU.from_columns(
                        [fits.Column(name="flux", format="D", array=np.array([1.0, 2.5]))],
                        name="CAT",
                    ),
                ]
            )
        ]

    def assert_equal(self, actual: Any, expected: Any) -> None:
        assert [h.name for h in actual] == [h.name for h in expected]
        for a, e in zip(actual, expected, strict=True):
            np.testing.assert_array_equal(a.data, e.data)

    def assert_component_equal(self, name: str, actual: Any, expected: Any) -> None:
        assert type(actual) is type(expected) and actual.name == expected.name
        np.testing.assert_array_equal(actual.data, expected.data)
        assert actual.header["NAXIS"] == expected.header["NAXIS"]
