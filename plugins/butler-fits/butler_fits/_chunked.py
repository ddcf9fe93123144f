"""Images written in bounded chunks: the caller's array is never swapped in place, and never
copied whole.

FITS stores numbers big-endian. astropy's ``writeto`` (and its DATASUM) turns a
little-endian image into that order in one of two ways: a writable array is byte-swapped
*in place* while it is written and swapped back afterwards (another thread reading it
meanwhile sees garbage, an interrupted write leaves it so: a put must never touch what it
is given); a read-only one is copied whole, swapped (a second copy of a gigabyte image in
memory, and the time to fill it). Unsigned 16/32/64-bit images (stored with BZERO) are
always converted whole.

`chunked` gives astropy a shallow copy of a primary or image HDU whose data writer and
DATASUM take the image `CHUNK_BYTES` at a time: each chunk is converted into a small buffer
of its own, exactly as astropy converts the whole, and written or summed; the output is the
same bytes (``tests/fits/test_chunked_write.py`` compares files written both ways). Images
that need no conversion (big-endian, one byte per element), that are not C-contiguous, or
that astropy holds as something else than a numpy array keep astropy's own path.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.util import _is_pseudo_integer, _pseudo_zero

__all__ = ["CHUNK_BYTES", "chunked"]

#: Bytes of the caller's image converted at a time (a multiple of 4 elements of any size,
#: as the running DATASUM needs whole 32-bit words between chunks).
CHUNK_BYTES = 4 << 20

_SWAPPED_ORDERS = ("<", "=") if sys.byteorder == "little" else ("<",)


def _converter(data: Any) -> Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None:
    """What astropy does to ``data`` before writing it, as a function of a chunk; ``None``
    when this module leaves ``data`` to astropy."""
    if type(data) is not np.ndarray or not data.flags.c_contiguous or data.size == 0:
        return None
    dtype = data.dtype
    if _is_pseudo_integer(dtype):
        zero, signed = _pseudo_zero(dtype), f">i{dtype.itemsize}"
        return lambda chunk: np.array(chunk - zero, dtype=signed)
    if dtype.str[0] in _SWAPPED_ORDERS and dtype.itemsize > 1:
        big = dtype.newbyteorder(">")
        return lambda chunk: chunk.astype(big)
    return None


def _chunks(data: np.ndarray[Any, Any]) -> Any:
    flat = data.reshape(-1)  # a view: data is C-contiguous
    step = max(4, CHUNK_BYTES // data.itemsize // 4 * 4)
    for start in range(0, flat.size, step):
        yield flat[start : start + step]


class _ChunkedWrites:
    """The data writer and DATASUM of a `fits.PrimaryHDU` / `fits.ImageHDU`, chunked."""

    def _writedata_internal(self, fileobj: Any) -> int:
        data = self.data  # type: ignore[attr-defined]
        convert = _converter(data)
        if convert is None:
            return super()._writedata_internal(fileobj)  # type: ignore[misc]
        for chunk in _chunks(data):
            fileobj.writearray(convert(chunk))
        return int(data.size * data.itemsize)

    def _calculate_datasum(self) -> Any:
        data = self.data if self._has_data else None  # type: ignore[attr-defined]
        convert = _converter(data)
        if convert is None:
            return super()._calculate_datasum()  # type: ignore[misc]
        total = np.uint32(0)
        assert data is not None  # convert is None for no data
        for chunk in _chunks(data):
            words = convert(chunk).reshape(-1).view(np.uint8)
            total = self._compute_checksum(words, total)  # type: ignore[attr-defined]
        return total


class _ChunkedPrimaryHDU(_ChunkedWrites, fits.PrimaryHDU):
    """A `fits.PrimaryHDU` whose image is written in chunks."""


class _ChunkedImageHDU(_ChunkedWrites, fits.ImageHDU):
    """A `fits.ImageHDU` whose image is written in chunks."""


#: Only astropy's own classes: a subclass may write its data its own way.
_CHUNKED = {fits.PrimaryHDU: _ChunkedPrimaryHDU, fits.ImageHDU: _ChunkedImageHDU}


def chunked(hdu: Any) -> Any:
    """``hdu`` itself, or a shallow copy (same state and header) that writes its image in
    chunks (see the module's docstring). Neither astropy's HDU registry (subclasses outside
    ``astropy.io.fits`` are never used to read files) nor ``hdu`` itself is changed."""
    cls = _CHUNKED.get(type(hdu))
    if cls is None or _converter(hdu.__dict__.get("data")) is None:
        return hdu
    work = copy.copy(hdu)
    work.__class__ = cls
    return work
