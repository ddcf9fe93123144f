"""The ``npy`` format: numpy arrays, never pickled; slices read through memmap on posix."""

from __future__ import annotations

from typing import IO, Any

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
            with open(path, "rb") as f:
                _check_header(f, location)
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            array = np.array(mapped[selection])
            del mapped
    else:
        with location.open_read() as f:
            _check_header(f, location)
            array = np.load(f, allow_pickle=False)
        if selection is not None:
            array = array[selection]
    return array if cls is np.ndarray else array.view(cls)


def _check_header(f: IO[bytes], location: ButlerLocation) -> None:
    """Refuse a header whose shape needs more bytes than the file holds, before numpy
    allocates the array (a corrupt or hostile header could claim terabytes)."""
    import numpy as np
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npf.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npf.read_array_header_2_0(f)
        else:
            shape, _, dtype = npf._read_array_header(f, version)  # type: ignore[attr-defined]
    except (ValueError, TypeError, SyntaxError, EOFError) as exc:
        raise location.format_error(f"not a valid .npy file: {exc}") from exc
    data_start = f.tell()
    available = f.seek(0, 2) - data_start
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > available:
        raise location.format_error(
            f"the .npy header declares shape {shape} of {dtype} ({needed} bytes) but only "
            f"{available} bytes of data follow: truncated or corrupt"
        )
    f.seek(0)
