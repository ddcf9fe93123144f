"""HDUList, Header, CCDData and the common-API (writeFits/readFits) serializer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")

import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS

from butler import Butler, FormatError
from butler_fits import FitsReadWritable


def _hdulist() -> fits.HDUList:
    primary = fits.PrimaryHDU(np.arange(12, dtype=">i2").reshape(3, 4))
    primary.header["OBJECT"] = ("M31", "target name")
    primary.header["HISTORY"] = "made by a test"
    table = fits.BinTableHDU.from_columns(
        [
            fits.Column("id", "K", array=np.arange(5)),
            fits.Column("mag", "E", unit="mag", array=np.linspace(10, 11, 5)),
        ],
        name="CAT",
    )
    compressed = fits.CompImageHDU(np.arange(64, dtype="i4").reshape(8, 8), name="PACKED")
    return fits.HDUList(
        [primary, fits.ImageHDU(np.ones((2, 2), ">f8"), name="SCI"), table, compressed]
    )


def test_hdulist_round_trip(repo: Butler) -> None:
    repo.register_dataset_type("raw", "astropy.io.fits.HDUList", "fits", "raw/{n}.fits")
    hdul = _hdulist()
    repo.put(hdul, "raw", n=1)
    got = repo.get("raw", n=1)
    assert isinstance(got, fits.HDUList)
    assert [h.name for h in got] == ["PRIMARY", "SCI", "CAT", "PACKED"]
    assert [type(h) for h in got] == [type(h) for h in hdul]
    np.testing.assert_array_equal(got[0].data, hdul[0].data)
    assert got[0].header["OBJECT"] == "M31"
    assert got[0].header.comments["OBJECT"] == "target name"
    assert list(got[0].header["HISTORY"]) == ["made by a test"]
    np.testing.assert_array_equal(got["SCI"].data, np.ones((2, 2)))
    np.testing.assert_array_equal(got["CAT"].data["id"], np.arange(5))
    assert got["CAT"].columns["mag"].unit == "mag"
    np.testing.assert_array_equal(got["PACKED"].data, np.arange(64).reshape(8, 8))


def test_hdulist_file_equals_astropy_output(posix_repo: Butler, tools, tmp_path) -> None:
    posix_repo.register_dataset_type("raw", "astropy.io.fits.HDUList", "fits", "raw.fits")
    posix_repo.put(_hdulist(), "raw")
    _hdulist().writeto(tmp_path / "direct.fits")
    with open(tools.path(posix_repo, "raw"), "rb") as a, open(tmp_path / "direct.fits", "rb") as b:
        assert a.read() == b.read()  # byte for byte what astropy writes


def test_header_round_trip_keeps_every_card(repo: Butler) -> None:
    repo.register_dataset_type("hdr", "astropy.io.fits.Header", "fits", "hdr/{n}.fits")
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = 2048
    header["NAXIS2"] = 4096
    header["EXPTIME"] = (30.0, "[s] exposure time")
    header["OBSERVER"] = "Hubble ' quoted"
    header["LONGSTR"] = "continued " * 20
    header["HIERARCH ESO DET CHIP ID"] = "ccd-7"
    header["DATE-OBS"] = "2026-11-25T00:00:00"
    header.add_comment("a comment")
    header.add_history("a history line")
    header.add_blank("")
    header["UNDEF"] = None
    repo.put(header, "hdr", n=1)
    got = repo.get("hdr", n=1)
    assert type(got) is fits.Header
    assert got.tostring() == header.tostring()
    assert got["NAXIS1"] == 2048 and got.comments["EXPTIME"] == "[s] exposure time"
    extension = fits.ImageHDU(np.zeros((3, 3)), name="SCI").header  # an extension header
    repo.put(extension, "hdr", n=2)
    assert repo.get("hdr", n=2).tostring() == extension.tostring()


def test_header_file_is_readable(posix_repo: Butler, tools) -> None:
    posix_repo.register_dataset_type("hdr", "astropy.io.fits.Header", "fits", "hdr.fits")
    header = fits.Header([("OBJECT", "M51"), ("AIRMASS", 1.2)])
    posix_repo.put(header, "hdr")
    on_disk = fits.getheader(tools.path(posix_repo, "hdr"))
    assert on_disk["OBJECT"] == "M51" and on_disk["AIRMASS"] == 1.2
    assert on_disk["NAXIS"] == 0


def _wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, 2.2]
    wcs.wcs.crpix = [10.5, 20.5]
    wcs.wcs.cdelt = [-5e-5, 5e-5]
    return wcs


@pytest.mark.parametrize("uncertainty", [StdDevUncertainty, VarianceUncertainty, InverseVariance])
def test_ccddata_round_trip(repo: Butler, uncertainty: type) -> None:
    repo.register_dataset_type("ccd", "astropy.nddata.CCDData", "fits", "ccd/{n}.fits")
    rng = np.random.default_rng(3)
    data = rng.normal(1000, 30, size=(20, 30)).astype(np.float32)
    ccd = CCDData(
        data,
        unit=u.electron,
        uncertainty=uncertainty(np.full((20, 30), 2.5, dtype=np.float32)),
        mask=data > 1040,
        wcs=_wcs(),
        meta={"OBSERVER": "Rubin", "EXPTIME": 30.0, "FILTER": "r"},
    )
    repo.put(ccd, "ccd", n=1)
    got = repo.get("ccd", n=1)
    assert type(got) is CCDData
    np.testing.assert_array_equal(got.data, data)
    assert got.unit == u.electron
    assert type(got.uncertainty) is uncertainty
    np.testing.assert_array_equal(got.uncertainty.array, ccd.uncertainty.array)
    assert got.uncertainty.unit == ccd.uncertainty.unit
    np.testing.assert_array_equal(got.mask, ccd.mask)
    np.testing.assert_allclose(got.wcs.wcs.crval, [150.1, 2.2])
    np.testing.assert_allclose(got.wcs.wcs.crpix, [10.5, 20.5])
    assert list(got.wcs.wcs.ctype) == ["RA---TAN", "DEC--TAN"]
    for key in ("OBSERVER", "EXPTIME", "FILTER"):
        assert got.meta[key] == ccd.meta[key]
    assert "BUTLTYPE" not in got.meta


def test_ccddata_minimal_and_subclass(repo: Butler) -> None:
    class Calexp(CCDData):
        pass

    repo.register_dataset_type("ccd", "astropy.nddata.CCDData", "fits", "ccd/{n}.fits")
    plain = CCDData(np.arange(6.0).reshape(2, 3), unit="adu")
    repo.put(plain, "ccd", n=1)
    got = repo.get("ccd", n=1)
    assert got.uncertainty is None and got.mask is None and got.unit == u.adu
    repo.put(Calexp(np.ones((2, 2)), unit="adu"), "ccd", n=2)
    # a class defined in a function is importable by neither butler nor anyone else
    with pytest.raises(FormatError, match=r"dataset 'ccd'.*Calexp"):
        repo.get("ccd", n=2)


class Exposure:
    """A user class following the common FITS API (like LSST's afw classes)."""

    def __init__(self, image: np.ndarray, exptime: float) -> None:
        self.image = image
        self.exptime = exptime

    def writeFits(self, path: str) -> None:
        hdu = fits.PrimaryHDU(self.image)
        hdu.header["EXPTIME"] = self.exptime
        fits.HDUList([hdu, fits.ImageHDU(self.image * 2, name="DOUBLE")]).writeto(path)

    @classmethod
    def readFits(cls, path: str, hdu: int | str = 0) -> Exposure:
        with fits.open(path) as hdul:
            return cls(np.array(hdul[hdu].data), float(hdul[0].header["EXPTIME"]))


class DeepExposure(Exposure):
    pass


class Broken(Exposure):
    def writeFits(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(b"SIMPLE  =  half a file")
        raise RuntimeError("disk full, pretend")


def test_common_api_needs_no_registration(repo: Butler) -> None:
    assert issubclass(Exposure, FitsReadWritable)
    assert not issubclass(dict, FitsReadWritable)
    assert not issubclass(np.ndarray, FitsReadWritable)
    serializer = repo.registry.find(Exposure, repo.storage.type_name, "fits")
    assert serializer.python_type == "butler_fits._abc.FitsReadWritable"

    repo.register_dataset_type("exp", Exposure, "fits", "exp/{n}.fits")
    image = np.arange(20, dtype=">f4").reshape(4, 5)
    repo.put(Exposure(image, 15.0), "exp", n=1)
    got = repo.get("exp", n=1)
    assert type(got) is Exposure
    np.testing.assert_array_equal(got.image, image)
    assert got.exptime == 15.0
    doubled = repo.get("exp", n=1, parameters={"hdu": "DOUBLE"})
    np.testing.assert_array_equal(doubled.image, image * 2)

    repo.put(DeepExposure(image, 3.0), "exp", n=2)
    assert type(repo.get("exp", n=2)) is DeepExposure


def test_common_api_file_and_errors(repo: Butler, tools) -> None:
    repo.register_dataset_type("exp", Exposure, "fits", "exp.fits")
    repo.put(Exposure(np.zeros((2, 2)), 1.0), "exp")
    assert tools.read_bytes(repo, "exp").startswith(b"SIMPLE  =")
    tools.replace(repo, "exp", b"garbage" * 100)
    with pytest.raises(FormatError, match=r"dataset 'exp'.*is not a FITS file"):
        repo.get("exp")

    repo.register_dataset_type("broken", Broken, "fits", "broken.fits")
    with pytest.raises(FormatError, match=r"dataset 'broken'.*RuntimeError: disk full, pretend"):
        repo.put(Broken(np.zeros(1), 0.0), "broken")
    assert not repo.exists("broken")  # nothing partial left behind


def test_ccddata_and_common_api_files_are_plain_fits(posix_repo: Butler, tools) -> None:
    posix_repo.register_dataset_type("ccd", "astropy.nddata.CCDData", "fits", "ccd.fits")
    posix_repo.register_dataset_type("exp", Exposure, "fits", "exp.fits")
    data = np.arange(12.0).reshape(3, 4)
    ccd = CCDData(
        data,
        unit="adu",
        uncertainty=VarianceUncertainty(np.full((3, 4), 4.0)),
        mask=data > 8,
        wcs=_wcs(),
    )
    posix_repo.put(ccd, "ccd")
    with fits.open(tools.path(posix_repo, "ccd")) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "MASK", "UNCERT"]
        assert hdul[0].header["BUNIT"] == "adu"
        assert hdul[0].header["CTYPE1"] == "RA---TAN"
        assert hdul[0].header["BUTLTYPE"] == "astropy.nddata.ccddata.CCDData"
        np.testing.assert_array_equal(hdul[0].data, data)
        np.testing.assert_array_equal(hdul["MASK"].data.astype(bool), data > 8)
        np.testing.assert_array_equal(hdul["UNCERT"].data, np.full((3, 4), 4.0))
        assert hdul["UNCERT"].header["UTYPE"] == "VarianceUncertainty"
    posix_repo.put(Exposure(data, 2.0), "exp")
    with fits.open(tools.path(posix_repo, "exp")) as hdul:
        assert hdul[0].header["EXPTIME"] == 2.0
        np.testing.assert_array_equal(hdul["DOUBLE"].data, data * 2)
