"""What storage plugins build on: the public surface for writing a `Storage`.

A storage plugin (``butler-s3``, ``butler-db``, a third party's) imports from here, never
from ``butler._*`` modules:

* `Storage`, the base class: subclasses implement the primitives (``exists``, ``_open``,
  ``atomic_write``, ``metadata``, ``size``, ``remove``, ``list``, ``uri``); the base checks
  keys (`Storage.check_key`), modes and read hints (`ReadHints`: ``access``,
  ``block_size``, ``cache_blocks``, ``cache_type``), completes metadata
  (`Storage.full_metadata`), and gives local paths and the policy helpers;
* `ReadHints`, `ReadAccess` and `READ_HINTS`, what a serializer may tell `Storage.open`;
* `key_suffix`, a key's extension(s), kept on temporary local files;
* `RandomAccessReader`, the seekable reader base for remote bytes of known size;
* `CountingWriter` and `ProgressReader`, the write/read wrappers that count, hash and report;
* `file_sha256`, `parse_size`, `is_reserved_key`, `POLICY_KEY`, `RESERVED_PREFIX`,
  `MAX_POLICY_BYTES`, `COPY_CHUNK`, `ProgressCallback`;
* `mask_url` and `is_secret_key`, the one way to show a URL without its credentials;
* `Index`, `IndexEntry` and `SqlIndex`, for a storage that keeps a dataset index
  (`Storage.default_index`): `SqlIndex` holds the SQL, a subclass runs it.

.. versionadded:: 0.2
"""

from __future__ import annotations

from ._index import Index, IndexEntry, SqlIndex
from ._limits import LimitError, parse_size
from ._storage import (
    COPY_CHUNK,
    MAX_POLICY_BYTES,
    POLICY_KEY,
    READ_HINTS,
    RESERVED_PREFIX,
    CountingWriter,
    ProgressCallback,
    ProgressReader,
    RandomAccessReader,
    ReadAccess,
    ReadHints,
    Storage,
    file_sha256,
    is_reserved_key,
    key_suffix,
)
from ._urls import is_secret_key, mask_url

__all__ = [
    "COPY_CHUNK",
    "MAX_POLICY_BYTES",
    "POLICY_KEY",
    "READ_HINTS",
    "RESERVED_PREFIX",
    "CountingWriter",
    "Index",
    "IndexEntry",
    "LimitError",
    "ProgressCallback",
    "ProgressReader",
    "RandomAccessReader",
    "ReadAccess",
    "ReadHints",
    "SqlIndex",
    "Storage",
    "file_sha256",
    "is_reserved_key",
    "is_secret_key",
    "key_suffix",
    "mask_url",
    "parse_size",
]
