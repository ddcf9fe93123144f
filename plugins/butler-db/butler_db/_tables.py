"""SQL tables of ``sql-table`` datasets: naming, type mapping, bulk writes and selections.

Every identifier goes through SQLAlchemy constructs (`sqlalchemy.Table`, `sqlalchemy.Column`)
and is quoted by the dialect; values are bound parameters. Table names are derived from
the dataset key, sanitised to ``[a-z0-9_]`` and made unique with a random suffix.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import sqlalchemy as sa

__all__ = ["DROP_AFTER_COMMIT", "drop_table", "drop_table_now", "new_table_name"]

#: ``Connection.info`` key listing tables to drop once the transaction has committed.
DROP_AFTER_COMMIT = "butler_drop_after_commit"

#: Prefix of every table holding a dataset.
TABLE_PREFIX = "bt_"

_UNSAFE = re.compile(r"[^a-z0-9_]+")


def new_table_name(key: str) -> str:
    """A fresh, safe table name for the dataset at ``key`` (``bt_<sanitised key>_<random>``).

    At most 55 characters: within PostgreSQL's (63) and MySQL's (64) identifier limits.
    """
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    clean = _UNSAFE.sub("_", stem.lower()).strip("_")[:40].rstrip("_")
    return f"{TABLE_PREFIX}{clean or 'dataset'}_{secrets.token_hex(5)}"


def _transactional_ddl(conn: sa.Connection) -> bool:
    return conn.dialect.name not in ("mysql", "mariadb")


def drop_table(conn: sa.Connection, name: str) -> None:
    """Drop a dataset's table as part of the caller's transaction (after it, on MySQL)."""
    if _transactional_ddl(conn):
        drop_table_now(conn, name)
    else:
        conn.info.setdefault(DROP_AFTER_COMMIT, []).append(name)


def drop_table_now(conn: sa.Connection, name: str) -> None:
    """``DROP TABLE IF EXISTS`` (auto-committed if no transaction is open)."""
    table = sa.Table(name, sa.MetaData())
    if conn.in_transaction():
        table.drop(conn, checkfirst=True)
    else:
        with conn.begin():
            table.drop(conn, checkfirst=True)


def reflect(conn: sa.Connection, name: str) -> Any:
    """The `sqlalchemy.Table` of an existing dataset table."""
    return sa.Table(name, sa.MetaData(), autoload_with=conn)
