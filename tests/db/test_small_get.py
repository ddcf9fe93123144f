"""The database storage's small-get shortcut: `DatabaseStorage.read_small` hands over a
one-chunk blob with its metadata in the query `metadata` runs, and anything else goes to
the general path; on SQLite the query runs on a pooled DB-API connection with no
SQLAlchemy connection around it, unless something listens for cursor events."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa
from sqlalchemy import event

from butler import Butler, StorageError
from butler._small_get import _GENERAL
from butler_db import _queries as q
from butler_db._storage import DatabaseStorage


def _repo(root: str) -> Butler:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    return b


def test_read_small_is_the_blob_and_its_metadata(db_root: str) -> None:
    b = _repo(db_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    key = b.location("cfg", visit=1).key
    got = b.storage.read_small(key, 1 << 16)
    assert got is not None
    meta, data = got
    assert meta == b.storage.metadata(key)
    assert data == b.storage.read_bytes(key) == json.dumps({"gain": 1.5}).encode()
    assert b.storage.read_small(key, len(data) - 1) is None  # larger than asked for
    assert b.storage.read_small("cfg/2.json", 1 << 16) is None  # absent
    b.get("cfg", visit=1)
    assert b._get_small("cfg", {"visit": 1}) == {"gain": 1.5}  # the shortcut answers
    b.close()


def test_read_small_leaves_tables_chunked_blobs_and_bad_rows_to_the_general_path(
    db_root: str,
) -> None:
    b = Butler.create(db_root, chunk_size=4)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("cat", "numpy.ndarray", "sql-table", dimensions={"visit": int})
    b.put({"gain": 1.5}, "cfg", visit=1)  # several chunks of 4 bytes
    b.put(np.zeros(2, dtype=[("a", "i4")]), "cat", visit=1)
    storage: Any = b.storage
    assert storage.read_small(b.location("cfg", visit=1).key, 1 << 16) is None
    assert storage.read_small(b.location("cat", visit=1).key, 1 << 16) is None
    assert b.get("cfg", visit=1) == {"gain": 1.5}
    assert b._get_small("cfg", {"visit": 1}) is _GENERAL
    b.close()


def test_a_row_that_lies_about_its_size_gets_the_general_answer(sqlite_root: str) -> None:
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    b.get("cfg", visit=1)
    engine = sa.create_engine(sqlite_root)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE butler_datasets SET size = size + 5")
    engine.dispose()
    assert b.storage.read_small(b.location("cfg", visit=1).key, 1 << 16) is None
    with pytest.raises(StorageError, match="do not match its row"):
        b.get("cfg", visit=1)
    b.close()


def _wire(engine: sa.Engine) -> list[str]:
    """Statements SQLite runs on connections made from now on (no cursor listener)."""
    seen: list[str] = []
    engine.dispose()
    event.listen(
        engine,
        "connect",
        lambda dbapi, _record: dbapi.set_trace_callback(lambda s: seen.append(s.split()[0])),
    )
    return seen


def test_sqlite_get_is_one_statement_without_a_connection_object(
    sqlite_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    storage: Any = b.storage
    seen = _wire(storage.engine)

    def no_connection(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a sqlalchemy Connection was made")

    monkeypatch.setattr(storage, "_one_read", no_connection)
    assert b.get("cfg", visit=1) == {"gain": 1.5}
    seen.clear()
    assert b.get("cfg", visit=1) == {"gain": 1.5}
    assert b.exists("cfg", visit=1)
    assert seen == ["SELECT", "SELECT"], seen  # no BEGIN, no ROLLBACK
    b.close()


def test_cursor_listeners_still_see_every_statement(sqlite_root: str) -> None:
    """A listener added after the storage opened: the reads go through a connection,
    which fires it, as SQLAlchemy would."""
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    engine = b.storage.engine  # type: ignore[attr-defined]
    assert not q.has_cursor_listeners(engine)
    heard: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: heard.append(a[2].split()[0]))
    assert q.has_cursor_listeners(engine)
    assert b.get("cfg", visit=1) == {"gain": 1.5}
    assert b.exists("cfg", visit=1)
    assert heard == ["SELECT", "SELECT"]
    b.close()


def test_pooled_read_errors_are_storage_errors_and_return_the_connection(
    sqlite_root: str,
) -> None:
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    engine = sa.create_engine(sqlite_root)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE butler_chunks RENAME TO moved_chunks")
    engine.dispose()
    for _ in range(30):  # more than the pool holds: each failure returned its connection
        with pytest.raises(StorageError, match="no such table: butler_chunks"):
            storage.metadata("cfg/1.json")
    assert storage.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    b.close()


def test_a_row_read_small_could_not_use_serves_only_the_next_metadata_of_its_key(
    sqlite_root: str,
) -> None:
    """A large dataset: `read_small`'s row goes to the `metadata` call that follows (one
    query for both), never to another key's, nor after a write, nor twice."""
    b = _repo(sqlite_root)
    big = {"pad": "x" * (1 << 17)}
    b.put(big, "cfg", visit=1)
    b.put({"small": 1}, "cfg", visit=2)
    storage: Any = b.storage
    key, other = b.location("cfg", visit=1).key, b.location("cfg", visit=2).key
    seen = _wire(storage.engine)
    assert storage.read_small(key, 1 << 16) is None
    assert storage.metadata(key)["size"] == len(json.dumps(big))
    assert seen == ["SELECT"]  # the metadata came from read_small's row
    assert storage.read_small(key, 1 << 16) is None
    assert storage.metadata(other)["size"] == len(json.dumps({"small": 1}))
    assert storage.metadata(key)["size"] == len(json.dumps(big))
    assert seen == ["SELECT"] * 4  # other key, then the slot already gone: queried
    assert storage.read_small(key, 1 << 16) is None
    b.put({"pad": "y"}, "cfg", visit=1, overwrite=True)
    assert storage.metadata(key)["size"] == len(json.dumps({"pad": "y"}))
    b.close()
