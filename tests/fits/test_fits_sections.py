"""Image sections read straight into the cutout: equal to astropy's ``.section`` and to
numpy slices, for every BITPIX and rank, in one cutout's memory (not astropy's buffer plus
a copy), and truncation inside the section reported."""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

import numpy as np
import pytest

from butler import Butler, FormatError

fits = pytest.importorskip("astropy.io.fits")
pytest.importorskip("butler_fits", reason="butler-fits is not installed")

SECTIONS = [
    (slice(5, 20), slice(3, 40)),
    (slice(0, 1),),
    (slice(None),),
    (slice(2, 2),),
    (slice(-10, None), slice(None, -3)),
    (slice(1, 30, 2),),  # a step: astropy reads it
]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(50 * 70, dtype="f4").reshape(50, 70),
        np.arange(3 * 40 * 30, dtype=">i2").reshape(3, 40, 30),
        np.linspace(0, 1, 40),
        np.arange(600, dtype="u1").reshape(30, 20),
        np.arange(600, dtype="i8").reshape(20, 30),
    ],
    ids=["f4-2d", "i2-3d", "f8-1d", "u1", "i8"],
)
def test_sections_equal_numpy_and_astropy(repo: Butler, array: np.ndarray) -> None:
    repo.register_dataset_type("img", np.ndarray, "fits", dimensions={"i": int})
    repo.put(array, "img", i=1)
    for section in SECTIONS:
        section = section[: array.ndim]
        got = repo.get("img", i=1, parameters={"section": section})
        want = array[section]
        assert got.shape == want.shape, section
        assert got.dtype == array.dtype, section  # the dtype written, byte order too
        np.testing.assert_array_equal(got, want)


def test_section_of_a_file_written_by_astropy(posix_repo: Butler, tmp_path: Any) -> None:
    """A big-endian image astropy wrote (no butler keywords) cut out as astropy's own
    ``.section`` gives it."""
    data = np.arange(64 * 48, dtype=">f4").reshape(64, 48)
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(data).writeto(path)
    posix_repo.register_dataset_type("img", np.ndarray, "fits", dimensions={"i": int})
    with fits.open(path) as hdul:
        want = hdul[0].section[10:30, 5:40]
    posix_repo.put(np.asarray(data), "img", i=2)
    got = posix_repo.get("img", i=2, parameters={"section": (slice(10, 30), slice(5, 40))})
    np.testing.assert_array_equal(got, want)


def test_a_section_read_holds_one_cutout(posix_repo: Butler) -> None:
    """Peak traced memory of a 4 MiB cutout of a 64 MiB image stays near one cutout (it was
    two: astropy's buffer, then butler's byte-swapped copy)."""
    image = np.ones((4096, 4096), dtype="f4")
    posix_repo.register_dataset_type("img", np.ndarray, "fits", dimensions={"i": int})
    posix_repo.put(image, "img", i=1)
    del image
    section = (slice(1024, 2048), slice(0, 1024))
    tracemalloc.start()
    try:
        cut = posix_repo.get("img", i=1, parameters={"section": section})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cut.shape == (1024, 1024) and float(cut.sum()) == 1024 * 1024
    assert peak < 1.3 * cut.nbytes, peak / cut.nbytes


def test_truncation_inside_the_section_is_a_format_error(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("img", np.ndarray, "fits", dimensions={"i": int})
    posix_repo.put(np.ones((512, 512), dtype="f4"), "img", i=1)
    path = posix_repo.location("img", i=1).uri
    os.truncate(path, 2880 * 2 + 4 * 512 * 100)
    with pytest.raises(FormatError, match="dataset 'img'"):
        posix_repo.get("img", i=1, parameters={"section": (slice(300, 400), slice(0, 10))})
