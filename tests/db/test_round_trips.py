"""Round trips of a put and a get on SQLite, PostgreSQL and MariaDB, counted twice: the
statements SQLAlchemy executes (``before_cursor_execute``) and what the driver really sends
(`tests.db._wire.Recorder`). A small get is one query; a put is one write transaction for
the dataset (plus the index row, in its own transaction, written by butler-core)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa

from butler import Butler, DatasetExistsError, StorageError
from butler_db import _engine
from butler_db._opening import INLINE_BYTES

from ._wire import Recorder

#: Statement kinds of the dataset's write transaction, per backend (the driver's view).
PUT = {
    # SQLite runs BEGIN IMMEDIATE, the two inserts and COMMIT in process.
    "sqlite": ["BEGIN", "INSERT butler_chunks", "INSERT butler_datasets", "COMMIT"],
    # psycopg sends its BEGIN, then each statement, then COMMIT: 4 round trips.
    "postgresql": ["BEGIN", "INSERT butler_chunks", "INSERT butler_datasets", "COMMIT"],
    # PyMySQL: no BEGIN (autocommit off), and no pool ROLLBACK after the COMMIT.
    "mysql": ["INSERT butler_chunks", "INSERT butler_datasets", "COMMIT"],
}

#: The index row's transaction (butler-core's second step of a put).
INDEX = {
    "sqlite": ["BEGIN", "INSERT bidx", "COMMIT"],
    "postgresql": ["BEGIN", "SET", "INSERT bidx", "COMMIT"],
    "mysql": ["INSERT bidx", "COMMIT"],
}


def _kind(statement: str) -> str:
    """``"INSERT butler_chunks"``, ``"SELECT butler_datasets+chunk"``, ``"BEGIN"``..."""
    words = statement.replace('"', " ").replace("`", " ").split()
    verb = words[0].upper() if words else ""
    if verb in ("INSERT", "DELETE") and len(words) > 2:
        table = words[2]
        return f"{verb} {'bidx' if table.startswith('bidx_') else table}"
    if verb == "SELECT" and "butler_datasets" in statement:
        joined = "LEFT OUTER JOIN butler_chunks" in statement
        return "SELECT butler_datasets+chunk" if joined else "SELECT butler_datasets"
    return verb


def _recorded(root: str, tmp: str):  # type: ignore[no-untyped-def]
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"warm": True}, "cfg", visit=0)  # schema checked, index table created
    recorder = Recorder(b.storage.engine, tmp)
    b.get("cfg", visit=0)  # a connection with the recorder's driver hooks
    recorder.reset()
    return b, recorder


@pytest.fixture(autouse=True)
def _no_idle_pings(monkeypatch):  # type: ignore[no-untyped-def]
    """A loaded machine may pause a test for over a second between two calls: the counts
    must not then include the idle ping (`test_idle_connection_is_pinged_before_use`)."""
    monkeypatch.setattr(_engine, "PING_AFTER_IDLE", 3600.0)


@pytest.fixture
def repo(db_root: str, tmp_path):  # type: ignore[no-untyped-def]
    b, recorder = _recorded(db_root, str(tmp_path))
    yield b, recorder
    b.close()


@pytest.fixture(params=["postgresql", "mysql"])
def server_repo(request, tmp_path):  # type: ignore[no-untyped-def]
    """``(butler, recorder, backend)`` on each database server."""
    b, recorder = _recorded(request.getfixturevalue(f"{request.param}_root"), str(tmp_path))
    yield b, recorder, request.param
    b.close()


@pytest.fixture
def mysql_repo(mysql_root: str, tmp_path):  # type: ignore[no-untyped-def]
    b, recorder = _recorded(mysql_root, str(tmp_path))
    yield b, recorder
    b.close()


def test_small_get_is_one_query(repo, backend: str) -> None:  # type: ignore[no-untyped-def]
    b, rec = repo
    b.put({"gain": 1.5}, "cfg", visit=1)
    rec.reset()
    assert b.get("cfg", visit=1) == {"gain": 1.5}
    assert [_kind(s) for s in rec.statements] == ["SELECT butler_datasets+chunk"]
    assert rec.checkouts == 1 and rec.commits == 0
    # the driver adds nothing on SQLite and PostgreSQL; MariaDB ends the read with ROLLBACK
    expected = ["SELECT butler_datasets+chunk"] + (["ROLLBACK"] if backend == "mysql" else [])
    assert [_kind(s) for s in rec.wire] == expected, rec.wire


def test_put_is_one_transaction(repo, backend: str) -> None:  # type: ignore[no-untyped-def]
    b, rec = repo
    b.put({"gain": 2.5}, "cfg", visit=2)
    assert [_kind(s) for s in rec.wire] == PUT[backend] + INDEX[backend], rec.wire
    # SQLAlchemy's view: the same statements without what the drivers add
    assert [_kind(s) for s in rec.statements if not s.startswith("BEGIN")] == [
        "INSERT butler_chunks",
        "INSERT butler_datasets",
        *(["SET"] if backend == "postgresql" else []),
        "INSERT bidx",
    ]
    assert rec.checkouts == 2 and rec.commits == 2  # the dataset, then its index row


def test_existing_dataset_refused_inside_the_write(repo, backend: str) -> None:  # type: ignore[no-untyped-def]
    b, rec = repo
    b.put({"v": 1}, "cfg", visit=3)
    rec.reset()
    with pytest.raises(DatasetExistsError, match=r"dataset 'cfg' .*visit.*3.* already exists"):
        b.put({"v": 2}, "cfg", visit=3)
    kinds = [_kind(s) for s in rec.statements if not s.startswith("BEGIN")]
    assert kinds == ["INSERT butler_chunks", "INSERT butler_datasets"]  # no look-up first
    assert rec.commits == 0
    assert b.get("cfg", visit=3) == {"v": 1}


def test_overwrite_statements(repo, backend: str) -> None:  # type: ignore[no-untyped-def]
    b, rec = repo
    b.put({"v": 1}, "cfg", visit=4)
    rec.reset()
    b.put({"v": 2}, "cfg", visit=4, overwrite=True)
    kinds = [_kind(s) for s in rec.statements if not s.startswith("BEGIN")]
    swap = ["SELECT butler_datasets", "UPDATE", "DELETE butler_chunks"]
    if backend != "sqlite":  # a savepoint retries a swap lost to a concurrent creator
        swap = ["SAVEPOINT", *swap, "RELEASE"]
    index = ["SET"] if backend == "postgresql" else []
    assert kinds == ["INSERT butler_chunks", *swap, *index, "INSERT bidx"]
    assert b.get("cfg", visit=4) == {"v": 2}


def test_larger_get_reads_its_bytes_in_open(repo, backend: str) -> None:  # type: ignore[no-untyped-def]
    """Above INLINE_BYTES the metadata query does not fetch the bytes (callers wanting only
    metadata must not pay for them): the get is two queries, each one round trip."""
    b, rec = repo
    payload = {"pad": "x" * 2 * INLINE_BYTES}
    b.put(payload, "cfg", visit=8)
    rec.reset()
    assert b.get("cfg", visit=8) == payload
    kinds = [_kind(s) for s in rec.statements]
    assert kinds == ["SELECT butler_datasets+chunk", "SELECT butler_datasets+chunk"]
    assert rec.checkouts == 2
    rec.reset()
    meta = b.storage.metadata("cfg/8.json")
    assert meta["size"] == len(b.storage.read_bytes("cfg/8.json")) > INLINE_BYTES
    assert [_kind(s) for s in rec.statements] == ["SELECT butler_datasets+chunk"] * 2


def test_open_reuses_only_the_last_metadata_of_its_thread(repo) -> None:  # type: ignore[no-untyped-def]
    b, rec = repo
    s = b.storage
    b.put({"v": 1}, "cfg", visit=5)
    b.put({"v": 6}, "cfg", visit=6)
    s.metadata("cfg/5.json")
    rec.reset()
    with s.open("cfg/5.json") as f:
        assert f.read() == b'{"v": 1}'
    assert rec.statements == []  # the bytes came with the metadata
    # another key, or any other call in between: open asks the database
    s.metadata("cfg/5.json")
    rec.reset()
    assert s.read_bytes("cfg/6.json") == b'{"v": 6}'
    assert len(rec.statements) == 1
    s.metadata("cfg/5.json")
    assert s.exists("cfg/6.json")
    rec.reset()
    assert s.read_bytes("cfg/5.json") == b'{"v": 1}'
    assert len(rec.statements) == 1
    # a write through the storage forgets them: open returns the new bytes
    s.metadata("cfg/5.json")
    b.put({"v": 2}, "cfg", visit=5, overwrite=True)
    assert s.read_bytes("cfg/5.json") == b'{"v": 2}'
    # another thread's metadata is not this thread's
    seen: list[dict[str, object]] = []
    worker = threading.Thread(target=lambda: seen.append(s.metadata("cfg/6.json")))
    worker.start()
    worker.join()
    rec.reset()
    assert s.read_bytes("cfg/6.json") == b'{"v": 6}' and seen[0]["size"] == 8
    assert len(rec.statements) == 1


def test_mariadb_connection_left_in_a_transaction_is_rolled_back(mysql_repo) -> None:  # type: ignore[no-untyped-def]
    """MariaDB's pool skips its ROLLBACK only after a transaction SQLAlchemy ended: a raw
    DB-API user's open transaction is still rolled back when the connection goes back.
    (The other drivers' rollbacks cost nothing on an idle connection.)"""
    b, rec = mysql_repo
    b.put({"v": 9}, "cfg", visit=9)
    raw = b.storage.engine.raw_connection()
    cursor = raw.cursor()
    cursor.execute("UPDATE butler_datasets SET size = 999 WHERE `key` = 'cfg/9.json'")
    raw.close()  # back to the pool with the UPDATE uncommitted
    assert rec.wire[-1] == "ROLLBACK"
    assert b.storage.size("cfg/9.json") == len(b'{"v": 9}')


def test_idle_connection_is_pinged_before_use(server_repo, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A connection in steady use is not pinged; one idle longer than PING_AFTER_IDLE is,
    and a dead one is replaced before the get uses it."""
    b, rec, backend = server_repo
    b.put({"v": 7}, "cfg", visit=7)
    monkeypatch.setattr(_engine, "PING_AFTER_IDLE", 0.05)
    time.sleep(0.1)
    rec.reset()
    assert b.get("cfg", visit=7) == {"v": 7}
    ping = {"postgresql": ";", "mysql": "PING"}[backend]  # psycopg pings with an empty query
    assert rec.wire[0].strip() == ping, rec.wire
    rec.reset()
    assert b.get("cfg", visit=7) == {"v": 7}  # used again at once: no ping
    assert ping not in [w.strip() for w in rec.wire]
    # kill the pooled connection on the server, let it idle: the get still works
    with b.storage.engine.connect() as conn:
        pid = conn.exec_driver_sql(
            "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
        ).scalar()
    admin = sa.create_engine(_server_url(backend), poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        else:
            conn.exec_driver_sql(f"KILL {int(pid)}")
    admin.dispose()
    time.sleep(0.2)
    assert b.get("cfg", visit=7) == {"v": 7}


def _server_url(backend: str) -> str:
    import os

    name = "BUTLER_TEST_POSTGRES_URL" if backend == "postgresql" else "BUTLER_TEST_MYSQL_URL"
    return os.environ[name]


def test_sqlite_driver_errors_are_storage_errors(sqlite_root: str) -> None:
    """The SQLite reads run on the DB-API cursor (`butler_db._queries.first_row`); a driver
    error still becomes a StorageError naming the action and the dataset."""
    b = Butler.create(sqlite_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"v": 1}, "cfg", visit=1)
    engine = sa.create_engine(sqlite_root)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE butler_chunks RENAME TO moved_chunks")
    engine.dispose()
    expected = r"cannot read the metadata of '.*#cfg/1\.json': no such table: butler_chunks"
    with pytest.raises(StorageError, match=expected):
        b.get("cfg", visit=1)
    assert b.storage.exists("cfg/1.json")  # EXISTS reads butler_datasets only
    b.close()
