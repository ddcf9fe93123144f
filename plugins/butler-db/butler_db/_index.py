"""The dataset index in a SQL database through SQLAlchemy (SQLite, PostgreSQL, MariaDB).

`SqlAlchemyIndex` runs the SQL of butler's `SqlIndex` (written once in butler-core, with
``:name`` bound parameters) through `sqlalchemy.text` on a `DatabaseStorage`'s engine, and
says only what differs per database:

* PostgreSQL: string dimensions are ``VARCHAR(200) COLLATE "C"`` (code-point order and
  exact equality, as Python and SQLite compare strings); concurrent
  ``CREATE TABLE IF NOT EXISTS`` can fail with a unique violation in the catalogs, so DDL is
  retried.
* MariaDB/MySQL: backtick quoting, ``ON DUPLICATE KEY UPDATE`` upserts, string dimensions
  in a binary *no-pad* utf8mb4 collation (``'r'`` and ``'r '`` differ, ``'Z' < 'a'``), the
  combined index cut to InnoDB's 3072-byte limit.
* SQLite: the types of butler's own `SqliteIndex`.

The storage owns the engine: `SqlAlchemyIndex.close` never disposes it (Butler closes the
storage it opened for an index URL). Errors are `StorageError` naming the masked URL.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc

from butler import StorageError
from butler.storage import SqlIndex, mask_url

from ._engine import _sqlstate, connect, is_retryable, is_unique_violation, translate

if TYPE_CHECKING:
    from butler import DatasetType

    from ._storage import DatabaseStorage

__all__ = ["BACKENDS", "SqlAlchemyIndex"]

#: Backends (``URL.get_backend_name()``) the index knows the SQL dialect of.
BACKENDS = frozenset({"sqlite", "postgresql", "mysql", "mariadb"})

#: Attempts at a statement the server aborted (deadlock, serialization failure, DDL race).
_ATTEMPTS = 12

#: Rows fetched per round trip when streaming entries.
_FETCH = 500

#: InnoDB's largest index key (bytes), and what one column takes of it.
_MYSQL_KEY_BYTES = 3072
_MYSQL_COLUMN_BYTES = {"int": 8, "str": 200 * 4}

_T = TypeVar("_T")

#: PostgreSQL: this transaction's commit does not wait for the WAL flush.
_ASYNC_COMMIT = sa.text("SET LOCAL synchronous_commit = off")


class SqlAlchemyIndex(SqlIndex):
    """A repository's dataset index in tables ``bidx_*`` of a SQL database.

    Parameters
    ----------
    storage
        The `DatabaseStorage` of that database: the index runs on its engine (and never
        disposes it).
    repository
        The id of the repository indexed (one database may index many).

    Raises
    ------
    StorageError
        If the storage's database is not SQLite, PostgreSQL or MariaDB/MySQL.
    """

    def __init__(self, storage: DatabaseStorage, repository: str) -> None:
        super().__init__(repository)
        backend = storage.backend
        if backend not in BACKENDS:
            raise StorageError(
                f"butler-db keeps a dataset index in SQLite, PostgreSQL or MariaDB/MySQL, not "
                f"{backend!r} ({mask_url(storage.root, hide_user=True)!r})"
            )
        self.engine = storage.engine
        self.backend = "mysql" if backend == "mariadb" else backend
        self.description = f"{mask_url(storage.root, hide_user=True)} (tables bidx_*)"
        self._secrets = list(storage._secrets)
        self._sqlite_path = storage._url.database if backend == "sqlite" else None
        self._closed = False
        if self.backend == "sqlite":  # as butler's own SqliteIndex
            self.int_type, self.str_type, self.float_type = "INTEGER", "TEXT", "REAL"
            self.id_type = "TEXT"
        elif self.backend == "postgresql":
            self.str_type = 'VARCHAR(200) COLLATE "C"'
        else:
            self.id_type = "CHAR(32) CHARACTER SET ascii COLLATE ascii_bin"
            self.text_type = "TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            # str_type: the server's no-pad binary collation, chosen once connected

    def __repr__(self) -> str:
        return f"SqlAlchemyIndex({self.description!r}, repository={self.repository!r})"

    # -- dialects ----------------------------------------------------------------------

    def quote(self, identifier: str) -> str:
        # Grave accents on SQLite too, as butler's own SqliteIndex: there a double-quoted
        # name that is no column reads as a string literal (a query silently false).
        if self.backend in ("mysql", "sqlite"):
            return f"`{identifier}`"
        return super().quote(identifier)

    def upsert_sql(self, table: str, columns: Sequence[str]) -> str:
        if self.backend != "mysql":
            return super().upsert_sql(table, columns)
        q = self.quote
        names = ", ".join(q(c) for c in columns)
        values = ", ".join(f":{c}" for c in columns)
        updates = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in columns if c != "_id")
        return (
            f"INSERT INTO {q(table)} ({names}) VALUES ({values}) ON DUPLICATE KEY UPDATE {updates}"
        )

    def create_statements(self, table: str, dt: DatasetType) -> list[str]:
        if self.backend == "mysql":
            self.str_type = f"VARCHAR(200) CHARACTER SET utf8mb4 COLLATE {self._mysql_collation()}"
        return super().create_statements(table, dt)

    def _mysql_collation(self) -> str:
        """A binary utf8mb4 collation without padding: comparisons and order by code point,
        trailing spaces significant (``utf8mb4_bin`` pads: ``'r' = 'r '``)."""
        dialect = self.engine.dialect
        if dialect.server_version_info is None:  # not connected yet: connecting sets it
            self._execute("SELECT 1")
        version = tuple(dialect.server_version_info or ())
        if getattr(dialect, "is_mariadb", False):
            return "utf8mb4_nopad_bin" if version >= (10, 2, 2) else "utf8mb4_bin"
        return "utf8mb4_0900_bin" if version >= (8, 0, 17) else "utf8mb4_bin"

    def combined_index_columns(self, dt: DatasetType) -> list[str]:
        columns = super().combined_index_columns(dt)
        if self.backend != "mysql":
            return columns
        kept, size = [], 0
        for column, kind in zip(columns, dt.dimensions.values(), strict=True):
            size += _MYSQL_COLUMN_BYTES[kind]
            if size > _MYSQL_KEY_BYTES:
                break
            kept.append(column)
        return kept

    # -- running SQL -------------------------------------------------------------------

    def _connection(self) -> sa.Connection:
        if self._closed:
            raise StorageError(f"the dataset index {self.description} is closed")
        if self._sqlite_path:  # a new index file: its directory first
            os.makedirs(os.path.dirname(self._sqlite_path) or ".", exist_ok=True)
        return connect(self.engine, self.description, self._secrets)

    def _run(self, work: Callable[[sa.Connection], _T], *, write: bool, ddl: bool = False) -> _T:
        """``work`` in one transaction, committed; retried when the server aborts it to
        resolve a conflict (and, for DDL, when a concurrent creator won a race)."""
        action = "update the dataset index" if write else "query the dataset index"
        with translate(action, self.description, self._secrets):
            for attempt in range(_ATTEMPTS):
                try:
                    with self._connection() as conn:
                        if write:
                            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                        with conn.begin():
                            if write and self.backend == "postgresql":
                                # The index is rebuildable, the bytes are not: its commits
                                # skip the WAL flush (1.5-3 ms a put). A server crash may
                                # lose the last rows: unindexed datasets, found by verify.
                                conn.execute(_ASYNC_COMMIT)
                            return work(conn)
                except exc.DBAPIError as e:
                    if attempt == _ATTEMPTS - 1 or not _retryable(e, ddl=ddl):
                        raise
                # jittered backoff: retrying writers must not collide again in lock-step
                time.sleep(random.uniform(0.005, 0.03) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        statement = _text(sql)

        def work(conn: sa.Connection) -> list[tuple[Any, ...]]:
            result = conn.execute(statement, dict(params or {}))
            return [tuple(row) for row in result] if result.returns_rows else []

        return self._run(work, write=not _is_select(sql))

    def _executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        statement = _text(sql)
        batch = [dict(row) for row in rows]
        self._run(lambda conn: conn.execute(statement, batch), write=True)

    def _ddl(self, statement: str) -> None:
        self._run(lambda conn: conn.execute(sa.text(statement)), write=True, ddl=True)

    def _iterate(self, sql: str, params: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        """Rows streamed from a server-side cursor (PostgreSQL, MariaDB) or SQLite's own
        cursor, ``_FETCH`` at a time, in one read transaction (a consistent snapshot)."""
        action = "read the dataset index"
        with translate(action, self.description, self._secrets):
            conn = self._connection()
        try:
            with translate(action, self.description, self._secrets):
                if self.backend == "mysql":
                    # the server gives up on a reader that pauses between fetches longer
                    # than this (60 s by default): verify may check each row's bytes
                    conn.exec_driver_sql("SET SESSION net_write_timeout = 3600")
                    conn.commit()
                conn = conn.execution_options(stream_results=True, yield_per=_FETCH)
                conn.begin()
                result = conn.execute(_text(sql), dict(params))
            while True:
                with translate(action, self.description, self._secrets):
                    rows = result.fetchmany(_FETCH)
                if not rows:
                    break
                for row in rows:
                    yield tuple(row)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop using the engine (the storage owns it and disposes it when closed)."""
        self._closed = True


@functools.lru_cache(maxsize=512)
def _text(sql: str) -> sa.TextClause:
    """``sa.text(sql)``, parsed once per SQL string: the index runs a few statement texts
    over and over (its bound parameters are named, the values vary)."""
    return sa.text(sql)


def _is_select(sql: str) -> bool:
    return sql.lstrip()[:6].upper() == "SELECT"


def _retryable(error: exc.DBAPIError, *, ddl: bool) -> bool:
    """A conflict worth trying again: a deadlock, serialization failure or busy database;
    for DDL also a concurrent creator's win (PostgreSQL reports racing ``CREATE ... IF NOT
    EXISTS`` as a unique violation in pg_type/pg_class, or as a duplicate table)."""
    if isinstance(error, exc.IntegrityError):
        return ddl and is_unique_violation(error)
    if ddl and _sqlstate(error) in ("42P07", "42710"):  # duplicate_table, duplicate_object
        return True
    return is_retryable(error)
