"""Every statement shape the database storage runs is answered from an index, checked with
the server's own EXPLAIN on SQLite, PostgreSQL and MariaDB; listings by prefix are exact
whatever the collation; a repository made before the prefix index gets it when opened."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from typing import Any

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa

from butler import Butler
from butler_db import DatabaseStorage
from butler_db import _queries as q
from butler_db import _schema as schema

from ._helpers import raw_engine

ROWS = 2000

#: Each statement shape with the parameters it runs with (filled in by `_fill`).
SHAPES: dict[str, Any] = {
    "row": (q.ROW, {"key_hash": "k"}),
    "row and small chunk": (q.ROW_WITH_SMALL_CHUNK, {"key_hash": "k", "inline": 65536}),
    "row and first chunk": (q.ROW_WITH_FIRST_CHUNK, {"key_hash": "k"}),
    "exists": (q.EXISTS, {"key_hash": "k"}),
    "chunks": (q.CHUNKS, {"blob_id": "b", "first": 0, "last": 3}),
    "delete chunks": (q.DELETE_CHUNKS, {"blob_id": "b"}),
    "update row": (q.UPDATE_DATASET.values(size=1), {"row_id": 7}),
    "delete row": (q.DELETE_DATASET, {"row_id": 7}),
}


def _fill(root: str) -> None:
    """ROWS dataset rows (each with one chunk) under a handful of prefixes, then ANALYZE."""
    engine = raw_engine(root)
    rows, chunks = [], []
    for i in range(ROWS):
        key = f"{['calexp', 'raw', 'src'][i % 3]}/{i:06d}/{i % 7}.json"
        blob = secrets.token_hex(16)
        rows.append(
            {
                "key_hash": schema.key_hash(key), "key": key, "dataset_type": key.split("/")[0],
                "data_id": json.dumps({"i": i}), "format": "json", "python_type": "dict",
                "size": 2, "sha256": None, "created": 0.0, "metadata": "{}", "blob_id": blob,
                "chunk_size": 1024, "table_name": None,
            }
        )  # fmt: skip
        chunks.append({"blob_id": blob, "seq": 0, "data": b"{}"})
    with engine.begin() as conn:
        conn.execute(schema.datasets.insert(), rows)
        conn.execute(schema.chunks.insert(), chunks)
    with engine.begin() as conn:
        for table in ("butler_datasets", "butler_chunks"):
            conn.exec_driver_sql(f"ANALYZE {'TABLE ' if _dialect(conn) == 'mysql' else ''}{table}")
    engine.dispose()


def _dialect(conn: sa.Connection) -> str:
    return "mysql" if conn.dialect.name == "mariadb" else conn.dialect.name


def _plan(conn: sa.Connection, statement: Any, params: dict[str, Any]) -> str:
    """The server's plan of ``statement`` run with ``params`` (bound, as butler binds
    them), as text."""
    compiled = statement.compile(dialect=conn.dialect)
    values = compiled.construct_params(params)
    bound: Any = values
    if compiled.positional:
        bound = tuple(values[name] for name in compiled.positiontup or [])
    sql = str(compiled)
    dialect = _dialect(conn)
    if dialect == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", bound).all()
        return "\n".join(str(r[-1]) for r in rows)
    if dialect == "postgresql":
        # Small tables favour a scan anyway: forbid it, so a plan without an index says
        # that no index can answer the statement (the scan is then still chosen).
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        return "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", bound).all())
    result = conn.exec_driver_sql(f"EXPLAIN {sql}", bound)
    columns = list(result.keys())
    return "\n".join(str(dict(zip(columns, r, strict=True))) for r in result.all())


def _uses_an_index(dialect: str, plan: str) -> bool:
    if dialect == "sqlite":
        scans = [line for line in plan.splitlines() if line.startswith("SCAN")]
        return not scans and "TEMP B-TREE" not in plan
    if dialect == "postgresql":  # a bitmap scan then sorts what it found: only those rows
        return "Seq Scan" not in plan
    return "'type': 'ALL'" not in plan and "filesort" not in plan


@pytest.fixture
def filled(db_root: str) -> str:
    Butler.create(db_root).close()
    _fill(db_root)
    return db_root


def test_every_statement_uses_an_index(filled: str, backend: str) -> None:
    engine = raw_engine(filled)
    for shape, (statement, params) in SHAPES.items():
        with engine.connect() as conn, conn.begin():
            plan = _plan(conn, statement, params)
            conn.rollback()
        assert _uses_an_index(backend, plan), f"{shape} on {backend}:\n{plan}"
    engine.dispose()
    storage = DatabaseStorage(filled)
    for prefix in ["raw/000123", "src/0000", "calexp/0012", "raw/", ""]:
        _check_listing(filled, storage, backend, prefix)
    storage.close()


def _check_listing(root: str, storage: DatabaseStorage, backend: str, prefix: str) -> None:
    statement, params = q.list_keys(backend, prefix)
    engine = raw_engine(root)
    with engine.connect() as conn, conn.begin():
        plan = _plan(conn, statement, params)
        conn.rollback()
    engine.dispose()
    if not prefix:  # everything: a full read, whose order the index gives (SQLite, PG)
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    elif prefix == "raw/" and backend == "mysql":
        pass  # a third of the table: MariaDB rightly prefers a scan
    else:
        assert _uses_an_index(backend, plan), f"{prefix!r} on {backend}:\n{plan}"
        if backend != "mysql":
            assert "butler_datasets_key_prefix" in plan, plan
    expected = sorted(
        f"{['calexp', 'raw', 'src'][i % 3]}/{i:06d}/{i % 7}.json" for i in range(ROWS)
    )
    assert list(storage.list(prefix)) == [k for k in expected if k.startswith(prefix)]


def test_listing_is_exact_and_in_code_point_order(db_root: str) -> None:
    """Prefixes with LIKE wildcards, case differences (MariaDB's collations ignore case),
    U+10FFFF (the end of the code-point range) and keys longer than the 256 indexed
    characters list exactly what starts with them, in Python's order."""
    b = Butler.create(db_root)
    s = b.storage
    long = "d/" + "x" * 300
    keys = [
        "a/b", "a/B", "A/b", "a%/x", "a_/x", "ab", "a/\U0010ffff", "a/\U0010ffffz", "a/é",
        "a/z", long + "1", long + "2", long[:-1] + "y",
    ]  # fmt: skip
    for key in keys:
        s.write_bytes(key, key.encode())
    for prefix in ["a/", "a%", "a_", "A/", "a/\U0010ffff", long, long[:258], "d/", "zz"]:
        assert list(s.list(prefix)) == sorted(k for k in keys if k.startswith(prefix)), prefix
    assert list(s.list()) == sorted(keys)
    b.close()


def test_older_repository_gets_the_prefix_index_when_opened(db_root: str, backend: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"v": 1}, "cfg", visit=1)
    b.close()
    engine = raw_engine(db_root)
    drop = {
        "sqlite": "DROP INDEX butler_datasets_key_prefix",
        "postgresql": "DROP INDEX butler_datasets_key_prefix",
        "mysql": "DROP INDEX butler_datasets_key_prefix ON butler_datasets",
    }[backend]
    with engine.begin() as conn:
        conn.exec_driver_sql(drop)
    with engine.connect() as conn:
        assert schema._has_key_prefix_index(conn, backend) is False
    reopened = Butler(db_root)
    assert reopened.get("cfg", visit=1) == {"v": 1}
    assert list(reopened.storage.list("cfg/")) == ["cfg/1.json"]
    reopened.close()
    with engine.connect() as conn:
        assert schema._has_key_prefix_index(conn, backend) is True
        assert schema.ensure_indexes(conn) is True  # idempotent
    engine.dispose()


def test_opener_waits_only_briefly_for_a_writer_to_add_the_index(sqlite_root: str) -> None:
    """An older SQLite repository opened while another process holds the write lock: the
    opener gives up adding the index after 2 s (not the 60 s busy timeout), reads as
    before, and the next opener adds it."""
    b = Butler.create(sqlite_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"v": 1}, "cfg", visit=1)
    b.close()
    path = sqlite_root.removeprefix("sqlite:///")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("DROP INDEX butler_datasets_key_prefix")
    writer.execute("BEGIN IMMEDIATE")  # a long write in another process
    try:
        start = time.monotonic()
        reader = Butler(sqlite_root)
        assert list(reader.storage.list("cfg/")) == ["cfg/1.json"]
        assert reader.get("cfg", visit=1) == {"v": 1}
        waited = time.monotonic() - start
        reader.close()
    finally:
        writer.execute("ROLLBACK")
    assert 1.5 < waited < 10, waited
    engine = raw_engine(sqlite_root)
    with engine.connect() as conn:
        assert schema._has_key_prefix_index(conn, "sqlite") is False
    Butler(sqlite_root).close()  # the writer is gone: this opener adds it
    with engine.connect() as conn:
        assert schema._has_key_prefix_index(conn, "sqlite") is True
    engine.dispose()
    writer.close()
