"""`S3ReadFile`: a seekable reader of one S3 object, tuned for both range and whole reads.

Three access patterns, three strategies:

* **small random reads** (FITS headers, HDF5 chunks): served from an LRU cache of aligned
  blocks (``block_size``, ``cache_blocks``); a miss fetches the missing blocks in one ranged
  GET;
* **large reads** (``read()`` of the whole dataset, ``readinto`` of a big buffer): one GET
  of exactly the requested range, streamed into the caller's buffer, no cache;
* **sequential reads** (``np.load`` reads 256 KiB at a time): once a read starts where the
  last fetch ended, one open-ended GET streams the rest, so a whole-object read costs two
  requests however small the reads are.

A reader opened by ``Butler.get`` starts with the object's first bytes in hand: the GET that
read the metadata brought them (`S3Storage.metadata`, up to ``prefetch_size``), so a small
dataset is read in that one request, and a larger one continues where it ended.

Every GET carries ``If-Match: <etag>``: an object replaced while it is being read raises a
`StorageError` instead of mixing two versions. `requests` and `bytes_fetched` count what
went over the network (the benchmark and the tests read them).
"""

from __future__ import annotations

import contextlib
import io
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from butler import DatasetNotFoundError
from butler.storage import RandomAccessReader

from .s3fs_ import translated

if TYPE_CHECKING:
    from s3fs import S3FileSystem

    from butler import ProgressCallback

__all__ = ["S3ReadFile", "TranslatedFile", "fill"]


class S3ReadFile(RandomAccessReader):
    """Binary, seekable, read-only file over one S3 object.

    Parameters
    ----------
    fs
        The `s3fs.S3FileSystem` to issue requests with.
    bucket, key
        The object.
    size, etag
        From the ``HEAD`` or ``GET`` that read the metadata.
    uri
        Displayable URI for error messages.
    block_size
        Size of cached blocks for small reads (bytes).
    cache_blocks
        How many blocks the LRU cache keeps.
    progress
        ``progress(bytes_read, size)`` called after each read.
    secrets
        Strings to keep out of error messages.
    prefix
        The object's first bytes, already received with ``etag`` (by the GET that read the
        metadata): served from memory; it counts as one request in `requests`.
    """

    def __init__(
        self,
        fs: S3FileSystem,
        bucket: str,
        key: str,
        size: int,
        etag: str | None,
        *,
        uri: str,
        block_size: int = 4 * 2**20,
        cache_blocks: int = 16,
        progress: ProgressCallback | None = None,
        secrets: tuple[str | None, ...] = (),
        prefix: bytes = b"",
    ) -> None:
        super().__init__(size)
        if len(prefix) > size:
            raise ValueError(f"prefix of {len(prefix)} bytes for an object of {size}")
        if block_size < 1:
            raise ValueError(f"block_size must be positive, not {block_size}")
        self.fs = fs
        self.bucket = bucket
        self.key = key
        self.etag = etag
        self.uri = uri
        self.block_size = block_size
        self.cache_blocks = max(1, cache_blocks)
        #: Number of GET requests this file's bytes came from.
        self.requests = 1 if prefix else 0
        #: Bytes received from the server.
        self.bytes_fetched = len(prefix)
        self._progress = progress
        self._secrets = secrets
        self._delivered = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self._prefix = prefix
        # End offset of the last network fetch: reading on from the prefix streams the rest.
        self._fetched_end = len(prefix) if prefix else -1
        self._stream: Any = None  # open-ended GET body being read sequentially
        self._stream_pos = -1

    # -- io protocol (position, seek, read come from RandomAccessReader) ----------------

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self.size - self._pos))
        if n == 0:
            return 0
        start, end = self._pos, self._pos + n
        done = 0
        with translated("read", self.uri, self._secrets), self._removed_as_not_found():
            while done < n:
                pos, rest = start + done, view[done:n]
                if pos < len(self._prefix):
                    take = min(len(rest), len(self._prefix) - pos)
                    rest[:take] = self._prefix[pos : pos + take]
                    done += take
                elif self._stream is not None and self._stream_pos == pos:
                    self._read_stream(rest)
                    done = n
                elif (pos // self.block_size) in self._blocks:
                    done += self._copy_from_cache(pos, end, rest)
                elif pos == self._fetched_end:  # sequential: stream the rest of the object
                    self._open_stream(pos)
                    self._read_stream(rest)
                    done = n
                elif len(rest) >= self.block_size:
                    self._get_into(pos, rest)
                    done = n
                else:
                    self._fetch_blocks(pos, end)
        self._pos = end
        self._delivered += n
        if self._progress is not None:
            self._progress(self._delivered, self.size)
        return n

    def close(self) -> None:
        if not self.closed:
            self._close_stream()
            self._blocks.clear()
            self._prefix = b""
        super().close()

    def __repr__(self) -> str:
        return f"S3ReadFile({self.uri!r}, size={self.size})"

    @contextlib.contextmanager
    def _removed_as_not_found(self) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError:
            self._close_stream()
            raise DatasetNotFoundError(f"{self.uri!r} was removed while being read") from None

    # -- network -----------------------------------------------------------------------

    def _sync(self, coro_func: Any, *args: Any) -> Any:
        from fsspec.asyn import sync

        return sync(self.fs.loop, coro_func, *args)

    def _get_kwargs(self, start: int, end: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key,
            "Range": f"bytes={start}-{'' if end is None else end - 1}",
        }
        if self.etag:
            kwargs["IfMatch"] = self.etag
        return kwargs

    async def _aget_into(self, start: int, view: memoryview) -> int:
        response = await self.fs._call_s3(
            "get_object", **self._get_kwargs(start, start + len(view))
        )
        body = response["Body"]
        try:
            return await fill(body, view)
        finally:
            await _aclose(body)

    def _get_into(self, start: int, view: memoryview) -> None:
        """One GET of exactly ``[start, start + len(view))`` into ``view``."""
        self._close_stream()
        self.requests += 1
        got = self._sync(self._aget_into, start, view)
        self.bytes_fetched += got
        if got != len(view):
            raise OSError(5, f"short read: {got} of {len(view)} bytes at offset {start}")
        self._fetched_end = start + got

    def _fetch_blocks(self, start: int, end: int) -> None:
        first, last = start // self.block_size, (end - 1) // self.block_size
        missing = [i for i in range(first, last + 1) if i not in self._blocks]
        lo = missing[0] * self.block_size
        hi = min(self.size, (missing[-1] + 1) * self.block_size)
        data = bytearray(hi - lo)
        self._get_into(lo, memoryview(data))
        for i in range(missing[0], missing[-1] + 1):
            offset = i * self.block_size - lo
            self._blocks[i] = bytes(data[offset : offset + self.block_size])
            self._blocks.move_to_end(i)
        while len(self._blocks) > self.cache_blocks:
            self._blocks.popitem(last=False)

    def _copy_from_cache(self, start: int, end: int, view: memoryview) -> int:
        """Copy the cached bytes from ``start`` on (up to ``end``); return how many."""
        pos, out = start, 0
        while pos < end:
            index, offset = divmod(pos, self.block_size)
            block = self._blocks.get(index)
            if block is None:
                break
            self._blocks.move_to_end(index)
            take = min(end - pos, len(block) - offset)
            if take <= 0:
                raise OSError(5, f"short block {index} of {self.uri!r}")
            view[out : out + take] = block[offset : offset + take]
            pos += take
            out += take
        return out

    async def _aopen_stream(self, start: int) -> Any:
        response = await self.fs._call_s3("get_object", **self._get_kwargs(start, None))
        return response["Body"]

    def _open_stream(self, start: int) -> None:
        self._close_stream()
        self.requests += 1
        self._stream = self._sync(self._aopen_stream, start)
        self._stream_pos = start

    def _read_stream(self, view: memoryview) -> None:
        got = self._sync(fill, self._stream, view)
        self.bytes_fetched += got
        self._stream_pos += got
        self._fetched_end = self._stream_pos
        if got != len(view):
            self._close_stream()
            raise OSError(5, f"short read: {got} of {len(view)} bytes")

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._stream_pos = -1
        if stream is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                self._sync(_aclose, stream)


class TranslatedFile(io.RawIOBase):
    """An fsspec file (``cache_type`` other than ``"blocks"``) whose errors are butler's:
    an object removed or replaced while being read raises `DatasetNotFoundError` or
    `StorageError`, never a raw `FileNotFoundError` / `OSError`."""

    def __init__(self, raw: Any, uri: str, secrets: tuple[str | None, ...] = ()) -> None:
        super().__init__()
        self.raw = raw
        self.uri = uri
        self._secrets = secrets

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            with translated("read", self.uri, self._secrets):
                yield
        except FileNotFoundError:
            raise DatasetNotFoundError(f"{self.uri!r} was removed while being read") from None

    @property
    def cache(self) -> Any:
        """The fsspec file's cache (its ``total_requested_bytes`` and ``miss_count`` say
        what went over the network; fsspec drops it on close)."""
        return getattr(self.raw, "cache", None)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with self._errors():
            return bytes(self.raw.read(-1 if size is None else size))

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with self._errors():
            return int(self.raw.seek(offset, whence))

    def tell(self) -> int:
        return int(self.raw.tell())

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self.raw.close()
        super().close()

    def __repr__(self) -> str:
        return f"TranslatedFile({self.uri!r})"


async def fill(body: Any, view: memoryview) -> int:
    """Read from an aiobotocore body until ``view`` is full or the body ends."""
    pos, n = 0, len(view)
    while pos < n:
        chunk = await body.read(n - pos)
        if not chunk:
            break
        view[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
    return pos


async def _aclose(body: Any) -> None:
    """Release a response body's connection (on the event loop's thread)."""
    body.close()
