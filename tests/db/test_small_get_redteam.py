"""Red-team tests of the database small-get path (`DatabaseStorage.read_small`, the row it
hands to `metadata`, and SQLite's pooled one-statement reads): each answers as the general
path, or as before the shortcut, or keeps a guarantee stated in the docs."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa

from butler import Butler, DatasetNotFoundError, StorageError
from butler_db._storage import DatabaseStorage

from ._helpers import raw_engine

BIG = {"pad": "x" * (1 << 17)}  # more than INLINE_BYTES: read_small hands its row over


def _repo(root: str, **options: Any) -> Butler:
    b = Butler.create(root, **options)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    return b


def _on_thread(fn: Any) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert not errors, errors


def _execute(root: str, sql: str) -> None:
    engine = raw_engine(root)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


# -- the handed-over row ------------------------------------------------------------------


def test_a_remove_on_another_thread_after_read_small_is_seen_by_metadata(db_root: str) -> None:
    """The row read_small could not use is per thread: a remove committed by another
    thread of the same storage before `metadata` is called must not be answered with it."""
    b = _repo(db_root)
    b.put(BIG, "cfg", visit=1)
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    key = b.location("cfg", visit=1).key
    assert storage.read_small(key, 1 << 16) is None  # the row is handed over
    _on_thread(lambda: storage.remove(key))
    with pytest.raises(DatasetNotFoundError):
        storage.metadata(key)
    b.close()


def test_an_overwrite_on_another_thread_after_read_small_is_seen_by_metadata(
    db_root: str,
) -> None:
    b = _repo(db_root)
    b.put(BIG, "cfg", visit=1)
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    key = b.location("cfg", visit=1).key
    assert storage.read_small(key, 1 << 16) is None
    new = {"pad": "y" * (1 << 18)}
    _on_thread(lambda: b.put(new, "cfg", visit=1, overwrite=True))
    assert storage.metadata(key)["size"] == len(json.dumps(new))
    assert b.get("cfg", visit=1) == new
    b.close()


def test_metadata_after_a_read_small_with_a_lower_limit_still_fetches_the_bytes(
    db_root: str,
) -> None:
    """`open` right after `metadata` returns the bytes of the row `metadata` returned, for
    a blob of one chunk up to INLINE_BYTES (the class docs): a read_small that asked for
    fewer bytes must not hand `metadata` a row without them (the bytes would then come
    from a later query, after a concurrent overwrite: another snapshot)."""
    b = _repo(db_root)
    old = {"pad": "o" * 100}
    b.put(old, "cfg", visit=1)
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    key = b.location("cfg", visit=1).key
    assert storage.read_small(key, 10) is None  # larger than asked for
    meta = storage.metadata(key)
    other = _repo(db_root)  # another process, in effect
    other.put({"pad": "n" * 300}, "cfg", visit=1, overwrite=True)
    other.close()
    with storage.open(key) as f:
        data = f.read()
    assert len(data) == meta["size"]
    assert json.loads(data) == old
    b.close()


# -- tampered rows and chunks (SQLite keeps any value in any column) -----------------------


def test_a_chunk_that_is_text_is_a_storage_error(sqlite_root: str) -> None:
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    b.get("cfg", visit=1)
    key = b.location("cfg", visit=1).key
    _execute(sqlite_root, "UPDATE butler_chunks SET data = CAST(data AS TEXT)")
    assert b.storage.read_small(key, 1 << 16) is None
    with pytest.raises(StorageError, match="corrupt"):
        b.get("cfg", visit=1)
    b.close()


def test_a_chunk_that_is_a_number_is_not_read_as_zero_bytes(sqlite_root: str) -> None:
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    key = b.location("cfg", visit=1).key
    size = b.storage.metadata(key)["size"]
    _execute(sqlite_root, f"UPDATE butler_chunks SET data = {size}")
    assert b.storage.read_small(key, 1 << 16) is None
    with pytest.raises(StorageError, match="corrupt"):
        b.storage.read_bytes(key)
    b.close()


def test_a_size_that_is_not_a_number_is_a_storage_error(sqlite_root: str) -> None:
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    b.get("cfg", visit=1)
    key = b.location("cfg", visit=1).key
    _execute(sqlite_root, "UPDATE butler_datasets SET size = 'abc'")
    assert b.storage.read_small(key, 1 << 16) is None
    with pytest.raises(StorageError, match="corrupt"):
        b.storage.metadata(key)
    with pytest.raises(StorageError, match="corrupt"):
        b.get("cfg", visit=1)
    b.close()


# -- SQLite's pooled reads ------------------------------------------------------------------


def test_echo_still_logs_every_sqlite_read(
    sqlite_root: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``engine_options={"echo": True}`` (or the ``sqlalchemy.engine`` logger at INFO)
    shows the statements a get runs, as it did before the pooled path."""
    _repo(sqlite_root).put({"gain": 1.5}, "cfg", visit=1)
    b = Butler(sqlite_root, engine_options={"echo": True})
    assert b.get("cfg", visit=1) == {"gain": 1.5}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
        assert b.get("cfg", visit=1) == {"gain": 1.5}
        assert b.exists("cfg", visit=1)
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy.engine")]
    assert sum("butler_datasets" in m for m in logged) == 2, logged
    b.close()


def test_a_pooled_read_leaves_no_read_snapshot_on_its_connection(sqlite_root: str) -> None:
    """One pooled connection: after a pooled read, a write by another connection is seen by
    the next pooled read and a checkpoint is not held back (no stale read transaction)."""
    b = _repo(sqlite_root)
    b.put({"v": 1}, "cfg", visit=1)
    b.close()
    b = Butler(sqlite_root, engine_options={"pool_size": 1, "max_overflow": 0})
    key = b.location("cfg", visit=1).key
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    assert b.get("cfg", visit=1) == {"v": 1}
    assert storage.exists(key)
    other = _repo(sqlite_root)
    other.put({"v": 2}, "cfg", visit=1, overwrite=True)
    other.close()
    engine = raw_engine(sqlite_root)
    with engine.connect() as conn:
        busy = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
    engine.dispose()
    assert busy is not None and busy[0] == 0  # no reader blocks it
    assert b.get("cfg", visit=1) == {"v": 2}
    assert storage.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    with storage.engine.begin() as conn:  # a write on the same connection: not in a read
        conn.exec_driver_sql("UPDATE butler_datasets SET created = created")
    b.close()


def test_pool_exhaustion_is_a_storage_error(
    sqlite_root: str,
) -> None:
    value = {"v": "x" * 40}
    b = _repo(sqlite_root, chunk_size=8)
    b.put(value, "cfg", visit=1)
    b.close()
    b = Butler(sqlite_root, engine_options={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2})
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    key = b.location("cfg", visit=1).key
    reader = storage.open(key)  # several chunks: holds the only connection
    try:
        with pytest.raises(StorageError):  # reported at once, not waited for again
            storage.read_small(key, 1 << 16)
        with pytest.raises(StorageError):
            storage.metadata(key)
    finally:
        reader.close()
    assert storage.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert b.get("cfg", visit=1) == value
    b.close()


def test_a_listener_removed_again_brings_back_the_pooled_path(sqlite_root: str) -> None:
    b = _repo(sqlite_root)
    b.put({"v": 1}, "cfg", visit=1)
    engine = b.storage.engine  # type: ignore[attr-defined]
    heard: list[str] = []

    def listen(*args: Any) -> None:
        heard.append(args[2])

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", listen)  # class-wide
    try:
        assert b.get("cfg", visit=1) == {"v": 1}
        assert any("butler_datasets" in s for s in heard)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", listen)
    heard.clear()
    assert b.get("cfg", visit=1) == {"v": 1}
    assert heard == []
    assert engine.pool.checkedout() == 0
    b.close()


def test_metadata_json_nested_too_deep_is_no_crash(sqlite_root: str) -> None:
    """A tampered ``metadata`` column nested deeper than the interpreter's recursion limit
    answers as any invalid JSON there ({} plus the row's columns), on both paths."""
    b = _repo(sqlite_root)
    b.put({"gain": 1.5}, "cfg", visit=1)
    key = b.location("cfg", visit=1).key
    _execute(sqlite_root, "UPDATE butler_datasets SET metadata = '" + "[" * 100_000 + "'")
    got = b.storage.read_small(key, 1 << 16)
    assert got is not None and got[0] == b.storage.metadata(key) == {"size": got[0]["size"]}
    b.close()


def test_a_later_chunk_that_is_text_is_a_storage_error(sqlite_root: str) -> None:
    b = _repo(sqlite_root, chunk_size=8)
    b.put({"gain": 1.5}, "cfg", visit=1)  # two chunks
    key = b.location("cfg", visit=1).key
    _execute(sqlite_root, "UPDATE butler_chunks SET data = CAST(data AS TEXT) WHERE seq = 1")
    with pytest.raises(StorageError, match="corrupt"):
        b.storage.read_bytes(key)
    b.close()


def test_engine_connect_listeners_still_hear_every_sqlite_read(sqlite_root: str) -> None:
    """Before the pooled path, `exists` and `metadata` made a Connection, so an
    ``engine_connect`` listener (per-use setup, auditing) heard each; it still does."""
    b = _repo(sqlite_root)
    b.put({"v": 1}, "cfg", visit=1)
    b.get("cfg", visit=1)
    heard: list[Any] = []
    sa.event.listen(b.storage.engine, "engine_connect", heard.append)  # type: ignore[attr-defined]
    assert b.exists("cfg", visit=1)
    assert len(heard) == 1
    assert b.storage.metadata(b.location("cfg", visit=1).key)["size"] > 0
    assert len(heard) == 2
    b.close()


def test_a_driver_error_making_the_cursor_is_a_storage_error(sqlite_root: str) -> None:
    """``check_same_thread=True`` (a user's connect_args): the pooled connection made on
    the main thread refuses another thread's cursor; that is a StorageError, not a raw
    ``sqlite3.ProgrammingError``, and the connection goes back to the pool."""
    _repo(sqlite_root).put({"v": 1}, "cfg", visit=1)
    b = Butler(sqlite_root, engine_options={"connect_args": {"check_same_thread": True}})
    assert b.get("cfg", visit=1) == {"v": 1}  # the pool now holds a main-thread connection
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    key = b.location("cfg", visit=1).key
    raised: list[BaseException] = []

    def read() -> None:
        try:
            storage.exists(key)
        except BaseException as e:
            raised.append(e)

    _on_thread(read)  # (the pool logs its failed reset of that connection)
    assert raised and isinstance(raised[0], StorageError), raised
    assert storage.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    b.close()


def test_a_locked_database_while_connecting_is_a_storage_error(
    sqlite_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pooled read that needs a new connection (after `close`, ``pool_recycle``, more
    threads than idle connections) while another process holds the database locked: the
    connection's setup fails with the driver's "database is locked"; a `StorageError`, as
    on a Connection, not a raw ``sqlite3.OperationalError`` out of get and exists."""
    import sqlite3

    from butler_db import _engine

    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT", 0.2)
    b = _repo(sqlite_root)
    b.put({"v": 1}, "cfg", visit=1)
    assert b.get("cfg", visit=1) == {"v": 1}
    storage: DatabaseStorage = b.storage  # type: ignore[assignment]
    key = b.location("cfg", visit=1).key
    storage.engine.dispose()  # the next read connects anew
    locker = sqlite3.connect(sa.make_url(sqlite_root).database or "", isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("UPDATE butler_datasets SET created = created")
        with pytest.raises(StorageError, match="locked"):
            storage.exists(key)
        # A get waits for the lock once (the busy timeout, 60 s by default), not once in
        # read_small and again on the general path: the database error is reported there.
        reads: list[str] = []
        first_row = storage._first_row
        monkeypatch.setattr(storage, "_first_row", lambda *a: reads.append(a[0]) or first_row(*a))
        with pytest.raises(StorageError, match="locked"):
            b.get("cfg", visit=1)
        assert len(reads) == 1, reads
        locker.execute("ROLLBACK")
    finally:
        locker.close()
    assert b.get("cfg", visit=1) == {"v": 1}
    assert storage.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    b.close()


def test_a_get_right_after_the_server_dropped_the_connection_still_answers(
    postgresql_root: str,
) -> None:
    """A pooled connection the server dropped less than a second after its last use (no
    ping yet) fails read_small's query and is invalidated: the general path then reads on
    a new connection and answers, as before read_small reported database errors."""
    name = "butler_rt_db_" + postgresql_root[-12:]
    _repo(postgresql_root).put({"v": 1}, "cfg", visit=1)
    b = Butler(postgresql_root, engine_options={"connect_args": {"application_name": name}})
    assert b.get("cfg", visit=1) == {"v": 1}
    admin = raw_engine(postgresql_root)
    try:
        with admin.connect() as conn:
            killed = conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            ).all()
        assert killed
    finally:
        admin.dispose()
    assert b.get("cfg", visit=1) == {"v": 1}
    b.close()


def test_a_get_right_after_mariadb_dropped_the_connection_still_answers(
    mysql_root: str,
) -> None:
    _repo(mysql_root).put({"v": 1}, "cfg", visit=1)
    b = Butler(mysql_root)
    assert b.get("cfg", visit=1) == {"v": 1}
    engine = b.storage.engine  # type: ignore[attr-defined]
    with engine.connect() as conn:  # the pool's only connection
        ident = conn.exec_driver_sql("SELECT CONNECTION_ID()").scalar()
    admin = raw_engine(mysql_root)
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"KILL {int(ident)}")
    finally:
        admin.dispose()
    assert b.get("cfg", visit=1) == {"v": 1}
    b.close()
