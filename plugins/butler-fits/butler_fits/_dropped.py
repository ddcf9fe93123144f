"""What reading a FITS file as a narrower type (an image array, one table) leaves out.

Declared as the FITS format's ``dropped`` capability, so that ``butler convert``/``put``
warn or refuse instead of dropping HDUs and header cards in silence, without the core
knowing anything about FITS. Only headers are read.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from butler import ButlerError, ButlerLocation, Dropped
from butler.types import type_name

__all__ = ["dropped"]

#: FITS keywords that only lay out the data (any writer rebuilds them) or that butler writes
#: for itself: reading the data alone loses nothing by dropping them.
_LAYOUT_KEYWORDS = re.compile(
    r"(SIMPLE|XTENSION|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|GROUPS|BSCALE|BZERO|CHECKSUM"
    r"|DATASUM|BUTL\w*)?"
)

#: What each FITS python type reads of a file: which HDU by default, and whether the HDU's
#: header cards come with it. Types not listed (HDUList, Header, CCDData...) are not checked.
_FITS_READS = {
    "numpy.ndarray": ("image", False),
    "astropy.table.Table": ("table", True),
}


def _fits_name(index: int, hdu: Any) -> str:
    return f"{index}:{hdu.name or ('PRIMARY' if index == 0 else '')}".rstrip(":")


def _fits_hdu_text(index: int, hdu: Any) -> str:
    header = hdu.header
    name = _fits_name(index, hdu)
    dims = [header.get(f"NAXIS{i}", 0) for i in range(1, header.get("NAXIS", 0) + 1)]
    if type(hdu).__name__ == "GroupsHDU":
        kind = f"random groups, {header.get('GCOUNT', 0)} groups"
    elif (
        "XTENSION" in header
        and str(header["XTENSION"]).strip() in ("BINTABLE", "TABLE")
        and (not header.get("ZIMAGE"))
    ):
        kind = f"table, {dims[1] if len(dims) > 1 else 0} rows"
    else:
        kind = "image " + "x".join(str(d) for d in reversed(dims))
    return f"{name} ({kind})"


def _fits_has_data(hdu: Any) -> bool:
    header = hdu.header
    if type(hdu).__name__ == "GroupsHDU":
        return bool(header.get("GCOUNT", 0))
    naxis = header.get("NAXIS", 0)
    return naxis > 0 and all(header.get(f"NAXIS{i}", 0) > 0 for i in range(1, naxis + 1))


def _fits_picks(hdu: Any, kind: str) -> bool:
    """Whether the reader of ``kind`` takes ``hdu`` by default (as the FITS plugin does)."""
    from astropy.io import fits

    if kind == "table":
        return isinstance(hdu, fits.BinTableHDU | fits.TableHDU) and not isinstance(
            hdu, getattr(fits, "CompImageHDU", ())
        )
    return isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU) and (
        hdu.header.get("NAXIS", 0) > 0 or "BUTLSHAP" in hdu.header
    )


def dropped(location: ButlerLocation, python_type: str) -> Dropped | None:
    """What reading the FITS file at ``location`` as ``python_type`` leaves out.

    Only the headers are read (astropy skips the data). The HDU kept is the ``hdu``
    parameter of the location, else the one the FITS plugin's reader picks.

    Returns
    -------
    Dropped or None
        ``None`` when the type is not one whose reads are known here, astropy is missing,
        or the file cannot be parsed (the read itself then reports why).
    """
    reads = _FITS_READS.get(type_name(python_type))
    if reads is None:
        return None
    kind, keeps_header = reads
    try:
        from astropy.io import fits

        with location.open_read() as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(f, memmap=False, lazy_load_hdus=False) as hdul:
                hdus = list(hdul)
                asked = location.parameters.get("hdu")
                if asked is not None:
                    kept = hdul.index_of(tuple(asked) if isinstance(asked, list) else asked)
                else:
                    kept = next((i for i, h in enumerate(hdus) if _fits_picks(h, kind)), None)
                if kept is None:
                    return None
                parts: list[str] = []
                cards: list[str] = []
                for index, hdu in enumerate(hdus):
                    if index != kept and _fits_has_data(hdu):
                        parts.append(_fits_hdu_text(index, hdu))
                    elif index != kept or not keeps_header:
                        cards += [
                            c.keyword
                            for c in hdu.header.cards
                            if not _LAYOUT_KEYWORDS.fullmatch(c.keyword)
                        ]
                name = _fits_name(kept, hdus[kept])
    except ImportError:
        return None
    except (ButlerError, OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return Dropped(f"HDU {name}", tuple(parts), tuple(dict.fromkeys(cards)), len(cards))
