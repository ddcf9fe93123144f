"""Checksums, truncated and foreign files: every failure is a FormatError naming the dataset."""

from __future__ import annotations

import io

import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData
from astropy.table import Table

from butler import Butler, FormatError

# astropy warns about the damaged files these tests build on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:File may have been truncated"),
    pytest.mark.filterwarnings("ignore:Error validating header"),
]

CASES = {
    "numpy.ndarray": lambda: np.arange(2000, dtype="<f4").reshape(40, 50),
    "astropy.table.Table": lambda: Table({"a": np.arange(500), "b": np.linspace(0, 1, 500)}),
    "astropy.io.fits.HDUList": lambda: fits.HDUList(
        [fits.PrimaryHDU(np.arange(2000.0)), fits.ImageHDU(np.ones(800, "i4"), name="X")]
    ),
    "astropy.nddata.CCDData": lambda: CCDData(np.arange(2000.0).reshape(40, 50), unit="adu"),
}


@pytest.fixture
def checked(repo: Butler) -> Butler:
    for i, python_type in enumerate(CASES):
        repo.register_dataset_type(
            f"sum{i}", python_type, "fits", f"sum{i}.fits", serializer_args={"checksum": True}
        )
        repo.register_dataset_type(f"plain{i}", python_type, "fits", f"plain{i}.fits")
    return repo


def _data_offset(raw: bytes, hdu_index: int) -> int:
    with fits.open(io.BytesIO(raw)) as hdul:
        return int(hdul[hdu_index].fileinfo()["datLoc"])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_checksum_written_and_verified(checked: Butler, tools, index: int) -> None:
    obj = CASES[list(CASES)[index]]()
    checked.put(obj, f"sum{index}")
    raw = tools.read_bytes(checked, f"sum{index}")
    with fits.open(io.BytesIO(raw), checksum=True) as hdul:
        for hdu in hdul:
            assert "CHECKSUM" in hdu.header and "DATASUM" in hdu.header
            assert hdu.verify_checksum() == 1
            assert hdu.verify_datasum() == 1
    checked.get(f"sum{index}")  # intact: reads fine

    data_hdu = 0 if index in (0, 2, 3) else 1
    corrupt = bytearray(raw)
    corrupt[_data_offset(raw, data_hdu) + 17] ^= 0x01  # one bit of one data byte
    tools.replace(checked, f"sum{index}", bytes(corrupt))
    with pytest.raises(FormatError, match=rf"dataset 'sum{index}'.*DATASUM.*corrupt"):
        checked.get(f"sum{index}")


def test_byte_flipped_on_disk(posix_repo: Butler, tools) -> None:
    posix_repo.register_dataset_type(
        "img", "numpy.ndarray", "fits", "img.fits", serializer_args={"checksum": True}
    )
    posix_repo.put(np.arange(5000, dtype=">i4"), "img")
    path = tools.path(posix_repo, "img")
    with open(path, "rb") as f:
        offset = _data_offset(f.read(), 0) + 1234
    with open(path, "r+b") as f:  # in place, as a disk error would
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(FormatError, match=r"dataset 'img'.*DATASUM of HDU PRIMARY does not match"):
        posix_repo.get("img")


def test_header_corruption_is_detected(checked: Butler, tools) -> None:
    checked.put(CASES["numpy.ndarray"](), "sum0")
    raw = bytearray(tools.read_bytes(checked, "sum0"))
    position = raw.index(b"BUTLDTYP= '<f4") + len("BUTLDTYP= '<")
    raw[position : position + 2] = b"f8"  # still a valid header, different meaning
    tools.replace(checked, "sum0", bytes(raw))
    with pytest.raises(FormatError, match=r"dataset 'sum0'.*CHECKSUM of HDU PRIMARY"):
        checked.get("sum0")


def test_sections_skip_full_verification(checked: Butler, tools) -> None:
    checked.put(CASES["numpy.ndarray"](), "sum0")
    got = checked.get("sum0", parameters={"section": (slice(0, 2),)})
    np.testing.assert_array_equal(got, CASES["numpy.ndarray"]()[:2])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_truncated_files(checked: Butler, tools, index: int) -> None:
    checked.put(CASES[list(CASES)[index]](), f"plain{index}")
    raw = tools.read_bytes(checked, f"plain{index}")
    for keep in (len(raw) - 2880, len(raw) - 1, 2880 + 100, 1000):
        tools.replace(checked, f"plain{index}", raw[:keep])
        with pytest.raises(FormatError, match=rf"dataset 'plain{index}'") as info:
            checked.get(f"plain{index}")
        message = str(info.value)
        assert "truncated" in message or "END" in message or "empty" in message.lower(), message


def test_truncated_image_message(repo: Butler, tools) -> None:
    repo.register_dataset_type("img", "numpy.ndarray", "fits", "img.fits")
    repo.put(np.zeros((100, 100), "f8"), "img")
    raw = tools.read_bytes(repo, "img")
    tools.replace(repo, "img", raw[: len(raw) // 2])
    with pytest.raises(FormatError, match=r"dataset 'img'.*is truncated: HDU PRIMARY needs \d+"):
        repo.get("img")
    with pytest.raises(FormatError, match=r"dataset 'img'.*is truncated"):
        repo.get("img", parameters={"section": (slice(0, 1),)})


@pytest.mark.parametrize("python_type", [*CASES, "astropy.io.fits.Header"])
@pytest.mark.parametrize(
    "content", [b"", b"hello world, not FITS at all" * 10, b"\x93NUMPY\x01\x00" + b"x" * 200]
)
def test_not_fits(repo: Butler, tools, python_type: str, content: bytes) -> None:
    repo.register_dataset_type("other", python_type, "fits", "other.fits")
    tools.replace(repo, "other", content, keep_type=False)
    expected = "is empty" if not content else r"is not a FITS file: it starts with"
    with pytest.raises(FormatError, match=rf"dataset 'other'.*{expected}"):
        repo.get("other")


def test_format_descriptor_identifies_fits(repo: Butler) -> None:
    registry = repo.registry
    descriptor = registry.format("fits")
    assert descriptor.extensions == (
        ".fits",
        ".fit",
        ".fts",
        ".fits.gz",
        ".fit.gz",
        ".fts.gz",
        ".fz",
    )
    buffer = io.BytesIO()
    fits.PrimaryHDU(np.zeros(3)).writeto(buffer)
    assert registry.identify_format("anything", buffer.getvalue()[:80]) == "fits"
    assert registry.identify_format("x.fits.gz") == "fits"
    assert not descriptor.matches_bytes(b"\x89HDF\r\n\x1a\n")


def test_checksum_of_compressed_images(repo: Butler, tools) -> None:
    repo.register_dataset_type(
        "packed",
        "numpy.ndarray",
        "fits",
        "packed.fits",
        serializer_args={"checksum": True, "compress": "GZIP_2"},
    )
    image = np.arange(4000, dtype=">i2").reshape(40, 100)
    repo.put(image, "packed")
    np.testing.assert_array_equal(repo.get("packed"), image)
    raw = tools.read_bytes(repo, "packed")
    with fits.open(io.BytesIO(raw), disable_image_compression=True) as hdul:
        assert hdul[1].verify_checksum() == 1 and hdul[1].verify_datasum() == 1
        offset = int(hdul[1].fileinfo()["datLoc"]) + 5
    corrupt = bytearray(raw)
    corrupt[offset] ^= 0x04
    tools.replace(repo, "packed", bytes(corrupt))
    with pytest.raises(FormatError, match=r"dataset 'packed'.*COMPRESSED_IMAGE.*corrupt"):
        repo.get("packed")
