"""`astropy.table.Table` (and subclasses) ↔ FITS binary table HDU.

astropy's own FITS writer loses a few things; this serializer keeps them:

* masked values of every column type: masks are written as separate boolean columns
  (astropy's ``data_mask`` serialization), never as NaN/TNULL, so a NaN stays a NaN;
* unicode strings (FITS is ASCII): stored UTF-8 encoded; strings with trailing spaces
  (which FITS ignores) as raw bytes; each column's exact dtype (``U``/``S`` width, byte
  order) is recorded in ``BUTLCOLS`` and restored;
* table metadata and column formats: kept as YAML in COMMENT cards (scalar entries are
  also written as ordinary header keywords for other FITS readers); column descriptions
  and meta through astropy's serialized-columns block;
* the concrete class (``QTable``, user subclasses), recorded in ``BUTLTYPE``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.table import Column, MaskedColumn, Table
from astropy.units import Quantity

from .astropy_ import (
    FitsSource,
    check_args,
    check_astropy_yaml,
    first_hdu,
    get_yaml_block,
    open_source,
    put_yaml_block,
    record_type,
    recorded_type,
    verify_hdus,
    write_hdulist,
)

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "read_posix", "read_s3", "write"]

KW_COLUMNS = "BUTLCOLS"
META_MARKER = "BUTLER-TABLE-META"
_KEYWORD = re.compile(r"^[A-Z0-9_-]{1,8}$")


def _plain_columns(table: Table) -> dict[str, str]:
    """Exact dtypes of the plain (non-mixin) columns, to restore on read."""
    return {
        name: col.dtype.str
        for name, col in table.columns.items()
        if isinstance(col, Column | Quantity) and col.dtype.fields is None
    }


def _with_data(col: Column, data: np.ndarray[Any, Any]) -> Column:
    """A column like ``col`` (name, unit, format, description, meta, mask) holding ``data``."""
    kwargs: dict[str, Any] = {
        "name": col.info.name,
        "unit": col.info.unit,
        "format": col.info.format,
        "description": col.info.description,
        "meta": col.info.meta,
    }
    if isinstance(col, MaskedColumn):
        return MaskedColumn(data, mask=np.ma.getmaskarray(col), **kwargs)
    return Column(data, **kwargs)


def _encode_strings(table: Table) -> tuple[Table, list[str]]:
    """A shallow copy of ``table`` whose strings FITS can hold exactly.

    Unicode becomes UTF-8 bytes (FITS is ASCII). FITS ignores trailing spaces, so a
    string column with any value ending in a space is stored as raw ``uint8`` bytes
    (one more axis); the names of those columns are returned.
    """
    names = [n for n, c in table.columns.items() if isinstance(c, Column) and c.dtype.kind in "US"]
    raw: list[str] = []
    if not names:
        return table, raw
    work = table.copy(copy_data=False)
    for name in names:
        col = work[name]
        data = np.asarray(col.data)
        if data.dtype.kind == "U":
            data = np.char.encode(data, "utf-8")
        if data.dtype.itemsize == 0:
            data = data.astype("S1")
        if data.size and np.char.endswith(data, b" ").any():
            size = data.dtype.itemsize
            data = np.ascontiguousarray(data).view(np.uint8).reshape((*data.shape, size))
            raw.append(name)
        if data is not col.data:
            work.replace_column(name, _with_data(col, data))
    return work, raw


def _header_meta(meta: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Table meta entries other FITS readers can see as plain keywords (a subset)."""
    from astropy.io.fits.connect import REMOVE_KEYWORDS, is_column_keyword

    cards = []
    for key, value in meta.items():
        if not isinstance(key, str) or not _KEYWORD.match(key.upper()):
            continue
        upper = key.upper()
        if is_column_keyword(upper) or upper in REMOVE_KEYWORDS or upper.startswith("BUTL"):
            continue
        if upper in ("COMMENT", "HISTORY", "SIMPLE", "XTENSION", "EXTEND", "EXTNAME"):
            continue
        number = isinstance(value, bool | int | float) and not isinstance(value, np.generic)
        text = isinstance(value, str) and value.isascii() and value.isprintable()
        if number or text:
            cards.append((upper, value))
    return cards


def table_hdu(table: Table) -> fits.BinTableHDU:
    """Build the binary table HDU for ``table`` (without touching ``table``)."""
    from astropy.io.fits.connect import _encode_mixins
    from astropy.table.info import serialize_method_as

    work, raw = _encode_strings(table)
    if work is table:
        work = table.copy(copy_data=False)  # meta is replaced below, the caller's is kept
    work.meta = {}
    with serialize_method_as(work, {MaskedColumn: "data_mask"}):
        encoded = _encode_mixins(work)
        hdu = fits.table_to_hdu(encoded, character_as_bytes=True)
    header = hdu.header
    for key, value in _header_meta(table.meta):
        header[key] = value
    columns = {"dtypes": _plain_columns(table), "raw": raw}
    header[KW_COLUMNS] = json.dumps(columns)  # long: CONTINUE cards, so no comment
    record_type(header, table)
    formats = {
        name: col.info.format
        for name, col in table.columns.items()
        if isinstance(col.info.format, str)
    }
    put_yaml_block(header, META_MARKER, {"meta": dict(table.meta), "formats": formats})
    return hdu


def write(
    obj: Table,
    location: ButlerLocation,
    *,
    checksum: bool = False,
    compress: str | None = None,
    compress_args: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    """Write a table as a binary table in extension 1 (empty primary HDU).

    Parameters
    ----------
    obj
        `~astropy.table.Table`, `~astropy.table.QTable` or any subclass.
    location
        Where to write.
    checksum
        Add CHECKSUM/DATASUM keywords.
    """
    check_args(location, checksum, compress, compress_args, images=False)
    hdul = fits.HDUList([fits.PrimaryHDU(), table_hdu(obj)])
    write_hdulist(hdul, location, checksum=checksum)


def _is_table(hdu: Any) -> bool:
    return isinstance(hdu, fits.BinTableHDU | fits.TableHDU)


def _columns(location: ButlerLocation) -> list[str] | None:
    columns = location.parameters.get("columns")
    if columns is None:
        return None
    if isinstance(columns, str):
        return [columns]
    if not isinstance(columns, Sequence) or not all(isinstance(c, str) for c in columns):
        raise location.format_error(f"parameter columns={columns!r} must be a list of names")
    return list(columns)


def _restore_columns(table: Table, recorded: Mapping[str, Any]) -> None:
    """Give plain columns back their exact written dtype (strings decoded from UTF-8)."""
    raw = set(recorded.get("raw", ()))
    for name, dtype_str in recorded.get("dtypes", {}).items():
        if name not in table.colnames:
            continue
        col = table[name]
        want = np.dtype(dtype_str)
        if col.dtype == want and col.dtype.str == want.str:
            continue
        if isinstance(col, Quantity):
            new = col.astype(want)
            for attr in ("description", "meta", "format"):
                setattr(new.info, attr, getattr(col.info, attr))
            table.replace_column(name, new)
            continue
        if not isinstance(col, Column):
            continue
        data = np.asarray(col.data)
        if name in raw:  # bytes kept with their trailing spaces
            data = np.ascontiguousarray(data).view(f"S{data.shape[-1]}")[..., 0]
        if want.kind == "U" and data.dtype.kind == "S":
            data = np.char.decode(data, "utf-8")
        table.replace_column(name, _with_data(col, data.astype(want)))


def read_table(
    source: FitsSource, location: ButlerLocation, *, checksum: bool = False, detach: bool = False
) -> Table:
    """Read the table HDU (or the ``hdu`` asked for); ``columns`` keeps only those."""
    from astropy.io.fits.connect import read_table_fits

    hdu = source.hdu(lambda hdul: first_hdu(hdul, _is_table, "table", location))
    if not _is_table(hdu):
        raise location.format_error(f"HDU {hdu.name!r} is a {type(hdu).__name__}, not a table")
    source.check_complete(hdu)
    header = hdu.header
    cls = location.read_type(recorded_type(header))
    columns = _columns(location)
    # Memory-mapped (posix, with columns): only those columns are copied; else all of it.
    source.check_size([hdu], columns=columns if detach else None)
    if checksum and columns is None:
        verify_hdus([hdu], location)
    ours = KW_COLUMNS in header
    check_astropy_yaml(header, location)
    table = read_table_fits(
        hdu,
        astropy_native=ours,
        character_as_bytes=True,
        mask_invalid=False,
        strip_spaces=False,
        unit_parse_strict="silent",
    )
    if columns is not None:
        missing = [c for c in columns if c not in table.colnames]
        if missing:
            raise location.format_error(
                f"has no columns {missing}; its columns are {table.colnames}"
            )
        table = table[columns]
    if ours:
        _restore_columns(table, json.loads(header[KW_COLUMNS]))
        found, block = get_yaml_block(header, META_MARKER, location)
        if found:
            table.meta = block["meta"]
            for name, fmt in block["formats"].items():
                if name in table.colnames:
                    table[name].info.format = fmt
    result = cls(table, copy=detach)
    if ours:
        result.meta = table.meta
    return result


def read(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> Table:
    """Read through a file object (any storage)."""
    with open_source(location) as source:
        return read_table(source, location, checksum=checksum)


def read_posix(location: ButlerLocation, *, checksum: bool = False, **_: Any) -> Table:
    """Read the real file; with ``columns``, through a memory map (only those are copied)."""
    memmap = "columns" in location.parameters
    with open_source(location, path=True, memmap=memmap) as source:
        return read_table(source, location, checksum=checksum, detach=memmap)


def read_s3(location: ButlerLocation, *, checksum: bool = False, **args: Any) -> Table:
    """Read from S3 through astropy's fsspec support."""
    from ._s3 import open_s3

    with open_s3(location, **args) as source:
        return read_table(source, location, checksum=checksum)
