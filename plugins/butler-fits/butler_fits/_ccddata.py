"""`astropy.nddata.CCDData` ↔ FITS with astropy's own layout.

Data and unit (BUNIT) in the primary HDU, with the WCS and ``meta`` as header keywords;
the uncertainty in an ``UNCERT`` image extension (its type in ``UTYPE``) and the mask in
``MASK``. astropy's CCDData reader rebuilds the object; butler adds the checks (signature,
truncation, checksums) and records the concrete class.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from astropy.io import fits
from astropy.nddata import CCDData

from .astropy_ import (
    FitsSource,
    check_args,
    hdu_key,
    open_source,
    record_type,
    recorded_type,
    strip_butler_keywords,
    verify_hdus,
    write_hdulist,
)

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]

HDU_MASK = "MASK"
HDU_UNCERTAINTY = "UNCERT"


def write(
    obj: CCDData,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Write with `CCDData.to_hdu` (mask in ``MASK``, uncertainty in ``UNCERT``)."""
    check_args(location, checksum, compress, compress_args, images=False)
    hdul = obj.to_hdu(hdu_mask=HDU_MASK, hdu_uncertainty=HDU_UNCERTAINTY, wcs_relax=True)
    record_type(hdul[0].header, obj)
    write_hdulist(hdul, location, checksum=checksum)


def read_ccddata(source: FitsSource, location: ButlerLocation, *, checksum: bool) -> CCDData:
    """Check the file, then let astropy's CCDData reader build the object."""
    from astropy.nddata.ccddata import fits_ccddata_reader

    hdus = source.check_all()
    source.check_size(hdus)  # before the checksums, which read the data too
    if checksum:
        verify_hdus(hdus, location)
    cls = location.read_type(recorded_type(source.hdul[0].header))
    kwargs: dict[str, Any] = {"hdu_mask": HDU_MASK, "hdu_uncertainty": HDU_UNCERTAINTY}
    key = hdu_key(location)
    if key is not None:
        kwargs["hdu"] = key
    if not isinstance(source.file, str):
        source.file.seek(0)
    with warnings.catch_warnings():
        # "using the unit ... passed to the FITS reader instead of the unit ... in the FITS
        # file" and FITSFixedWarning about WCS keywords fixed on load are informational.
        warnings.simplefilter("ignore", category=fits.verify.VerifyWarning)
        ccd = fits_ccddata_reader(source.file, memmap=False, **kwargs)
    if isinstance(ccd.meta, fits.Header):
        strip_butler_keywords(ccd.meta)
    if cls is not CCDData:
        ccd = cls(ccd, copy=False)
    return ccd


def read(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> CCDData:
    """Read data, unit, uncertainty, mask, WCS and meta."""
    with open_source(location) as source:
        return read_ccddata(source, location, checksum=checksum)
