"""Untrusted database repositories: rows, metadata and URLs are input, not instructions.

Issue 12, holes 18, 14, the database half of 8 and the database parts of 16/17, on SQLite,
PostgreSQL and MariaDB (server backends skip without ``BUTLER_TEST_POSTGRES_URL`` /
``BUTLER_TEST_MYSQL_URL``):

* ``where`` values are bound parameters: a SQLAlchemy ``text()`` (or anything that is not a
  plain scalar) is a `FormatError` naming the column, never SQL.
* A tampered ``table_name`` in ``butler_datasets`` never makes ``remove()`` (or a read or an
  append) touch a table butler-db did not create for that very dataset.
* Any column name (``a%b``, ``%(x)s``, quotes, spaces, unicode, 70 characters, names equal
  ignoring case) round-trips, appends and upserts on every backend.
* A password in the URL's query string (``?password=``, ``?sslpassword=``, ``?token=``) is
  never shown: ``repr``, ``uri()``, errors, ``butler info``, logs.
* Four processes registering eight dataset types each, at once: all 32 are kept.
* Storage options are checked at construction (``chunksize``, ``chunk_size="abc"``, bad
  ``engine_options``); ``list()`` never reports butler's reserved keys; hostile rows
  (chunk size, size, column dtypes) are refused before anything is allocated.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa
from click.testing import CliRunner

from butler import Butler, ButlerError, FormatError, StorageError
from butler._cli import main
from butler_db import DatabaseStorage

from .._databases import fresh_mysql_database, fresh_postgres_schema

astropy_table = pytest.importorskip("astropy.table")
Table = astropy_table.Table

BACKENDS = ["sqlite", "postgresql", "mysql"]

#: The password of the users created for the secret tests: it must never be shown.
SECRET = "qs-secret-pw-5513"


@pytest.fixture(params=BACKENDS)
def db_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh repository URL on each backend (a schema / database dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/repo/butler.db"
    elif request.param == "postgresql":
        with fresh_postgres_schema(request.getfixturevalue("postgres_url"), "butler_sec") as (
            url,
            _,
        ):
            yield url
    else:
        with fresh_mysql_database(request.getfixturevalue("mysql_url"), "butler_sec") as (url, _):
            yield url


@contextlib.contextmanager
def _engine(root: str) -> Iterator[sa.Engine]:
    """A plain engine on a repository's database, behind butler's back."""
    from butler_db._engine import normalise_url

    engine = sa.create_engine(normalise_url(root), poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


_DATASETS = sa.table("butler_datasets", sa.column("key"), sa.column("table_name"))


def _tamper_table_name(root: str, key: str, table_name: str) -> None:
    with _engine(root) as engine, engine.begin() as conn:
        done = conn.execute(
            _DATASETS.update().where(_DATASETS.c.key == key).values(table_name=table_name)
        ).rowcount
    assert done == 1


def _tables(root: str) -> set[str]:
    with _engine(root) as engine, engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


def _catalog(root: str) -> Butler:
    b = Butler.create(root)
    b.register_dataset_type("cat", "astropy.table.Table", "sql-table", dimensions={"visit": int})
    return b


# -- hole 18 (a): where values ---------------------------------------------------------------


class _Sneaky:
    """Not a SQLAlchemy object, but coerced into SQL by SQLAlchemy all the same."""

    def __clause_element__(self) -> Any:
        return sa.text("1 = 1")


def test_where_values_are_never_sql(db_root: str) -> None:
    b = _catalog(db_root)
    b.put(Table({"id": np.arange(4), "band": ["g", "r", "g", "r"]}), "cat", visit=1)
    hostile: list[tuple[str, Any]] = [
        ("band", sa.text("'x' OR 1 = 1")),
        ("band", sa.literal_column("band")),
        ("band", _Sneaky()),
        ("id", [0, sa.text("1) OR (1 = 1")]),
        ("id", (sa.text("0 OR 1 = 1"), None)),
        ("id", (None, _Sneaky())),
        ("band", {"nested": "mapping"}),
        ("id", np.array([sa.text("1 = 1")], dtype=object)),
    ]
    for column, value in hostile:
        with pytest.raises(FormatError) as info:
            b.get("cat", visit=1, parameters={"where": {column: value}})
        message = str(info.value)
        assert f"column {column!r}" in message and "plain value" in message, message
        assert "bound parameters" in message
    # Plain scalars (numpy ones too), lists and ranges still select as documented.
    got = b.get("cat", visit=1, parameters={"where": {"band": np.str_("g"), "id": [0, 2, 3]}})
    assert got["id"].tolist() == [0, 2]
    got = b.get("cat", visit=1, parameters={"where": {"id": (np.int64(1), None)}})
    assert got["id"].tolist() == [1, 2, 3]
    b.close()


# -- hole 18 (b): tampered table names ---------------------------------------------------------


def test_tampered_table_name_never_drops_another_table(db_root: str) -> None:
    b = _catalog(db_root)
    b.put(Table({"a": [1, 2]}), "cat", visit=1)
    b.put(Table({"a": [3]}), "cat", visit=2)
    own = b.storage.table_name("cat/1")  # type: ignore[attr-defined]
    other = b.storage.table_name("cat/2")  # type: ignore[attr-defined]
    victim = sa.Table("victim", sa.MetaData(), sa.Column("x", sa.Integer))
    with _engine(db_root) as engine, engine.begin() as conn:
        victim.create(conn)
        conn.execute(victim.insert(), [{"x": 42}])

    # A table butler does not own at all, and a table butler owns for another dataset.
    for target in ("victim", other, "butler_chunks"):
        _tamper_table_name(db_root, "cat/1", target)
        for action in (
            lambda: b.remove("cat", visit=1),
            lambda: b.get("cat", visit=1),
            lambda: b.put(Table({"a": [9]}), "cat", visit=1, parameters={"mode": "append"}),
            lambda: b.put(Table({"a": [9]}), "cat", visit=1, overwrite=True),
        ):
            with pytest.raises(StorageError) as info:
                action()
            message = str(info.value)
            assert f"names the table {target!r}" in message, message
            assert "did not create for this dataset" in message
        with pytest.raises(StorageError, match="did not create"):
            b.storage.table_name("cat/1")  # type: ignore[attr-defined]
        assert {"victim", own, other, "butler_chunks"} <= _tables(db_root)

    with _engine(db_root) as engine, engine.connect() as conn:
        assert conn.execute(sa.select(victim.c.x)).scalars().all() == [42]
        # The last line of defence refuses to drop anything not named like butler's tables.
        from butler_db._schema import drop_table_now

        with pytest.raises(StorageError, match="refusing to drop table 'victim'"):
            drop_table_now(conn, "victim")
    assert b.get("cat", visit=2)["a"].tolist() == [3]

    # Restored, the row works again and remove drops its own table only.
    _tamper_table_name(db_root, "cat/1", own)
    b.remove("cat", visit=1)
    assert own not in _tables(db_root) and {"victim", other} <= _tables(db_root)
    with _engine(db_root) as engine, engine.begin() as conn:
        victim.drop(conn)
    b.close()


# -- hole 18 (c): any column name --------------------------------------------------------------

ODD_NAMES = ["a%b", '"q"', "x y", "%(x)s", "é", "a)b", "it's", "n" * 70, "Sel", "sel"]
ODD_NAMES.append("_butler_row")  # the hidden row-order column's own name


def test_any_column_name_round_trips(db_root: str) -> None:
    b = _catalog(db_root)
    t = Table({name: np.arange(3) + i * 10 for i, name in enumerate(ODD_NAMES)})
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1)
    assert out.colnames == ODD_NAMES
    for name in ODD_NAMES:
        assert out[name].tolist() == t[name].tolist(), name
        sub = b.get("cat", visit=1, parameters={"columns": [name], "where": {name: t[name][1]}})
        assert sub.colnames == [name] and sub[name].tolist() == [t[name][1]], name
    # Appends go through COPY on PostgreSQL, executemany elsewhere; upserts key on an odd name.
    b.put(t, "cat", visit=1, parameters={"mode": "append"})
    assert len(b.get("cat", visit=1)) == 6
    changed = t.copy()
    changed["x y"] = [-1, -2, -3]
    b.put(changed, "cat", visit=1, parameters={"mode": "upsert", "key": ["a%b", "%(x)s"]})
    out = b.get("cat", visit=1)
    assert sorted(out["x y"].tolist()) == [-3, -2, -1]
    assert b.storage.size("cat/1") == 3
    b.put(changed, "cat", visit=2, parameters={"mode": "upsert", "key": "é"})
    assert b.get("cat", visit=2)["é"].tolist() == t["é"].tolist()
    b.close()


# -- hole 14: secrets in the query string --------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _user_with_password(kind: str, base_url: str) -> Iterator[str]:
    """A database (schema) and a user identified by SECRET with rights on it, both dropped
    after; yields the repository URL for that user *without* a password.

    Set up with the drivers directly: SQLAlchemy's log records of this setup would hold it.
    """
    from sqlalchemy.engine import make_url

    user = f"butler_qs_{uuid.uuid4().hex[:10]}"
    if kind == "postgresql":
        import psycopg

        url = make_url(base_url)
        with fresh_postgres_schema(base_url, "butler_sec") as (repo_url, schema):
            admin = psycopg.connect(
                host=url.host,
                port=url.port or 5432,
                user=url.username,
                dbname=url.database,
                autocommit=True,
            )
            try:
                admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{SECRET}'")
                admin.execute(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {user}")
                try:
                    yield make_url(repo_url).set(username=user).render_as_string(False)
                finally:
                    admin.execute(f"DROP OWNED BY {user}")
                    admin.execute(f"DROP ROLE {user}")
            finally:
                admin.close()
    else:
        import pymysql

        url = make_url(base_url)
        with fresh_mysql_database(base_url, "butler_sec") as (repo_url, database):
            admin = pymysql.connect(
                host=url.host,
                port=url.port or 3306,
                user=url.username,
                password=url.password or "",
                autocommit=True,
            )
            hosts = ("%", "localhost", "127.0.0.1")
            try:
                with admin.cursor() as cursor:
                    for h in hosts:
                        cursor.execute(f"CREATE USER '{user}'@'{h}' IDENTIFIED BY '{SECRET}'")
                        cursor.execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'{h}'")
                try:
                    yield make_url(repo_url).set(username=user).render_as_string(False)
                finally:
                    with admin.cursor() as cursor:
                        for h in hosts:
                            cursor.execute(f"DROP USER IF EXISTS '{user}'@'{h}'")
            finally:
                admin.close()


def _with_query(url: str, **query: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).update_query_dict(query).render_as_string(hide_password=False)


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_query_string_password_never_shown(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    base = request.getfixturevalue("postgres_url" if kind == "postgresql" else "mysql_url")
    with _user_with_password(kind, base) as user_url:
        root = _with_query(user_url, password=SECRET)
        caplog.clear()
        for name in ("butler", "butler_db", "sqlalchemy"):
            caplog.set_level(logging.DEBUG, logger=name)
        shown: list[str] = []

        b = Butler.create(root)
        b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
        location = b.put({"a": 1}, "cfg", visit=1)
        storage = b.storage
        assert isinstance(storage, DatabaseStorage)
        shown += [repr(b), repr(storage), storage.uri(), storage.uri("cfg/1.json"), str(location)]
        shown += [repr(storage.url), str(storage.url), repr(storage.engine), repr(location)]
        assert "password=***" in storage.uri(), storage.uri()
        with pytest.raises(ButlerError) as info:
            b.put({"a": 2}, "cfg", visit=1)
        shown.append(str(info.value))
        b.close()

        result = CliRunner().invoke(main, ["info", root])
        assert result.exit_code == 0, result.output
        assert "repository:" in result.output and "password=***" in result.output
        shown.append(result.output)
        result = CliRunner().invoke(main, ["--json", "info", root])
        assert result.exit_code == 0, result.output
        shown.append(result.output)

        # Connection errors, with the secret in every credential-bearing query key.
        closed = sa.engine.make_url(user_url).set(port=_closed_port())
        closed_url = closed.render_as_string(hide_password=False)
        failing = [
            _with_query(closed_url, password=SECRET),
            _with_query(closed_url, sslpassword=SECRET, password=SECRET[::-1]),
            _with_query(user_url, token=SECRET),  # not a driver keyword: refused by it
            _with_query(user_url, db_password=SECRET),
            f"{user_url.split('@')[0]}@127.0.0.1:notaport/x?password={SECRET}",
        ]
        if kind == "mysql":  # a password the server rejects (PostgreSQL here trusts all)
            failing.append(_with_query(user_url, password=SECRET + "x"))
        for bad in failing:
            with pytest.raises(StorageError) as info:
                Butler.create(bad)
            shown += [str(info.value), repr(info.value)]
            result = CliRunner().invoke(main, ["info", bad])
            assert result.exit_code != 0
            shown += [result.output, repr(result.exception)]

    for text in shown:
        assert SECRET not in text and SECRET[::-1] not in text, text
    assert not [r.name for r in caplog.records if SECRET in r.getMessage()]


def test_connect_args_password_is_scrubbed() -> None:
    pytest.importorskip("psycopg", reason="psycopg (butler-db[postgresql]) is not installed")
    secret = "ca-secret-9931"
    storage = DatabaseStorage(
        f"postgresql://bob@127.0.0.1:{_closed_port()}/x",
        engine_options={"connect_args": {"password": secret, "connect_timeout": 2}},
    )
    assert secret in storage._secrets
    error = storage.storage_error("read", "k", RuntimeError(f"driver said {secret}"))
    assert secret not in str(error) and "driver said ***" in str(error)
    storage.close()


def test_safe_url_masks_every_credential() -> None:
    from butler import mask_url
    from butler_db._engine import normalise_url, safe_url

    url = normalise_url(
        "postgresql://bob:pw1@h/db?password=pw2&sslpassword=pw3&token=pw4&passwd=pw5&"
        "pwd=pw6&my_api_key=pw7&sslmode=require&options=-csearch_path%3Dx"
    )
    text = safe_url(url)
    assert not any(f"pw{i}" in text for i in range(1, 8)), text
    assert "bob:***@h" in text and "sslmode=require" in text and "search_path" in text
    assert "password=***" in text and "token=***" in text
    unparsed = mask_url("postgresql://bob:pw1@h:x/db?token=pw4&a=b")
    assert "pw1" not in unparsed and "pw4" not in unparsed and "a=b" in unparsed


# -- hole 8: concurrent policy changes -----------------------------------------------------------


def _define_many(root: str, worker: int, barrier: Any) -> None:
    with Butler(root) as b:
        barrier.wait()
        for i in range(8):
            b.register_dataset_type(f"w{worker}_{i}", dict, "json", dimensions={"v": int})


@pytest.mark.slow
def test_four_processes_defining_types_lose_nothing(db_root: str) -> None:
    Butler.create(db_root).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_define_many, args=(db_root, w, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with Butler(db_root) as b:
        names = set(b.dataset_types)
    expected = {f"w{w}_{i}" for w in range(4) for i in range(8)}
    assert expected <= names, f"lost {len(expected - names)}: {sorted(expected - names)}"


def test_update_policy_is_one_locked_transaction(db_root: str) -> None:
    """The change sees what is stored, a None change writes nothing, errors roll back."""
    b = Butler.create(db_root)
    storage = b.storage
    seen: list[Any] = []

    def keep(current: dict[str, Any] | None) -> None:
        seen.append(current)
        return None

    assert storage.update_policy(keep) == seen[0] and seen[0]["butler"]["storage"] == "database"

    def boom(current: dict[str, Any] | None) -> dict[str, Any]:
        raise FormatError("refused")

    with pytest.raises(FormatError, match="refused"):
        storage.update_policy(boom)
    assert storage.read_policy() == seen[0]
    b.close()


# -- holes 16/17: storage options ----------------------------------------------------------------


def test_storage_options_are_checked(tmp_path: Path) -> None:
    root = f"sqlite:///{tmp_path}/x.db"
    with pytest.raises(StorageError) as info:
        Butler(root, chunksize=10)
    message = str(info.value)
    assert "['chunksize']" in message
    assert "valid options: ['chunk_size', 'engine_options', 'password']" in message
    bad: list[tuple[dict[str, Any], str]] = [
        ({"chunk_size": "abc"}, "chunk_size"),
        ({"chunk_size": -5}, "chunk_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": True}, "chunk_size"),
        ({"chunk_size": 2**40}, "chunk_size"),
        ({"engine_options": "pool_size=5"}, "engine_options must be a mapping"),
        ({"engine_options": {"no_such_keyword": 1}}, "no_such_keyword"),
        ({"engine_options": {"pool_size": "x"}}, "engine_options['pool_size']"),
        ({"engine_options": {"pool_timeout": "soon"}}, "engine_options['pool_timeout']"),
        ({"engine_options": {"connect_args": 5}}, "engine_options['connect_args']"),
        ({"engine_options": {"pool_pre_ping": "yes"}}, "engine_options['pool_pre_ping']"),
        ({"password": 5}, "password must be a string"),
    ]
    for options, expected in bad:
        with pytest.raises(StorageError) as info:
            Butler.create(root, **options)
        assert expected in str(info.value), (options, str(info.value))
    storage = DatabaseStorage(root, chunk_size="2KiB", engine_options={"pool_pre_ping": True})
    assert storage.chunk_size == 2048
    storage.close()


def test_driver_refusing_query_parameters_is_a_storage_error(mysql_url: str) -> None:
    # PyMySQL raises TypeError for a connect() keyword it does not know.
    with pytest.raises(StorageError, match="refused its connection arguments"):
        Butler.create(_with_query(mysql_url, no_such_argument="1"))


# -- reserved keys and hostile rows ----------------------------------------------------------------


def _copy_row(root: str, key: str, new_key: str, **changes: Any) -> None:
    """Insert a copy of the dataset row of ``key`` under ``new_key`` (a hostile writer)."""
    from butler_db._schema import datasets, key_hash

    with _engine(root) as engine, engine.begin() as conn:
        row = conn.execute(sa.select(datasets).where(datasets.c.key == key)).mappings().one()
        values = {k: v for k, v in row.items() if k != "id"}
        values.update(key=new_key, key_hash=key_hash(new_key), **changes)
        conn.execute(datasets.insert(), values)


def _set_row(root: str, key: str, **changes: Any) -> None:
    from butler_db._schema import datasets

    with _engine(root) as engine, engine.begin() as conn:
        conn.execute(datasets.update().where(datasets.c.key == key).values(**changes))


def test_reserved_keys_are_never_listed(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"a": 1}, "cfg", visit=1)
    for planted in ("butler.yaml", ".butler/lock", ".butler"):
        _copy_row(db_root, "cfg/1.json", planted)
    assert list(b.storage.list()) == ["cfg/1.json"]
    assert list(b.storage.list(".butler")) == []
    assert [d["visit"] for d in b.datasets("cfg")] == [1]
    with pytest.raises(StorageError, match="reserved for butler"):
        b.storage.write_bytes("butler.yaml", b"storage: database\n")
    b.close()


def test_hostile_blob_rows_are_refused(db_root: str) -> None:
    b = Butler.create(db_root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"a": 1}, "cfg", visit=1)
    storage = b.storage
    for changes in ({"chunk_size": 0}, {"chunk_size": -1}, {"size": -3}, {"blob_id": "x' OR 1"}):
        _copy_row(db_root, "cfg/1.json", "cfg/2.json", **changes)
        with pytest.raises(StorageError, match="butler_datasets is corrupt"):
            storage.read_bytes("cfg/2.json")
        _set_row_delete(db_root, "cfg/2.json")
    # A size far beyond the bytes stored is caught at open, before any read trusts it.
    _copy_row(db_root, "cfg/1.json", "cfg/3.json", size=2**50)
    with pytest.raises(StorageError, match="do not match its row"):
        storage.open("cfg/3.json")
    assert b.get("cfg", visit=1) == {"a": 1}
    b.close()


def _set_row_delete(root: str, key: str) -> None:
    from butler_db._schema import datasets

    with _engine(root) as engine, engine.begin() as conn:
        conn.execute(datasets.delete().where(datasets.c.key == key))


def test_hostile_column_descriptions_are_refused(db_root: str) -> None:
    import json

    b = _catalog(db_root)
    b.put(Table({"s": ["a", "b", "c"], "i": [1, 2, 3]}), "cat", visit=1)
    meta = b.storage.metadata("cat/1")

    def tamper(**column: Any) -> None:
        doc = json.loads(json.dumps(meta))
        doc["table"]["columns"][0].update(column)
        _set_row(db_root, "cat/1", metadata=json.dumps(doc))

    # A dtype declaring 400 kB per value: refused by the reader's limit before allocating.
    tamper(dtype="<U100000")
    small = Butler(db_root, max_read_bytes=100_000)
    with pytest.raises(FormatError, match=r"declares 1,200,0[0-9,]+ bytes, more than the read"):
        small.get("cat", visit=1)
    small.close()
    for column, expected in (
        ({"dtype": "O"}, "is not a str dtype"),
        ({"dtype": "not a dtype"}, "is not a str dtype"),
        ({"kind": "pickle"}, "unknown stored kind"),
        ({"column": "i"}, "repeat names"),
        ({"column": "_butler_row"}, "is invalid"),
        ({"name": 5}, "has no name"),
    ):
        tamper(**column)
        with pytest.raises(FormatError, match=expected):
            b.get("cat", visit=1)
    b.close()
