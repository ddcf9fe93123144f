"""The statements butler-db runs on its own tables, built once at import.

Every hot-path statement is a module constant with named bound parameters, so a put or a
get never rebuilds a statement: SQLAlchemy compiles each once per dialect (its compiled
cache is keyed by the statement) and later calls only bind values. Each statement is
answered from an index (see `butler_db._schema.ensure_indexes` and the query-plan tests in
``tests/db/test_query_plans.py``):

=========================  ===============================================================
statement                  index used
=========================  ===============================================================
`ROW`, `ROW_LOCKED`,       ``butler_datasets.key_hash`` (unique)
`ROW_WITH_SMALL_CHUNK`,
`ROW_WITH_FIRST_CHUNK`,
`EXISTS`
first chunk of the join,   ``butler_chunks`` primary key ``(blob_id, seq)``
`CHUNKS`, `DELETE_CHUNKS`
`UPDATE_DATASET`,          ``butler_datasets`` primary key ``id``
`DELETE_DATASET`
`list_keys`                ``butler_datasets_key_prefix`` (a key-prefix range)
=========================  ===============================================================
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import sqlalchemy as sa

from ._schema import chunks, datasets, key_prefix_expression

__all__ = [
    "CHUNKS",
    "DELETE_CHUNKS",
    "DELETE_DATASET",
    "EXISTS",
    "INSERT_CHUNK",
    "INSERT_DATASET",
    "ROW",
    "ROW_LOCKED",
    "ROW_WITH_FIRST_CHUNK",
    "ROW_WITH_SMALL_CHUNK",
    "UPDATE_DATASET",
    "first_row",
    "has_cursor_listeners",
    "list_keys",
    "prefix_bounds",
    "sqlite_first_row_pooled",
]

_KEY_HASH: sa.BindParameter[str] = sa.bindparam("key_hash")

#: The dataset row of ``:key_hash``.
ROW = sa.select(datasets).where(datasets.c.key_hash == _KEY_HASH)

#: The dataset row of ``:key_hash``, locked for the writer's transaction (not on SQLite,
#: where ``BEGIN IMMEDIATE`` already holds the database's write lock).
ROW_LOCKED = ROW.with_for_update()


def _with_first_chunk(*conditions: Any) -> sa.Select[Any]:
    """The dataset row of ``:key_hash`` and its first chunk as ``first_chunk`` (NULL
    unless ``conditions`` hold)."""
    on = sa.and_(
        chunks.c.blob_id == datasets.c.blob_id, chunks.c.seq == sa.literal_column("0"), *conditions
    )
    return (
        sa.select(datasets, chunks.c.data.label("first_chunk"))
        .select_from(datasets.outerjoin(chunks, on))
        .where(datasets.c.key_hash == _KEY_HASH)
    )


#: The dataset row of ``:key_hash`` and, when the dataset is a blob of one chunk of at most
#: ``:inline`` bytes, that chunk as ``first_chunk``: a small get is this one query.
ROW_WITH_SMALL_CHUNK = _with_first_chunk(
    datasets.c.size <= sa.bindparam("inline"), datasets.c.size <= datasets.c.chunk_size
)

#: The dataset row of ``:key_hash`` and, for a blob, its first chunk as ``first_chunk``.
ROW_WITH_FIRST_CHUNK = _with_first_chunk()

#: 1 when a dataset is stored at ``:key_hash`` (nothing else is fetched).
EXISTS: sa.Select[Any] = sa.select(sa.literal_column("1")).where(datasets.c.key_hash == _KEY_HASH)

#: Chunks ``:first`` to ``:last`` of blob ``:blob_id``, in order.
CHUNKS = (
    sa.select(chunks.c.seq, chunks.c.data)
    .where(
        chunks.c.blob_id == sa.bindparam("blob_id"),
        chunks.c.seq.between(sa.bindparam("first"), sa.bindparam("last")),
    )
    .order_by(chunks.c.seq)
)

#: Every chunk of blob ``:blob_id``.
DELETE_CHUNKS = chunks.delete().where(chunks.c.blob_id == sa.bindparam("blob_id"))

#: One chunk row (``blob_id``, ``seq``, ``data``).
INSERT_CHUNK = chunks.insert()

#: One dataset row (every column but ``id``).
INSERT_DATASET = datasets.insert()

#: The dataset row whose ``id`` is ``:row_id``, given the new values of its columns.
UPDATE_DATASET = datasets.update().where(datasets.c.id == sa.bindparam("row_id"))

#: The dataset row whose ``id`` is ``:row_id``.
DELETE_DATASET = datasets.delete().where(datasets.c.id == sa.bindparam("row_id"))


def prefix_bounds(prefix: str, width: int) -> tuple[str, str | None]:
    """``(low, high)`` such that every string starting with ``prefix`` (cut to ``width``
    characters) lies in ``[low, high)`` in code-point order; ``high`` is ``None`` when the
    range has no end (a prefix of only U+10FFFF characters)."""
    low = prefix[:width]
    high = low
    while high and ord(high[-1]) == 0x10FFFF:
        high = high[:-1]
    if not high:
        return low, None
    return low, high[:-1] + chr(ord(high[-1]) + 1)


def list_keys(dialect: str, prefix: str) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The statement listing the keys under ``prefix`` and its parameters.

    SQLite and PostgreSQL: a range on the indexed key prefix in code-point order
    (``COLLATE "C"`` on PostgreSQL), which the index answers in order. MariaDB/MySQL: ``LIKE
    'prefix%'`` on the indexed ``key(255)`` prefix, which the server turns into an index
    range in the column's own collation (case-insensitive collations match a superset: the
    caller filters exactly). Keys are returned unordered on MariaDB; the caller sorts.
    """
    if dialect in ("mysql", "mariadb"):
        query = sa.select(datasets.c.key)
        if prefix:  # LIKE patterns are per call (escaped), the statement is small
            query = query.where(datasets.c.key.startswith(prefix, autoescape=True))
        return query, {}
    width = key_prefix_expression(dialect)[1]
    low, high = prefix_bounds(prefix, width) if prefix else (None, None)
    params = {k: v for k, v in (("low", low), ("high", high)) if v is not None}
    return _range_statement(dialect, low is not None, high is not None), params


@functools.lru_cache(maxsize=16)
def _range_statement(dialect: str, low: bool, high: bool) -> sa.Select[Any]:
    """The key listing of ``dialect`` with the range ends given (built once each)."""
    column = key_prefix_expression(dialect)[0]
    query = sa.select(datasets.c.key).order_by(column)
    if low:
        query = query.where(column >= sa.bindparam("low"))
    if high:
        query = query.where(column < sa.bindparam("high"))
    return query


def first_row(conn: sa.Connection, statement: sa.Select[Any], params: dict[str, Any]) -> Any:
    """The first row of a read statement (``None`` if none), with attribute access.

    SQLite: the statement's SQL, compiled once, runs on the pooled DB-API cursor, and the
    row is a named tuple. On a small get, SQLAlchemy's execution context and result
    objects cost as much as the query itself (SQLite answers in microseconds, in
    process); its ``before_cursor_execute`` and ``after_cursor_execute`` events still
    fire, as SQLAlchemy fires them, and driver errors are wrapped as SQLAlchemy wraps
    them. SQLite needs no result processing for these columns (text, integers, floats,
    bytes come back as SQLAlchemy would return them). Other databases:
    ``conn.execute(statement, params).first()`` (their time is the network's).
    """
    if conn.dialect.name != "sqlite":
        return conn.execute(statement, params).first()
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    return _sqlite_fetch_one(dbapi, conn.dialect, statement, params, conn)


def sqlite_first_row_pooled(
    engine: sa.Engine, statement: sa.Select[Any], params: dict[str, Any]
) -> Any:
    """`first_row` on SQLite, on a pooled DB-API connection with no `sa.Connection` around
    it (checking one out, with its execution options, costs as much as the query on a
    small get), outside any transaction as `first_row` runs (no ``BEGIN``: the driver's
    autocommit). The pool's own events (checkout, reset on return) fire as usual; use it
    only when nothing listens for cursor events (`has_cursor_listeners`), which need a
    connection object.
    """
    error = engine.dialect.loaded_dbapi.Error
    try:
        pooled = engine.raw_connection()
    except error as e:  # a new connection's setup (a locked database...): as a Connection
        raise sa.exc.DBAPIError.instance(None, None, e, error, dialect=engine.dialect) from e
    try:
        return _sqlite_fetch_one(pooled.driver_connection, engine.dialect, statement, params)
    finally:
        pooled.close()


def _sqlite_fetch_one(
    dbapi: Any,
    dialect: Any,
    statement: sa.Select[Any],
    params: dict[str, Any],
    conn: sa.Connection | None = None,
) -> Any:
    """The first row of ``statement`` on a SQLite DB-API connection, as a named tuple;
    ``conn``'s cursor events fired around it when given; driver errors (making the cursor
    too: a closed connection, another thread's) wrapped as SQLAlchemy wraps them."""
    sql, names, row_type = _sqlite_form(dialect, statement)
    args = tuple(params[name] for name in names)
    cursor = None
    try:
        cursor = dbapi.cursor()
        if conn is not None:
            conn.dispatch.before_cursor_execute(conn, cursor, sql, args, None, False)
        cursor.execute(sql, args)
        row = cursor.fetchone()
        if conn is not None:
            conn.dispatch.after_cursor_execute(conn, cursor, sql, args, None, False)
    except dialect.loaded_dbapi.Error as e:
        raise sa.exc.DBAPIError.instance(
            sql, args, e, dialect.loaded_dbapi.Error, dialect=dialect
        ) from e
    finally:
        if cursor is not None:
            cursor.close()
    return None if row is None else row_type._make(row)


def has_cursor_listeners(engine: sa.Engine) -> bool:
    """Whether anything listens for the engine's cursor events, or for the events a
    `sa.Connection` fires when made (``engine_connect``, and
    ``set_connection_execution_options`` for the one-statement options): listeners that
    `sqlite_first_row_pooled`, with no connection object, would never call."""
    dispatch = engine.dispatch
    return (
        bool(dispatch.before_cursor_execute)
        or bool(dispatch.after_cursor_execute)
        or bool(dispatch.engine_connect)
        or bool(dispatch.set_connection_execution_options)
    )


@functools.lru_cache(maxsize=32)
def _sqlite_form(dialect: Any, statement: sa.Select[Any]) -> tuple[str, tuple[str, ...], Any]:
    """``(sql, parameter names in order, row type)`` of a statement on SQLite."""
    compiled = statement.compile(dialect=dialect)
    names = tuple(compiled.positiontup or ())
    fields = [str(column.key) for column in statement.selected_columns]
    return str(compiled), names, collections.namedtuple("Row", fields, rename=True)
