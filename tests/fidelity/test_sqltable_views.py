"""Issue 13 item 17: every ``sql-table`` dataset is a SQL view with a stable, readable name
that survives overwrites; only butler's own views are ever replaced or dropped.

Runs on SQLite, and on PostgreSQL / MariaDB when ``BUTLER_TEST_POSTGRES_URL`` /
``BUTLER_TEST_MYSQL_URL`` are set.
"""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")
pytest.importorskip("astropy")

import sqlalchemy as sa
from astropy.table import Table

from butler import Butler

from ..db._helpers import raw_engine
from ..db.conftest import *  # noqa: F403 - the db_root/backend fixtures of tests/db


def _butler(root: str) -> Butler:
    b = Butler.create(root)
    b.register_dataset_type("cat", "astropy.table.Table", "sql-table", dimensions={"visit": int})
    return b


def _sql(root: str, statement: str) -> list[tuple[object, ...]]:
    engine = raw_engine(root)
    try:
        with engine.begin() as conn:
            result = conn.exec_driver_sql(statement)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _objects(root: str) -> tuple[list[str], list[str]]:
    engine = raw_engine(root)
    try:
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            return sorted(inspector.get_table_names()), sorted(inspector.get_view_names())
    finally:
        engine.dispose()


def test_view_names_are_readable_stable_and_distinct() -> None:
    from butler_db._views import view_names

    assert view_names("cat/1/r")[0] == "cat__1__r"
    assert view_names("calexp/000001/2")[0] == "calexp__000001__2"
    assert view_names("src_table/12")[0] == "src_table__12"
    keys = [
        "cat/1", "cat_1", "cat__1", "Cat/1", "cat/1.fits", "cat/-1", "cat/ 1", "cat/1/",
        "butler_datasets", "bt_cat_1", "1cat", "x" * 80, "x" * 81, "cat/é", "cat/ä",
    ]  # fmt: skip
    names = [view_names(k)[0] for k in keys]
    assert len(set(names)) == len(keys), names  # distinct keys, distinct names
    for key, name in zip(keys, names, strict=True):
        assert len(name) <= 56 and name.replace("_", "").isalnum() and name.isascii(), name
        assert name == view_names(key)[0]  # deterministic
        assert not name.startswith(("bt_", "butler_")), name
    # only readable names lack "___": a readable and a hashed name never meet
    assert all("___" not in view_names(k)[0] for k in ("cat/1", "cat_1", "src_table/12"))
    assert all("___" in view_names(k)[0] for k in ("Cat/1", "cat__1", "butler_datasets"))


def test_view_survives_overwrites_and_goes_with_remove(db_root: str, backend: str) -> None:
    b = _butler(db_root)
    b.put(Table({"id": [1, 2], "flux": [1.5, 2.5]}), "cat", visit=7)
    view = b.storage.view_name("cat/7")  # type: ignore[attr-defined]
    assert view == "cat__7"
    first_table = b.storage.table_name("cat/7")  # type: ignore[attr-defined]
    assert sorted(_sql(db_root, "SELECT id, flux FROM cat__7")) == [(1, 1.5), (2, 2.5)]
    # overwrite with other columns: same view name, new table, new columns
    b.put(Table({"id": [3], "mag": [20.0], "band": ["r"]}), "cat", visit=7, overwrite=True)
    assert b.storage.view_name("cat/7") == "cat__7"  # type: ignore[attr-defined]
    assert b.storage.table_name("cat/7") != first_table  # type: ignore[attr-defined]
    assert _sql(db_root, "SELECT id, mag, band FROM cat__7") == [(3, 20.0, "r")]
    tables, views = _objects(db_root)
    assert first_table not in tables and views == ["cat__7"]
    # appends and upserts keep the view on the same table
    b.put(Table({"id": [4], "mag": [21.0], "band": ["g"]}), "cat", visit=7,
          parameters={"mode": "append"})  # fmt: skip
    assert sorted(_sql(db_root, "SELECT id FROM cat__7")) == [(3,), (4,)]
    # the hidden row-order column is not part of the view
    columns = [c for c in _sql(db_root, "SELECT * FROM cat__7")[0]]
    assert len(columns) == 3
    b.remove("cat", visit=7)
    tables, views = _objects(db_root)
    assert views == [] and not [t for t in tables if t.startswith("bt_")]


def test_odd_keys_and_column_names(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("Cat", "astropy.table.Table", "sql-table", dimensions={"band": str})
    b.put(Table({"a%b": [1], "Flux": [2.0], "flux": [3.0]}), "Cat", band="r-1")
    view = b.storage.view_name(b.location("Cat", band="r-1").key)  # type: ignore[attr-defined]
    assert view is not None and view.startswith("cat__r_1___")
    rows = _sql(db_root, f"SELECT * FROM {view}")
    assert rows == [(1, 2.0, 3.0)]


def test_foreign_objects_are_never_replaced_or_dropped(db_root: str, backend: str) -> None:
    b = _butler(db_root)
    # a user's own table and view take the readable names of two datasets
    _sql(db_root, "CREATE TABLE cat__1 (mine INTEGER)")
    _sql(db_root, "INSERT INTO cat__1 VALUES (42)")
    _sql(db_root, "CREATE VIEW cat__2 AS SELECT mine FROM cat__1")
    with pytest.warns(UserWarning, match=r"'cat__1' is taken by a table or view butler did not"):
        b.put(Table({"x": [1]}), "cat", visit=1)
    with pytest.warns(UserWarning, match=r"'cat__2' is taken"):
        b.put(Table({"x": [2]}), "cat", visit=2)
    fallback = b.storage.view_name("cat/1")  # type: ignore[attr-defined]
    assert fallback is not None and fallback.startswith("cat__1___")
    assert _sql(db_root, f"SELECT x FROM {fallback}") == [(1,)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the view keeps its name: nothing new to say
        b.put(Table({"x": [10]}), "cat", visit=1, overwrite=True)
    assert b.storage.view_name("cat/1") == fallback  # type: ignore[attr-defined]
    assert _sql(db_root, f"SELECT x FROM {fallback}") == [(10,)]
    b.remove("cat", visit=1)
    b.remove("cat", visit=2)
    assert _sql(db_root, "SELECT mine FROM cat__1") == [(42,)]
    assert _sql(db_root, "SELECT mine FROM cat__2") == [(42,)]
    tables, views = _objects(db_root)
    assert "cat__1" in tables and views == ["cat__2"]


def test_view_of_a_tampered_row_is_left_alone(db_root: str) -> None:
    """A dataset row pointing at another table never makes butler point a view at it."""
    b = _butler(db_root)
    b.put(Table({"x": [1]}), "cat", visit=1)
    b.put(Table({"x": [2]}), "cat", visit=2)
    other = b.storage.table_name("cat/2")  # type: ignore[attr-defined]
    from butler_db._schema import key_hash

    where = f"key_hash = '{key_hash('cat/1')}'"
    _sql(db_root, f"UPDATE butler_datasets SET table_name = '{other}' WHERE {where}")
    with pytest.raises(Exception, match="did not create for this dataset"):
        b.put(Table({"x": [3]}), "cat", visit=1, overwrite=True)
    assert _sql(db_root, "SELECT x FROM cat__2") == [(2,)]
    assert _sql(db_root, "SELECT x FROM cat__1") == [(1,)]


def test_failed_overwrite_keeps_the_view(db_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The view is re-pointed inside the transaction (PostgreSQL, SQLite) or after its
    commit (MariaDB): a write failing after the swap leaves the view on the old rows."""
    from butler_db._storage import DatabaseStorage

    b = _butler(db_root)
    b.put(Table({"x": [1.0]}), "cat", visit=1)
    old = b.storage.table_name("cat/1")  # type: ignore[attr-defined]

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DatabaseStorage, "drop_contents", boom)
    with pytest.raises(Exception, match="disk on fire"):
        b.put(Table({"y": [2.0]}), "cat", visit=1, overwrite=True)
    monkeypatch.undo()
    assert _sql(db_root, "SELECT x FROM cat__1") == [(1.0,)]
    assert b.storage.table_name("cat/1") == old  # type: ignore[attr-defined]
    tables, _ = _objects(db_root)
    assert [t for t in tables if t.startswith("bt_")] == [old]
