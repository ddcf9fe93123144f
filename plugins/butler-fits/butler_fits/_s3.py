"""Reading FITS from the ``s3`` storage (butler-s3) with read settings tuned for FITS.

The object is opened through the storage's own seekable reader (`S3Storage.open`, which
pins the object's ETag so a concurrent overwrite cannot mix two versions) with a small
block size when only part of the file is wanted: astropy's `.section` then seeks to the
rows of a cutout, and only the blocks holding them are fetched. Whole images are read with
one ranged GET straight into the array (see ``_image``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .astropy_ import FitsSource, open_fileobj

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["PARTIAL_BLOCK_SIZE", "open_s3"]

#: Block size for cutouts and column reads: FITS headers are 2880-byte blocks and image
#: rows are typically tens of KiB, so small blocks keep the bytes fetched near the bytes
#: needed, while the storage merges consecutive missing blocks into one request.
PARTIAL_BLOCK_SIZE = 256 * 1024


@contextlib.contextmanager
def open_s3(
    location: ButlerLocation,
    *,
    block_size: int | None = None,
    cache_blocks: int | None = None,
    character_as_bytes: bool = False,
    **_: Any,
) -> Iterator[FitsSource]:
    """Open the dataset on S3 as a `FitsSource`.

    Parameters
    ----------
    block_size, cache_blocks
        Serializer arguments (e.g. under ``per_storage: {s3: ...}``) overriding the read
        cache; by default `PARTIAL_BLOCK_SIZE` for ``section``/``columns`` reads and the
        storage's own setting otherwise.
    character_as_bytes
        As for `open_source`.
    """
    partial = "section" in location.parameters or "columns" in location.parameters
    options: dict[str, Any] = {"progress": location.progress}
    if block_size or partial:
        options["block_size"] = int(block_size or PARTIAL_BLOCK_SIZE)
    if cache_blocks:
        options["cache_blocks"] = int(cache_blocks)
    storage: Any = location.storage  # butler_s3.S3Storage: open() takes cache options
    with (
        storage.open(location.key, **options) as f,
        open_fileobj(f, location, character_as_bytes=character_as_bytes) as source,
    ):
        yield source
