"""Issue 13 item 3 through a repository: a dataset written as one class is readable through
a dataset type of another class when the format says its readers check the bytes
themselves (FITS), and only then."""

from __future__ import annotations

from pathlib import Path

import pytest

from butler import Butler, FormatError

np = pytest.importorskip("numpy")
pytest.importorskip("butler_fits")
nddata = pytest.importorskip("astropy.nddata")


def test_ccddata_dataset_reads_as_its_image(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "r"))
    b.register_dataset_type("ccd", "astropy.nddata.CCDData", "fits", "c/{v:d}.fits")
    b.register_dataset_type("img", "numpy.ndarray", "fits", "c/{v:d}.fits")
    image = np.arange(12.0).reshape(3, 4)
    b.put(nddata.CCDData(image, unit="adu"), "ccd", v=1)
    np.testing.assert_array_equal(b.get("img", v=1), image)
    cut = b.get("img", v=1, parameters={"section": (slice(0, 2), slice(1, 3))})
    np.testing.assert_array_equal(cut, image[0:2, 1:3])
    assert type(b.get("ccd", v=1)) is nddata.CCDData


def test_formats_without_the_capability_still_refuse(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "r"))
    b.register_dataset_type("cfg", dict, "json", "j/{v:d}.json")
    b.register_dataset_type("lst", list, "json", "j/{v:d}.json")
    b.put({"a": 1}, "cfg", v=1)
    with pytest.raises(FormatError, match="not a subclass"):
        b.get("lst", v=1)
