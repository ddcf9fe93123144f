"""FITS HDU lists in HDF5: every HDU (images, tables, headers) written and read back equal."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")
fits = pytest.importorskip("astropy.io.fits")

import butler  # noqa: E402
from butler import Butler, FormatError  # noqa: E402

HDULIST = "astropy.io.fits.HDUList"


def _seven_hdus() -> Any:
    """Primary image, float and scaled images, binary tables (one with variable-length
    arrays), an ASCII table and a tile-compressed image."""
    rng = np.random.default_rng(5)
    primary = fits.PrimaryHDU(np.arange(12, dtype=">i2").reshape(3, 4))
    primary.header["OBJECT"] = ("M31", "the target")
    primary.header.add_history("made by the test")
    primary.header.add_comment("a comment card")
    primary.header["LONGSTR"] = "x" * 100  # CONTINUE cards
    sci = fits.ImageHDU(rng.random((5, 6)).astype("f4"), name="SCI")
    sci.header["EXPTIME"] = (30.0, "[s] exposure")
    scaled = fits.ImageHDU(np.array([[1, 2], [3, 4]], dtype=">i2"), name="SCALED")
    scaled.header["BSCALE"] = 0.5
    scaled.header["BZERO"] = 10.0
    scaled.header["BLANK"] = -1
    columns = [
        fits.Column(name="id", format="K", array=np.array([1, 2, 3])),
        fits.Column(name="flux", format="E", unit="Jy", array=np.array([1.5, np.nan, 3.0])),
        fits.Column(name="name", format="5A", array=np.array(["a", "bb", "ccc"])),
        fits.Column(name="flag", format="L", array=np.array([True, False, True])),
        fits.Column(name="vec", format="2D", array=np.arange(6.0).reshape(3, 2)),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="CAT")
    vla = fits.BinTableHDU.from_columns(
        [fits.Column(name="var", format="PJ()", array=[np.array([1, 2, 3]), np.array([4])])],
        name="VLA",
    )
    ascii_table = fits.TableHDU.from_columns(
        [
            fits.Column(name="x", format="E10.4", array=np.array([1.0, 2.5])),
            fits.Column(name="s", format="A5", array=np.array(["ab", "cde"])),
        ],
        name="ASC",
    )
    compressed = fits.CompImageHDU(np.arange(400, dtype="i4").reshape(20, 20), name="COMP")
    return fits.HDUList([primary, sci, scaled, table, vla, ascii_table, compressed])


def _reference(tmp_path: Path) -> Any:
    """What astropy reads back from the FITS file of `_seven_hdus` (a fresh list: writing an
    in-memory scaled image changes astropy's private state, so a second write differs)."""
    path = tmp_path / "ref.fits"
    _seven_hdus().writeto(path, overwrite=True)
    return fits.open(path)


def _assert_same(got: Any, expected: Any) -> None:
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert type(a) is type(b), i
        assert [c.image for c in a.header.cards] == [c.image for c in b.header.cards], i
        if b.data is None:
            assert a.data is None, i
        elif isinstance(b, fits.BinTableHDU | fits.TableHDU):
            assert a.columns.names == b.columns.names, i
            assert [c.unit for c in a.columns] == [c.unit for c in b.columns], i
            for name in b.columns.names:
                x, y = a.data[name], b.data[name]
                if getattr(y, "dtype", None) == np.dtype(object):
                    for p, q in zip(x, y, strict=True):
                        np.testing.assert_array_equal(p, q)
                else:
                    assert x.dtype == y.dtype, (i, name)
                    np.testing.assert_array_equal(x, y)
        else:
            assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, i
            np.testing.assert_array_equal(a.data, b.data)


def test_every_hdu_round_trips(tmp_path: Path) -> None:
    hdul = _seven_hdus()
    before = copy.deepcopy([h.header.tostring() for h in hdul])
    butler.write_file(hdul, str(tmp_path / "x.h5"))
    assert [h.header.tostring() for h in hdul] == before  # the object given is untouched
    for h, d in zip(hdul[:2], _seven_hdus()[:2], strict=True):
        assert h.data.dtype == d.data.dtype and np.array_equal(h.data, d.data)
    got = butler.read_file(str(tmp_path / "x.h5"), python_type=HDULIST)
    _assert_same(got, _reference(tmp_path))
    assert got["SCALED"].data[0, 0] == 10.5  # BSCALE/BZERO applied as astropy does
    assert got["COMP"].data[19, 19] == 399


def test_layout_is_documented_hdf5(tmp_path: Path) -> None:
    hdul = _seven_hdus()
    butler.write_file(hdul, str(tmp_path / "x.h5"))
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert list(f) == [f"hdu{i}" for i in range(7)]
        assert f.attrs["butler.layout"] == "fits-hdulist" and f.attrs["butler.hdu_count"] == 7
        cards = [bytes(c).decode() for c in f["hdu0/header"][()]]
        assert cards[0].startswith("SIMPLE  =") and any(c.startswith("HISTORY") for c in cards)
        assert f["hdu1"].attrs["EXTNAME"] == "SCI" and f["hdu1"].attrs["XTENSION"] == "IMAGE"
        np.testing.assert_array_equal(f["hdu0/data"][()], hdul[0].data)
        assert f["hdu2/data"].attrs["scale_factor"] == 0.5
        assert f["hdu2/data"].attrs["add_offset"] == 10.0
        catalog = f["hdu3/data"][()]
        assert catalog.dtype.names == ("id", "flux", "name", "flag", "vec")
        np.testing.assert_array_equal(catalog["id"], [1, 2, 3])
        assert "heap" in f["hdu4"]  # the variable-length arrays
    # A plain dict read of the same file decodes the scaled image like astropy.
    # (A copy: butler records beside the file that it holds an HDUList.)
    shutil.copyfile(tmp_path / "x.h5", tmp_path / "copy.h5")
    plain = butler.read_file(str(tmp_path / "copy.h5"))
    np.testing.assert_array_equal(plain["hdu2"]["data"], _reference(tmp_path)["SCALED"].data)
    assert plain["hdu2"]["@encoding"]["data"]["_FillValue"] == -1


def test_through_repositories(tmp_path: Path, repo: Butler) -> None:
    hdul = _seven_hdus()
    repo.register_dataset_type(
        "raw", HDULIST, "hdf5", dimensions={"i": int}, serializer_args={"compression": "gzip"}
    )
    repo.put(hdul, "raw", i=1)
    _assert_same(repo.get("raw", i=1), _reference(tmp_path))


def test_a_file_from_disk_round_trips(tmp_path: Path) -> None:
    hdul = _seven_hdus()
    hdul.writeto(tmp_path / "in.fits")
    with fits.open(tmp_path / "in.fits") as opened:
        before = [h.header.tostring() for h in opened]
        butler.write_file(opened, str(tmp_path / "x.h5"))
        assert [h.header.tostring() for h in opened] == before
    got = butler.read_file(str(tmp_path / "x.h5"), python_type=HDULIST)
    with fits.open(tmp_path / "in.fits") as fresh:
        _assert_same(got, fresh)


def test_other_files_are_refused_as_hdulists(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "o.h5", "w") as f:
        f.create_dataset("x", data=1)
    with pytest.raises(FormatError, match=r"does not hold a FITS HDU list.*python_type='dict'"):
        butler.read_file(str(tmp_path / "o.h5"), python_type=HDULIST)


def test_an_external_link_in_the_layout_is_refused(tmp_path: Path) -> None:
    butler.write_file(_seven_hdus(), str(tmp_path / "x.h5"))
    with h5py.File(tmp_path / "x.h5", "a") as f:
        del f["hdu1/data"]
        f["hdu1/data"] = h5py.ExternalLink("/etc/passwd", "/data")
    with pytest.raises(butler.UnsafeFormatError, match=r"'/hdu1/data' is an external link"):
        butler.read_file(str(tmp_path / "x.h5"), python_type=HDULIST)
