"""Dataset bytes as rows of ``butler_chunks``: a streaming writer and a lazy, seekable reader.

Neither side ever holds more than a chunk or two in memory (unless the caller reads a
large range at once), so a 1 GiB dataset needs no 1 GiB query parameter or result.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from butler.storage import RandomAccessReader

from ._queries import CHUNKS, INSERT_CHUNK

__all__ = ["DEFAULT_CHUNK_SIZE", "ChunkReader", "ChunkWriter"]

#: Bytes per chunk row.
DEFAULT_CHUNK_SIZE = 1024 * 1024


class ChunkWriter(io.RawIOBase):
    """Write-only file inserting ``chunk_size``-byte rows of one blob inside the caller's
    transaction (nothing is visible before the caller commits).

    Parameters
    ----------
    conn
        Connection with an open transaction.
    blob_id
        Identifier of the new blob.
    chunk_size
        Bytes per row.
    """

    def __init__(self, conn: sa.Connection, blob_id: str, chunk_size: int) -> None:
        super().__init__()
        self._conn = conn
        # SQLite and psycopg bind buffers directly: whole chunks need no copy.
        self._zero_copy = conn.dialect.name in ("sqlite", "postgresql")
        self._blob_id = blob_id
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._seq = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        size = self._chunk_size
        start = 0
        if self._buffer:
            take = min(size - len(self._buffer), n)
            self._buffer += view[:take]
            start = take
            if len(self._buffer) == size:
                self._insert(bytes(self._buffer))
                self._buffer.clear()
        while n - start >= size:  # whole chunks straight from the caller's buffer
            piece = view[start : start + size]
            self._insert(piece if self._zero_copy else bytes(piece))
            start += size
        if start < n:
            self._buffer += view[start:]
        self.size += n
        return n

    def _insert(self, data: bytes | memoryview) -> None:
        self._conn.execute(INSERT_CHUNK, {"blob_id": self._blob_id, "seq": self._seq, "data": data})
        self._seq += 1

    def finish(self) -> int:
        """Insert the last partial chunk; return the number of chunk rows written."""
        if self._buffer:
            self._insert(bytes(self._buffer))
            self._buffer.clear()
        return self._seq


class ChunkReader(RandomAccessReader):
    """Read-only, seekable file over one blob's chunk rows, fetched lazily.

    The reader keeps a snapshot transaction open on its own connection (so a concurrent
    overwrite cannot swap the bytes under it) and caches the last chunk it fetched; a read
    spanning several chunks fetches them in one query.

    Parameters
    ----------
    conn
        Connection with an open (snapshot) transaction, owned and closed by the reader;
        ``None`` when ``first`` already holds every byte.
    blob_id, size, chunk_size
        What ``butler_datasets`` records for the dataset.
    first
        The first chunk, fetched when the reader was opened.
    on_error
        Turns a database error into a `StorageError` naming the dataset.
    """

    def __init__(
        self,
        conn: sa.Connection | None,
        blob_id: str,
        size: int,
        chunk_size: int,
        first: bytes,
        on_error: Callable[[Exception], Exception],
    ) -> None:
        super().__init__(size)
        self._conn = conn
        self._blob_id = blob_id
        self._chunk_size = chunk_size
        self._cached_seq = 0
        self._cached = first
        self._on_error = on_error

    @property
    def connection(self) -> sa.Connection | None:
        """The snapshot connection the reader fetches further chunks on (``None``: it
        already holds every byte)."""
        return self._conn

    # -- io protocol (position and seek come from RandomAccessReader) ---------------------

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        remaining = self.size - self._pos
        if remaining <= 0:
            return b""
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n == 0:
            return b""
        first_seq, offset = divmod(self._pos, self._chunk_size)
        last_seq = (self._pos + n - 1) // self._chunk_size
        if first_seq == last_seq:
            data = self._chunk(first_seq)[offset : offset + n]
        else:
            parts: list[bytes] = []
            seq = first_seq
            if seq == self._cached_seq and self._cached:  # reuse the chunk in hand
                parts.append(self._cached)
                seq += 1
            parts += self._chunks(seq, last_seq)
            parts[0] = parts[0][offset:]
            data = b"".join(parts)[:n]
        self._pos += len(data)
        return data

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                conn.rollback()  # read-only snapshot: nothing to commit
            conn.close()
        self._cached = b""
        super().close()

    # -- fetching ----------------------------------------------------------------------

    def _chunk(self, seq: int) -> bytes:
        if seq != self._cached_seq:
            self._cached = self._chunks(seq, seq)[0]
            self._cached_seq = seq
        return self._cached

    def _chunks(self, first: int, last: int) -> list[bytes]:
        if self._conn is None:  # everything was fetched at open (or the file is closed)
            raise ValueError("I/O operation on closed file")
        params = {"blob_id": self._blob_id, "first": first, "last": last}
        try:
            rows = self._conn.execute(CHUNKS, params).all()
        except sa.exc.SQLAlchemyError as exc:
            raise self._on_error(exc) from None
        if len(rows) != last - first + 1 or rows[0][0] != first:
            raise self._on_error(
                OSError(f"chunks {first}..{last} of the dataset are missing from the database")
            )
        parts = [row[1] for row in rows]
        if not all(isinstance(part, (bytes, bytearray, memoryview)) for part in parts):
            # untrusted: SQLite keeps text or a number in any column (bytes(13): 13 zeros)
            raise self._on_error(OSError(f"chunks {first}..{last} of the dataset are corrupt"))
        parts = [bytes(part) for part in parts]
        self._cached_seq, self._cached = last, parts[-1]
        return parts
