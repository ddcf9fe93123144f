"""`astropy.io.fits.Header` ↔ the header of a data-less primary HDU.

FITS forces structural keywords (SIMPLE, BITPIX, NAXIS...) to describe the HDU's actual
(absent) data, so the header as given — every card, in order, with its comment — is also
kept verbatim in a YAML block of COMMENT cards and is what a read returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from astropy.io import fits

from ._fitsfile import (
    check_args,
    get_yaml_block,
    open_source,
    put_yaml_block,
    record_type,
    recorded_type,
    strip_butler_keywords,
    verify_hdus,
    write_hdulist,
)

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]

MARKER = "BUTLER-HEADER-CARDS"


def write(
    obj: fits.Header,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Write a header as a primary HDU without data (the header's cards kept verbatim)."""
    check_args(location, checksum, compress, compress_args, images=False)
    hdu = fits.PrimaryHDU(header=obj.copy(strip=True))
    record_type(hdu.header, obj)
    # ``card.image`` verifies a parsed card and "fixes" it in place: take the images from
    # copies, so that a header with a bad card fails to write (below) and stays as given.
    put_yaml_block(hdu.header, MARKER, [card.image for card in obj.copy().cards])
    write_hdulist(fits.HDUList([hdu]), location, checksum=checksum)


def read(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> fits.Header:
    """Return the header as written (or, for other files, the ``hdu`` asked for)."""
    with open_source(location) as source:
        hdu = source.hdu()
        source.check_complete(hdu)
        if checksum:  # DATASUM reads the HDU's data
            source.check_size([hdu])
            verify_hdus([hdu], location)
        header = hdu.header
        cls = location.read_type(recorded_type(header))
        found, cards = get_yaml_block(header, MARKER, location)
        if found:
            return cls.fromstring("".join(cards))  # type: ignore[attr-defined]
        return cls(strip_butler_keywords(header.copy()))
