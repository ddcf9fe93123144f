"""Issue 13 item 18: units and descriptions of ``sql-table`` columns are column comments
where SQL tools show them (PostgreSQL ``COMMENT ON COLUMN``, MariaDB column ``COMMENT``),
read here from the catalogs. SQLite has no comments: the metadata keeps them (and reads
back) there, as everywhere.
"""

from __future__ import annotations

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")
pytest.importorskip("astropy")

import sqlalchemy as sa
from astropy.table import Table
from astropy.time import Time

from butler import Butler

from ..db._helpers import raw_engine
from ..db.conftest import *  # noqa: F403 - the db_root/backend fixtures of tests/db

HOSTILE = 'it\'s "quoted" \\ back; DROP TABLE butler_datasets; -- %s %(x)s \x00 \n end'


def _table() -> Table:
    t = Table({"ra": [1.0, 2.0], "flux": [3.0, 4.0], "id": [1, 2], "odd name%": [5, 6]})
    t["ra"].unit, t["ra"].description = "deg", "right ascension (ICRS)"
    t["flux"].unit = "nJy"
    t["id"].description = HOSTILE
    t["odd name%"].description = "weird"
    t["t"] = Time(["2020-01-01", "2020-01-02"], scale="tai")
    return t


EXPECTED = {
    "ra": "right ascension (ICRS) [deg]",
    "flux": "[nJy]",
    # NUL and newline become spaces
    "id": 'it\'s "quoted" \\ back; DROP TABLE butler_datasets; -- %s %(x)s     end',
    "col_3": "odd name%: weird",
    "t": "(time scale TAI)",
}


def _catalog_comments(root: str, backend: str, name: str) -> tuple[dict[str, str], str | None]:
    engine = raw_engine(root)
    try:
        with engine.connect() as conn:
            if backend == "postgresql":
                rows = conn.execute(
                    sa.text(
                        "SELECT a.attname, col_description(a.attrelid, a.attnum) "
                        "FROM pg_attribute a WHERE a.attrelid = CAST(:t AS regclass) "
                        "AND a.attnum > 0 AND NOT a.attisdropped"
                    ),
                    {"t": name},
                ).all()
                table = conn.execute(
                    sa.text("SELECT obj_description(CAST(:t AS regclass), 'pg_class')"), {"t": name}
                ).scalar()
            else:
                rows = conn.execute(
                    sa.text(
                        "SELECT COLUMN_NAME, COLUMN_COMMENT FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
                    ),
                    {"t": name},
                ).all()
                table = conn.execute(
                    sa.text(
                        "SELECT TABLE_COMMENT FROM information_schema.TABLES "
                        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
                    ),
                    {"t": name},
                ).scalar()
    finally:
        engine.dispose()
    return {r[0]: r[1] for r in rows if r[1]}, table


def test_units_and_descriptions_are_column_comments(db_root: str, backend: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cat", "astropy.table.Table", "sql-table", dimensions={"visit": int})
    t = _table()
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1)  # the metadata keeps them on every backend
    assert out["ra"].unit == "deg" and out["ra"].description == "right ascension (ICRS)"
    assert out["id"].description == HOSTILE
    name = b.storage.table_name("cat/1")  # type: ignore[attr-defined]
    if backend == "sqlite":
        engine = raw_engine(db_root)
        with engine.connect() as conn:  # SQLite keeps no comments (documented)
            assert sa.inspect(conn).get_columns(name)[1].get("comment") is None
        engine.dispose()
        return
    comments, table_comment = _catalog_comments(db_root, backend, name)
    assert comments == EXPECTED
    assert table_comment == "butler dataset cat {'visit': 1} (cat/1)"
    # the stable view shows them too on PostgreSQL (MariaDB views have no column comments)
    if backend == "postgresql":
        view_comments, _ = _catalog_comments(db_root, backend, "cat__1")
        assert view_comments == EXPECTED
    # an overwrite's new table carries the new comments
    t["ra"].description = "RA"
    b.put(t, "cat", visit=1, overwrite=True)
    comments, _ = _catalog_comments(db_root, backend, b.storage.table_name("cat/1"))  # type: ignore[attr-defined]
    assert comments["ra"] == "RA [deg]"


def test_long_descriptions_are_cut_with_a_mark(db_root: str, backend: str) -> None:
    if backend == "sqlite":
        pytest.skip("SQLite has no column comments")
    b = Butler.create(db_root)
    b.register_dataset_type("cat", "astropy.table.Table", "sql-table", dimensions={"visit": int})
    t = Table({"x": [1.0]})
    t["x"].description = "é" * 2000
    b.put(t, "cat", visit=1)
    comments, _ = _catalog_comments(db_root, backend, b.storage.table_name("cat/1"))  # type: ignore[attr-defined]
    assert comments["x"] == "é" * 1021 + "..."
    assert b.get("cat", visit=1)["x"].description == "é" * 2000  # whole in the metadata
