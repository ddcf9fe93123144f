"""One HDU (``PrimaryHDU``, ``ImageHDU``, ``BinTableHDU``...) ↔ a FITS file: the part of a
disassembled `HDUList`. An extension is written after an empty primary HDU, as FITS
requires; the HDU's class is recorded, so a read gives back the same kind of HDU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from astropy.io import fits

from ._fitsfile import check_args, open_source, record_type, recorded_type, write_hdulist
from ._hdulist import _detached

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]


def write(
    obj: Any,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """The HDU alone (a primary HDU) or after an empty primary HDU (an extension)."""
    check_args(location, checksum, compress, compress_args, images=False)
    hdu = _detached(obj)
    if isinstance(hdu, fits.PrimaryHDU):
        hdul = fits.HDUList([hdu])
    else:
        hdul = fits.HDUList([fits.PrimaryHDU(), hdu])
    record_type(hdul[0].header, obj)
    write_hdulist(hdul, location, checksum=checksum)


def read(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> Any:
    """The HDU, its data loaded, as the class written."""
    with open_source(location) as source:
        hdus = source.check_all(checksum)
        cls = location.read_type(recorded_type(hdus[0].header))
        hdu = hdus[0] if issubclass(cls, fits.PrimaryHDU) else hdus[-1]
        source.check_size([hdu])
        _ = hdu.data  # loaded now: the file closes when we return
        if isinstance(hdu, fits.PrimaryHDU):
            hdu.header.remove("BUTLTYPE", ignore_missing=True)
        return hdu
