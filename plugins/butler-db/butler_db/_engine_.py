"""Database URLs and SQLAlchemy engines: driver defaults, secrets kept out of every message.

The real URL (with its password) lives only inside the engine; everything butler shows
(``uri()``, reprs, error messages, logs) uses the URL rendered with ``hide_password=True``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine, make_url

from butler import DatasetExistsError, StorageError

__all__ = ["SQLITE_BUSY_TIMEOUT", "create_engine", "normalise_url", "safe_url", "translate"]

#: Driver used when a URL names only the database (``postgresql://``).
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

#: Seconds a SQLite writer waits for the database lock before failing.
SQLITE_BUSY_TIMEOUT = 60.0


def normalise_url(root: str, password: str | None = None) -> URL:
    """Parse ``root`` into a SQLAlchemy URL with a default driver and an absolute SQLite path.

    Raises
    ------
    StorageError
        If the URL is malformed or names an in-memory SQLite database.
    """
    try:
        url = make_url(root)
    except (exc.ArgumentError, ValueError) as e:
        reason = str(e).replace(root, _strip_secret(root))
        raise StorageError(f"invalid database URL {_strip_secret(root)!r}: {reason}") from None
    if url.drivername in DEFAULT_DRIVERS:
        url = url.set(drivername=DEFAULT_DRIVERS[url.drivername])
    if password is not None:
        url = url.set(password=password)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise StorageError(
                f"{safe_url(url)!r} is an in-memory SQLite database, private to one connection; "
                f"use a file (sqlite:///path/repo.db) or the 'memory://' storage"
            )
        url = url.set(database=os.path.abspath(os.path.expanduser(url.database)))
    elif backend in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def safe_url(url: URL) -> str:
    """The URL as text with its password masked (``***``)."""
    return url.render_as_string(hide_password=True)


def _strip_secret(text: str) -> str:
    """Best-effort masking of ``user:password@`` in a URL that did not parse."""
    scheme, sep, rest = text.partition("://")
    if not sep or "@" not in rest:
        return text
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else text


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's BEGIN events drive transactions (pysqlite's own handling is broken
    # for SAVEPOINT and snapshot reads), then turn on WAL, a busy timeout and foreign keys.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Writers take the write lock up front (BEGIN IMMEDIATE) so that two writers never
    # deadlock upgrading read locks; readers get a snapshot (BEGIN DEFERRED).
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")


def create_engine(url: URL, **options: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, a busy timeout and explicit BEGINs."""
    kwargs: dict[str, Any] = {"pool_pre_ping": url.get_backend_name() != "sqlite"}
    kwargs.update(options)
    if url.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
        connect_args.setdefault("check_same_thread", False)
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return sa.create_engine(url, **kwargs)


def _message(error: BaseException, password: str | None) -> str:
    """A one-line, password-free description of a database error."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error)
    text = " ".join(line.strip() for line in text.strip().splitlines()[:3] if line.strip())
    text = text.split("(Background on this error")[0].strip()
    if password:
        text = text.replace(password, "***")
    return text or type(error).__name__


def is_unique_violation(error: exc.IntegrityError) -> bool:
    """True when an integrity error is a unique / primary key conflict."""
    orig = error.orig
    code = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)
    if code == "23505":  # PostgreSQL unique_violation
        return True
    args = getattr(orig, "args", ())
    if args and args[0] in (1062, 1586):  # MySQL ER_DUP_ENTRY
        return True
    return "UNIQUE constraint failed" in str(orig)  # SQLite


@contextlib.contextmanager
def translate(
    action: str, where: str, password: str | None = None, *, exists: str | None = None
) -> Iterator[None]:
    """Turn SQLAlchemy errors into `StorageError` (or `DatasetExistsError`) without secrets.

    Parameters
    ----------
    action, where
        ``"cannot {action} {where!r}: {reason}"``.
    password
        Masked if a driver ever echoes it.
    exists
        When given, a unique-constraint violation becomes `DatasetExistsError` with this text.
    """
    try:
        yield
    except exc.IntegrityError as e:
        if exists is not None and is_unique_violation(e):
            raise DatasetExistsError(exists) from None
        raise StorageError(f"cannot {action} {where!r}: {_message(e, password)}") from None
    except exc.SQLAlchemyError as e:
        raise StorageError(f"cannot {action} {where!r}: {_message(e, password)}") from None
