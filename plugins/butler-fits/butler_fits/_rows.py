"""A FITS table HDU read as a `numpy.ndarray`: the structured array of its rows.

Each field holds what astropy gives for that column (``hdul[i].data[name]``): scaled by
TSCAL/TZERO, logicals as ``bool``, bits unpacked, TDIM cells shaped, strings as ``bytes``
(FITS is ASCII; astropy's ``Table.read`` gives bytes too). What a structured array cannot
hold is refused with the type to ask for instead: variable-length array columns, column
names that differ only by case, random-groups HDUs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from ._sizes import hdu_label

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["is_table", "refuse_groups", "table_rows"]

_INSTEAD = "read it as astropy.table.Table or astropy.io.fits.HDUList instead"


def is_table(hdu: Any) -> bool:
    """True for ASCII and binary table HDUs (not tile-compressed images)."""
    return isinstance(hdu, fits.BinTableHDU | fits.TableHDU) and not getattr(hdu, "_bintable", None)


def refuse_groups(hdu: Any, location: ButlerLocation) -> None:
    """Raise `FormatError` for a random-groups HDU asked for as an array.

    Its data is a list of groups, each a parameter vector (scaled by PSCALn/PZEROn, names
    that may repeat) plus an array: neither a plain image nor a plain record array says
    that faithfully, and reading it as an image used to return an empty array.
    """
    if isinstance(hdu, fits.GroupsHDU):
        groups = hdu.header.get("GCOUNT", "?")
        params = hdu.header.get("PCOUNT", "?")
        raise location.format_error(
            f"HDU {hdu_label(hdu)} holds random groups ({groups} groups of {params} "
            f"parameters plus an array each), which a numpy.ndarray cannot represent: read "
            f"it as astropy.io.fits.HDUList (hdul[0].data is astropy's GroupData, with "
            f".par(name) and .data)"
        )


def table_rows(hdu: Any, location: ButlerLocation) -> np.ndarray[Any, Any]:
    """The rows of table ``hdu`` as a plain structured array (one field per column).

    Raises
    ------
    FormatError
        For columns a structured array cannot hold, naming them and what to read instead.
    """
    columns = hdu.columns
    names = list(columns.names)
    lowered = [name.lower() for name in names]
    clashes = sorted({n for n in names if lowered.count(n.lower()) > 1})
    if clashes:
        raise location.format_error(
            f"table HDU {hdu_label(hdu)} has columns whose names differ only by case "
            f"{clashes}, which a structured numpy array cannot hold as fields: {_INSTEAD}"
        )
    data = hdu.data
    rows = 0 if data is None else len(data)
    fields: list[tuple[str, np.dtype[Any], tuple[int, ...]]] = []
    values: list[np.ndarray[Any, Any]] = []
    for name in names:
        if data is None:
            value = np.zeros((0,), dtype=columns[name].dtype)
        else:
            value = np.asarray(data[name])
        if value.dtype == object:
            raise location.format_error(
                f"column {name!r} of table HDU {hdu_label(hdu)} holds variable-length arrays "
                f"(TFORM {columns[name].format!r}), which a structured numpy array cannot "
                f"hold: {_INSTEAD}"
            )
        fields.append((name, value.dtype, value.shape[1:]))
        values.append(value)
    out = np.empty(rows, dtype=np.dtype(fields))
    for (name, _dtype, _shape), value in zip(fields, values, strict=True):
        if rows:
            out[name] = value
    return out
