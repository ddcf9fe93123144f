"""How many bytes reading a FITS HDU allocates, from its header alone.

A 1 MB ``.fits.gz`` can inflate to a 1 GiB image and a tile-compressed HDU can declare any
ZNAXISn: readers compute what the header declares and call
`ButlerLocation.check_read_size` before touching the data (see `FitsSource.check_size`).
Hostile structural keywords (negative, non-integer, absurd NAXIS) are format errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from astropy.io import fits

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["column_bytes", "cutout_bytes", "declared_bytes", "hdu_label"]


def hdu_label(hdu: Any) -> str:
    """``'SCI'``, ``PRIMARY`` or ``(unnamed extension)``, for messages."""
    name = getattr(hdu, "name", "")
    if name and name != "PRIMARY":
        return repr(name)
    return "PRIMARY" if isinstance(hdu, fits.PrimaryHDU) else "(unnamed extension)"


def _keyword_int(
    header: Any, keyword: str, hdu: Any, location: ButlerLocation, default: int
) -> int:
    """A structural keyword as a non-negative int, or a `FormatError` naming it."""
    value = header.get(keyword, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise location.format_error(
            f"HDU {hdu_label(hdu)} declares {keyword} = {value!r}, not a non-negative integer"
        )
    return value


def _axes(header: Any, prefix: str, hdu: Any, location: ButlerLocation) -> list[int]:
    """``[NAXIS1, NAXIS2, ...]`` (or ``ZNAXISn``) as declared, FITS order."""
    naxis = _keyword_int(header, prefix, hdu, location, 0)
    if naxis > 999:
        raise location.format_error(f"HDU {hdu_label(hdu)} declares {prefix} = {naxis} > 999")
    return [_keyword_int(header, f"{prefix}{i}", hdu, location, 0) for i in range(1, naxis + 1)]


def _bitpix_bytes(header: Any, keyword: str, hdu: Any, location: ButlerLocation) -> int:
    bitpix = header.get(keyword, 8)
    if bitpix not in (8, 16, 32, 64, -32, -64):
        raise location.format_error(
            f"HDU {hdu_label(hdu)} declares {keyword} = {bitpix!r}, not one of 8, 16, 32, "
            f"64, -32, -64"
        )
    return abs(int(bitpix)) // 8


def _product(values: Iterable[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def _scaled_itemsize(header: Any, itemsize: int) -> int:
    """Bytes per pixel once astropy applies BSCALE/BZERO (a float array; same size for the
    unsigned-integer BZERO convention, counted as float too: an upper bound)."""
    if header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0:
        return max(itemsize, 4 if itemsize <= 2 else 8)
    return 0


def _raw_data_bytes(hdu: Any, header: Any, location: ButlerLocation) -> int:
    """FITS's data size: |BITPIX|/8 x GCOUNT x (PCOUNT + NAXIS1 x ... x NAXISn)."""
    axes = _axes(header, "NAXIS", hdu, location)
    if not axes:
        return 0
    if header.get("GROUPS") is True and axes[0] == 0:  # random groups: NAXIS1 = 0
        axes = axes[1:]
    itemsize = _bitpix_bytes(header, "BITPIX", hdu, location)
    gcount = _keyword_int(header, "GCOUNT", hdu, location, 1)
    pcount = _keyword_int(header, "PCOUNT", hdu, location, 0)
    return itemsize * gcount * (pcount + _product(axes))


def _tiled(hdu: Any, location: ButlerLocation) -> tuple[Any, list[int], int, int]:
    """A tile-compressed image's table header, image shape (ZNAXISn, FITS order), bytes per
    decompressed pixel and number of tiles (astropy keeps one int64 per tile)."""
    raw = hdu._bintable.header
    shape = _axes(raw, "ZNAXIS", hdu, location)
    itemsize = _bitpix_bytes(raw, "ZBITPIX", hdu, location)
    tiles = 1
    for i, length in enumerate(shape, start=1):
        tile = _keyword_int(raw, f"ZTILE{i}", hdu, location, length if i == 1 else 1) or 1
        tiles *= -(-length // tile)
    return raw, shape, itemsize, tiles


def declared_bytes(hdu: Any, location: ButlerLocation) -> tuple[int, str]:
    """Bytes reading ``hdu``'s data allocates, from its header alone, and a description.

    Raw data as FITS declares it, plus the scaled (BSCALE/BZERO) array; for a
    tile-compressed image, the compressed table (its heap included) plus the image its
    ZNAXISn/ZBITPIX declare.
    """
    label = f"HDU {hdu_label(hdu)}"
    if getattr(hdu, "_bintable", None) is not None:
        raw, shape, itemsize, tiles = _tiled(hdu, location)
        pixels = _product(shape)
        out = max(itemsize, _scaled_itemsize(hdu.header, itemsize))
        nbytes = _raw_data_bytes(hdu, raw, location) + pixels * out + 8 * tiles
        dims = " x ".join(map(str, shape)) or "empty"
        return nbytes, f"{label} (tile-compressed image {dims}, ZBITPIX {raw.get('ZBITPIX')})"
    header = hdu.header
    nbytes = _raw_data_bytes(hdu, header, location)
    axes = _axes(header, "NAXIS", hdu, location)
    if axes and not isinstance(hdu, fits.BinTableHDU | fits.TableHDU):
        itemsize = _bitpix_bytes(header, "BITPIX", hdu, location)
        nbytes += _product(axes) * _scaled_itemsize(header, itemsize)
    dims = " x ".join(map(str, axes)) or "no data"
    return nbytes, f"{label} ({dims}, BITPIX {header.get('BITPIX')})"


def cutout_bytes(hdu: Any, section: tuple[Any, ...], location: ButlerLocation) -> tuple[int, str]:
    """Bytes a ``section`` read of image ``hdu`` allocates: the cutout only (plus, for a
    tile-compressed image, its compressed table and tile grid)."""
    import numpy as np

    label = f"HDU {hdu_label(hdu)}"
    table = tiles = 0
    if getattr(hdu, "_bintable", None) is not None:
        raw, axes, itemsize, tiles = _tiled(hdu, location)
        table = _raw_data_bytes(hdu, raw, location)
    else:
        axes = _axes(hdu.header, "NAXIS", hdu, location)
        itemsize = _bitpix_bytes(hdu.header, "BITPIX", hdu, location)
    shape = tuple(reversed(axes))
    try:
        # Index a zero-stride view: numpy's own rules (negative steps, Ellipsis, ints)
        # give the cutout's shape without allocating the image.
        view = np.lib.stride_tricks.as_strided(
            np.zeros(1, np.uint8), shape=shape, strides=(0,) * len(shape)
        )
        cut = view[section].shape
    except (IndexError, ValueError, TypeError) as exc:
        raise location.format_error(
            f"section {section!r} does not fit {label} of shape {shape}: {exc}"
        ) from None
    out = max(itemsize, _scaled_itemsize(hdu.header, itemsize))
    nbytes = table + 8 * tiles + _product(cut) * out
    return nbytes, f"{label} cutout {' x '.join(map(str, cut)) or 'scalar'} of {shape}"


def column_bytes(hdu: Any, columns: Iterable[str], location: ButlerLocation) -> tuple[int, str]:
    """Bytes copying ``columns`` of a memory-mapped table allocates: those columns' rows
    (astropy's mixin and mask columns ``name.*`` included) plus the heap."""
    header = hdu.header
    axes = _axes(header, "NAXIS", hdu, location)
    rows = axes[1] if len(axes) > 1 else 0
    wanted = set(columns)
    width = 0
    for name in hdu.columns.names:
        if name in wanted or name.split(".", 1)[0] in wanted:
            width += hdu.columns[name].dtype.itemsize
    heap = _keyword_int(header, "PCOUNT", hdu, location, 0)
    label = f"HDU {hdu_label(hdu)}"
    return rows * width + heap, f"{label} ({len(wanted)} columns of {rows} rows)"
