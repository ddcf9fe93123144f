"""astropy tables in HDF5 (skipped without astropy): metadata, units, subclasses, filters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
pytest.importorskip("astropy", reason="astropy is not installed")
h5py = pytest.importorskip("h5py")

import astropy.units as u  # noqa: E402
from astropy.table import QTable, Table  # noqa: E402
from astropy.time import Time  # noqa: E402

from butler import Butler  # noqa: E402


class Catalog(Table):
    """A user subclass that must come back as itself."""


def _table(cls: type[Table] = Table) -> Table:
    table = cls(
        {
            "id": np.arange(5, dtype=">i8"),
            "flux": np.array([1.0, np.nan, 3.0, -0.0, 1e300]) * u.Jy,
            "name": ["a", "bé", "", "long name", "z"],
            "flag": [True, False, True, False, True],
            "vec": np.arange(10.0).reshape(5, 2),
        },
        meta={"telescope": "X", "nested": {"a": [1, 2]}, "exptime": 30.5},
    )
    table["id"].description = "source id"
    table["flux"].format = ".3f"
    return table


def _define(butler: Butler, **kwargs: Any) -> None:
    butler.register_dataset_type(
        "cat", "astropy.table.Table", "hdf5", dimensions={"i": int}, **kwargs
    )


def _same(a: Table, b: Table) -> None:
    assert type(a) is type(b)
    assert a.colnames == b.colnames
    assert dict(a.meta) == dict(b.meta)
    for name in a.colnames:
        ca, cb = a[name], b[name]
        assert getattr(ca, "unit", None) == getattr(cb, "unit", None), name
        # astropy's writer stores numbers in native byte order
        assert ca.dtype.newbyteorder("=") == cb.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(np.asarray(ca), np.asarray(cb))
        if hasattr(ca, "description"):
            assert ca.description == cb.description
            assert ca.format == cb.format


def test_table_round_trip(repo: Butler) -> None:
    _define(repo)
    table = _table()
    repo.put(table, "cat", i=1)
    _same(repo.get("cat", i=1), table)


@pytest.mark.parametrize("cls", [QTable, Catalog])
def test_subclasses_come_back_as_themselves(repo: Butler, cls: type[Table]) -> None:
    _define(repo)
    table = _table(cls)
    repo.put(table, "cat", i=1)
    back = repo.get("cat", i=1)
    assert type(back) is cls
    _same(back, table)
    if cls is QTable:
        assert isinstance(back["flux"], u.Quantity) and back["flux"].unit == u.Jy


def test_mixin_time_column(repo: Butler) -> None:
    _define(repo)
    table = QTable({"t": Time(["2026-01-01T00:00:00", "2026-06-01T12:00:00"], scale="tai")})
    repo.put(table, "cat", i=1)
    back = repo.get("cat", i=1)
    assert isinstance(back["t"], Time) and back["t"].scale == "tai"
    assert (back["t"] == table["t"]).all()


def test_file_is_an_astropy_hdf5_table(posix_repo: Butler, file_of: Any) -> None:
    _define(
        posix_repo,
        serializer_args={"compression": "gzip", "chunks": (2,)},
        additional_data={"path": "catalogs/main"},
    )
    table = _table()
    posix_repo.put(table, "cat", i=1)
    path = file_of(posix_repo, "cat", i=1)
    with h5py.File(path, "r") as f:
        dataset = f["catalogs/main"]
        assert dataset.dtype.names == ("id", "flux", "name", "flag", "vec")
        assert dataset.compression == "gzip" and dataset.chunks == (2,)
        assert "catalogs/main.__table_column_meta__" in f
        assert dataset.attrs["butler.python_type"] == "astropy.table.table.Table"
    direct = Table.read(path, path="catalogs/main", character_as_bytes=False)
    _same(direct, table)
