"""Opening a stored FITS dataset for reading, tuned through the Storage contract.

One opener for every storage, chosen by what the storage declares, never by its name:

* a storage with real local files (`~butler.storage.Storage.has_local_paths`, posix):
  astropy opens the file by path (optionally memory-mapped), with no Python I/O layer;
* any other storage (S3, memory, databases...): astropy reads the storage's seekable file
  object, opened with read hints (`butler.storage.ReadHints`). For a cutout or a column
  selection the hints say ``access="random"`` with small blocks, so on S3 astropy's
  `.section` seeks to the rows of the cutout and only the blocks holding them are
  fetched; whole images are read with one ranged GET straight into the array (see
  ``_image``). Storages that cannot use a hint ignore it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._fitsfile import FitsSource, open_fileobj, open_source

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["PARTIAL_BLOCK_SIZE", "open_stored"]

#: Block size for cutouts and column reads: FITS headers are 2880-byte blocks and image
#: rows are typically tens of KiB, so small blocks keep the bytes fetched near the bytes
#: needed, while the storage merges consecutive missing blocks into one request.
PARTIAL_BLOCK_SIZE = 256 * 1024


def is_partial(location: ButlerLocation) -> bool:
    """True when the read wants part of the file: a ``section`` or ``columns``."""
    return "section" in location.parameters or "columns" in location.parameters


@contextlib.contextmanager
def open_stored(
    location: ButlerLocation,
    *,
    memmap: bool = False,
    character_as_bytes: bool = False,
    block_size: int | None = None,
    cache_blocks: int | None = None,
    **_: Any,
) -> Iterator[FitsSource]:
    """Open the dataset as a `FitsSource`, the best way its storage offers.

    Parameters
    ----------
    memmap
        Memory-map the data where the storage has local files (sections and columns then
        touch only the pages they need); ignored elsewhere.
    character_as_bytes
        As for `~butler_fits._fitsfile.open_source`.
    block_size, cache_blocks
        Serializer arguments (e.g. under ``per_storage: {s3: ...}``) passed to the storage
        as read hints; by default `PARTIAL_BLOCK_SIZE` for ``section``/``columns`` reads
        and the storage's own setting otherwise.
    """
    storage = location.storage
    if storage.has_local_paths:
        with open_source(
            location, path=True, memmap=memmap, character_as_bytes=character_as_bytes
        ) as source:
            yield source
        return
    partial = is_partial(location)
    hints: dict[str, Any] = {"access": "random" if partial else "sequential"}
    if block_size or partial:
        hints["block_size"] = int(block_size or PARTIAL_BLOCK_SIZE)
    if cache_blocks:
        hints["cache_blocks"] = int(cache_blocks)
    with (
        location.open_read(**hints) as f,
        open_fileobj(f, location, character_as_bytes=character_as_bytes) as source,
    ):
        yield source
