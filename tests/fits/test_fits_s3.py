"""FITS on S3 (moto server process): round trips, and cutouts that fetch only their bytes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")
pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

import astropy.units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import MaskedColumn, QTable, Table

from butler import Butler, FormatError


def test_image_round_trip_and_direct_read(s3_repo: Butler, opened) -> None:
    s3_repo.register_dataset_type("img", "numpy.ndarray", "fits", dimensions={"n": int})
    for n, dtype in enumerate(["<f4", ">f8", "<u2", "|i1", "<c8", "|b1"]):
        array = (np.arange(600) % 7 == 0) if dtype == "|b1" else np.arange(600) - 100
        array = array.astype(dtype).reshape(20, 30)
        s3_repo.put(array, "img", n=n)
        got = s3_repo.get("img", n=n)
        assert got.dtype.str == array.dtype.str
        np.testing.assert_array_equal(got, array)
        cut = s3_repo.get("img", n=n, parameters={"section": (slice(3, 9), slice(10, 12))})
        np.testing.assert_array_equal(cut, array[3:9, 10:12])
    assert s3_repo.registry.find(np.ndarray, "s3", "fits").read_ref.endswith(":read")
    options, _ = opened[-1]
    assert options["block_size"] == 256 * 1024  # small blocks for a cutout


def test_cutout_fetches_only_its_rows(s3_repo: Butler, opened) -> None:
    s3_repo.register_dataset_type("big", "numpy.ndarray", "fits", "big.fits")
    image = np.arange(1024 * 4096, dtype="<f4").reshape(1024, 4096)  # 16 MiB, 16 KiB rows
    s3_repo.put(image, "big")
    size = s3_repo.storage.size("big.fits")
    section = (slice(500, 600), slice(2000, 2100))
    cut = s3_repo.get("big", parameters={"section": section})
    np.testing.assert_array_equal(cut, image[section])
    fetched = opened[-1][1].bytes_fetched
    rows_span = 100 * 4096 * 4  # the cutout's rows lie in this contiguous range
    assert fetched <= rows_span + 3 * 256 * 1024, fetched
    assert fetched < 0.15 * size

    whole = s3_repo.get("big")  # one ranged GET streamed into the array
    np.testing.assert_array_equal(whole, image)
    f = opened[-1][1]
    assert f.bytes_fetched <= size
    assert f.requests <= 3


def test_table_on_s3(s3_repo: Butler) -> None:
    s3_repo.register_dataset_type("cat", "astropy.table.Table", "fits", "cat.fits")
    table = QTable()
    table["flux"] = [1.0, 2.0, np.nan] * u.Jy
    table["flag"] = MaskedColumn([1, 2, 3], mask=[False, True, False])
    table["name"] = ["Ω", "β", "ü"]
    table.meta["nested"] = {"a": [1, 2]}
    s3_repo.put(table, "cat")
    got = s3_repo.get("cat")
    assert type(got) is QTable and got.meta == table.meta
    np.testing.assert_array_equal(got["flux"].value, table["flux"].value)
    np.testing.assert_array_equal(got["flag"].mask, [False, True, False])
    assert list(got["name"]) == ["Ω", "β", "ü"]
    only = s3_repo.get("cat", parameters={"columns": ["name"]})
    assert only.colnames == ["name"]


def test_other_types_on_s3(s3_repo: Butler) -> None:
    from .test_fits_objects import Exposure  # the common-API user class

    s3_repo.register_dataset_type("hl", "astropy.io.fits.HDUList", "fits", "hl.fits")
    s3_repo.register_dataset_type("hdr", "astropy.io.fits.Header", "fits", "hdr.fits")
    s3_repo.register_dataset_type("ccd", "astropy.nddata.CCDData", "fits", "ccd.fits")
    s3_repo.register_dataset_type("exp", Exposure, "fits", "exp.fits")
    hdul = fits.HDUList([fits.PrimaryHDU(np.arange(4)), fits.ImageHDU(np.ones(3), name="X")])
    s3_repo.put(hdul, "hl")
    got = s3_repo.get("hl")
    assert [h.name for h in got] == ["PRIMARY", "X"]
    np.testing.assert_array_equal(got["X"].data, np.ones(3))
    header = fits.Header([("A", 1), ("B", "two", "comment")])
    s3_repo.put(header, "hdr")
    assert s3_repo.get("hdr").tostring() == header.tostring()
    ccd = CCDData(np.ones((3, 3)), unit="adu", uncertainty=StdDevUncertainty(np.ones((3, 3))))
    s3_repo.put(ccd, "ccd")
    back = s3_repo.get("ccd")
    np.testing.assert_array_equal(back.data, ccd.data)
    assert isinstance(back.uncertainty, StdDevUncertainty)
    s3_repo.put(Exposure(np.arange(6.0).reshape(2, 3), 9.0), "exp")
    exposure = s3_repo.get("exp")
    assert type(exposure) is Exposure and exposure.exptime == 9.0


def test_compressed_cutout_and_checksum_on_s3(s3_repo: Butler) -> None:
    s3_repo.register_dataset_type(
        "packed",
        "numpy.ndarray",
        "fits",
        "packed.fits",
        serializer_args={"compress": "RICE_1", "checksum": True},
    )
    image = (np.arange(200 * 300) % 1000).astype("<i4").reshape(200, 300)
    s3_repo.put(image, "packed")
    np.testing.assert_array_equal(s3_repo.get("packed"), image)
    section = (slice(50, 60), slice(100, 250))
    np.testing.assert_array_equal(
        s3_repo.get("packed", parameters={"section": section}), image[section]
    )
    raw = bytearray(s3_repo.storage.read_bytes("packed.fits"))
    raw[-3000] ^= 0x10
    meta = s3_repo.storage.metadata("packed.fits")
    meta.pop("size", None)
    s3_repo.storage.write_bytes("packed.fits", bytes(raw), metadata=meta)
    with pytest.raises(FormatError, match=r"dataset 'packed'.*(DATASUM|CHECKSUM).*corrupt"):
        s3_repo.get("packed")


def test_generic_reader_works_on_s3(s3_repo: Butler) -> None:
    """The storage-agnostic ("*") reader also serves S3, through a seekable file object."""
    from butler_fits import _image

    s3_repo.register_dataset_type("img", "numpy.ndarray", "fits", "img.fits")
    image = np.arange(100.0).reshape(10, 10)
    s3_repo.put(image, "img")
    location = s3_repo.location("img", parameters={"section": (slice(2, 4),)})
    np.testing.assert_array_equal(_image.read(location), image[2:4])
    np.testing.assert_array_equal(_image.read(s3_repo.location("img")), image)
    table = Table({"a": [1, 2]})
    s3_repo.register_dataset_type("cat", "astropy.table.Table", "fits", "cat.fits")
    s3_repo.put(table, "cat")
    from butler_fits import _table

    assert list(_table.read(s3_repo.location("cat"))["a"]) == [1, 2]
