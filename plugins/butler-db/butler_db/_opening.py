"""How `DatabaseStorage` opens a blob's bytes: from the row its `metadata` just fetched,
in one query, or in a snapshot transaction.

A mixin of `DatabaseStorage`, which provides the connection helpers and the metadata
query declared below.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

import sqlalchemy as sa

from butler import DatasetNotFoundError, FormatError, StorageError
from butler.storage import ProgressCallback, ProgressReader, ReadHints

from . import _queries as q
from . import _schema as schema
from ._blob import ChunkReader

__all__ = ["INLINE_BYTES", "MAX_CHUNK_SIZE", "OpeningMixin"]

#: Largest ``chunk_size``: one chunk is one query parameter and one row.
MAX_CHUNK_SIZE = 1024**3

#: What a ``blob_id`` written by butler-db looks like (a tampered row is refused).
_BLOB_ID = re.compile(r"[0-9a-f]{32}")

#: Largest blob whose bytes `DatabaseStorage.metadata` fetches with its row, for the `open`
#: that follows in a get (bigger ones are read by `open` itself: callers wanting only the
#: metadata, such as ``verify``, must not pay for their bytes).
INLINE_BYTES = 64 * 1024


class OpeningMixin:
    """Blob reading of `DatabaseStorage`."""

    backend: str
    _prefetched: threading.local

    if TYPE_CHECKING:

        def uri(self, key: str = "") -> str: ...

        def _translate(self, action: str, key: str = "", **kw: Any) -> Any: ...

        def _connect(self, key: str = "") -> sa.Connection: ...

        def _first_row(
            self, action: str, key: str, statement: Any, params: dict[str, Any]
        ) -> Any: ...

        def _require_schema(self, key: str) -> None: ...

        def check_key(self, key: str) -> tuple[str, ...]: ...

        def not_found(self, key: str) -> DatasetNotFoundError: ...

        def storage_error(self, action: str, key: str, error: BaseException) -> StorageError: ...

    def _forget_prefetched(self) -> Any:
        """Forget (and return) the ``(key, row)`` this thread's last `metadata` fetched (and
        the row a `read_small` could not use)."""
        self._prefetched.__dict__.pop("missed", None)
        return self._prefetched.__dict__.pop("row", None)

    def _remember(self, key: str, row: Any) -> None:
        """Keep a row fetched by `metadata` with its first chunk for this thread's `open`."""
        if row.first_chunk is not None or (row.blob_id is not None and row.size == 0):
            self._prefetched.row = (key, row)

    def _blob_layout(self, key: str, row: Any) -> tuple[str, int, int]:
        """``(blob_id, size, chunk_size)`` of a blob dataset row, checked (untrusted)."""
        blob_id, size, chunk_size = row.blob_id, row.size, row.chunk_size
        if not (
            isinstance(blob_id, str)
            and _BLOB_ID.fullmatch(blob_id)
            and isinstance(size, int)
            and size >= 0
            and isinstance(chunk_size, int)
            and 0 < chunk_size <= MAX_CHUNK_SIZE
        ):
            raise StorageError(
                f"the row of {self.uri(key)!r} in butler_datasets is corrupt (blob "
                f"{blob_id!r:.50}, size {size!r:.50}, chunk size {chunk_size!r:.50})"
            )
        return blob_id, size, chunk_size

    def _first_chunk(self, key: str, row: Any) -> bytes:
        """The bytes of ``row.first_chunk``, checked (untrusted: SQLite keeps text or a
        number in any column, and ``bytes(13)`` would be 13 zero bytes)."""
        value = row.first_chunk
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise StorageError(
                f"the first chunk of {self.uri(key)!r} in butler_chunks is corrupt (a "
                f"{type(value).__name__!r}, not bytes)"
            )
        return bytes(value)

    def _open(self, key: str, hints: ReadHints, progress: ProgressCallback | None) -> BinaryIO:
        self.check_key(key)
        slot = self._forget_prefetched()
        if slot is not None and slot[0] == key:  # fetched by the metadata() of this get
            reader = self._reader(key, slot[1], None)
        else:
            self._require_schema(key)
            reader = self._read_small(key) or self._read_snapshot(key)
        if progress is None:
            return reader  # type: ignore[return-value]
        return ProgressReader(reader, reader.size, progress)  # type: ignore[arg-type,return-value]

    def _read_small(self, key: str) -> ChunkReader | None:
        """The reader of a blob of one chunk, from one query outside any transaction;
        ``None`` for a blob of several chunks (they need a snapshot: `_read_snapshot`)."""
        params = {"key_hash": schema.key_hash(key), "inline": MAX_CHUNK_SIZE}
        row = self._first_row("open", key, q.ROW_WITH_SMALL_CHUNK, params)
        if row is None:
            raise self.not_found(key)
        if row.blob_id is not None and row.first_chunk is None and row.size:
            return None  # several chunks (or missing ones: the snapshot read says so)
        return self._reader(key, row, None)

    def _read_snapshot(self, key: str) -> ChunkReader:
        """The reader of a blob of several chunks: it keeps a snapshot transaction open on
        its own connection, so a concurrent overwrite cannot swap the chunks under it."""
        self._forget_prefetched()
        with self._translate("open", key):
            conn = self._connect(key)
        try:
            with self._translate("open", key):
                if self.backend != "sqlite":
                    conn = conn.execution_options(isolation_level="REPEATABLE READ")
                conn.begin()
                params = {"key_hash": schema.key_hash(key)}
                row = conn.execute(q.ROW_WITH_FIRST_CHUNK, params).first()
                if row is None:
                    raise self.not_found(key)
                reader = self._reader(key, row, conn)
        except BaseException:
            conn.close()
            raise
        if reader.connection is None:  # everything is in hand: free the connection
            conn.rollback()
            conn.close()
        return reader

    def _reader(self, key: str, row: Any, conn: sa.Connection | None) -> ChunkReader:
        """A reader over the blob of ``row`` (with its ``first_chunk``), checked: the row is
        untrusted. ``conn`` (in a snapshot transaction) is kept only when the blob has more
        chunks than the first.

        Raises
        ------
        FormatError
            If the dataset is a SQL table, not bytes.
        StorageError
            If the row is corrupt or its first chunk is missing or does not match it.
        """
        if row.blob_id is None:
            raise FormatError(
                f"{self.uri(key)!r} is a SQL table ({row.format!r}), not a byte stream; "
                f"read it with the sql-table format"
            )
        blob_id, size, chunk_size = self._blob_layout(key, row)
        first = b""
        if size:
            if row.first_chunk is None:
                raise StorageError(f"the bytes of {self.uri(key)!r} are missing")
            first = self._first_chunk(key, row)
            if len(first) != min(size, chunk_size):
                # Checked here, so a row declaring a huge size over a small first chunk
                # never leads a reader to trust it.
                raise StorageError(
                    f"the bytes of {self.uri(key)!r} do not match its row: the first chunk "
                    f"holds {len(first)} bytes, the row declares {size} bytes in chunks of "
                    f"{chunk_size}"
                )
        on_error: Callable[[Exception], Exception] = lambda e: self.storage_error("read", key, e)  # noqa: E731
        keep = conn if size > chunk_size else None
        return ChunkReader(keep, blob_id, size, chunk_size, first, on_error)
