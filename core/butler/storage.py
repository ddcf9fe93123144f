"""What storage plugins build on: the public surface for writing a `Storage`.

A storage plugin (``butler-s3``, ``butler-db``, a third party's) imports from here, never
from ``butler._*`` modules:

* `Storage`, the base class (policy lock/update, reserved keys, local paths);
* `RandomAccessReader`, the seekable reader base for remote bytes of known size;
* `CountingWriter` and `ProgressReader`, the write/read wrappers that count, hash and report;
* `file_sha256`, `parse_size`, `is_reserved_key`, `POLICY_KEY`, `RESERVED_PREFIX`,
  `MAX_POLICY_BYTES`, `COPY_CHUNK`, `ProgressCallback`;
* `mask_url` and `is_secret_key`, the one way to show a URL without its credentials.

.. versionadded:: 0.2
"""

from __future__ import annotations

from ._limits import LimitError, parse_size
from ._storage import (
    COPY_CHUNK,
    MAX_POLICY_BYTES,
    POLICY_KEY,
    RESERVED_PREFIX,
    CountingWriter,
    ProgressCallback,
    ProgressReader,
    RandomAccessReader,
    Storage,
    file_sha256,
    is_reserved_key,
)
from ._urls import is_secret_key, mask_url

__all__ = [
    "COPY_CHUNK",
    "MAX_POLICY_BYTES",
    "POLICY_KEY",
    "RESERVED_PREFIX",
    "CountingWriter",
    "LimitError",
    "ProgressCallback",
    "ProgressReader",
    "RandomAccessReader",
    "Storage",
    "file_sha256",
    "is_reserved_key",
    "is_secret_key",
    "mask_url",
    "parse_size",
]
