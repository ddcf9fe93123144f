"""Tables as columns: astropy `Table`, numpy structured arrays and pandas `DataFrame` to and
from a list of `Col` (name, kind, numpy values, optional mask, extra info).

``kind`` is one of ``bool``, ``int``, ``float``, ``str``, ``bytes``, ``datetime``; ``dtype``
is the numpy dtype string restored on read; ``info`` keeps units, descriptions, pandas
dtypes and the scale/format of astropy ``Time`` columns (see `butler_db._times`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _times

__all__ = ["Col", "from_columns", "to_columns"]

_KINDS = {
    "b": "bool",
    "i": "int",
    "u": "int",
    "f": "float",
    "U": "str",
    "S": "bytes",
    "M": "datetime",
}


@dataclass
class Col:
    """One column: numpy ``values`` (masked entries hold anything) and an optional mask."""

    name: str
    kind: str
    dtype: str
    values: np.ndarray
    mask: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    #: Name of the SQL column holding it (the user's name when that is a plain identifier).
    column: str = ""
    #: ``datetime`` columns: the values as ``datetime64[us]``, checked to be exact.
    stamps: np.ndarray | None = None

    def describe(self) -> dict[str, Any]:
        """What the dataset metadata records about the column."""
        return {
            "name": self.name,
            "column": self.column or self.name,
            "kind": self.kind,
            "dtype": self.dtype,
            "masked": self.mask is not None,
            **self.info,
        }


def _check_name(name: Any) -> str:
    # Any string is a valid column name: the SQL column gets a safe name of its own when the
    # user's is not a plain identifier (see _tables.physical_names).
    if not isinstance(name, str):
        raise TypeError(f"column name {name!r} must be a string, not a {type(name).__name__!r}")
    return name


def _from_array(
    name: str,
    data: Any,
    mask: Any = None,
    info: dict[str, Any] | None = None,
    round_times: bool = False,
) -> Col:
    values = np.asarray(data)
    if values.ndim != 1:
        raise TypeError(
            f"column {name!r} has shape {values.shape[1:]} per row; sql-table "
            f"stores scalar columns only"
        )
    if values.dtype.kind == "O":
        return _from_objects(name, values, mask, info or {})
    kind = _KINDS.get(values.dtype.kind)
    if kind is None or (kind == "float" and values.dtype.itemsize > 8):
        raise TypeError(f"column {name!r} has dtype {values.dtype}, which sql-table cannot store")
    if kind == "int" and values.dtype == np.uint64 and len(values) and values.max() > 2**63 - 1:
        raise TypeError(f"column {name!r} holds uint64 values beyond the SQL BIGINT range")
    m = None if mask is None else np.asarray(mask, dtype=bool)
    if m is not None and m.shape != values.shape:
        m = np.broadcast_to(m, values.shape).copy()
    col = Col(_check_name(name), kind, values.dtype.str, values, m, dict(info or {}))
    if kind == "datetime":
        col.stamps = _times.from_datetime64(name, values, m, round_times)
    return col


def _from_objects(name: str, values: np.ndarray, mask: Any, info: dict[str, Any]) -> Col:
    """Object columns of strings (None / NA / masked entries become NULL)."""
    m = np.zeros(len(values), bool) if mask is None else np.array(mask, dtype=bool)
    m |= np.fromiter((v is None for v in values), bool, count=len(values))
    try:
        import pandas as pd

        m |= np.asarray(pd.isna(values), dtype=bool)
    except ImportError:
        pass
    strings = values.copy()
    strings[m] = ""
    if not all(isinstance(v, str) for v in strings):
        bad = next(type(v).__name__ for v in strings if not isinstance(v, str))
        hint = (
            " (time-zone aware timestamps: store them as UTC with .dt.tz_convert(None))"
            if bad == "Timestamp"
            else ""
        )
        raise TypeError(
            f"column {name!r} holds {bad!r} objects; sql-table stores strings only in object "
            f"columns{hint}"
        )
    arr = strings.astype(str) if len(strings) else np.array([], dtype="<U1")
    return Col(
        _check_name(name),
        "str",
        arr.dtype.str,
        arr,
        m if m.any() or mask is not None else None,
        info,
    )


# -- objects → columns ---------------------------------------------------------------------


def to_columns(obj: Any, round_times: bool = False) -> tuple[list[Col], dict[str, Any]]:
    """Columns of a Table, structured array or DataFrame, and table-level metadata.

    ``round_times``: round timestamps to the nearest microsecond instead of refusing those
    with a finer part.
    """
    module = type(obj).__module__
    if module.startswith("astropy"):
        return _table_columns(obj, round_times)
    if module.startswith("pandas"):
        return _frame_columns(obj, round_times)
    if isinstance(obj, np.ndarray):
        return _array_columns(obj, round_times)
    raise TypeError(f"sql-table cannot store a {type(obj).__name__!r}")


def _table_columns(table: Any, round_times: bool) -> tuple[list[Col], dict[str, Any]]:
    cols = []
    for name in table.colnames:
        col = table[name]
        info: dict[str, Any] = {}
        unit = getattr(col, "unit", None)
        if unit is not None:
            info["unit"] = unit.to_string()
        for attr in ("description", "format"):
            value = getattr(col.info, attr, None)
            if value:
                info[attr] = str(value)
        kind = col.__class__.__name__
        if hasattr(col, "mask") and kind == "MaskedColumn":
            data, mask = np.ma.getdata(col), np.ma.getmaskarray(col)
            cols.append(_from_array(name, data, mask, info, round_times))
        elif kind in ("Column", "Quantity"):
            cols.append(_from_array(name, getattr(col, "value", col), None, info, round_times))
        elif kind == "Time":
            stamps, time_mask, time_info = _times.from_time(name, col, round_times)
            info.pop("format", None)  # a Time's info.format is its own format, kept below
            column = Col(name, "datetime", stamps.dtype.str, stamps, time_mask, info | time_info)
            column.stamps = stamps
            cols.append(column)
        else:
            raise TypeError(
                f"column {name!r} is a {type(col).__name__!r} mixin; sql-table stores plain "
                f"and masked columns (and quantities) only"
            )
    meta = {"meta": dict(table.meta)} if table.meta else {}
    return cols, meta


def _array_columns(array: np.ndarray, round_times: bool) -> tuple[list[Col], dict[str, Any]]:
    if array.dtype.names is None or array.ndim != 1:
        raise TypeError(
            f"sql-table stores 1-d structured arrays; got dtype {array.dtype} with shape "
            f"{array.shape} (use the npy format for plain arrays)"
        )
    masks = np.ma.getmaskarray(array) if isinstance(array, np.ma.MaskedArray) else None
    data = np.ma.getdata(array)
    cols = [
        _from_array(name, data[name], None if masks is None else masks[name], None, round_times)  # type: ignore[call-overload]
        for name in array.dtype.names
    ]
    return cols, {}


def _frame_columns(frame: Any, round_times: bool) -> tuple[list[Col], dict[str, Any]]:
    import pandas as pd

    meta: dict[str, Any] = {}
    index = frame.index
    default = isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
    if not (default and index.name is None):
        names = [
            n if n is not None else ("index" if index.nlevels == 1 else f"level_{i}")
            for i, n in enumerate(index.names)
        ]
        frame = frame.copy()
        frame.index.names = names
        frame = frame.reset_index()
        meta["index"] = names
        meta["index_names"] = list(index.names)
    cols = []
    for name in frame.columns:
        series = frame[name]
        info = {"pandas_dtype": str(series.dtype)}
        dtype = series.dtype
        if isinstance(dtype, np.dtype) and dtype.kind != "O":
            cols.append(_from_array(name, series.to_numpy(), None, info, round_times))
            continue
        mask = np.asarray(series.isna(), dtype=bool)
        numpy_type = getattr(dtype, "numpy_dtype", None)
        if numpy_type is not None and numpy_type.kind in "biuf":
            fill = False if numpy_type.kind == "b" else 0
            values = series.to_numpy(dtype=numpy_type, na_value=fill)
            cols.append(_from_array(name, values, mask, info))
        else:
            values = series.to_numpy(dtype=object, na_value=None)
            col = _from_objects(_check_name(name), values, mask, info)
            col.mask = mask
            cols.append(col)
    return cols, meta


# -- columns → objects ---------------------------------------------------------------------


def from_columns(cls: type, cols: list[Col], meta: dict[str, Any]) -> Any:
    """Rebuild an instance of ``cls`` (Table, ndarray or DataFrame subclass) from columns."""
    module = cls.__module__
    if module.startswith("astropy"):
        return _to_table(cls, cols, meta)
    if module.startswith("pandas"):
        return _to_frame(cls, cols, meta)
    return _to_array(cls, cols)


def _to_table(cls: type, cols: list[Col], meta: dict[str, Any]) -> Any:
    from astropy.table import Column, MaskedColumn

    out = []
    for col in cols:
        kwargs = {k: col.info[k] for k in ("unit", "description", "format") if k in col.info}
        if col.kind == "datetime" and "time_scale" in col.info:
            time = _times.to_time(col.name, col.values, col.mask, col.info)
            time.info.name = col.name
            if "description" in col.info:
                time.info.description = col.info["description"]
            out.append(time)
            continue
        if col.mask is not None:
            out.append(MaskedColumn(col.values, name=col.name, mask=col.mask, **kwargs))
        else:
            out.append(Column(col.values, name=col.name, **kwargs))
    table = cls(out, meta=meta.get("meta") or {}, copy=False)
    return table


def _to_array(cls: type, cols: list[Col]) -> Any:
    n = len(cols[0].values) if cols else 0
    dtype = np.dtype([(c.name, c.values.dtype) for c in cols])
    array = np.empty(n, dtype=dtype)
    for col in cols:
        array[col.name] = col.values
    if issubclass(cls, np.ma.MaskedArray):
        mask = np.zeros(n, dtype=np.dtype([(c.name, bool) for c in cols]))
        for col in cols:
            if col.mask is not None:
                mask[col.name] = col.mask
        return np.ma.MaskedArray(array, mask=mask).view(cls)  # type: ignore[arg-type]
    nulls = [c.name for c in cols if c.mask is not None and c.mask.any()]
    if nulls:
        raise TypeError(
            f"columns {nulls} hold NULLs, which a plain structured array cannot "
            f"represent; use numpy.ma.MaskedArray as the dataset's python type"
        )
    return array if cls is np.ndarray else array.view(cls)


def _to_frame(cls: type, cols: list[Col], meta: dict[str, Any]) -> Any:
    import pandas as pd

    data = {}
    for col in cols:
        wanted = col.info.get("pandas_dtype")
        if col.mask is not None and col.mask.any():
            values = col.values.astype(object)
            values[col.mask] = None
            series = pd.Series(values, name=col.name, dtype=object)
            if col.kind == "float" and wanted in (None, "float64", "float32"):
                series = series.astype(wanted or "float64")
            elif col.kind in ("int", "bool", "float"):
                nullable = {"int": "Int64", "bool": "boolean", "float": "Float64"}[col.kind]
                series = series.astype(wanted if wanted and wanted[0].isupper() else nullable)
            elif wanted and wanted != "object":
                series = series.astype(wanted)
        else:
            series = pd.Series(col.values, name=col.name, copy=False)
            if wanted and str(series.dtype) != wanted:
                series = series.astype(wanted)
        data[col.name] = series
    frame = cls(data, columns=[c.name for c in cols])
    index = meta.get("index")
    if index and all(n in frame.columns for n in index):
        frame = frame.set_index(index)
        frame.index.names = meta.get("index_names") or index
    return frame
