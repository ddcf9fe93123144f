"""The ``npy`` format: numpy arrays, never pickled; slices read through memmap on posix."""

from __future__ import annotations

import re
import threading
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
            array = _read_whole(f, location)
        if selection is not None:
            array = array[selection]
    return array if cls is np.ndarray else array.view(cls)


def _read_whole(f: IO[bytes], location: ButlerLocation) -> Any:
    """The array of an open ``.npy`` file, its header parsed once (`np.load` would parse
    it again after `_check_header`: that parse is most of a small get's CPU)."""
    import numpy as np

    shape, fortran_order, dtype = _check_header(f, location, rewind=False)
    if dtype.hasobject:
        raise location.format_error(
            f"the .npy file holds an array of Python objects ({dtype}): reading it would "
            f"unpickle, which the npy format never does"
        )
    array = np.empty(shape[::-1] if fortran_order else shape, dtype=dtype)
    view = memoryview(array.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise location.format_error(f"truncated .npy data: {got} of {len(view)} bytes")
        got += n
    return array.T if fortran_order else array


def _check_header(f: IO[bytes], location: ButlerLocation, *, rewind: bool = True) -> Any:
    """Refuse a header whose shape needs more bytes than the file holds, before numpy
    allocates the array (a corrupt or hostile header could claim terabytes). Returns the
    header ``(shape, fortran_order, dtype)``; the file is left at the data (``rewind=False``)
    or at its start."""
    import numpy as np

    try:
        shape, fortran_order, dtype = _read_header(f)
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
    f.seek(0 if rewind else data_start)
    return shape, fortran_order, dtype


#: The header numpy writes for an array of a plain dtype: ``{'descr': '<f8', 'fortran_order':
#: False, 'shape': (3, 4), }`` padded with spaces to a line.
_PLAIN_HEADER = re.compile(
    r"\{'descr': '([^'\\]+)', 'fortran_order': (True|False), "
    r"'shape': \(((?:[0-9]+, )*(?:[0-9]+,?)?)\), \} *\n\Z"
)
#: numpy parses the header with `ast.literal_eval`, whose AST conversion CPython 3.11 does
#: not make thread-safe ("SystemError: AST constructor recursion depth mismatch" when two
#: threads parse at once: get_many, Dask threads): butler's own calls take turns.
_AST_LOCK = threading.Lock()


def _read_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, Any]:
    """``(shape, fortran_order, dtype)`` of the header at ``f``'s start (left at the data).

    numpy's own header reader parses the header with `ast.literal_eval`: the header of a
    plain array is read here with one pattern instead (no `ast`, a fraction of the CPU);
    any other header (structured dtypes) by numpy, one thread at a time (`_AST_LOCK`).
    """
    import numpy as np
    from numpy.lib import format as npf

    start = f.tell()
    version = npf.read_magic(f)
    size_bytes = 2 if version == (1, 0) else 4
    raw = f.read(size_bytes)
    if len(raw) == size_bytes and version in ((1, 0), (2, 0), (3, 0)):
        header = f.read(int.from_bytes(raw, "little"))
        match = _PLAIN_HEADER.match(header.decode("latin1"))
        if match is not None:
            descr, fortran, dims = match.groups()
            shape = tuple(int(d) for d in dims.replace(",", " ").split())
            return shape, fortran == "True", np.dtype(descr)  # what descr_to_dtype does for a str
    f.seek(start)
    with _AST_LOCK:
        version = npf.read_magic(f)
        if version == (1, 0):
            return npf.read_array_header_1_0(f)
        if version == (2, 0):
            return npf.read_array_header_2_0(f)
        # 3.0 (UTF-8 field names) has no public reader
        return _private_header_reader()(f, version)


def _private_header_reader() -> Any:
    """numpy's reader of any header version (``numpy.lib._format_impl`` since numpy 2;
    ``numpy.lib.format`` before)."""
    import importlib

    try:
        impl = importlib.import_module("numpy.lib._format_impl")
    except ImportError:  # numpy < 2
        impl = importlib.import_module("numpy.lib.format")
    return impl._read_array_header
