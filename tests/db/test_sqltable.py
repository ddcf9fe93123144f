"""The sql-table format: typed SQL tables on every backend, selections, write modes."""

from __future__ import annotations

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import numpy as np
import sqlalchemy as sa

from butler import Butler, DatasetExistsError, FormatError, StorageError

from ._helpers import count_rows, raw_engine, table_names

astropy_table = pytest.importorskip("astropy.table")
Table, MaskedColumn = astropy_table.Table, astropy_table.MaskedColumn


def _butler(root: str, python_type: str = "astropy.table.Table") -> Butler:
    b = Butler.create(root)
    b.register_dataset_type("cat", python_type, "sql-table", dimensions={"visit": int})
    return b


def _sample() -> Table:
    t = Table()
    t["i1"] = np.array([-128, 0, 127], dtype=np.int8)
    t["i2"] = np.array([-32768, 0, 32767], dtype=np.int16)
    t["i4"] = np.array([-(2**31), 0, 2**31 - 1], dtype=np.int32)
    t["i8"] = np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64)
    t["u1"] = np.array([0, 1, 255], dtype=np.uint8)
    t["u4"] = np.array([0, 1, 2**32 - 1], dtype=np.uint32)
    t["f4"] = np.array([1.5, -np.inf, 3.25], dtype=np.float32)
    t["f8"] = np.array([np.pi, np.nan, 1e300], dtype=np.float64)
    t["flag"] = np.array([True, False, True])
    t["name"] = np.array(["a", "héllo", ""], dtype="U8")
    t["uni"] = ["日本語", "ünï", "x" * 300]
    t["raw"] = np.array([b"\x00\x01", b"ab", b""], dtype="S4")
    t["mi"] = MaskedColumn([1, 2, 3], mask=[False, True, False], dtype=np.int32)
    t["mf"] = MaskedColumn([1.0, 2.0, np.nan], mask=[True, False, False])
    t["ms"] = MaskedColumn(["x", "y", "z"], mask=[False, False, True])
    t["mb"] = MaskedColumn([True, False, True], mask=[False, True, False])
    t["f8"].unit = "deg"
    t["f8"].description = "angle"
    t.meta["origin"] = "test"
    return t


def test_dtype_fidelity(db_root: str, backend: str) -> None:
    b = _butler(db_root)
    t = _sample()
    if backend == "mysql":
        t["f4"][1] = -1.0  # MariaDB cannot store infinities
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1)
    assert out.colnames == t.colnames
    for name in t.colnames:
        assert out[name].dtype == t[name].dtype, name
        if hasattr(t[name], "mask"):
            expected_mask = list(t[name].mask)
            if name == "mf" and backend != "postgresql":
                expected_mask[2] = True  # an unmasked NaN is stored as NULL there
            assert list(out[name].mask) == expected_mask, name
            keep = ~np.asarray(out[name].mask)
            a, e = np.asarray(out[name])[keep], np.asarray(t[name])[keep]
        else:
            a, e = np.asarray(out[name]), np.asarray(t[name])
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, e, err_msg=name)  # NaN == NaN here
        else:
            assert a.tolist() == e.tolist(), name
    assert out["f8"].unit == "deg" and out["f8"].description == "angle"
    assert out.meta["origin"] == "test"
    if backend == "mysql":
        with pytest.raises(FormatError, match="infinities"):
            b.put(_sample(), "cat", visit=2)


def test_table_is_real_and_typed(db_root: str, backend: str) -> None:
    b = _butler(db_root)
    t = _sample()
    t["f4"][1] = -1.0  # MariaDB cannot store infinities
    b.put(t, "cat", visit=1)
    name = b.storage.table_name("cat/1")  # type: ignore[attr-defined]
    assert name.startswith("bt_cat_1_")
    engine = raw_engine(db_root)
    with engine.connect() as conn:
        cols = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(name)}
        table = sa.table(name, sa.column("i4"), sa.column("name"), sa.column("mi"))
        rows = conn.execute(sa.select(table.c.i4, table.c.name, table.c.mi)).all()
        n_null = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.mi.is_(None))
        ).scalar_one()
    engine.dispose()
    assert sorted(r[0] for r in rows) == [-(2**31), 0, 2**31 - 1]
    assert {r[1] for r in rows} == {"a", "héllo", ""}
    assert n_null == 1
    assert isinstance(cols["i8"], sa.BigInteger)
    assert isinstance(cols["i2"], sa.SmallInteger)
    assert isinstance(cols["i4"], sa.Integer)
    assert isinstance(cols["name"], sa.String) and not isinstance(cols["name"], sa.Text)
    assert isinstance(cols["f8"], sa.Float)
    if backend == "postgresql":
        assert isinstance(cols["flag"], sa.Boolean)
        assert isinstance(cols["f4"], sa.REAL)


def test_columns_and_where(db_root: str) -> None:
    b = _butler(db_root)
    t = Table({"id": np.arange(100), "x": np.linspace(0, 1, 100), "band": ["g", "r"] * 50})
    b.put(t, "cat", visit=1)
    got = b.get("cat", visit=1, parameters={"columns": ["band", "id"]})
    assert got.colnames == ["band", "id"] and len(got) == 100
    got = b.get("cat", visit=1, parameters={"where": {"id": (10, 19)}})
    assert got["id"].tolist() == list(range(10, 20))
    got = b.get("cat", visit=1, parameters={"where": {"id": (None, 2), "band": "g"}})
    assert got["id"].tolist() == [0, 2]
    got = b.get("cat", visit=1, parameters={"where": {"id": [5, 7, np.int64(99)]}})
    assert got["id"].tolist() == [5, 7, 99]
    got = b.get("cat", visit=1, parameters={"where": {"x": (np.float64(0.5), None)}})
    assert got["id"].tolist() == list(range(50, 100))
    hostile = "g' OR '1'='1"
    assert len(b.get("cat", visit=1, parameters={"where": {"band": hostile}})) == 0
    with pytest.raises(FormatError, match=r"unknown columns \['nope'\]"):
        b.get("cat", visit=1, parameters={"columns": ["nope"]})
    with pytest.raises(FormatError, match="'where' names unknown column 'id; DROP'"):
        b.get("cat", visit=1, parameters={"where": {"id; DROP": 1}})


def test_append_upsert_overwrite(db_root: str) -> None:
    b = _butler(db_root)
    t = Table({"id": np.arange(3), "v": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]})
    b.put(t, "cat", visit=1, parameters={"mode": "append"})  # creates
    b.put(t, "cat", visit=1, parameters={"mode": "append"})
    assert len(b.get("cat", visit=1)) == 6
    assert b.storage.size("cat/1") == 6
    with pytest.raises(DatasetExistsError, match="already exists"):
        b.put(t, "cat", visit=1)
    old_table = b.storage.table_name("cat/1")  # type: ignore[attr-defined]
    b.put(t, "cat", visit=1, overwrite=True)
    out = b.get("cat", visit=1)
    assert out["id"].tolist() == [0, 1, 2]
    assert old_table not in table_names(db_root)
    up = Table({"id": [2, 5, 5], "v": [20.0, 50.0, 55.0], "s": ["C", "F", "G"]})
    b.put(up, "cat", visit=1, parameters={"mode": "upsert", "key": ["id"]})
    out = b.get("cat", visit=1)
    assert sorted(zip(out["id"].tolist(), out["v"].tolist(), out["s"].tolist(), strict=True)) == [
        (0, 1.0, "a"),
        (1, 2.0, "b"),
        (2, 20.0, "C"),
        (5, 55.0, "G"),
    ]
    assert b.storage.size("cat/1") == 4
    # fresh upsert dataset: the key becomes a unique constraint of the table
    b.register_dataset_type("cat2", "astropy.table.Table", "sql-table", dimensions={"visit": int})
    b.put(up, "cat2", visit=1, parameters={"mode": "upsert", "key": "id"})
    assert sorted(b.get("cat2", visit=1)["id"].tolist()) == [2, 5]
    bad = Table({"id": [1], "other": [1.0], "s": ["x"]})
    with pytest.raises(FormatError, match="cannot append columns"):
        b.put(bad, "cat", visit=1, parameters={"mode": "append"})
    wrong = Table({"id": [1], "v": ["text"], "s": ["x"]})
    with pytest.raises(FormatError, match="column 'v' holds float values"):
        b.put(wrong, "cat", visit=1, parameters={"mode": "append"})
    with pytest.raises(FormatError, match="unknown sql-table write mode 'merge'"):
        b.put(t, "cat", visit=1, parameters={"mode": "merge"})
    with pytest.raises(FormatError, match="needs parameters="):
        b.put(t, "cat", visit=1, parameters={"mode": "upsert"})
    assert len(b.get("cat", visit=1)) == 4  # failed writes changed nothing


def test_remove_drops_table_and_datasets_lists(db_root: str) -> None:
    b = _butler(db_root)
    for visit in (1, 2):
        b.put(Table({"a": [visit]}), "cat", visit=visit)
    assert sorted(d["visit"] for d in b.datasets("cat")) == [1, 2]
    name = b.storage.table_name("cat/1")  # type: ignore[attr-defined]
    meta = b.storage.metadata("cat/1")
    assert meta["format"] == "sql-table" and meta["table"]["columns"][0]["name"] == "a"
    b.remove("cat", visit=1)
    assert name not in table_names(db_root)
    assert not b.exists("cat", visit=1) and b.exists("cat", visit=2)
    assert count_rows(db_root, "butler_datasets") == 1


def test_structured_and_masked_arrays(db_root: str) -> None:
    b = _butler(db_root, "numpy.ndarray")
    arr = np.zeros(4, dtype=[("x", "<i4"), ("y", "<f8"), ("z", "U3"), ("w", "?")])
    arr["x"] = [1, 2, 3, 4]
    arr["z"] = ["a", "bb", "ccc", ""]
    b.put(arr, "cat", visit=1)
    out = b.get("cat", visit=1)
    assert type(out) is np.ndarray and out.dtype == arr.dtype and out.tolist() == arr.tolist()
    masked = np.ma.MaskedArray(arr, mask=[(0, 1, 0, 0), (0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 1, 0)])
    b.put(masked, "cat", visit=2)
    got = b.get("cat", visit=2)
    assert type(got) is np.ma.MaskedArray
    assert got.mask.tolist() == masked.mask.tolist()
    assert got.filled().tolist()[1] == arr.tolist()[1]
    with pytest.raises(FormatError, match="1-d structured arrays"):
        b.put(np.zeros(3), "cat", visit=3)


def test_pandas_dataframe(db_root: str) -> None:
    pd = pytest.importorskip("pandas")
    b = _butler(db_root, "pandas.DataFrame")
    df = pd.DataFrame(
        {
            "a": np.array([1, 2, 3], dtype=np.int64),
            "f": [1.5, np.nan, 2.5],
            "s": ["x", None, "zé"],
            "n": pd.array([1, None, 3], dtype="Int64"),
            "ok": [True, False, True],
        }
    )
    b.put(df, "cat", visit=1)
    out = b.get("cat", visit=1)
    pd.testing.assert_frame_equal(out, df)
    indexed = df.set_index("a")
    b.put(indexed, "cat", visit=2)
    pd.testing.assert_frame_equal(b.get("cat", visit=2), indexed)
    sub = b.get("cat", visit=1, parameters={"columns": ["a", "n"], "where": {"a": (2, 3)}})
    assert sub["a"].tolist() == [2, 3] and sub["n"].isna().tolist() == [True, False]


def test_empty_table_and_hostile_column_names(db_root: str) -> None:
    b = _butler(db_root)
    t = Table({'x"; DROP TABLE butler_datasets; --': [1, 2], "Select": ["a", "b"]})
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1)
    assert out.colnames == t.colnames and out["Select"].tolist() == ["a", "b"]
    empty = Table({"a": np.array([], dtype=np.int16), "s": np.array([], dtype="U4")})
    b.put(empty, "cat", visit=2)
    got = b.get("cat", visit=2)
    assert len(got) == 0 and got["a"].dtype == np.int16 and got["s"].dtype == np.dtype("U4")
    assert {"butler_datasets", "butler_chunks"} <= set(table_names(db_root))
    # the hidden row column's name is a user column like any other (mapped to col_0)
    b.put(Table({"_butler_row": [7]}), "cat", visit=3)
    assert b.get("cat", visit=3)["_butler_row"].tolist() == [7]


def test_large_insert_uses_batches(sqlite_root: str) -> None:
    b = _butler(sqlite_root)
    n = 120_000
    t = Table({"id": np.arange(n), "x": np.random.default_rng(0).random(n)})
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1, parameters={"where": {"id": (n - 5, None)}})
    assert out["id"].tolist() == list(range(n - 5, n))
    assert np.array_equal(b.get("cat", visit=1)["x"], t["x"])


def test_append_to_a_row_whose_size_is_not_a_count_is_a_storage_error(sqlite_root: str) -> None:
    """The dataset row is untrusted: a size that is not a row count (SQLite keeps text in
    an integer column) makes an append refuse, naming the row, not raise a ValueError."""
    b = _butler(sqlite_root)
    t = Table({"id": np.arange(3)})
    b.put(t, "cat", visit=1, parameters={"mode": "append"})
    engine = raw_engine(sqlite_root)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE butler_datasets SET size = 'abc'")
    engine.dispose()
    with pytest.raises(StorageError, match=r"is corrupt \(size 'abc'\)"):
        b.put(t, "cat", visit=1, parameters={"mode": "append"})
    b.close()
