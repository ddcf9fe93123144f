"""The ``npy`` format: numpy arrays, never pickled; slices read through memmap on posix."""

from __future__ import annotations

from typing import Any

from .._location import ButlerLocation

__all__ = ["read", "write"]


def write(obj: Any, location: ButlerLocation) -> None:
    """Write an array in NumPy's ``.npy`` format (``allow_pickle=False``).

    Masked arrays are refused: ``.npy`` would silently drop the mask.
    """
    import numpy as np

    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError("the npy format cannot store masked arrays (the mask would be lost)")
    with location.open_write() as f:
        np.save(f, np.asarray(obj), allow_pickle=False)


def read(location: ButlerLocation, **_: Any) -> Any:
    """Read an array; ``parameters={"slice": (slice(...), ...)}`` reads only that part.

    On storages with local paths the slice comes from a memory map, so only the needed
    pages are read.
    """
    import numpy as np

    cls = location.read_type()
    selection = location.parameters.get("slice")
    if selection is not None and location.storage.has_local_paths:
        with location.local_path() as path:
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            array = np.array(mapped[selection])
            del mapped
    else:
        with location.open_read() as f:
            array = np.load(f, allow_pickle=False)
        if selection is not None:
            array = array[selection]
    return array if cls is np.ndarray else array.view(cls)
