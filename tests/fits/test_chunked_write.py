"""Images are written a chunk at a time (`butler_fits._chunked`): the same bytes as astropy's
``writeto``, the caller's array never byte-swapped in place (not even while the put runs),
and no second copy of the image in memory."""

from __future__ import annotations

import io
import tracemalloc
from typing import Any

import numpy as np
import pytest

fits = pytest.importorskip("astropy.io.fits")

from astropy.nddata import CCDData  # noqa: E402

import butler_fits._fitsfile as fitsfile  # noqa: E402
from butler import Butler  # noqa: E402
from butler_fits._chunked import CHUNK_BYTES, chunked  # noqa: E402

DTYPES = ["<f4", ">f4", "<f8", "<i2", "<i4", "<i8", "u1", "i1", "<u2", "<u4", "<u8"]
#: Shapes smaller than, not a multiple of, and several times `CHUNK_BYTES`.
SHAPES = [(3, 5), (7,), (1500, 1100), (1, CHUNK_BYTES // 2 + 3)]


@pytest.fixture(autouse=True)
def _fixed_checksum_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHECKSUM/DATASUM comments carry the time they were written: one time for both sides."""
    from astropy.io.fits.hdu.base import _ValidHDU

    monkeypatch.setattr(_ValidHDU, "_get_timestamp", lambda self: "2026-01-01T00:00:00")


def _astropy_bytes(hdus: list[Any], checksum: bool) -> bytes:
    out = io.BytesIO()
    fits.HDUList(hdus).writeto(out, checksum=checksum)
    return out.getvalue()


def _chunked_bytes(hdus: list[Any], checksum: bool) -> bytes:
    out = io.BytesIO()
    fits.HDUList([chunked(h) for h in hdus]).writeto(out, checksum=checksum)
    return out.getvalue()


def _array(dtype: str, shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    rng = np.random.default_rng(7)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is not None:
        return rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    return (rng.standard_normal(shape) * 1e3).astype(dtype)


@pytest.mark.parametrize("checksum", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_same_bytes_as_astropys_writeto(
    dtype: str, shape: tuple[int, ...], checksum: bool
) -> None:
    data = _array(dtype, shape)
    expected = _astropy_bytes([fits.PrimaryHDU(data.copy()), fits.ImageHDU(data.copy())], checksum)
    read_only = data.copy()
    read_only.flags.writeable = False
    for given in (data, read_only):
        before = given.copy()
        hdus = [fits.PrimaryHDU(given), fits.ImageHDU(given)]
        assert _chunked_bytes(hdus, checksum) == expected
        np.testing.assert_array_equal(given, before)
        assert given.dtype == before.dtype


@pytest.mark.parametrize("checksum", [False, True])
def test_scaled_images_read_from_a_file_write_as_astropy_writes_them(checksum: bool) -> None:
    """BSCALE/BZERO images (astropy rescales them back before writing): same bytes."""
    raw = fits.PrimaryHDU(np.arange(6000, dtype="<i2").reshape(60, 100))
    raw.scale("int16", bscale=0.5, bzero=10.0)
    source = io.BytesIO()
    raw.writeto(source)

    def loaded() -> list[Any]:
        source.seek(0)
        hdul = fits.open(source)
        _ = hdul[0].data  # scaled to float on load; scaled back on write
        return list(hdul)

    assert _chunked_bytes(loaded(), checksum) == _astropy_bytes(loaded(), checksum)


def test_what_chunked_leaves_to_astropy() -> None:
    class MyImage(fits.ImageHDU):
        pass

    fortran = np.asfortranarray(np.ones((50, 40), "<f4"))
    big_endian = np.ones((4, 4), ">f8")
    for hdu in (
        MyImage(np.ones((4, 4), "<f4")),  # a subclass may write its own way
        fits.PrimaryHDU(fortran),  # not C-contiguous
        fits.PrimaryHDU(big_endian),  # nothing to convert
        fits.PrimaryHDU(np.ones((4, 4), "u1")),
        fits.PrimaryHDU(),  # no data
        fits.BinTableHDU.from_columns([fits.Column("a", "E", array=np.ones(3))]),
    ):
        assert chunked(hdu) is hdu
    hdu = fits.PrimaryHDU(np.ones((4, 4), "<f4"))
    work = chunked(hdu)
    assert work is not hdu and type(hdu) is fits.PrimaryHDU and work.header is hdu.header
    assert _chunked_bytes([fits.PrimaryHDU(fortran)], True) == _astropy_bytes(
        [fits.PrimaryHDU(fortran.copy())], True
    )


@pytest.fixture
def writes_seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Calls of ``check()`` made at every write butler-fits hands the storage."""
    checks: list[Any] = []
    real = fitsfile._Stream.write

    def write(self: Any, data: Any) -> int:
        for check in checks:
            check()
        return real(self, data)

    monkeypatch.setattr(fitsfile._Stream, "write", write)
    return checks


@pytest.mark.parametrize("checksum", [False, True])
def test_a_ccddata_put_never_swaps_the_callers_array_while_writing(
    posix_repo: Butler, writes_seen: list[Any], checksum: bool
) -> None:
    """CCDData.to_hdu puts the caller's own array in the HDU; astropy's writeto would
    byte-swap it in place during the write (and DATASUM during the checksum)."""
    data = np.arange(1 << 20, dtype="<f4").reshape(1024, 1024)
    mask = np.zeros(data.shape, bool)
    uncertainty = np.full(data.shape, 2.0, "<f8")
    ccd = CCDData(data, unit="adu", mask=mask, uncertainty=uncertainty)
    seen: list[tuple[float, float]] = []
    writes_seen.append(lambda: seen.append((float(data[0, 1]), float(uncertainty[3, 3]))))
    posix_repo.register_dataset_type(
        "calexp",
        CCDData,
        "fits",
        dimensions={"visit": int},
        serializer_args={"checksum": checksum},
    )
    posix_repo.put(ccd, "calexp", visit=1)
    assert seen and set(seen) == {(1.0, 2.0)}
    back = posix_repo.get("calexp", visit=1)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_array_equal(back.uncertainty.array, uncertainty)


@pytest.mark.parametrize("dtype", ["<f4", "<u2"])
def test_a_put_holds_no_second_copy_of_the_image(posix_repo: Butler, dtype: str) -> None:
    image = np.ones((2048, 4096), dtype)  # 32 or 16 MiB
    posix_repo.register_dataset_type("image", np.ndarray, "fits", dimensions={"visit": int})
    posix_repo.put(np.ones((4, 4), dtype), "image", visit=0)  # imports, index: not measured
    tracemalloc.start()
    try:
        posix_repo.put(image, "image", visit=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * CHUNK_BYTES, (
        f"peak {peak / 2**20:.1f} MiB for a {image.nbytes >> 20} MiB image"
    )
    np.testing.assert_array_equal(posix_repo.get("image", visit=1), image)
