"""The storage-agnostic ("*") FITS serializers on the database storage (butler-db)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")
pytest.importorskip("butler_db", reason="butler-db is not installed")

import numpy as np
from astropy.io import fits
from astropy.table import QTable

from butler import Butler


def test_fits_in_sqlite(tmp_path: Path) -> None:
    with Butler.create(f"sqlite:///{tmp_path / 'repo.db'}") as b:
        b.register_dataset_type("img", "numpy.ndarray", "fits", "img/{n}.fits")
        b.register_dataset_type(
            "cat", "astropy.table.Table", "fits", "cat.fits", serializer_args={"checksum": True}
        )
        b.register_dataset_type("hl", "astropy.io.fits.HDUList", "fits", "hl.fits")
        image = np.arange(5000, dtype="<f8").reshape(50, 100)
        b.put(image, "img", n=1)
        got = b.get("img", n=1)
        assert got.dtype.str == "<f8"
        np.testing.assert_array_equal(got, image)
        section = (slice(10, 12), slice(None, None, 10))
        np.testing.assert_array_equal(
            b.get("img", n=1, parameters={"section": section}), image[section]
        )
        table = QTable({"a": np.arange(3), "b": ["x", "yé", "z"]}, meta={"k": [1, 2]})
        b.put(table, "cat")
        back = b.get("cat")
        assert type(back) is QTable and back.meta == {"k": [1, 2]}
        assert list(back["b"]) == ["x", "yé", "z"]
        b.put(fits.HDUList([fits.PrimaryHDU(np.ones(3))]), "hl")
        np.testing.assert_array_equal(b.get("hl")[0].data, np.ones(3))
