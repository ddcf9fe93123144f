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

from ._fitsfile import (
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
from ._image import image_section

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
    unit = location.parameters.get("unit")
    if unit is not None:  # frames without BUNIT, as CCDData.read(unit=...) reads them
        kwargs["unit"] = _unit(unit, location)
    if not isinstance(source.file, str):
        source.file.seek(0)
    with warnings.catch_warnings():
        # "using the unit ... passed to the FITS reader instead of the unit ... in the FITS
        # file" and FITSFixedWarning about WCS keywords fixed on load are informational.
        warnings.simplefilter("ignore", category=fits.verify.VerifyWarning)
        try:
            ccd = fits_ccddata_reader(source.file, memmap=False, **kwargs)
        except ValueError as exc:
            if "unit" not in str(exc) or unit is not None:
                raise
            raise location.format_error(
                "has no BUNIT keyword, and a CCDData needs a unit: pass "
                "parameters={'unit': 'adu'} (or the frame's unit)"
            ) from None
    if isinstance(ccd.meta, fits.Header):
        strip_butler_keywords(ccd.meta)
    section = image_section(location)
    if section is not None:
        ccd = _cutout(ccd, section, location)
    if cls is not CCDData:
        ccd = cls(ccd, copy=False)
    return ccd


def _unit(unit: Any, location: ButlerLocation) -> Any:
    """The ``unit`` parameter as an astropy unit, or a `ParameterError`-like FormatError."""
    from astropy import units as u

    try:
        return u.Unit(unit)
    except (TypeError, ValueError) as exc:
        raise location.format_error(f"parameter unit={unit!r} is not a unit: {exc}") from None


def _cutout(ccd: CCDData, section: tuple[Any, ...], location: ButlerLocation) -> CCDData:
    """``ccd[section]``: data, mask, uncertainty and WCS sliced together, detached from
    the whole frame (so that its memory is freed)."""
    import copy

    try:
        cut = ccd[section]
    except (IndexError, TypeError, ValueError) as exc:
        raise location.format_error(
            f"section {section!r} does not fit the CCDData of shape {ccd.shape}: {exc}"
        ) from None
    return copy.deepcopy(cut)


def read(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> CCDData:
    """Read data, unit, uncertainty, mask, WCS and meta."""
    with open_source(location) as source:
        return read_ccddata(source, location, checksum=checksum)
