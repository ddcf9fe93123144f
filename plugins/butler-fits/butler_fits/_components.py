"""Components of `CCDData` and `HDUList`, and FITS's direct reads of them.

`CCDData`: ``data``, ``mask``, ``uncertainty``, ``wcs``, ``meta`` (``header`` is the same
header), ``unit``. Read directly from the file astropy's layout gives them
(`butler_fits._ccddata`): the WCS, meta and unit from the primary *header* alone, the mask
from the ``MASK`` HDU alone, the uncertainty from ``UNCERT`` alone, the data from the
primary HDU alone. Each is built exactly as astropy's CCDData reader builds it, so a
component read directly equals the same component of the whole read. On storages without
local files the file is opened for random access in small blocks: a WCS costs the header
blocks, not the image.

`HDUList`: every HDU is a component, by EXTNAME (``"SCI"``, ``"PRIMARY"``) or by index
(``"0"``, ``"1"``); one HDU is read directly (its header and its data only).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData

from ._ccddata import HDU_MASK, HDU_UNCERTAINTY, _unit
from ._fitsfile import FitsSource, open_fileobj, open_source, strip_butler_keywords
from ._image import image_section
from ._plugin import CCDDATA_COMPONENTS
from ._wcs import wcs_from_header_text

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = [
    "CCDDATA_COMPONENTS",
    "assemble_ccddata",
    "assemble_hdulist",
    "extract_ccddata",
    "extract_hdu",
    "read_ccddata_component",
    "read_hdu",
    "split_ccddata",
    "split_hdulist",
]

#: Block size for header-only reads: a few 2880-byte FITS blocks per request.
HEADER_BLOCK_SIZE = 16 * 1024
#: A FITS block, and the most header bytes the WCS fast path reads before giving up.
FITS_BLOCK = 2880
MAX_HEADER_BYTES = 100 * FITS_BLOCK
#: Block size for one HDU's data: the storage merges consecutive blocks into one request.
DATA_BLOCK_SIZE = 256 * 1024


# -- CCDData in memory -------------------------------------------------------------------


def split_ccddata(ccd: CCDData) -> dict[str, Any]:
    """Every component (``header`` is ``meta``: not repeated)."""
    return {
        "data": ccd.data,
        "mask": ccd.mask,
        "uncertainty": ccd.uncertainty,
        "wcs": ccd.wcs,
        "meta": ccd.meta,
        "unit": ccd.unit,
    }


def extract_ccddata(ccd: CCDData, name: str) -> Any:
    """One component; ``header`` is an alias of ``meta``."""
    if name not in CCDDATA_COMPONENTS:
        raise KeyError(name)
    return getattr(ccd, "meta" if name == "header" else name)


def assemble_ccddata(cls: type, parts: Mapping[str, Any]) -> CCDData:
    """``cls(data, unit=..., mask=..., uncertainty=..., wcs=..., meta=...)``."""
    meta = parts.get("meta", parts.get("header"))
    return cls(
        parts["data"],
        unit=parts.get("unit"),
        mask=parts.get("mask"),
        uncertainty=parts.get("uncertainty"),
        wcs=parts.get("wcs"),
        meta=meta,
    )


# -- HDUList in memory -------------------------------------------------------------------


def _hdu_name(hdul: fits.HDUList, index: int) -> str:
    name = hdul[index].name or ("PRIMARY" if index == 0 else "")
    return name or str(index)


def split_hdulist(hdul: fits.HDUList) -> dict[str, Any]:
    """EXTNAME (or index, for unnamed HDUs) → HDU, in file order."""
    parts: dict[str, Any] = {}
    for i, hdu in enumerate(hdul):
        name = _hdu_name(hdul, i)
        parts[name if name not in parts else str(i)] = hdu
    return parts


def extract_hdu(hdul: fits.HDUList, name: str) -> Any:
    """The HDU named ``name`` (EXTNAME) or at index ``name`` (digits)."""
    key: Any = int(name) if name.isdigit() else name
    try:
        return hdul[key]
    except (KeyError, IndexError):
        raise KeyError(name) from None


def assemble_hdulist(cls: type, parts: Mapping[str, Any]) -> fits.HDUList:
    """The HDUs in the order of ``parts`` (file order, as split)."""
    return cls(list(parts.values()))


# -- direct reads ------------------------------------------------------------------------


@contextlib.contextmanager
def _opened(location: ButlerLocation, block_size: int) -> Iterator[FitsSource]:
    """The file, opened lazily: by path where the storage has local files, else as a
    random-access file object fetching ``block_size`` blocks (only those touched)."""
    if location.storage.has_local_paths:
        with open_source(location, path=True) as source:
            check_recorded_size(location, source.size)
            yield source
        return
    with (
        location.open_read(access="random", block_size=block_size) as f,
        open_fileobj(f, location) as source,
    ):
        check_recorded_size(location, source.size)
        yield source


def check_recorded_size(location: ButlerLocation, size: int) -> None:
    """Refuse a file whose size differs from the one recorded when it was written: a
    component read touches one part of the file, so it checks the whole file this way
    (as cheap as a stat) instead of trusting what it does not read."""
    recorded = (location.stored or {}).get("size")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded != size:
        raise location.format_error(
            f"is truncated or altered: {size} bytes stored, {recorded} recorded when written"
        )


def hdu_data(source: FitsSource, hdu: Any, location: ButlerLocation) -> Any:
    """One HDU's data (or its ``section``), checked against truncation and the read limit."""
    section = image_section(location)
    source.check_complete(hdu)
    source.check_size([hdu], section=section)
    if section is None:
        return hdu.data
    try:
        data = hdu.section[section]
    except (IndexError, TypeError, ValueError) as exc:
        raise location.format_error(
            f"section {section!r} does not fit HDU {hdu.name!r}: {exc}"
        ) from None
    return np.array(data)


def _header(source: FitsSource) -> fits.Header:
    header = source.hdul[0].header.copy()
    return strip_butler_keywords(header)


def _wcs_and_meta(source: FitsSource) -> tuple[Any, fits.Header]:
    """As astropy's CCDData reader: the WCS, and the header without WCS keywords."""
    from astropy.nddata.ccddata import _generate_wcs_and_update_header

    header, wcs = _generate_wcs_and_update_header(_header(source))
    return wcs, strip_butler_keywords(header)


def _wcs(header: Any) -> Any:
    """The WCS alone, as astropy's CCDData reader makes it (``WCS(header)``; ``None`` when
    the header has none), without its header bookkeeping (the reader's other half)."""
    from astropy.wcs import WCS

    try:
        # The header's text (the direct read): the same WCS without astropy's header round
        # trips when they cannot change it (`._wcs`), ~10x faster.
        wcs = wcs_from_header_text(header) if isinstance(header, str) else None
        if wcs is None:
            wcs = WCS(header)
    except Exception:  # the reader, too, gives no WCS for a header WCS() rejects
        return None
    return wcs if wcs.wcs.ctype[0] else None


def _header_text(location: ButlerLocation) -> str | None:
    """The primary header's cards as text, read block by block up to its END card: the
    fast path for the WCS (wcslib parses the text; no astropy `Header` is built). ``None``
    when the file is not a plain FITS file whose header ends within `MAX_HEADER_BYTES`
    (compressed, truncated, odd): astropy's own path then reads it, and reports errors."""
    blocks: list[bytes] = []
    with contextlib.ExitStack() as stack:
        if location.storage.has_local_paths:
            f: Any = stack.enter_context(open(stack.enter_context(location.local_path()), "rb"))
        else:
            f = stack.enter_context(
                location.open_read(access="random", block_size=HEADER_BLOCK_SIZE)
            )
        check_recorded_size(location, f.seek(0, 2))
        f.seek(0)
        while len(blocks) * FITS_BLOCK < MAX_HEADER_BYTES:
            block = f.read(FITS_BLOCK)
            if len(block) < FITS_BLOCK or (not blocks and not block.startswith(b"SIMPLE  =")):
                return None
            blocks.append(block)
            if any(block[i : i + 8] == b"END     " for i in range(0, FITS_BLOCK, 80)):
                try:
                    return b"".join(blocks).decode("ascii")
                except UnicodeDecodeError:
                    return None
    return None


def _read_unit(source: FitsSource, location: ButlerLocation) -> Any:
    given = location.parameters.get("unit")
    if given is not None:
        return _unit(given, location)
    bunit = source.hdul[0].header.get("BUNIT")
    if not bunit:
        raise location.format_error(
            "has no BUNIT keyword, and a CCDData needs a unit: pass parameters={'unit': ...}"
        )
    from astropy import units as u

    text = bunit.lower() if bunit.strip().lower() == "adu" else bunit
    text = CCDData.known_invalid_fits_unit_strings.get(text, text)
    return u.Unit(text)


def _optional_hdu(source: FitsSource, name: str) -> Any:
    try:
        return source.hdul[name]
    except KeyError:
        return None


def _uncertainty(source: FitsSource, location: ButlerLocation) -> Any:
    from astropy.nddata.ccddata import _unc_name_to_cls
    from astropy.nddata.nduncertainty import StdDevUncertainty

    hdu = _optional_hdu(source, HDU_UNCERTAINTY)
    if hdu is None:
        return None
    kind = _unc_name_to_cls.get(hdu.header.get("UTYPE", "None"), StdDevUncertainty)
    return kind(hdu_data(source, hdu, location))


def read_ccddata_component(location: ButlerLocation, component: str, **_: Any) -> Any:
    """Read one component of a CCDData file, touching only the HDU (or header) it lives in."""
    if component == "wcs":
        text = _header_text(location)
        if text is not None:
            wcs = _wcs(text)
            section = image_section(location)
            return wcs[section] if wcs is not None and section is not None else wcs
    header_only = component in ("wcs", "meta", "header", "unit")
    block = HEADER_BLOCK_SIZE if header_only else DATA_BLOCK_SIZE
    with _opened(location, block) as source:
        if component == "unit":
            return _read_unit(source, location)
        if component in ("meta", "header"):
            return _wcs_and_meta(source)[1]
        if component == "wcs":
            wcs = _wcs(source.hdul[0].header)
            section = image_section(location)
            return wcs[section] if wcs is not None and section is not None else wcs
        if component == "mask":
            hdu = _optional_hdu(source, HDU_MASK)
            return None if hdu is None else np.asarray(hdu_data(source, hdu, location), bool)
        if component == "uncertainty":
            return _uncertainty(source, location)
        return hdu_data(source, source.hdul[0], location)


def read_hdu(location: ButlerLocation, component: str, **_: Any) -> Any:
    """One HDU of a file read as an `HDUList`: by EXTNAME or index, its data loaded."""
    from butler import ComponentError

    with _opened(location, DATA_BLOCK_SIZE) as source:
        try:
            hdu = extract_hdu(source.hdul, component)
        except KeyError:
            names = list(split_hdulist(source.hdul))
            raise ComponentError(
                f"{location.describe()}: 'astropy.io.fits.HDUList' has no component "
                f"{component!r}; its components are {names} (or their indices)"
            ) from None
        source.check_complete(hdu)
        source.check_size([hdu])
        _ = hdu.data  # loaded now: the file closes when we return
        return hdu
