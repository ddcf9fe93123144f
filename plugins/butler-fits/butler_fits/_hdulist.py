"""`astropy.io.fits.HDUList` ↔ the FITS file itself, written as is."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from astropy.io import fits

from ._fitsfile import (
    FitsSource,
    check_args,
    is_nonstandard,
    verify_hdus,
    write_hdulist,
)
from ._stored import open_stored

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]


def write(
    obj: fits.HDUList,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Write every HDU as is (headers verified first; ``checksum`` adds CHECKSUM/DATASUM).

    Compressed images are written as the `~astropy.io.fits.CompImageHDU` they are.
    """
    check_args(location, checksum, compress, compress_args, images=False)
    for index, hdu in enumerate(obj):
        if is_nonstandard(hdu):
            raise location.format_error(
                f"HDU {index} is a non-standard HDU (SIMPLE = F): astropy reads such files "
                f"but cannot write them; put fits.HDUList([fits.PrimaryHDU(header=...)]) "
                f"with the header cards you want to keep instead"
            )
    work = fits.HDUList([_detached(hdu) for hdu in obj])
    write_hdulist(work, location, checksum=checksum)


def _detached(hdu: Any) -> Any:
    """``hdu`` to write without touching it: same state, own header, read-only image.

    astropy's ``writeto`` updates the headers it writes (CHECKSUM/DATASUM, EXTEND, a
    "fixed" card) and byte-swaps a little-endian image in place while writing it; the
    caller's HDUList must come out of a put, failed or not, exactly as it went in.
    ``hdu.copy()`` is no answer: it rebuilds the HDU from its data, which rescales BLANK
    or BZERO images, re-derives BITPIX and drops the structural cards' comments. A shallow
    copy keeps every attribute astropy writes from, with a copy of the header (copies of
    its cards) and a read-only view of an image (`write_hdulist` writes it in chunks).
    """
    import copy

    import numpy as np

    work = copy.copy(hdu)
    work._header = hdu._header.copy()
    data = hdu.__dict__.get("data")  # loaded data only: lazy data is read by the copy
    if type(data) is np.ndarray and data.flags.writeable:
        view = data.view()
        view.flags.writeable = False
        work.__dict__["data"] = view
    return work


def read_hdulist(source: FitsSource, location: ButlerLocation, *, checksum: bool) -> fits.HDUList:
    """Load every HDU with its data into memory and return them as a new `HDUList`."""
    cls = location.read_type()
    hdus = source.check_all()
    source.check_size(hdus)  # before the checksums, which read the data too
    if checksum:
        verify_hdus(hdus, location)
    for hdu in hdus:
        _ = hdu.data  # load now: the file is closed when we return
    return cls(hdus)


def read(location: ButlerLocation, *, checksum: bool = False, **args: Any) -> fits.HDUList:
    """Read the whole file from any storage (`open_stored`; astropy reads each data array
    with one call)."""
    with open_stored(location, **args) as source:
        return read_hdulist(source, location, checksum=checksum)
