"""Stable views: every ``sql-table`` dataset is also a SQL view with a readable name that
survives overwrites (the table behind it is ``bt_<...>_<random>`` and changes every time).

Naming rule (`view_names`)
    A key made of lowercase letters, digits, single ``_`` and ``/`` separators, starting with
    a letter, at most 54 characters once each ``/`` is written ``__``, and not starting with
    ``bt_`` or ``butler_``, gives its view that name: ``cat/1/r`` is ``cat__1__r``,
    ``calexp/000001/2`` is ``calexp__000001__2``. Any other key is sanitised (lowercase,
    ``/`` as ``__``, other runs as ``_``, cut to 40 characters) and ends in ``___`` and 12 hex
    digits of the key's hash: ``Cat/Visit-1`` is ``cat__visit_1___<hash>``. The two forms
    never meet (only the second contains ``___``), so distinct keys get distinct names.

Ownership
    A view is butler's for a key only if its definition selects from a table butler-db made
    for that key (`butler_db._schema.is_table_of`). Butler replaces or drops nothing else:
    when the readable name is taken by another table or view, the hashed name is used and a
    `UserWarning` says so.

Atomicity
    PostgreSQL and SQLite re-point the view (``DROP VIEW`` + ``CREATE VIEW``) in the
    transaction that commits the new table, so a query sees the old rows or the new ones.
    MariaDB commits every DDL statement on its own: there the view is re-pointed right after
    the commit, before the old table is dropped, under a named lock (``GET_LOCK``) so
    concurrent overwriters leave it on the table the dataset row names last.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import sqlalchemy as sa

from . import _schema as schema

__all__ = ["drop_view", "point_view", "sync_view", "view_names", "view_of"]

#: ``Connection.info`` key listing keys whose view is synced after the commit (MariaDB).
SYNC_AFTER_COMMIT = "butler_sync_views_after_commit"

_LOSSLESS = re.compile(r"[a-z][a-z0-9]*(?:[_/][a-z0-9]+)*")
_RESERVED_PREFIXES = (schema.TABLE_PREFIX, "butler_")
_TABLE_IN_SQL = re.compile(r"bt_[a-z0-9_]+")


def view_names(key: str) -> tuple[str, str]:
    """``(preferred, fallback)`` view names of the dataset at ``key`` (see the module doc).

    The fallback is the hashed name; for a key without a readable form both are the same.
    """
    hashed = schema.key_hash(key)[:12]
    readable = key.replace("/", "__")
    sanitised = re.sub(r"[^a-z0-9_]+", "_", key.lower().replace("/", "__"))
    sanitised = re.sub(r"_{3,}", "__", sanitised).strip("_")
    if not sanitised[:1].isalpha() or sanitised.startswith(_RESERVED_PREFIXES):
        sanitised = f"d_{sanitised}"
    fallback = f"{sanitised[:40].rstrip('_')}___{hashed}"
    if (
        _LOSSLESS.fullmatch(key)
        and len(readable) <= 54
        and not readable.startswith(_RESERVED_PREFIXES)
    ):
        return readable, fallback
    return fallback, fallback


def _owner(conn: sa.Connection, key: str, name: str) -> bool | None:
    """True if ``name`` is a view of ``key``'s tables, None if nothing has that name,
    False if it is anything else (another table or view: never touched)."""
    inspector = sa.inspect(conn)
    if name in inspector.get_view_names():
        try:
            definition = inspector.get_view_definition(name) or ""
        except sa.exc.SQLAlchemyError:  # pragma: no cover - unreadable definition
            return False
        tables = _TABLE_IN_SQL.findall(str(definition))
        return any(schema.is_table_of(key, t) for t in tables)
    if inspector.has_table(name):
        return False
    return None


def view_of(conn: sa.Connection, key: str) -> str | None:
    """The name of the view butler made for ``key``, or None."""
    for name in dict.fromkeys(view_names(key)):
        if _owner(conn, key, name):
            return name
    return None


def _quote(conn: sa.Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def _create(conn: sa.Connection, name: str, table: str, replace: bool) -> None:
    """``CREATE [OR REPLACE] VIEW name AS SELECT <columns> FROM table`` (the hidden
    ``_butler_row`` left out; identifiers are butler-made and quoted by the dialect)."""
    from ._tables import ROW_COLUMN

    columns = [c for c in sa.inspect(conn).get_columns(table) if c["name"] != ROW_COLUMN]
    select = ", ".join(_quote(conn, c["name"]) for c in columns)
    verb = "CREATE OR REPLACE VIEW" if replace else "CREATE VIEW"
    view, source = _quote(conn, name), _quote(conn, table)
    conn.exec_driver_sql(f"{verb} {view} AS SELECT {select} FROM {source}")
    if conn.dialect.name == "postgresql":  # PostgreSQL shows column comments of views too
        commented: list[sa.Column[Any]] = [
            sa.Column(c["name"], comment=c["comment"]) for c in columns if c["comment"]
        ]
        # COMMENT takes no bound parameters: SQLAlchemy renders the text as an escaped literal
        for column in sa.Table(name, sa.MetaData(), *commented).columns:
            conn.execute(sa.schema.SetColumnComment(column))


def point_view(conn: sa.Connection, key: str, table: str) -> str | None:
    """Make the view of ``key`` select from ``table`` (PostgreSQL, SQLite: in the caller's
    transaction; ``CREATE OR REPLACE`` on MariaDB). A view butler made earlier keeps its
    name; a new one takes the first free name of `view_names`. Returns the view's name, or
    None (with a warning) if both names are taken by others."""
    current = view_of(conn, key)
    if current is not None:
        if schema.transactional_ddl(conn):
            conn.exec_driver_sql(f"DROP VIEW {_quote(conn, current)}")
        _create(conn, current, table, replace=not schema.transactional_ddl(conn))
        return current
    preferred, fallback = view_names(key)
    for name in dict.fromkeys((preferred, fallback)):
        if _owner(conn, key, name) is not None:
            continue
        _create(conn, name, table, replace=False)
        if name != preferred:
            warnings.warn(
                f"the SQL name {preferred!r} is taken by a table or view butler did not make; "
                f"the dataset at {key!r} is the view {name!r} instead",
                UserWarning,
                stacklevel=2,
            )
        return name
    warnings.warn(
        f"the SQL names {preferred!r} and {fallback!r} are taken by tables or views butler "
        f"did not make; the dataset at {key!r} has no view (its table is {table!r})",
        UserWarning,
        stacklevel=2,
    )
    return None


def drop_view(conn: sa.Connection, key: str) -> None:
    """Drop the view of ``key`` if butler made it (PostgreSQL, SQLite: in the transaction)."""
    name = view_of(conn, key)
    if name is not None:
        conn.exec_driver_sql(f"DROP VIEW {_quote(conn, name)}")


def sync_view(conn: sa.Connection, key: str, table_of_row: Any) -> None:
    """MariaDB, after a commit: point the view of ``key`` at the table its dataset row names
    now (``table_of_row(conn)``, None once removed), or drop it, under a named lock.

    Every statement commits on its own there; the lock orders concurrent writers so that
    the last to look at the row sets the view.
    """
    lock = f"butler_view_{schema.key_hash(key)[:40]}"
    conn.execute(sa.text("SELECT GET_LOCK(:n, 60)"), {"n": lock})
    try:
        table = table_of_row(conn)
        if table is None:
            drop_view(conn, key)
        else:
            point_view(conn, key, table)
    finally:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
