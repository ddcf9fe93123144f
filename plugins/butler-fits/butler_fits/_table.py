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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits
from astropy.table import Column, MaskedColumn, Table
from astropy.units import Quantity

from ._fitsfile import (
    FitsSource,
    check_args,
    check_astropy_yaml,
    first_hdu,
    get_yaml_block,
    put_yaml_block,
    record_type,
    recorded_type,
    verify_hdus,
    write_hdulist,
)
from ._sizes import hdu_label
from ._stored import open_stored
from ._table_meta import meta_from_header, split_meta, write_cards

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]

KW_COLUMNS = "BUTLCOLS"
META_MARKER = "BUTLER-TABLE-META"


#: (kind, itemsize) of numbers a FITS binary table gives back as the same type (in FITS's
#: big-endian order): a native-order column of these needs no dtype recorded.
_ROUND_TRIP = {("b", 1), ("i", 1), ("u", 1), ("i", 2), ("u", 2), ("i", 4), ("u", 4)}
_ROUND_TRIP |= {("i", 8), ("u", 8), ("f", 4), ("f", 8), ("c", 8), ("c", 16)}


def _native(dtype: np.dtype[Any]) -> bool:
    return dtype.byteorder in "=|" or dtype == dtype.newbyteorder("=")


def _plain_columns(table: Table) -> dict[str, str]:
    """Dtypes of the plain (non-mixin) columns that FITS alone would not give back.

    Native-order numbers FITS stores as they are (``_ROUND_TRIP``) are left out: a read
    turns every such column back to native order (the header stays small).
    """
    recorded = {}
    for name, col in table.columns.items():
        if not isinstance(col, Column | Quantity) or col.dtype.fields is not None:
            continue
        dtype = col.dtype
        if (dtype.kind, dtype.itemsize) in _ROUND_TRIP and _native(dtype):
            continue
        recorded[name] = dtype.str
    return recorded


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


def table_hdu(table: Table) -> fits.BinTableHDU:
    """Build the binary table HDU for ``table`` (without touching ``table``)."""
    from astropy.io.fits.connect import _encode_mixins
    from astropy.io.fits.fitstime import TIME_KEYWORDS
    from astropy.table.info import serialize_method_as
    from astropy.time import Time

    work, raw = _encode_strings(table)
    if work is table:
        work = table.copy(copy_data=False)  # meta is replaced below, the caller's is kept
    work.meta = {}
    with serialize_method_as(work, {MaskedColumn: "data_mask"}):
        encoded = _encode_mixins(work)
        hdu = fits.table_to_hdu(encoded, character_as_bytes=True)
    header = hdu.header
    times = [name for name, col in table.columns.items() if isinstance(col, Time)]
    # Keywords already written (and, with Time columns, the time frame astropy wrote for
    # them) stay what they are: meta entries with those names go to YAML.
    reserved = set(header.keys()) | (set(TIME_KEYWORDS) if times else set())
    order, rest = split_meta(table.meta, reserved)
    formats = {
        name: col.info.format
        for name, col in table.columns.items()
        if isinstance(col.info.format, str)
    }
    block = {key: value for key, value in (("meta", rest), ("formats", formats)) if value}
    if block:  # first: astropy files COMMENT cards after the last COMMENT, not at the end
        put_yaml_block(header, META_MARKER, block)
    placed = write_cards(header, table.meta, order)  # BUTLCOLS must follow them directly
    columns = {"dtypes": _plain_columns(table), "raw": raw, "time": times, "meta": placed}
    # Right after the meta cards (``header[k] = v`` would file it before trailing
    # COMMENT/HISTORY cards); long: CONTINUE cards, so no comment.
    header.append((KW_COLUMNS, json.dumps(columns, separators=(",", ":"))), end=True)
    record_type(header, table)
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
    """Give plain columns back their exact written dtype (strings decoded from UTF-8).

    Columns with no recorded dtype were native-order numbers (see `_plain_columns`),
    in files that record ``time`` (older ones recorded every column).
    """
    raw = set(recorded.get("raw", ()))
    dtypes = dict(recorded.get("dtypes", {}))
    if "time" in recorded:
        for name, col in table.columns.items():
            if name in dtypes or not isinstance(col, Column | Quantity):
                continue
            if col.dtype.fields is None and (col.dtype.kind, col.dtype.itemsize) in _ROUND_TRIP:
                dtypes[name] = col.dtype.newbyteorder("=").str
    for name, dtype_str in dtypes.items():
        if name not in table.colnames:
            continue
        col = table[name]
        if not isinstance(col, Column | Quantity):
            continue  # a column FITS turned into a mixin (Time): not a plain one
        want = np.dtype(dtype_str)
        if col.dtype == want and col.dtype.str == want.str:
            continue
        if isinstance(col, Quantity):
            new = col.astype(want)
            for attr in ("description", "meta", "format"):
                setattr(new.info, attr, getattr(col.info, attr))
            table.replace_column(name, new)
            continue
        data = np.asarray(col.data)
        if name in raw:  # bytes kept with their trailing spaces
            data = np.ascontiguousarray(data).view(f"S{data.shape[-1]}")[..., 0]
        if want.kind == "U" and data.dtype.kind == "S":
            data = np.char.decode(data, "utf-8")
        table.replace_column(name, _with_data(col, data.astype(want)))


def _to_time(table: Table, header: fits.Header, times: list[str]) -> None:
    """Turn the columns written as `~astropy.time.Time` back into Time (FITS time standard).

    astropy's reader would also turn any plain column named ``TIME`` with a time unit into
    Time (a light curve's seconds since MJDREF): those are hidden from it while it runs.
    """
    from astropy.io.fits.fitstime import fits_to_time

    hidden = {
        name: f"{name}\x00butler"
        for name in table.colnames
        if name.upper() == "TIME" and name not in times
    }
    for name, temporary in hidden.items():
        table.rename_column(name, temporary)
    try:
        fits_to_time(header, table)
    finally:
        for name, temporary in hidden.items():
            table.rename_column(temporary, name)


def read_table(
    source: FitsSource, location: ButlerLocation, *, checksum: bool = False, detach: bool = False
) -> Table:
    """Read the table HDU (or the ``hdu`` asked for); ``columns`` keeps only those.

    A table butler wrote comes back as written. Any other table comes back as
    ``Table.read`` gives it: string columns as bytes, trailing spaces stripped, NaNs and
    TNULL values masked, meta from the header cards.
    """
    from astropy.io.fits.connect import read_table_fits

    hdu = source.hdu(lambda hdul: first_hdu(hdul, _is_table, "table", location))
    if not _is_table(hdu):
        raise location.format_error(
            f"HDU {hdu.name!r} is a {type(hdu).__name__}, not a table: read it as "
            f"numpy.ndarray or astropy.io.fits.HDUList"
        )
    source.check_complete(hdu)
    header = hdu.header
    cls = location.read_type(recorded_type(header))
    columns = _columns(location)
    # Memory-mapped (posix, with columns): only those columns are copied; else all of it.
    source.check_size([hdu], columns=columns if detach else None)
    if checksum and columns is None:
        verify_hdus([hdu], location)
    ours = KW_COLUMNS in header
    recorded: dict[str, Any] = json.loads(header[KW_COLUMNS]) if ours else {}
    check_astropy_yaml(header, location)
    times = recorded.get("time")
    try:
        table = read_table_fits(
            hdu,
            # Files written before butler recorded its Time columns: astropy's guess.
            astropy_native=ours and times is None,
            mask_invalid=not ours,
            strip_spaces=not ours,
            unit_parse_strict="silent",
        )
    except (TypeError, ValueError) as exc:  # e.g. an ASCII table with a TNULL of another type
        raise location.format_error(
            f"astropy's Table reader cannot read table HDU {hdu_label(hdu)} "
            f"({type(exc).__name__}: {exc}); read it as numpy.ndarray (its rows) or "
            f"astropy.io.fits.HDUList"
        ) from None
    if times:
        _to_time(table, header, times)
    if columns is not None:
        missing = [c for c in columns if c not in table.colnames]
        if missing:
            raise location.format_error(
                f"has no columns {missing}; its columns are {table.colnames}"
            )
        table = table[columns]
    if ours:
        _restore_columns(table, recorded)
        found, block = get_yaml_block(header, META_MARKER, location)
        block = block if found else {}
        if "meta" in recorded:
            rest = block.get("meta") or {}
            table.meta = meta_from_header(header, KW_COLUMNS, recorded["meta"], rest)
        else:  # written before meta cards were chosen: the block holds all of it
            table.meta = block.get("meta") or {}
        for name, fmt in (block.get("formats") or {}).items():
            if name in table.colnames:
                table[name].info.format = fmt
    result = cls(table, copy=detach)
    if ours:
        result.meta = table.meta
    return result


def read(location: ButlerLocation, *, checksum: bool = False, **args: Any) -> Table:
    """Read a table from any storage (`open_stored`); with ``columns``, a local file is
    memory-mapped (only those columns are copied) and S3 fetches small blocks."""
    memmap = "columns" in location.parameters and location.storage.has_local_paths
    with open_stored(location, memmap=memmap, character_as_bytes=True, **args) as source:
        return read_table(source, location, checksum=checksum, detach=memmap)
