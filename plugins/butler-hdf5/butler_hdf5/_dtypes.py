"""numpy dtypes HDF5 cannot hold natively, and their exact round trip.

HDF5 (through h5py) stores booleans, integers, floats, complex numbers, byte strings,
structured (compound) and subarray types directly, in either byte order. Three numpy kinds
need a conversion, recorded by the original dtype in an attribute so the read restores it:

* unicode (``U``): fixed-length UTF-8 strings, which every HDF5 reader sees as text;
* ``datetime64`` / ``timedelta64``: 64-bit integers of the same unit;
* the same kinds inside structured dtypes, field by field.

Object arrays are refused: HDF5 cannot store arbitrary Python objects.
"""

from __future__ import annotations

import ast
import threading
from typing import Any

import h5py
import numpy as np

__all__ = [
    "decode_dtype",
    "decode_strings",
    "encode_dtype",
    "needs_conversion",
    "restore",
    "to_storable",
]


def needs_conversion(dtype: np.dtype[Any]) -> bool:
    """True when ``dtype`` (or one of its fields) has no native HDF5 equivalent.

    Raises
    ------
    TypeError
        For object dtypes, which HDF5 cannot store.
    """
    if dtype.fields is not None:
        return any(needs_conversion(dtype.fields[name][0]) for name in dtype.names or ())
    if dtype.subdtype is not None:
        return needs_conversion(dtype.subdtype[0])
    if dtype.kind == "O":
        raise TypeError(
            "arrays of Python objects (dtype object) cannot be stored in HDF5; convert them "
            "to a numeric, string or structured dtype first"
        )
    return dtype.kind in "UMm"


def _storable_dtype(dtype: np.dtype[Any], values: np.ndarray | None) -> np.dtype[Any]:
    if dtype.fields is not None:
        names = dtype.names or ()
        return np.dtype(
            [(name, _storable_dtype(dtype.fields[name][0], _field(values, name))) for name in names]
        )
    if dtype.subdtype is not None:
        base, shape = dtype.subdtype
        return np.dtype((_storable_dtype(base, values), shape))
    if dtype.kind == "U":
        # UTF-8 needs up to 4 bytes per character; size the field on the actual data.
        width = max(1, dtype.itemsize // 4)
        if values is not None and values.size:
            width = max(1, int(np.char.str_len(np.char.encode(values, "utf-8")).max()))
        return h5py.string_dtype("utf-8", width)
    if dtype.kind in "Mm":
        return np.dtype(dtype.str[0] + "i8")  # same byte order, same unit (recorded)
    return dtype


def _field(values: np.ndarray | None, name: str) -> np.ndarray | None:
    return None if values is None else values[name]


def _convert(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """``values`` converted to the storable ``dtype`` built by `_storable_dtype`."""
    if values.dtype.fields is not None:
        out = np.empty(values.shape, dtype)
        for name in values.dtype.names or ():
            out[name] = _convert(values[name], dtype.fields[name][0])  # type: ignore[index]
        return out
    if values.dtype.kind == "U":
        return np.char.encode(values, "utf-8").astype(dtype)
    if values.dtype.kind in "Mm":
        return values.view(dtype)
    return values


def to_storable(values: np.ndarray) -> tuple[np.ndarray, np.dtype[Any] | None]:
    """Return ``(array HDF5 can store, original dtype or None if unchanged)``."""
    if not needs_conversion(values.dtype):
        return values, None
    dtype = _storable_dtype(values.dtype, values)
    return _convert(values, dtype), values.dtype


def restore(data: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Convert data read from HDF5 back to the original numpy ``dtype``."""
    if dtype.fields is not None:
        out = np.empty(data.shape, dtype)
        for name in dtype.names or ():
            out[name] = restore(data[name], dtype.fields[name][0])
        return out
    if dtype.subdtype is not None:
        return restore(data, dtype.subdtype[0])
    if dtype.kind == "U":
        if data.dtype.kind == "O":  # variable-length strings written by another program
            return decode_strings(data).astype(dtype)
        return np.char.decode(data.astype(np.bytes_), "utf-8").astype(dtype)
    if dtype.kind in "Mm":
        return data.view(dtype) if data.dtype.itemsize == dtype.itemsize else data.astype(dtype)
    return data


def encode_dtype(dtype: np.dtype[Any]) -> str:
    """The dtype as text: numpy's ``.npy`` header description, a Python literal."""
    return repr(np.lib.format.dtype_to_descr(dtype))


#: CPython 3.11's AST conversion is not thread-safe ("SystemError: AST constructor recursion
#: depth mismatch" when two threads parse at once): this module's parses take turns.
_AST_LOCK = threading.Lock()


def decode_dtype(text: str | bytes) -> np.dtype[Any]:
    """Inverse of `encode_dtype`; parsed with `ast.literal_eval`, which never runs code."""
    if isinstance(text, bytes):
        text = text.decode()
    with _AST_LOCK:
        descr = ast.literal_eval(text)
    return np.lib.format.descr_to_dtype(descr)


def decode_strings(data: np.ndarray) -> np.ndarray:
    """A unicode array from an object array of UTF-8 ``bytes`` (HDF5 variable-length text)."""
    if data.dtype.kind == "S":
        return np.char.decode(data, "utf-8")
    if data.size == 0:
        return np.zeros(data.shape, dtype="U1")
    flat = [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in data.flat]
    return np.array(flat, dtype=str).reshape(data.shape)
