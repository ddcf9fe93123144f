"""astropy tables as FITS binary tables: units, masks, strings, shapes, meta, subclasses."""

from __future__ import annotations

import io
import warnings

import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")

import astropy.units as u
import numpy as np
from astropy.io import fits
from astropy.table import Column, MaskedColumn, QTable, Table
from astropy.time import Time

from butler import Butler, FormatError


class SourceCatalog(Table):
    """A user subclass: must come back as itself."""


class CalibratedCatalog(QTable):
    """A QTable subclass."""


def _table(cls: type = Table) -> Table:
    t = cls()
    t["id"] = Column(np.arange(4, dtype="<i8"), description="source id", meta={"ucd": "meta.id"})
    t["flux"] = Column(np.array([1.5, np.nan, -np.inf, 3.0], dtype=">f4"), unit="mJy")
    t["ra"] = Column(np.linspace(0, 1, 4), unit=u.deg, format="%.3f")
    t["flag"] = MaskedColumn(np.array([1, 2, 3, 4], dtype="<i2"), mask=[False, True, False, True])
    t["fmask"] = MaskedColumn([1.0, np.nan, 2.0, 3.0], mask=[True, False, False, False])
    t["smask"] = MaskedColumn(["a", "bb", "ccc", ""], mask=[False, False, True, False])
    t["bmask"] = MaskedColumn([True, False, True, False], mask=[False, True, False, False])
    t["name"] = np.array(["Vega", "Bételgeuse", "北極星", ""])
    t["padded"] = np.array(["a ", " b", "c", "trailing  "])  # FITS ignores trailing spaces
    t["raw"] = np.array([b"x", b"yy ", b"\x00z", b""])
    t["bool"] = [True, False, True, True]
    t["cube"] = np.arange(24.0).reshape(4, 2, 3)
    t["names2d"] = np.array([["a", "é"], ["c", "d"], ["", "f"], ["g", "h"]])
    t["cplx"] = np.array([1 + 2j, 3, -4j, 0], dtype="<c16")
    t["u8"] = np.array([0, 1, 2**63, 2**64 - 1], dtype="<u8")
    t.meta["TELESCOP"] = "Rubin"
    t.meta["exposure"] = 30.5
    t.meta["nested"] = {"filters": ["g", "r"], "gain": 1.5 * u.electron / u.adu}
    t.meta["a_very_long_key_name"] = "x" * 150
    t.meta["comments"] = ["first comment", "second"]
    return t


def assert_tables_equal(got: Table, want: Table) -> None:
    assert type(got) is type(want)
    assert got.colnames == want.colnames
    assert got.meta == want.meta
    for name in want.colnames:
        a, b = got[name], want[name]
        assert type(a) is type(b), name
        assert a.dtype.str == b.dtype.str, (name, a.dtype, b.dtype)
        assert a.shape == b.shape, name
        assert a.unit == b.unit, name
        assert a.info.description == b.info.description, name
        assert (a.info.meta or {}) == (b.info.meta or {}), name
        assert a.info.format == b.info.format, name
        if isinstance(b, MaskedColumn):
            np.testing.assert_array_equal(a.mask, b.mask)
            np.testing.assert_array_equal(a.data[~b.mask], b.data[~b.mask])
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture
def tables(repo: Butler) -> Butler:
    repo.register_dataset_type("cat", "astropy.table.Table", "fits", dimensions={"n": int})
    return repo


def test_round_trip(tables: Butler) -> None:
    table = _table()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no astropy warning on the way
        tables.put(table, "cat", n=1)
        got = tables.get("cat", n=1)
    assert_tables_equal(got, table)
    assert np.isnan(got["flux"][1]) and not np.ma.is_masked(got["flux"][1])
    assert got["name"][2] == "北極星" and got["padded"][3] == "trailing  "
    assert got["raw"].data[1] == b"yy "  # (element access decodes bytes to str)


def test_input_table_untouched(tables: Butler) -> None:
    table = _table()
    before = table.copy()
    tables.put(table, "cat", n=1)
    assert_tables_equal(table, before)


@pytest.mark.parametrize("cls", [QTable, SourceCatalog, CalibratedCatalog])
def test_subclasses_come_back_as_themselves(tables: Butler, cls: type) -> None:
    table = _table(cls)
    tables.put(table, "cat", n=1)
    got = tables.get("cat", n=1)
    assert type(got) is cls
    if issubclass(cls, QTable):
        assert isinstance(got["flux"], u.Quantity) and got["flux"].unit == u.mJy
    assert_tables_equal(got, table)


def test_qtable_quantities_and_time(tables: Butler) -> None:
    q = QTable()
    q["dist"] = [1.0, 2.5] * u.kpc
    q["count"] = u.Quantity(np.array([1, 2], dtype=">i4"), u.ct, dtype=">i4")
    q["when"] = Time(["2026-01-01T00:00:00", "2026-06-01T12:00:00"], scale="tai")
    tables.put(q, "cat", n=1)
    got = tables.get("cat", n=1)
    assert type(got) is QTable
    assert got["dist"].unit == u.kpc and got["count"].dtype.str == ">i4"
    np.testing.assert_array_equal(got["dist"].value, [1.0, 2.5])
    assert isinstance(got["when"], Time) and got["when"].scale == "tai"
    assert np.all(got["when"] == q["when"])


def test_empty_tables(tables: Butler) -> None:
    empty_rows = Table({"a": np.zeros(0, ">f8"), "s": np.zeros(0, "<U4")}, meta={"k": 1})
    empty_rows["a"].unit = "s"
    tables.put(empty_rows, "cat", n=1)
    assert_tables_equal(tables.get("cat", n=1), empty_rows)


def test_column_selection(tables: Butler) -> None:
    table = _table()
    tables.put(table, "cat", n=1)
    full = tables.get("cat", n=1)
    for columns in (["flag"], ["name", "flux", "cube"], ["smask", "id"]):
        got = tables.get("cat", n=1, parameters={"columns": columns})
        assert got.colnames == columns
        assert_tables_equal(got, full[columns])
    with pytest.raises(FormatError, match=r"dataset 'cat'.*has no columns \['nope'\].*'flux'"):
        tables.get("cat", n=1, parameters={"columns": ["flux", "nope"]})
    with pytest.raises(FormatError, match=r"dataset 'cat'.*columns=3 must be a list of names"):
        tables.get("cat", n=1, parameters={"columns": 3})


def test_file_is_a_standard_binary_table(posix_repo: Butler, tools) -> None:
    posix_repo.register_dataset_type("cat", "astropy.table.Table", "fits", "cat.fits")
    table = _table(SourceCatalog)
    posix_repo.put(table, "cat")
    path = tools.path(posix_repo, "cat")
    with fits.open(path) as hdul:
        assert isinstance(hdul[1], fits.BinTableHDU)
        header = hdul[1].header
        assert header["BUTLTYPE"].endswith("test_fits_table.SourceCatalog")
        assert header["TELESCOP"] == "Rubin"  # scalar meta: ordinary keywords too
        assert header["TUNIT2"] == "mJy"
        data = hdul[1].data
        np.testing.assert_array_equal(data["id"], table["id"])
        np.testing.assert_array_equal(data["flag.mask"], [False, True, False, True])
        assert data.columns["name"].format == "11A"  # UTF-8 bytes
        assert data.columns["padded"].format.endswith("B")  # raw bytes keep the spaces
    plain = Table.read(path, hdu=1)  # astropy alone reads it too
    np.testing.assert_array_equal(plain["flux"], table["flux"])
    assert plain["flux"].unit == u.mJy
    np.testing.assert_array_equal(plain["flag"].mask, table["flag"].mask)


def test_foreign_table_and_hdu_by_name(repo: Butler, tools) -> None:
    repo.register_dataset_type("cat", "astropy.table.Table", "fits", "cat.fits")
    repo.put(Table({"a": [1]}), "cat")
    buffer = io.BytesIO()
    fits.HDUList(
        [
            fits.PrimaryHDU(np.zeros(3)),
            fits.BinTableHDU(Table({"x": [1, 2], "y": [3.0, 4.0]}), name="OBJ"),
            fits.BinTableHDU(Table({"z": [b"a", b"b"]}), name="SRC"),
        ]
    ).writeto(buffer)
    tools.replace(repo, "cat", buffer.getvalue(), keep_type=False)
    first = repo.get("cat")
    assert first.colnames == ["x", "y"]
    np.testing.assert_array_equal(first["y"], [3.0, 4.0])
    second = repo.get("cat", parameters={"hdu": "SRC"})
    assert [str(v) for v in second["z"]] == ["a", "b"]
    assert repo.get("cat", parameters={"hdu": 2, "columns": ["z"]}).colnames == ["z"]
    with pytest.raises(FormatError, match=r"dataset 'cat'.*HDU 'PRIMARY' is a PrimaryHDU, not"):
        repo.get("cat", parameters={"hdu": 0})


def test_table_refuses_compress(repo: Butler) -> None:
    repo.register_dataset_type(
        "cat", "astropy.table.Table", "fits", "cat.fits", serializer_args={"compress": "RICE_1"}
    )
    with pytest.raises(FormatError, match=r"dataset 'cat'.*compress='RICE_1' applies to images"):
        repo.put(Table({"a": [1]}), "cat")


def test_table_without_columns(tables: Butler) -> None:
    tables.put(Table(meta={"note": "nothing yet"}), "cat", n=1)
    got = tables.get("cat", n=1)
    assert got.colnames == [] and got.meta == {"note": "nothing yet"}


def test_unrepresentable_meta_is_refused(tables: Butler) -> None:
    table = Table({"a": [1]})
    table.meta["callback"] = object()
    with pytest.raises(FormatError, match=r"dataset 'cat'.*cannot represent an object"):
        tables.put(table, "cat", n=1)
    assert not tables.exists("cat", n=1)
