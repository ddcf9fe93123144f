"""The tables of a database repository (SQLAlchemy Core definitions).

``butler_repository``
    Key/value rows: ``schema_version`` and ``policy`` (the repository policy as JSON).
``butler_datasets``
    One row per dataset: key (unique through ``key_hash``), dataset type, data ID (JSON),
    format, concrete python type, size, sha256, creation time, the full metadata (JSON),
    and either the ``blob_id`` of its bytes or the ``table_name`` of its SQL table.
``butler_chunks``
    The bytes of blob datasets, ``chunk_size`` bytes per row, ordered by ``seq``.

Indexes: the primary keys, ``key_hash`` (unique), ``dataset_type``, and
``butler_datasets_key_prefix`` on the key (its first 256 characters in code-point order on
PostgreSQL, ``key(255)`` on MariaDB, the whole key on SQLite) for listings by prefix. That
last one came with butler-db 0.3; `ensure_indexes` adds it to older repositories when they
are opened, without changing the schema version (older butler-db keeps reading them).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import mysql

from butler import StorageError

__all__ = [
    "DROP_AFTER_COMMIT",
    "SCHEMA_VERSION",
    "chunks",
    "datasets",
    "drop_table",
    "drop_table_now",
    "ensure_indexes",
    "is_table_of",
    "key_hash",
    "key_prefix_expression",
    "metadata",
    "new_table_name",
    "repository",
    "transactional_ddl",
]

#: Version of this layout, recorded in ``butler_repository``.
SCHEMA_VERSION = 1

#: MySQL/MariaDB: utf8mb4 everywhere, so any Unicode key or string column fits.
MYSQL_TABLE_ARGS = {"mysql_charset": "utf8mb4", "mariadb_charset": "utf8mb4"}

#: Binary column large enough for a chunk on every backend (BLOB is 64 KiB on MySQL).
Blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
#: Long text (JSON documents, keys) on every backend.
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")

metadata = sa.MetaData()

repository = sa.Table(
    "butler_repository",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", LongText, nullable=False),
    mysql_charset="utf8mb4",
)

datasets = sa.Table(
    "butler_datasets",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("key", LongText, nullable=False),
    sa.Column("dataset_type", sa.String(128), nullable=False, index=True),
    sa.Column("data_id", LongText, nullable=False),
    sa.Column("format", sa.String(64), nullable=False),
    sa.Column("python_type", sa.String(512), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64)),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("metadata", LongText, nullable=False),
    sa.Column("blob_id", sa.String(32)),
    sa.Column("chunk_size", sa.Integer),
    sa.Column("table_name", sa.String(64)),
    mysql_charset="utf8mb4",
)

chunks = sa.Table(
    "butler_chunks",
    metadata,
    sa.Column("blob_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", Blob, nullable=False),
    mysql_charset="utf8mb4",
)


#: Name of the index listings by key prefix use.
KEY_PREFIX_INDEX = "butler_datasets_key_prefix"

#: Characters of the key the prefix index holds on PostgreSQL (a B-tree entry must stay
#: under ~2.7 kB, and keys have no length limit) and on MariaDB (InnoDB's 3072-byte keys).
KEY_PREFIX_WIDTH = {"postgresql": 256, "mysql": 255, "mariadb": 255}

#: ``CREATE INDEX`` per backend; PostgreSQL's expression must be the one
#: `key_prefix_expression` renders, or the planner cannot use the index.
_KEY_PREFIX_DDL = {
    "sqlite": f'CREATE INDEX IF NOT EXISTS {KEY_PREFIX_INDEX} ON butler_datasets ("key")',
    "postgresql": (
        f"CREATE INDEX IF NOT EXISTS {KEY_PREFIX_INDEX} "
        f'ON butler_datasets ((left("key", {KEY_PREFIX_WIDTH["postgresql"]}) COLLATE "C"))'
    ),
    "mysql": (
        f"CREATE INDEX {KEY_PREFIX_INDEX} ON butler_datasets (`key`({KEY_PREFIX_WIDTH['mysql']}))"
    ),
}

#: Whether the prefix index exists (one catalog row per backend).
_KEY_PREFIX_PRESENT = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = :name",
    "postgresql": "SELECT 1 WHERE to_regclass(:name) IS NOT NULL",
    "mysql": (
        "SELECT 1 FROM information_schema.statistics WHERE table_schema = DATABASE() "
        "AND table_name = 'butler_datasets' AND index_name = :name"
    ),
}


#: Seconds a repository opener waits for the lock ``CREATE INDEX`` needs before giving up
#: (the next opener tries again).
_INDEX_LOCK_WAIT = 2


def key_prefix_expression(dialect: str) -> tuple[Any, int]:
    """``(expression, width)``: what the prefix index of ``dialect`` holds, as a SQL
    expression comparing in code-point order, and how many leading characters of the key it
    keeps (SQLite and PostgreSQL only; MariaDB matches with ``LIKE``)."""
    if dialect == "postgresql":
        width = KEY_PREFIX_WIDTH["postgresql"]
        # A literal width: a bound parameter would not match the index expression.
        return sa.func.left(datasets.c.key, sa.literal_column(str(width))).collate("C"), width
    return datasets.c.key, 2**31


def ensure_indexes(conn: sa.Connection) -> bool:
    """Create the indexes butler-db added after the first schema (idempotent); True when
    they exist afterwards.

    Safe under concurrent openers: a creator losing a race, a lock held by a writer for
    more than 2 s (SQLite's database lock, the table's lock elsewhere), and a user without
    the privilege to create indexes all leave the repository as it was (listings then scan:
    slower, still correct; the next opener tries again).
    """
    dialect = "mysql" if conn.dialect.name == "mariadb" else conn.dialect.name
    if dialect not in _KEY_PREFIX_DDL:
        return False
    if _has_key_prefix_index(conn, dialect):
        return True
    dbapi = conn.connection.dbapi_connection
    if dialect == "sqlite" and dbapi is not None:  # wait 2 s for a writer, not 60
        dbapi.execute(f"PRAGMA busy_timeout = {_INDEX_LOCK_WAIT * 1000}")
    try:
        with conn.execution_options(sqlite_begin="IMMEDIATE").begin():
            if dialect == "postgresql":
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{_INDEX_LOCK_WAIT}s'")
            elif dialect == "mysql":
                conn.exec_driver_sql(f"SET SESSION lock_wait_timeout = {_INDEX_LOCK_WAIT}")
            try:
                conn.exec_driver_sql(_KEY_PREFIX_DDL[dialect])
            finally:
                if dialect == "mysql":
                    conn.exec_driver_sql("SET SESSION lock_wait_timeout = DEFAULT")
    except exc.SQLAlchemyError:
        pass  # lost a race (duplicate name), lock wait, no privilege: nothing changed
    finally:
        if dialect == "sqlite" and dbapi is not None:
            from ._engine import SQLITE_BUSY_TIMEOUT

            dbapi.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
    return _has_key_prefix_index(conn, dialect)


def _has_key_prefix_index(conn: sa.Connection, dialect: str) -> bool:
    try:
        # a read (the connection's options may still ask SQLite for its write lock)
        with conn.execution_options(sqlite_begin="DEFERRED").begin():
            row = conn.execute(sa.text(_KEY_PREFIX_PRESENT[dialect]), {"name": KEY_PREFIX_INDEX})
            return row.first() is not None
    except exc.SQLAlchemyError:
        return False


def key_hash(key: str) -> str:
    """The unique, fixed-width index value of a storage key."""
    return hashlib.sha256(key.encode()).hexdigest()


#: ``Connection.info`` key listing tables to drop once the transaction has committed.
DROP_AFTER_COMMIT = "butler_drop_after_commit"

#: Prefix of every table holding a dataset.
TABLE_PREFIX = "bt_"

_UNSAFE = re.compile(r"[^a-z0-9_]+")

#: Every table name butler-db ever generated (the last line of defence before a DROP).
_ANY_DATASET_TABLE = re.compile(r"bt_[a-z0-9_]{1,53}_[0-9a-f]{10}")


def _stem(key: str, width: int) -> str:
    """The readable part of a table name: the key without extension, sanitised."""
    stem = key.rsplit(".", 1)[0] if "." in key.rsplit("/", 1)[-1] else key
    clean = _UNSAFE.sub("_", stem.lower()).strip("_")[:width].rstrip("_")
    return clean or "dataset"


def new_table_name(key: str) -> str:
    """A fresh table name for the dataset at ``key``:
    ``bt_<sanitised key>_<key hash>_<random>``, at most 51 characters of ``[a-z0-9_]``
    (within PostgreSQL's 63 and MySQL's 64).

    The hash ties the table to its key: `is_table_of` recognises the tables of a key and
    nothing else, so a tampered ``table_name`` can never make butler use another table.
    """
    return f"{TABLE_PREFIX}{_stem(key, 24)}_{key_hash(key)[:12]}_{secrets.token_hex(5)}"


def is_table_of(key: str, name: Any) -> bool:
    """True when ``name`` is a table name butler-db generates for the dataset at ``key``.

    Tables of butler-db before 0.2 (``bt_<sanitised key>_<random>``, without the hash) are
    recognised too: still only tables named after this very key.
    """
    if not isinstance(name, str) or not _ANY_DATASET_TABLE.fullmatch(name):
        return False
    current = f"{TABLE_PREFIX}{_stem(key, 24)}_{key_hash(key)[:12]}_"
    legacy = f"{TABLE_PREFIX}{_stem(key, 40)}_"
    suffix = re.compile(r"[0-9a-f]{10}")
    return any(
        name.startswith(prefix) and suffix.fullmatch(name[len(prefix) :])
        for prefix in (current, legacy)
    )


def transactional_ddl(conn: sa.Connection) -> bool:
    """True where DDL takes part in transactions (PostgreSQL, SQLite; not MySQL/MariaDB)."""
    return conn.dialect.name not in ("mysql", "mariadb")


def drop_table(conn: sa.Connection, name: str) -> None:
    """Drop a dataset's table as part of the caller's transaction (after it, on MySQL)."""
    if transactional_ddl(conn):
        drop_table_now(conn, name)
    else:
        conn.info.setdefault(DROP_AFTER_COMMIT, []).append(name)


def drop_table_now(conn: sa.Connection, name: str) -> None:
    """``DROP TABLE IF EXISTS`` (auto-committed if no transaction is open).

    Raises
    ------
    StorageError
        If ``name`` is not a name butler-db generates: nothing else is ever dropped.
    """
    if not _ANY_DATASET_TABLE.fullmatch(name):
        raise StorageError(f"refusing to drop table {name!r:.100}: butler-db did not create it")
    table = sa.Table(name, sa.MetaData())
    if conn.in_transaction():
        table.drop(conn, checkfirst=True)
    else:
        with conn.begin():
            table.drop(conn, checkfirst=True)
