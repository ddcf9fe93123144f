"""`DatabaseStorage`: a butler repository inside a SQL database (SQLite, PostgreSQL, MariaDB).

Every dataset is one row of ``butler_datasets``; its bytes are ~1 MiB rows of
``butler_chunks`` (any format works through file objects), or, for the ``sql-table``
format, a real SQL table named in the row. A write is one transaction: the chunks are
streamed in, then the dataset row is inserted (or swapped, when overwriting) and the
transaction commits — readers see the old dataset or the new one, never a part, and a
killed writer's transaction is rolled back by the server (or by SQLite's WAL recovery).

Round trips: a small get is one query (`metadata` reads the row and, for a blob of one
chunk of at most `INLINE_BYTES`, its bytes; the `open` that follows on the same thread
uses them); a put is one write transaction (chunk rows, dataset row, commit). Statements
are built once (`butler_db._queries`).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy import exc

from butler import ButlerError, DatasetExistsError, StorageError
from butler.storage import (
    POLICY_KEY,
    CountingWriter,
    Index,
    LimitError,
    ProgressCallback,
    Storage,
    is_reserved_key,
    parse_size,
)

from . import _queries as q
from . import _schema as schema
from . import _views as views
from ._blob import DEFAULT_CHUNK_SIZE, ChunkWriter
from ._engine import (
    check_engine_options,
    connect,
    create_engine,
    is_secret_key,
    is_unique_violation,
    normalise_url,
    safe_url,
    secret_values,
    translate,
)
from ._index import BACKENDS, SqlAlchemyIndex
from ._opening import INLINE_BYTES, MAX_CHUNK_SIZE, OpeningMixin
from ._plugin import butler_storages
from ._repository import RepositoryMixin
from ._schema import DROP_AFTER_COMMIT, drop_table, drop_table_now

__all__ = ["DatabaseStorage"]

#: Attempts at swapping a dataset row when concurrent overwriters collide.
_SWAP_ATTEMPTS = 8

#: Seconds a row `DatabaseStorage.read_small` could not use stays for the `metadata` call
#: that follows it in the same get.
_HANDOFF_SECONDS = 1.0

#: Options of a connection running one read statement outside any transaction: a single
#: statement reads a consistent snapshot on every backend, so the BEGIN and ROLLBACK round
#: trips are saved (SQLite: no ``BEGIN``; PostgreSQL: psycopg's autocommit, set on the
#: client). MariaDB: PyMySQL's autocommit would be a ``SET`` round trip each way, more than
#: the ``ROLLBACK`` it saves.
_ONE_STATEMENT = {
    "sqlite": {"sqlite_begin": "NONE"},
    "postgresql": {"isolation_level": "AUTOCOMMIT"},
}

#: Metadata keys kept in their own columns of ``butler_datasets``.
_COLUMNS = ("format", "python_type", "dataset_type", "data_id", "created", "size", "sha256")


class DatabaseStorage(OpeningMixin, RepositoryMixin, Storage, declared_by=butler_storages):
    """Datasets in a SQL database reached through SQLAlchemy.

    Parameters
    ----------
    root
        Database URL: ``sqlite:///path/repo.db``, ``postgresql+psycopg://user@host/db``
        (``postgresql://`` uses psycopg), ``mysql+pymysql://user@host/db`` (``mysql://`` and
        ``mariadb://`` use PyMySQL).
    password
        Password to connect with, instead of (or overriding) the one in the URL. Like any
        password in the URL (``user:pw@host`` or ``?password=pw``, ``?sslpassword=``,
        ``?token=``...) it is used for connecting only and never shown.
    chunk_size
        Bytes per chunk row for new datasets (default 1 MiB; ``"4MiB"`` works too).
    engine_options
        Extra keyword arguments for `sqlalchemy.create_engine` (``pool_size``...).

    Raises
    ------
    StorageError
        If the URL is malformed, an option has the wrong type or value (naming it), or the
        driver is missing.

    Notes
    -----
    Read hints (`butler.storage.ReadHints`) are accepted and ignored: reads fetch whole
    chunk rows, a chunk or a run of chunks per query.

    `open` right after `metadata` of the same key, on the same thread, returns the bytes
    of the row `metadata` returned (fetched by the same query, for blobs of one chunk up
    to `INLINE_BYTES`): the metadata and the bytes are one snapshot. Any other call on
    the storage from that thread in between forgets them.
    """

    #: `Butler.put` lets the unique ``key_hash`` refuse an existing dataset inside the
    #: write transaction instead of asking first: that question is a round trip of its own.
    cheap_exists = False

    def __init__(
        self,
        root: str,
        *,
        password: str | None = None,
        chunk_size: int | str = DEFAULT_CHUNK_SIZE,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        if password is not None and not isinstance(password, str):
            raise StorageError(f"password must be a string, not a {type(password).__name__!r}")
        url = normalise_url(str(root), password)
        super().__init__(safe_url(url))
        self._url = url  # holds the secrets: only the engine ever sees it
        self._secrets = secret_values(url)
        self.backend = url.get_backend_name()
        self.chunk_size = _check_chunk_size(chunk_size, self.root)
        options = check_engine_options(engine_options)
        # A password handed to the driver through connect_args is a secret like any other.
        self._secrets += [
            v
            for k, v in dict(options.get("connect_args") or {}).items()
            if isinstance(k, str) and is_secret_key(k) and isinstance(v, str) and v
        ]
        with self._translate("connect to"):
            try:
                self.engine = create_engine(url, **options)
            except ImportError as e:
                raise StorageError(
                    f"cannot open {self.root!r}: the database driver is not installed ({e}); "
                    f"install butler-db[postgresql] or butler-db[mysql]"
                ) from None
        self._schema_checked = False
        #: ``row``: ``(key, row)`` fetched by this thread's last `metadata`, for its `open`.
        self._prefetched = threading.local()
        #: Dataset write transactions of this storage ended so far (on any thread): a row
        #: `read_small` hands to `metadata` is taken only if none ended in between.
        self._writes = 0
        self._writes_lock = threading.Lock()
        self._one_statement = _ONE_STATEMENT.get(self.backend, {})

    # -- helpers -------------------------------------------------------------------------

    @property
    def url(self) -> sa.URL:
        """The database URL with every credential masked (``***``), for display."""
        return sa.engine.make_url(self.root)

    def uri(self, key: str = "") -> str:
        return f"{self.root}#{key}" if key else self.root

    def __repr__(self) -> str:
        return f"DatabaseStorage({self.root!r})"

    def _translate(self, action: str, key: str = "", **kw: Any) -> Any:
        return translate(action, self.uri(key), self._secrets, **kw)

    def _connect(self, key: str = "") -> sa.Connection:
        return connect(self.engine, self.uri(key), self._secrets)

    @contextlib.contextmanager
    def _write_transaction(self, action: str, key: str = "", **kw: Any) -> Iterator[sa.Connection]:
        """A connection in a write transaction (SQLite: ``BEGIN IMMEDIATE``), committed on
        success and rolled back on any error."""
        self._forget_prefetched()
        with self._translate(action, key, **kw), self._connect(key) as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            try:
                with conn.begin():
                    yield conn
            finally:
                # After the commit (or rollback): a row read before it is stale for every
                # thread's `_take_missed`.
                with self._writes_lock:
                    self._writes += 1
                pending = conn.info.pop(DROP_AFTER_COMMIT, [])
                views_to_sync = conn.info.pop(views.SYNC_AFTER_COMMIT, [])
            # MySQL commits implicitly on DDL, so views are re-pointed (first: they may
            # select from an old table) and tables dropped after the commit.
            for view_key in dict.fromkeys(views_to_sync):
                with conn.begin():
                    views.sync_view(conn, view_key, lambda c, k=view_key: self._table_now(c, k))
            for name in pending:
                drop_table_now(conn, name)

    def _table_now(self, conn: sa.Connection, key: str) -> str | None:
        """The verified table the dataset row of ``key`` names now (None if none)."""
        row = self._row(conn, key)
        try:
            return None if row is None else self.dataset_table(key, row)
        except StorageError:  # a tampered row: its view goes, nothing else is touched
            return None

    def _update_view(self, conn: sa.Connection, key: str, table: str | None) -> None:
        """Point the stable view of ``key`` at ``table`` (drop it when None): in the
        transaction where DDL is transactional, right after the commit on MySQL."""
        if not schema.transactional_ddl(conn):
            conn.info.setdefault(views.SYNC_AFTER_COMMIT, []).append(key)
        elif table is not None:
            views.point_view(conn, key, table)
        else:
            views.drop_view(conn, key)

    @contextlib.contextmanager
    def _read(self, action: str, key: str = "") -> Iterator[sa.Connection]:
        self._forget_prefetched()
        with self._translate(action, key), self._connect(key) as conn:
            yield conn

    @contextlib.contextmanager
    def _one_read(self, action: str, key: str = "") -> Iterator[sa.Connection]:
        """A connection for a single read statement, outside any transaction
        (`_ONE_STATEMENT`): one round trip."""
        self._forget_prefetched()
        with self._translate(action, key), self._connect(key) as conn:
            yield conn.execution_options(**self._one_statement) if self._one_statement else conn

    def _first_row(self, action: str, key: str, statement: Any, params: dict[str, Any]) -> Any:
        """The first row of one read statement outside any transaction (`_one_read`); on
        SQLite, unless something listens for cursor events, without a `sa.Connection`
        (`_queries.sqlite_first_row_pooled`: half the time of a small get). With the
        engine logging statements (``echo``, or the ``sqlalchemy.engine`` logger at INFO),
        SQLAlchemy runs it, so it is logged as every other statement."""
        if self.backend == "sqlite":
            if self.engine._should_log_info():
                with self._one_read(action, key) as conn:
                    return conn.execute(statement, params).first()
            if not q.has_cursor_listeners(self.engine):
                self._forget_prefetched()
                with self._translate(action, key):
                    return q.sqlite_first_row_pooled(self.engine, statement, params)
        with self._one_read(action, key) as conn:
            return q.first_row(conn, statement, params)

    def _row(self, conn: sa.Connection, key: str, *, lock: bool = False) -> Any:
        query = q.ROW_LOCKED if lock and self.backend != "sqlite" else q.ROW
        return conn.execute(query, {"key_hash": schema.key_hash(key)}).first()

    def _require(self, conn: sa.Connection, key: str, *, lock: bool = False) -> Any:
        self.check_key(key)
        row = self._row(conn, key, lock=lock)
        if row is None:
            raise self.not_found(key)
        return row

    def storage_error(self, action: str, key: str, error: BaseException) -> StorageError:
        """A secret-free `StorageError` for a failure of ``action`` on ``key``."""
        from ._engine import _message

        return StorageError(f"cannot {action} {self.uri(key)!r}: {_message(error, self._secrets)}")

    def dataset_table(self, key: str, row: Any) -> str | None:
        """The SQL table of the dataset row of ``key`` (``None`` for blobs), verified to be a
        table butler-db made for ``key``: the row is untrusted, and a tampered
        ``table_name`` must never make butler read, write or drop another table.

        Raises
        ------
        StorageError
            If the row names any other table.
        """
        name = row.table_name
        if name is None:
            return None
        if not schema.is_table_of(key, name):
            raise StorageError(
                f"the row of {self.uri(key)!r} in butler_datasets names the table {name!r:.100}, "
                f"which butler-db did not create for this dataset; refusing to use it (the "
                f"row was altered outside butler: restore it or remove the row by hand)"
            )
        return str(name)

    # -- the dataset index -------------------------------------------------------------------

    def default_index(self, repository: str) -> Index | None:
        """The dataset index of ``repository`` in this database: tables ``bidx_*`` and
        ``butler_index_catalog``, on this storage's engine (closing the storage disposes it).

        The index of the repository stored here (``index: embedded``), or, for a storage
        opened on an index URL, of another repository (S3...) bound by its id. ``None`` for a
        database other than SQLite, PostgreSQL and MariaDB/MySQL.
        """
        if self.backend not in BACKENDS:
            return None
        return SqlAlchemyIndex(self, repository)

    # -- reading -----------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        self.check_key(key)
        if not self._check_schema():
            return False
        params = {"key_hash": schema.key_hash(key)}
        return self._first_row("look up", key, q.EXISTS, params) is not None

    def metadata(self, key: str) -> dict[str, Any]:
        """The metadata committed with the dataset at ``key``; for a blob of one chunk up to
        `INLINE_BYTES`, the same query fetches its bytes for the `open` that follows."""
        self.check_key(key)
        self._require_schema(key)
        row = self._take_missed(key)
        if row is None:
            params = {"key_hash": schema.key_hash(key), "inline": INLINE_BYTES}
            row = self._first_row("read the metadata of", key, q.ROW_WITH_SMALL_CHUNK, params)
        if row is None:
            raise self.not_found(key)
        meta = _row_metadata(row, self.uri(key))
        self._remember(key, row)
        return meta

    def read_small(self, key: str, max_bytes: int) -> tuple[dict[str, Any], bytes] | None:
        """A blob of one chunk of at most ``max_bytes`` with its metadata: the same single
        query as `metadata`; ``None`` for anything else (a SQL table, several chunks, a
        row that does not match its chunk, no such row, a key `check_key` refuses: the
        general path then reads again and reports).

        Raises
        ------
        StorageError
            If the database fails the query (locked past the busy timeout, pool
            exhausted): the general path would wait and fail the same way again. A
            connection the server dropped is not an error here (it is invalidated: the
            general path reads on a new one).
        """
        try:
            self.check_key(key)
        except ButlerError:
            return None
        if not self._check_schema():
            return None
        inline = min(max_bytes, INLINE_BYTES)
        params = {"key_hash": schema.key_hash(key), "inline": inline}
        writes = self._writes  # before the query: a write committed after it is seen
        try:
            row = self._first_row("read", key, q.ROW_WITH_SMALL_CHUNK, params)
        except StorageError as e:
            if _connection_dropped(e):
                return None
            raise
        if row is None or row.blob_id is None:
            return None
        try:  # the row is untrusted: checked
            size, chunk_size = self._blob_layout(key, row)[1:]
            data = self._first_chunk(key, row) if size and row.first_chunk is not None else b""
        except ButlerError:
            return None
        if size and row.first_chunk is None:  # larger, or several chunks (or a missing one)
            if inline < INLINE_BYTES and size <= min(INLINE_BYTES, chunk_size):
                # `metadata` fetches these bytes with the row (one snapshot for its `open`):
                # this row, queried for fewer, has none.
                return None
            # The general path's `metadata` of this key, next, takes this row: one query.
            self._prefetched.missed = (key, row, time.monotonic() + _HANDOFF_SECONDS, writes)
            return None
        return (_row_metadata(row, self.uri(key)), data) if len(data) == size else None

    def _take_missed(self, key: str) -> Any:
        """The row `read_small` fetched for ``key`` and could not use, if this thread's last
        storage call made it just now (once), and no write of this storage (from any thread)
        ended since its query. (A write by another process within the second is not seen:
        the row is as old as a `metadata` query made just before that write.)"""
        slot = self._prefetched.__dict__.pop("missed", None)
        if slot is None or slot[0] != key or slot[3] != self._writes or time.monotonic() > slot[2]:
            return None
        return slot[1]

    def size(self, key: str) -> int:
        self.check_key(key)
        self._require_schema(key)
        with self._one_read("read the size of", key) as conn:
            return int(self._require(conn, key).size)

    def table_name(self, key: str) -> str | None:
        """The SQL table holding a ``sql-table`` dataset (``None`` for blob datasets)."""
        self._require_schema(key)
        with self._read("look up", key) as conn:
            return self.dataset_table(key, self._require(conn, key))

    def view_name(self, key: str) -> str | None:
        """The stable SQL view of a ``sql-table`` dataset: a name that stays the same across
        overwrites (see `butler_db._views.view_names`); ``None`` for blob datasets or when
        every candidate name was taken by someone else's table or view."""
        self._require_schema(key)
        with self._read("look up", key) as conn:
            if self.dataset_table(key, self._require(conn, key)) is None:
                return None
            return views.view_of(conn, key)

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self._check_schema():
            return
        query, params = q.list_keys(self.backend, prefix)
        with self._one_read("list", prefix) as conn:
            keys = [row[0] for row in conn.execute(query, params)]
        # MySQL's case-insensitive collations match more than the prefix; filter exactly.
        # Butler's own keys are never datasets, even if a row claims one (rows are untrusted).
        # Code-point order on every backend (SQLite and PostgreSQL already return it: the
        # sort only checks; MariaDB returns keys unordered).
        keys = [k for k in keys if isinstance(k, str) and k.startswith(prefix)]
        keys.sort()
        for k in keys:
            if not is_reserved_key(k):
                yield k

    # -- writing -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic_write(
        self,
        key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Iterator[BinaryIO]:
        self.check_key(key)
        # The policy lives in its own table, never as a dataset row; butler's other
        # reserved keys (provenance records under .butler/) are stored like datasets
        # and never listed.
        if key == POLICY_KEY:
            raise StorageError(f"{self.uri(key)!r} is reserved for butler itself")
        blob_id = secrets.token_hex(16)
        with self.creating(), self._write_transaction("write", key) as conn:
            raw = ChunkWriter(conn, blob_id, self.chunk_size)
            writer = CountingWriter(raw, checksum=checksum, progress=progress)  # type: ignore[arg-type]
            yield writer  # type: ignore[misc]
            raw.finish()
            meta = self.full_metadata(metadata, writer.size, writer.sha256)
            values = {"blob_id": blob_id, "chunk_size": self.chunk_size, "table_name": None}
            self.commit_dataset(conn, key, meta, values, overwrite=overwrite)

    def commit_dataset(
        self,
        conn: sa.Connection,
        key: str,
        meta: Mapping[str, Any],
        values: Mapping[str, Any],
        *,
        overwrite: bool,
    ) -> None:
        """Insert the dataset row of ``key`` (or swap it for the old one when overwriting)
        inside the caller's transaction, then drop what the old row pointed to.

        Raises
        ------
        DatasetExistsError
            If ``key`` exists (or is created concurrently) and ``overwrite`` is false.
        """
        self.check_key(key)
        row = _dataset_values(key, meta)
        row.update(values)
        if not overwrite:
            # The unique key_hash refuses an existing dataset; the caller's transaction is
            # then rolled back whole (no savepoint needed).
            try:
                conn.execute(q.INSERT_DATASET, row)
            except exc.IntegrityError as e:
                if not is_unique_violation(e):
                    raise
                raise DatasetExistsError(f"a dataset already exists at {self.uri(key)!r}") from None
            if row["table_name"] is not None:
                self._update_view(conn, key, row["table_name"])
            return
        if self.backend == "sqlite":
            # BEGIN IMMEDIATE holds the database's write lock: nobody can create the row
            # between the look-up and the insert.
            self._swap(conn, key, row)
            return
        for _ in range(_SWAP_ATTEMPTS):
            try:
                with conn.begin_nested():
                    self._swap(conn, key, row)
                return
            except exc.IntegrityError as e:
                if not is_unique_violation(e):
                    raise
                # a concurrent writer created it between our look-up and insert: swap again
        raise StorageError(f"cannot write {self.uri(key)!r}: too many concurrent overwrites")

    def _swap(self, conn: sa.Connection, key: str, row: dict[str, Any]) -> None:
        """Insert the dataset row of ``key``, or update the existing one (locked), and drop
        what the old row pointed to."""
        old = self._row(conn, key, lock=True)
        if old is None:
            conn.execute(q.INSERT_DATASET, row)
        else:
            conn.execute(q.UPDATE_DATASET, {**row, "row_id": old.id})
        if row["table_name"] is not None or (old is not None and old.table_name):
            # before the old table goes: PostgreSQL refuses to drop what a view selects from
            self._update_view(conn, key, row["table_name"])
        if old is not None:
            self.drop_contents(conn, key, old, view=False)

    def drop_contents(self, conn: sa.Connection, key: str, row: Any, *, view: bool = True) -> None:
        """Delete the chunks or drop the SQL table (and, with ``view``, the stable view) the
        dataset row of ``key`` points to.

        The table is dropped only if `dataset_table` recognises it as this dataset's.
        """
        table = self.dataset_table(key, row)  # first: a refused row changes nothing
        if row.blob_id is not None:
            conn.execute(q.DELETE_CHUNKS, {"blob_id": row.blob_id})
        if table is not None:
            if view:
                self._update_view(conn, key, None)
            drop_table(conn, table)

    def remove(self, key: str) -> None:
        self.check_key(key)
        self._require_schema(key)
        with self._write_transaction("remove", key) as conn:
            row = self._require(conn, key, lock=True)
            conn.execute(q.DELETE_DATASET, {"row_id": row.id})
            self.drop_contents(conn, key, row)


def _check_chunk_size(value: Any, root: str) -> int:
    """``chunk_size`` as a number of bytes (``1048576`` or ``"1MiB"``)."""
    try:
        size = parse_size(value)
    except LimitError:
        size = -1
    if not 0 < size <= MAX_CHUNK_SIZE:
        raise StorageError(
            f"chunk_size for {root!r} must be a number of bytes from 1 to {MAX_CHUNK_SIZE:,} "
            f"(1048576 or '1MiB'), not {value!r:.100}"
        )
    return size


def _dataset_values(key: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Column values of a ``butler_datasets`` row from the metadata of a write."""
    return {
        "key_hash": schema.key_hash(key),
        "key": key,
        "dataset_type": str(meta.get("dataset_type", "")),
        "data_id": json.dumps(meta.get("data_id", {}), sort_keys=True, default=str),
        "format": str(meta.get("format", "")),
        "python_type": str(meta.get("python_type", "")),
        "size": int(meta.get("size", 0)),
        "sha256": meta.get("sha256"),
        "created": float(meta.get("created") or time.time()),
        "metadata": json.dumps(dict(meta), default=str),
    }


def _connection_dropped(error: StorageError) -> bool:
    """Whether ``error`` (from `translate`) is a connection SQLAlchemy found dropped and
    invalidated: the pool's next connection is a new one."""
    cause = error.__context__
    for _ in range(4):  # MariaDB: the PendingRollbackError of closing it, then the drop
        if isinstance(cause, exc.DBAPIError) and cause.connection_invalidated:
            return True
        cause = cause.__context__ if cause is not None else None
    return False


def _row_metadata(row: Any, where: str) -> dict[str, Any]:
    """The metadata committed with a dataset (the JSON document, size and sha256) from its
    row, untrusted: a size that is not a number (SQLite keeps text in an integer column)
    is a corrupt-row `StorageError` naming ``where``."""
    try:
        size = int(row.size)
    except (TypeError, ValueError):
        raise StorageError(
            f"the row of {where!r} in butler_datasets is corrupt (size {row.size!r:.50}); "
            f"restore it or remove the dataset"
        ) from None
    try:
        meta = json.loads(row.metadata)
    except (ValueError, RecursionError):  # untrusted: any JSON, nested any depth
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    meta["size"] = size
    if row.sha256 is not None:
        meta["sha256"] = row.sha256
    return meta
