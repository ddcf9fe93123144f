"""FITS files for the parts of a disassembled CCDData: a WCS and an uncertainty.

* `astropy.wcs.WCS` ↔ a data-less primary HDU holding ``wcs.to_header(relax=True)``;
* `astropy.nddata.NDUncertainty` ↔ a primary image HDU with its kind in ``UTYPE`` (as
  astropy's own CCDData layout stores an uncertainty extension).

Both record the concrete class written (``BUTLTYPE``), so a subclass comes back as itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from ._fitsfile import check_args, open_source, record_type, recorded_type, write_hdulist

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read_uncertainty", "read_wcs", "write_uncertainty", "write_wcs"]

KW_UNCERTAINTY = "UTYPE"


def write_wcs(
    obj: Any,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """A primary HDU without data whose header is the WCS's."""
    check_args(location, checksum, compress, compress_args, images=False)
    hdu = fits.PrimaryHDU(header=obj.to_header(relax=True))
    record_type(hdu.header, obj)
    write_hdulist(fits.HDUList([hdu]), location, checksum=checksum)


def read_wcs(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> Any:
    """The WCS of the primary header; with a ``section``, the WCS of that section (as the
    WCS of a CCDData read with it: a disassembled WCS reads as an assembled one)."""
    from astropy.wcs import FITSFixedWarning

    from ._image import image_section

    section = image_section(location)
    with open_source(location) as source:
        header = source.hdul[0].header
        source.check_complete(source.hdul[0])
        cls = location.read_type(recorded_type(header))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = cls(header, relax=True)
    if section is None:
        return wcs
    try:
        return wcs[section]
    except (IndexError, TypeError, ValueError) as exc:
        message = f"section {section!r} does not apply to its WCS: {exc}"
        raise location.format_error(message) from None


def write_uncertainty(
    obj: Any,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """The uncertainty's array as a primary image, its kind in ``UTYPE``."""
    check_args(location, checksum, compress, compress_args, images=False)
    hdu = fits.PrimaryHDU(np.asarray(obj.array))
    hdu.header[KW_UNCERTAINTY] = type(obj).__name__
    record_type(hdu.header, obj)
    write_hdulist(fits.HDUList([hdu]), location, checksum=checksum)


def read_uncertainty(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> Any:
    """The uncertainty (its ``section`` only, when asked for) as the class written."""
    from ._components import hdu_data

    with open_source(location) as source:
        hdu = source.hdul[0]
        cls = location.read_type(recorded_type(hdu.header))
        return cls(np.array(hdu_data(source, hdu, location)))
