"""The tables of a database repository (SQLAlchemy Core definitions).

``butler_repository``
    Key/value rows: ``schema_version`` and ``policy`` (the repository policy as JSON).
``butler_datasets``
    One row per dataset: key (unique through ``key_hash``), dataset type, data ID (JSON),
    format, concrete python type, size, sha256, creation time, the full metadata (JSON),
    and either the ``blob_id`` of its bytes or the ``table_name`` of its SQL table.
``butler_chunks``
    The bytes of blob datasets, ``chunk_size`` bytes per row, ordered by ``seq``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from butler import StorageError

__all__ = [
    "DROP_AFTER_COMMIT",
    "SCHEMA_VERSION",
    "chunks",
    "datasets",
    "drop_table",
    "drop_table_now",
    "is_table_of",
    "key_hash",
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
