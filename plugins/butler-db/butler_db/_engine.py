"""Database URLs and SQLAlchemy engines: driver defaults, secrets kept out of every message.

A URL carries secrets in two places: the userinfo password (``user:pw@host``) and query
parameters (``?password=pw``, ``?sslpassword=...``, ``?token=...``). `safe_url` is the one way
butler shows a URL: both kinds are masked (``***``). The engine is built from a URL without
the secret query parameters (they reach the driver as ``connect_args``), so SQLAlchemy's own
reprs, logs and errors show nothing more than ``user:***@host``; `scrub` removes every secret
value from a driver's error text.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Engine, make_url

from butler import DatasetExistsError, StorageError, mask_url
from butler.storage import is_secret_key

__all__ = [
    "SQLITE_BUSY_TIMEOUT",
    "check_engine_options",
    "connect",
    "create_engine",
    "is_retryable",
    "is_secret_key",
    "is_unique_violation",
    "normalise_url",
    "safe_url",
    "scrub",
    "secret_values",
    "split_secrets",
    "translate",
]

#: Driver used when a URL names only the database (``postgresql://``).
DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

#: Seconds a SQLite writer waits for the database lock before failing.
SQLITE_BUSY_TIMEOUT = 60.0

#: Seconds a pooled server connection may sit unused before its next checkout pings the
#: server first (a connection in steady use is not pinged: a ping is a round trip).
PING_AFTER_IDLE = 1.0

#: ``ConnectionPoolEntry.info`` key: when the connection went back to the pool.
_IDLE_SINCE = "butler_idle_since"

#: ``ConnectionPoolEntry.info`` key: True when the connection's last transaction ended
#: (commit or rollback) and nothing ran since (MariaDB: no reset ROLLBACK is needed).
_ENDED = "butler_transaction_ended"

#: Query keys that mean "the password" to the drivers: the ``password=`` option replaces them.
_PASSWORD_KEYS = ("password", "passwd")

#: Placeholder rendered in place of a secret, then shown as ``***`` (it needs no escaping).
_MASK_TOKEN = "BUTLERMASKEDSECRET"


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
        reason = str(e).replace(root, mask_url(root))
        raise StorageError(f"invalid database URL {mask_url(root)!r}: {reason}") from None
    if url.drivername in DEFAULT_DRIVERS:
        url = url.set(drivername=DEFAULT_DRIVERS[url.drivername])
    if password is not None:
        # The option wins over a password in the userinfo *and* one in the query string.
        url = url.set(password=password).difference_update_query(_PASSWORD_KEYS)
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
    """The URL as text with every credential masked: ``user:***@host/db?password=***``.

    The one way butler shows a database URL (``uri()``, reprs, every error message).
    """
    keys = [k for k in url.query if is_secret_key(k)]
    if keys:
        url = url.update_query_dict({k: _MASK_TOKEN for k in keys})
    return url.render_as_string(hide_password=True).replace(_MASK_TOKEN, "***")


def secret_values(url: URL) -> list[str]:
    """Every secret a URL holds (its password and the values of secret query parameters)."""
    values = [url.password] if isinstance(url.password, str) and url.password else []
    for key, value in url.query.items():
        if is_secret_key(key):
            values += [v for v in ((value,) if isinstance(value, str) else value) if v]
    return values


def split_secrets(url: URL) -> tuple[URL, dict[str, str]]:
    """``url`` without its secret query parameters, and those parameters (last value wins).

    Both dialects butler drives (psycopg, PyMySQL) pass query parameters to the driver's
    ``connect()`` as keywords, which is exactly what ``connect_args`` does.
    """
    secret = {
        k: (v if isinstance(v, str) else v[-1]) for k, v in url.query.items() if is_secret_key(k)
    }
    return (url.difference_update_query(list(secret)) if secret else url), secret


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (raw or URL-encoded) replaced by ``***``."""
    forms = {f for s in secrets if s for f in (s, quote_plus(s), quote(s, safe=""))}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


#: ``create_engine`` options checked here, so a mistyped value fails when the storage is
#: opened (SQLAlchemy would accept it and fail at the first connection, or never).
_INT_OPTIONS = frozenset(
    {
        "insertmanyvalues_page_size",
        "label_length",
        "max_identifier_length",
        "max_overflow",
        "pool_recycle",
        "pool_size",
        "query_cache_size",
    }
)
_NUMBER_OPTIONS = frozenset({"pool_timeout"})
_BOOL_OPTIONS = frozenset(
    {"hide_parameters", "implicit_returning", "pool_pre_ping", "pool_use_lifo",
     "use_insertmanyvalues"}
)  # fmt: skip
_MAPPING_OPTIONS = frozenset({"connect_args", "execution_options"})


def check_engine_options(options: Any) -> dict[str, Any]:
    """``engine_options`` as a dict, with the types of well-known options checked.

    Raises
    ------
    StorageError
        Naming the offending option (values are never shown: they may hold credentials).
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise StorageError(
            f"engine_options must be a mapping of sqlalchemy.create_engine() keywords, "
            f"not a {type(options).__name__!r}"
        )
    checked = dict(options)
    for name, value in checked.items():
        if not isinstance(name, str):
            raise StorageError(f"engine_options keys must be strings, not {name!r}")
        expected = None
        if name in _INT_OPTIONS and not _is_int(value):
            expected = "an integer"
        elif name in _NUMBER_OPTIONS and not (_is_int(value) or isinstance(value, float)):
            expected = "a number"
        elif name in _BOOL_OPTIONS and not isinstance(value, bool):
            expected = "True or False"
        elif name in _MAPPING_OPTIONS and not isinstance(value, Mapping):
            expected = "a mapping"
        if expected is not None:
            raise StorageError(
                f"engine_options[{name!r}] must be {expected}, not a {type(value).__name__!r}"
            )
    return checked


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


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
    # deadlock upgrading read locks; readers get a snapshot (BEGIN DEFERRED); a connection
    # running one read statement needs none (NONE: SQLite runs it in its own snapshot).
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    if mode != "NONE":
        conn.exec_driver_sql(f"BEGIN {'IMMEDIATE' if mode == 'IMMEDIATE' else 'DEFERRED'}")


def create_engine(url: URL, **options: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL mode, a busy timeout and explicit BEGINs.

    Secret query parameters are moved to ``connect_args``: the engine's URL (shown by
    SQLAlchemy in reprs, logs and some errors) keeps none of them.

    Raises
    ------
    StorageError
        If SQLAlchemy refuses an option (``engine_options`` names it).
    """
    url, secret = split_secrets(url)
    kwargs = dict(options)
    mysql = url.get_backend_name() in ("mysql", "mariadb")
    if mysql and "pool_reset_on_return" not in kwargs:
        kwargs["pool_reset_on_return"] = None  # _reset_unless_ended does it
    connect_args = {**secret, **dict(kwargs.pop("connect_args", None) or {})}
    sqlite = url.get_backend_name() == "sqlite"
    if sqlite:
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
        connect_args.setdefault("check_same_thread", False)
    try:
        engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    except (exc.ArgumentError, TypeError, ValueError) as e:
        given = f" with engine_options {sorted(options)}" if options else ""
        raise StorageError(
            f"cannot create a SQLAlchemy engine for {safe_url(url)!r}{given}: "
            f"{_message(e, secret_values(url) + list(secret.values()))}; engine_options are "
            f"sqlalchemy.create_engine() keywords"
        ) from None
    if sqlite:
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    elif "pool_pre_ping" not in options:
        _ping_when_idle(engine)
    if mysql and kwargs["pool_reset_on_return"] is None:
        _reset_unless_ended(engine)
    return engine


def _reset_unless_ended(engine: Engine) -> None:
    """MariaDB: roll a connection back when it returns to the pool only if a transaction
    may be open on it. SQLAlchemy's pool sends ``ROLLBACK`` after every committed
    transaction (PyMySQL sends whatever it is asked): one more round trip per write."""

    def ended(conn: sa.Connection, *_: Any) -> None:
        conn.info[_ENDED] = True

    def started(conn: sa.Connection, *_: Any) -> None:
        conn.info[_ENDED] = False

    def reset(dbapi_conn: Any, record: Any, _state: Any) -> None:
        if record is None or not record.info.get(_ENDED):
            dbapi_conn.rollback()

    def checkout(_dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        record.info[_ENDED] = False  # a raw DB-API user may leave anything open

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "begin", started)
    event.listen(engine, "before_cursor_execute", started)
    event.listen(engine, "commit", ended)
    event.listen(engine, "rollback", ended)
    event.listen(engine, "reset", reset)


def _ping_when_idle(engine: Engine) -> None:
    """Ping a server connection at checkout only when it sat in the pool longer than
    `PING_AFTER_IDLE` (SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more
    round trip per get and per put). A dead connection is replaced before use, as with
    ``pool_pre_ping``; one killed less than a second after its last use fails its next
    statement with a `StorageError`, and the pool then replaces every connection."""

    def checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as e:  # any failure: the pool retries on a new connection
            raise exc.DisconnectionError(f"ping failed: {type(e).__name__}") from None

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def _message(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """A one-line, secret-free description of a database error."""
    orig = getattr(error, "orig", None)
    text = str(orig if orig is not None else error)
    text = " ".join(line.strip() for line in text.strip().splitlines()[:3] if line.strip())
    text = text.split("(Background on this error")[0].strip()
    return scrub(text, secrets) or type(error).__name__


def _sqlstate(error: exc.DBAPIError) -> str | None:
    orig = error.orig
    return getattr(orig, "sqlstate", None) or getattr(getattr(orig, "diag", None), "sqlstate", None)


def is_unique_violation(error: exc.IntegrityError) -> bool:
    """True when an integrity error is a unique / primary key conflict."""
    if _sqlstate(error) == "23505":  # PostgreSQL unique_violation
        return True
    args = getattr(error.orig, "args", ())
    if args and args[0] in (1062, 1586):  # MySQL ER_DUP_ENTRY
        return True
    return "UNIQUE constraint failed" in str(error.orig)  # SQLite


def is_retryable(error: BaseException) -> bool:
    """True for a transaction the server aborted to resolve a conflict (try it again):
    serialization failures and deadlocks (PostgreSQL, MariaDB), lock wait timeouts
    (MariaDB), a busy SQLite database, and unique violations of concurrent first inserts."""
    if not isinstance(error, exc.DBAPIError):
        return False
    if isinstance(error, exc.IntegrityError):
        return is_unique_violation(error)
    if _sqlstate(error) in ("40001", "40P01"):
        return True
    args = getattr(error.orig, "args", ())
    if args and args[0] in (1205, 1213):  # ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK
        return True
    return "database is locked" in str(error.orig)


@contextlib.contextmanager
def translate(
    action: str, where: str, secrets: Iterable[str] = (), *, exists: str | None = None
) -> Iterator[None]:
    """Turn SQLAlchemy errors into `StorageError` (or `DatasetExistsError`) without secrets.

    Parameters
    ----------
    action, where
        ``"cannot {action} {where!r}: {reason}"``.
    secrets
        Masked wherever a driver echoes them.
    exists
        When given, a unique-constraint violation becomes `DatasetExistsError` with this text.
    """
    try:
        yield
    except exc.IntegrityError as e:
        if exists is not None and is_unique_violation(e):
            raise DatasetExistsError(exists) from None
        raise StorageError(f"cannot {action} {where!r}: {_message(e, secrets)}") from None
    except exc.SQLAlchemyError as e:
        raise StorageError(f"cannot {action} {where!r}: {_message(e, secrets)}") from None


def connect(engine: Engine, where: str, secrets: Iterable[str] = ()) -> sa.Connection:
    """``engine.connect()``; a driver refusing its connection arguments (PyMySQL raises
    `TypeError` for an unknown URL query parameter) is a `StorageError`, not a raw error."""
    try:
        return engine.connect()
    except (TypeError, ValueError) as e:
        raise StorageError(
            f"cannot connect to {where!r}: the driver refused its connection arguments "
            f"(URL query parameters, engine_options['connect_args']): {_message(e, secrets)}"
        ) from None
