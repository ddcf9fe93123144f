"""butler-db's dataset index (`SqlAlchemyIndex`) on real SQLite, PostgreSQL and MariaDB.

* A database repository keeps its index in its own database and answers `datasets` /
  `count` exactly as listing the storage does (``Butler(root, index=False)``), strings
  compared and ordered by code point ('R' < 'Z' < 'a' < 'r' < 'r ' < 'é').
* An S3 repository (moto) keeps its index in PostgreSQL or MariaDB: the policy records the
  URL without its password, other Butlers find it, verify and reindex work, and concurrent
  writers (processes, threads) lose no row.
* Repositories sharing one index database stay apart; credentials are never shown.

Every server test works in a fresh PostgreSQL schema / MariaDB database (a unique name,
dropped afterwards with everything the index created in it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa

from butler import Butler, StorageError
from butler_db import DatabaseStorage
from butler_db._index import SqlAlchemyIndex

from .._databases import fresh_mysql_database, fresh_postgres_schema
from ._helpers import raw_engine, table_names

#: String dimension values whose order and equality differ under case-insensitive,
#: accent-insensitive or space-padding collations.
BANDS = ["r", "R", "r ", "a", "Z", "é", "e", "ß", "ss", "🙂", "A b"]

#: Queries asked of the index and of a listing: (where, constraints, limit, order_by).
QUERIES: list[tuple[str | None, dict[str, Any], int | None, Any]] = [
    (None, {}, None, None),
    (None, {}, 7, "-band"),
    ("band = 'r'", {}, None, None),
    ("band != 'r' and visit >= 2", {}, None, "-visit"),
    ("band < 'a'", {}, None, "band"),
    ("band >= 'r'", {}, 5, None),
    ("band in ('R', 'é', 'ss') or visit = 0", {}, None, ["-band", "visit"]),
    ("visit between 1 and 2 and not band = 'e'", {}, None, "band"),
    (None, {"band": ["a", "A b", "Z"]}, None, "-band"),
    (None, {"visit": slice(1, None), "band": "r "}, None, None),
    (None, {"visit": range(0, 2)}, 3, ["band", "-visit"]),
    ("band > 'z'", {}, None, "-band"),
    (None, {}, 0, None),
]


def _fill(b: Butler, visits: int = 3) -> None:
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})
    for visit in range(visits):
        for band in BANDS:
            b.put({"visit": visit, "band": band}, "cfg", visit=visit, band=band)


def _same_answers(indexed: Butler, listing: Butler) -> None:
    """Every query of `QUERIES` answered identically (and in the same order) by both."""
    assert isinstance(indexed.index, SqlAlchemyIndex)
    assert listing.index is None
    for where, constraints, limit, order_by in QUERIES:
        got = list(indexed.datasets("cfg", where, limit=limit, order_by=order_by, **constraints))
        want = list(listing.datasets("cfg", where, limit=limit, order_by=order_by, **constraints))
        assert got == want, (where, constraints, limit, order_by)
        assert indexed.count("cfg", where, **constraints) == listing.count(
            "cfg", where, **constraints
        ), (where, constraints)


# -- a repository inside a database: the index in the same database --------------------


def test_database_repository_index_answers_as_listing(db_root: str, backend: str) -> None:
    with Butler.create(db_root) as b, Butler(db_root, index=False) as listing:
        _fill(b)
        assert b.policy.index == "embedded"
        assert "(tables bidx_" in b.index.description  # type: ignore[union-attr]
        _same_answers(b, listing)
        # Code-point order and exact equality, as Python compares strings.
        assert [d["band"] for d in b.datasets("cfg", visit=1)] == sorted(BANDS)
        for band in BANDS:
            assert b.count("cfg", band=band) == 3, band
        assert b.count("cfg", where="band < 'a'") == 3 * len([x for x in BANDS if x < "a"])
        b.remove("cfg", visit=1, band="r")
        b.remove("cfg", visit=2, band="é")
        _same_answers(b, listing)
        assert b.verify().healthy
    # The rows are really in the database (bidx_* tables and the catalog).
    names = table_names(db_root)
    assert "butler_index_catalog" in names
    assert [n for n in names if n.startswith("bidx_")]
    # String dimensions in a binary collation whatever the database's default (this
    # server's default may already order by code point, so it is checked, too).
    assert (
        _dimension_collations(db_root)
        == {
            "sqlite": {"BINARY"},
            "postgresql": {"C"},
            "mysql": {"utf8mb4_nopad_bin"},
        }[backend]
    )


def _dimension_collations(root: str) -> set[str | None]:
    """Collations of the ``d_band`` columns of the index tables."""
    engine = raw_engine(root)
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":  # BINARY unless the DDL names another
                tables = conn.execute(
                    sa.text("SELECT sql FROM sqlite_master WHERE name LIKE 'bidx%'")
                )
                return {"BINARY" if "COLLATE" not in row[0] else row[0] for row in tables}
            schema = "current_schema()" if engine.dialect.name == "postgresql" else "DATABASE()"
            rows = conn.execute(
                sa.text(
                    f"SELECT collation_name FROM information_schema.columns WHERE "
                    f"table_schema = {schema} AND column_name = 'd_band' AND "
                    f"table_name LIKE 'bidx%'"
                )
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_many_string_dimensions_get_a_table(db_root: str) -> None:
    """Five string dimensions: MariaDB's combined index must fit InnoDB's 3072 bytes."""
    dims = {name: str for name in ("a", "b", "c", "d", "e")}
    with Butler.create(db_root) as b, Butler(db_root, index=False) as listing:
        b.register_dataset_type("wide", dict, "json", dimensions=dims)
        ids = [dict(zip(dims, values, strict=True)) for values in ("vwxyz", "vwxyZ", "Vwxyz")]
        for data_id in ids:
            b.put(data_id, "wide", data_id)
        assert list(b.datasets("wide")) == list(listing.datasets("wide"))
        assert [d["e"] for d in b.datasets("wide", order_by="-e")] == ["z", "z", "Z"]
        assert b.count("wide", a="V") == 1


def test_reindex_and_verify_in_database(db_root: str) -> None:
    with Butler.create(db_root) as b:
        _fill(b, visits=1)
        index = b.index
        assert index is not None
        dt = b.dataset_type("cfg")
        index.discard(dt, [{"visit": 0, "band": "r"}, {"visit": 0, "band": "é"}])
        report = b.verify()
        assert len(report.unindexed) == 2 and not report.healthy
        assert b.count("cfg") == len(BANDS) - 2
        done = b.reindex()
        assert (done.listed, done.indexed, done.dropped) == (len(BANDS), len(BANDS), 0)
        assert b.verify().healthy and b.count("cfg") == len(BANDS)
        assert index.checkpoint(dt) == ""  # a finished reindex leaves no checkpoint


def test_close_leaves_the_storage_engine(sqlite_root: str) -> None:
    """The storage owns the engine: closing the index neither disposes nor breaks it."""
    with Butler.create(sqlite_root) as b:
        _fill(b, visits=1)
        index = b.index
        assert isinstance(index, SqlAlchemyIndex)
        assert index.engine is b.storage.engine  # type: ignore[attr-defined]
        pool = b.storage.engine.pool  # type: ignore[attr-defined]
        idle = pool.checkedin()
        assert idle > 0
        index.close()
        assert pool.checkedin() == idle  # not disposed
        assert b.storage.exists(b.location("cfg", visit=0, band="r").key)
        with pytest.raises(StorageError, match="is closed"):
            index.counts()


# -- an index URL: S3 and posix repositories indexed in PostgreSQL or MariaDB ----------


@pytest.fixture
def pg_index(postgres_url: str) -> Iterator[str]:
    """An index database URL (a fresh PostgreSQL schema), with a password the server
    ignores (trust authentication) so that leaks can be looked for."""
    with fresh_postgres_schema(postgres_url, "butler_index") as (url, _):
        yield str(sa.engine.make_url(url).set(password="pg-secret-hunter2").render_as_string(False))


@pytest.fixture
def mysql_index(mysql_url: str) -> Iterator[str]:
    """An index database URL (a fresh MariaDB database)."""
    with fresh_mysql_database(mysql_url, "butler_index") as (url, _):
        yield url


@pytest.fixture(params=["postgresql", "mysql"])
def index_url(request: pytest.FixtureRequest) -> str:
    return str(
        request.getfixturevalue("pg_index" if request.param == "postgresql" else "mysql_index")
    )


def _s3_root(bucket: str) -> str:
    return f"s3://{bucket}/repo"


def _index_tables(url: str) -> list[str]:
    return [n for n in table_names(url) if n.startswith("bidx_") or n == "butler_index_catalog"]


def test_s3_repository_indexed_in_a_database(
    index_url: str,
    s3_bucket: str,
    s3_credentials: dict[str, Any],
    boto_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
    root = _s3_root(s3_bucket)
    with Butler.create(root, index=index_url, **s3_credentials) as b:
        _fill(b, visits=2)
        assert isinstance(b.index, SqlAlchemyIndex)
        # The policy in the bucket records the URL, without its password.
        policy = boto_client.get_object(Bucket=s3_bucket, Key="repo/butler.yaml")["Body"].read()
        recorded = sa.engine.make_url(str(b.policy.index))
        policy_index = str(b.policy.index)
        wanted = sa.engine.make_url(index_url)
        assert recorded.password is None
        assert (recorded.host, recorded.database) == (wanted.host, wanted.database)
        if wanted.password:
            assert wanted.password.encode() not in policy
        assert b.policy.index.encode() in policy  # type: ignore[union-attr]
    # Another Butler finds the index from the policy once its reader trusts that URL (the
    # recorded one, without credentials, is enough).
    monkeypatch.setenv("BUTLER_TRUSTED_INDEXES", f"sqlite:///elsewhere.db {policy_index}")
    with Butler(root, **s3_credentials) as b, Butler(root, index=False, **s3_credentials) as ls:
        assert isinstance(b.index, SqlAlchemyIndex)
        assert b.count("cfg") == 2 * len(BANDS)
        # A put that bypasses the index, and bytes removed behind its back: verify sees
        # both, reindex repairs both.
        ls.put({"late": True}, "cfg", visit=9, band="r")
        gone = b.location("cfg", visit=0, band="a").key
        boto_client.delete_object(Bucket=s3_bucket, Key=f"repo/{gone}")
        assert b.count("cfg") == 2 * len(BANDS)
        report = b.verify()
        assert len(report.unindexed) == 1 and "'visit': 9" in report.unindexed[0]
        assert len(report.stale) == 1 and "'band': 'a'" in report.stale[0]
        done = b.reindex()
        assert (done.indexed, done.dropped) == (2 * len(BANDS), 1)
        assert b.verify().healthy
        assert b.count("cfg") == 2 * len(BANDS)
        _same_answers(b, ls)
    assert len(_index_tables(index_url)) == 2  # one dataset type table and the catalog


def _put_many(root: str, index: str, options: dict[str, Any], worker: int, count: int) -> None:
    """One writer process: ``count`` datasets with distinct data IDs."""
    with Butler(root, index=index, **options) as b:
        for i in range(count):
            b.put({"worker": worker, "i": i}, "cfg", visit=worker * 1000 + i, band="r")


def _shared_repo(root: str, index: str, options: dict[str, Any]) -> None:
    with Butler.create(root, index=index, **options) as b:
        # Registered, but no row yet: the writers race to create the index table.
        b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})


def _check_writers(
    root: str, index: str, options: dict[str, Any], writers: int, count: int
) -> None:
    with Butler(root, index=index, **options) as b:
        assert b.count("cfg") == writers * count
        expected = sorted(w * 1000 + i for w in range(writers) for i in range(count))
        assert [d["visit"] for d in b.datasets("cfg")] == expected
        assert b.verify().healthy


@pytest.mark.slow  # ~15 s: four interpreters importing butler, s3fs and SQLAlchemy
def test_four_processes_write_to_s3_indexed_in_postgresql(
    pg_index: str, s3_bucket: str, s3_credentials: dict[str, Any]
) -> None:
    pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
    root = _s3_root(s3_bucket)
    _shared_repo(root, pg_index, s3_credentials)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        pool.starmap(_put_many, [(root, pg_index, s3_credentials, w, 25) for w in range(4)])
    _check_writers(root, pg_index, s3_credentials, 4, 25)


def test_eight_threads_write_to_s3_indexed_in_postgresql(
    pg_index: str, s3_bucket: str, s3_credentials: dict[str, Any]
) -> None:
    """Four threads share one Butler (one index), four open their own (their own engine):
    the first puts race to create the index table from several connections."""
    pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
    root = _s3_root(s3_bucket)
    _shared_repo(root, pg_index, s3_credentials)
    errors: list[BaseException] = []
    start = threading.Barrier(8)
    with Butler(root, index=pg_index, **s3_credentials) as shared:

        def write(worker: int) -> None:
            try:
                with contextlib.ExitStack() as stack:
                    b = shared
                    if worker >= 4:
                        b = stack.enter_context(Butler(root, index=pg_index, **s3_credentials))
                    start.wait(30)
                    for i in range(10):
                        b.put({"i": i}, "cfg", visit=worker * 1000 + i, band="r")
            except BaseException as e:  # re-raised in the test's thread below
                errors.append(e)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    _check_writers(root, pg_index, s3_credentials, 8, 10)


def test_repositories_sharing_an_index_database_stay_apart(pg_index: str, tmp_path: Path) -> None:
    roots = [str(tmp_path / "one"), str(tmp_path / "two")]
    butlers = [Butler.create(root, index=pg_index) for root in roots]
    try:
        a, b = butlers
        assert a.policy.id != b.policy.id
        for n, butler in enumerate(butlers):
            butler.register_dataset_type(
                "cfg", dict, "json", dimensions={"visit": int, "band": str}
            )
            for visit in range(3 + n):
                butler.put({"n": n}, "cfg", visit=visit, band="r")
        assert (a.count("cfg"), b.count("cfg")) == (3, 4)
        assert a.index.counts() == {"cfg": 3} and b.index.counts() == {"cfg": 4}  # type: ignore[union-attr]
        # Reindexing one never drops the other's rows (same dataset type, other bytes).
        assert a.reindex().dropped == 0
        b.remove("cfg", visit=0, band="r")
        assert (a.count("cfg"), b.count("cfg")) == (3, 3)
        assert a.verify().healthy and b.verify().healthy
        # Two tables of the same dataset type, one per repository, and one catalog row each.
        assert len([n for n in _index_tables(pg_index) if n.startswith("bidx_")]) == 2
        engine = raw_engine(pg_index)
        try:
            with engine.connect() as conn:
                rows = conn.execute(  # (not the row of each index's state: table name '')
                    sa.text(
                        "SELECT repository, dataset_type FROM butler_index_catalog "
                        "WHERE table_name <> ''"
                    )
                ).all()
        finally:
            engine.dispose()
        assert sorted(rows) == sorted((x.policy.id, "cfg") for x in butlers)
    finally:
        for butler in butlers:
            butler.close()


# -- credentials -------------------------------------------------------------------------


def test_index_password_is_never_shown(pg_index: str, tmp_path: Path) -> None:
    password = sa.engine.make_url(pg_index).password
    assert password
    root = str(tmp_path / "repo")
    with Butler.create(root, index=pg_index) as b:
        _fill(b, visits=1)
        index = b.index
        assert isinstance(index, SqlAlchemyIndex)
        for text in (repr(index), index.description, str(b.policy.index), repr(b.policy)):
            assert password not in text
        assert "***@" in index.description  # the whole userinfo is hidden
        assert index.description.endswith(" (tables bidx_*)")
        policy = (tmp_path / "repo" / "butler.yaml").read_text()
        assert password not in policy and "postgres@" in policy
    # A failing index (an unknown database) reports the URL without the password.
    bad_url = sa.engine.make_url(pg_index).set(database="butler_no_such_db_7f3a")
    bad = bad_url.render_as_string(hide_password=False)
    assert password in bad
    with Butler(root, index=bad) as b, pytest.raises(StorageError) as info:
        b.count("cfg")
    assert password not in str(info.value)
    assert "butler_no_such_db_7f3a" in str(info.value)
    # Nor does creating a repository with that index (refused before it is recorded).
    with pytest.raises(StorageError) as info:
        Butler.create(str(tmp_path / "other"), index=bad)
    assert password not in str(info.value) and "butler_no_such_db_7f3a" in str(info.value)


def test_mariadb_wrong_password_error_hides_it(mysql_index: str, tmp_path: Path) -> None:
    bad = sa.engine.make_url(mysql_index).set(password="wrong-maria-secret-42")
    url = bad.render_as_string(hide_password=False)
    storage = DatabaseStorage(url)
    try:
        index = storage.default_index("0123456789abcdef")
        assert index is not None
        with pytest.raises(StorageError) as info:
            index.counts()
        text = str(info.value)
        assert "wrong-maria-secret-42" not in text and "Access denied" in text
        assert "wrong-maria-secret-42" not in repr(index) + index.description
    finally:
        storage.close()


def test_unknown_backend_has_no_index(tmp_path: Path) -> None:
    """Only SQLite, PostgreSQL and MariaDB/MySQL: the index knows their dialects."""
    storage = DatabaseStorage(f"sqlite:///{tmp_path}/x.db")
    try:
        storage.backend = "oracle"
        assert storage.default_index("0123456789abcdef") is None
        with pytest.raises(StorageError, match="not 'oracle'"):
            SqlAlchemyIndex(storage, "0123456789abcdef")
    finally:
        storage.close()


def test_sqlite_missing_column_is_an_error_never_a_string(sqlite_root: str) -> None:
    """SQLite reads a double-quoted name that is no column as a string literal: with
    ``d_visit`` renamed in a crafted index, ``"d_visit" = 1`` compared the text 'd_visit'
    with 1 and the query answered nothing, silently. Quoted as identifiers only, a missing
    column is a `StorageError` naming it."""
    with Butler.create(sqlite_root) as b:
        _fill(b, visits=1)
        engine = b.storage.engine  # type: ignore[attr-defined]
        (table,) = (t for t in table_names(sqlite_root) if t.startswith("bidx_"))
        with engine.begin() as conn:
            conn.execute(sa.text(f'ALTER TABLE "{table}" RENAME COLUMN "d_visit" TO "x"'))
        with pytest.raises(StorageError, match="d_visit"):
            list(b.datasets("cfg", visit=0))
        with pytest.raises(StorageError, match="d_visit"):
            b.count("cfg", "visit >= 0")
