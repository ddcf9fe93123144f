"""HDF5 attributes: read (guarded), written back, and CF packing decoded as xarray does.

Dict reads carry attributes under two reserved keys of each group's dict, following
xarray's split between ``attrs`` (what the data *is*) and ``encoding`` (how it was stored):

``"@attrs"``
    ``{".": {attributes of the group itself}, "<member>": {attributes of that dataset}}``;
    a subgroup's own attributes are in its own dict's ``"@attrs"["."]``. Values are what
    h5py's ``.attrs`` returns (numpy scalars and arrays, ``str``, ``numpy.bytes_``...).
``"@encoding"``
    ``{"<member>": {"scale_factor": ..., "add_offset": ..., "_FillValue": ...,
    "missing_value": ..., "dtype": "<i2"}}`` for a dataset stored CF-packed (netCDF's
    ``scale_factor``/``add_offset``) that the read decoded, like ``xarray.open_dataset``,
    to floats with NaN where the fill value was. Writing the dict packs it back the same
    way, so a packed variable survives a round trip and is never handed out as raw integers.

butler's own bookkeeping attributes (``butler.*``) are never shown. Attributes holding HDF5
object or region references (the dimension-scale links ``DIMENSION_LIST`` and
``REFERENCE_LIST`` netCDF-4 writes) point into the file they were read from and mean
nothing once it is closed: they are left out and not written back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from butler import ButlerLocation

__all__ = [
    "ATTRS_KEY",
    "ENCODING_KEY",
    "PACKING",
    "attrs_nbytes",
    "decode",
    "encode",
    "is_packed",
    "read_attrs",
    "scalar",
    "write_attrs",
]

#: Reserved dict key holding the attributes of a group (``"."``) and of its datasets.
ATTRS_KEY = "@attrs"
#: Reserved dict key holding how CF-packed datasets were stored (xarray's ``encoding``).
ENCODING_KEY = "@encoding"
#: The attributes CF packing consumes when a dataset is decoded.
PACKING = ("scale_factor", "add_offset", "_FillValue", "missing_value")
_PRIVATE_PREFIX = "butler."


def _holds_references(dtype: np.dtype[Any]) -> bool:
    if h5py.check_ref_dtype(dtype) is not None:
        return True
    base = h5py.check_vlen_dtype(dtype)  # str/bytes for text, a dtype for ragged arrays
    if isinstance(base, np.dtype):
        return _holds_references(base)
    if dtype.fields is not None:
        return any(_holds_references(dtype.fields[n][0]) for n in dtype.names or ())
    if dtype.subdtype is not None:
        return _holds_references(dtype.subdtype[0])
    return False


def _names(node: h5py.HLObject) -> list[str]:
    """The attribute names of ``node``, in h5py's order (creation order when tracked).

    ``node.attrs`` iteration (``H5Aiterate``) reopens a dataset with default access
    properties, which libhdf5 refuses for one `_guards` opened with its own: open each
    attribute by index instead.
    """
    plist = node.id.get_create_plist()
    tracked = plist.get_attr_creation_order() & h5py.h5p.CRT_ORDER_TRACKED
    index_type = h5py.h5.INDEX_CRT_ORDER if tracked else h5py.h5.INDEX_NAME
    names = []
    for i in range(h5py.h5a.get_num_attrs(node.id)):
        attr = h5py.h5a.open(node.id, index=i, index_type=index_type)
        names.append(attr.name.decode("utf-8", "surrogateescape"))
    return names


def _public_names(node: h5py.HLObject) -> list[str]:
    """Names of the attributes shown to users, in h5py's order (references left out)."""
    names = []
    for name in _names(node):
        if name.startswith(_PRIVATE_PREFIX):
            continue
        if _holds_references(node.attrs.get_id(name).dtype):
            continue
        names.append(name)
    return names


def attrs_nbytes(node: h5py.HLObject) -> int:
    """Bytes the shown attributes of ``node`` declare (read before any is read)."""
    total = 0
    for name in _public_names(node):
        attr_id = node.attrs.get_id(name)
        shape = attr_id.shape or ()
        total += math.prod(int(n) for n in shape) * attr_id.dtype.itemsize
    return total


def read_attrs(location: ButlerLocation, node: h5py.HLObject, where: str) -> dict[str, Any]:
    """The attributes of ``node`` as h5py reads them, butler's own and references left out.

    Raises
    ------
    FormatError
        For an attribute h5py cannot read, naming it and the way around it.
    """
    out: dict[str, Any] = {}
    for name in _public_names(node):
        try:
            out[name] = node.attrs[name]
        except (OSError, TypeError, ValueError) as exc:
            raise location.format_error(
                f"cannot read attribute {name!r} of HDF5 object {where!r}: {exc}; read "
                f"without attributes with parameters={{'attrs': False}}"
            ) from exc
    return out


def write_attrs(node: h5py.HLObject, attrs: Any, where: str) -> None:
    """Set ``attrs`` (a mapping of name to value) on ``node``.

    Raises
    ------
    TypeError
        For a value HDF5 cannot hold as an attribute, or a name butler reserves.
    """
    if not isinstance(attrs, Mapping):
        raise TypeError(f"{where}: attributes must be a mapping of names to values, not {attrs!r}")
    for name, value in attrs.items():
        if not isinstance(name, str) or not name or name.startswith(_PRIVATE_PREFIX):
            raise TypeError(
                f"{where}: {name!r} cannot be an attribute name (a non-empty string not "
                f"starting with {_PRIVATE_PREFIX!r})"
            )
        if isinstance(value, h5py.Reference | h5py.RegionReference):
            raise TypeError(f"{where}: attribute {name!r} holds an HDF5 reference")
        try:
            node.attrs[name] = value
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{where}: attribute {name!r} = {value!r} cannot be stored as an HDF5 "
                f"attribute ({exc}); use numbers, strings or numpy arrays"
            ) from None


# -- CF packing ---------------------------------------------------------------------------


def scalar(value: Any) -> Any:
    """A one-element attribute (netCDF writes ``[x]``) as the scalar ``x``."""
    if isinstance(value, np.ndarray) and value.size == 1:
        return value.reshape(-1)[0]
    return value


def is_packed(attrs: Mapping[str, Any]) -> bool:
    """True when a dataset's attributes declare CF packing (``scale_factor``/``add_offset``)."""
    return "scale_factor" in attrs or "add_offset" in attrs


def _float_dtype(dtype: np.dtype[Any], scale: Any, offset: Any) -> np.dtype[Any]:
    """The float type xarray decodes a packed ``dtype`` to (``_choose_float_dtype``)."""
    scale_type = None if scale is None else np.dtype(type(scale))
    offset_type = None if offset is None else np.dtype(type(offset))
    floats = (np.dtype(np.float32), np.dtype(np.float64))
    if scale_type is not None and offset_type == scale_type and scale_type in floats:
        if dtype.itemsize == 4 and dtype.kind in "iu":
            return np.dtype(np.float64)
        return scale_type
    if offset is not None:
        return np.dtype(np.float64)
    assert scale_type is not None
    return scale_type if scale_type.kind == "f" else np.dtype(np.float64)


def decode(raw: np.ndarray, attrs: Mapping[str, Any]) -> np.ndarray:
    """Unpack CF-packed values as xarray does: fill values to NaN, then scale and offset.

    Raises
    ------
    TypeError
        If the stored values are not numbers, or the packing attributes are not scalars.
    """
    if raw.dtype.kind not in "iuf":
        raise TypeError(f"CF packing of {raw.dtype} values (not numbers) is not supported")
    scale, offset = scalar(attrs.get("scale_factor")), scalar(attrs.get("add_offset"))
    for what, value in (("scale_factor", scale), ("add_offset", offset)):
        if value is not None and not isinstance(value, np.number | int | float):
            raise TypeError(f"{what} {value!r} is not a number")
    data = raw.astype(_float_dtype(raw.dtype, scale, offset), copy=True)
    mask = np.zeros(raw.shape, dtype=bool)
    for name in ("_FillValue", "missing_value"):
        if name in attrs:
            for fill in np.asarray(attrs[name]).reshape(-1):
                mask |= np.isnan(raw) if np.isnan(fill) else raw == fill
    data[mask] = np.nan
    if scale is not None:
        data *= scale
    if offset is not None:
        data += offset
    return data


def decode_for(
    location: ButlerLocation, raw: np.ndarray, attrs: Mapping[str, Any], path: str
) -> np.ndarray:
    """`decode`, with packing that cannot be decoded reported as a `FormatError` naming
    the dataset and how to read the raw values instead."""
    try:
        return decode(raw, attrs)
    except TypeError as exc:
        raise location.format_error(
            f"HDF5 dataset {path!r} declares CF packing (scale_factor/add_offset) that "
            f"cannot be decoded: {exc}; read the raw values with "
            f"parameters={{'mask_and_scale': False}}"
        ) from exc


def encode(values: np.ndarray, encoding: Mapping[str, Any], where: str) -> np.ndarray:
    """Pack decoded floats back to the stored dtype (the inverse of `decode`).

    Raises
    ------
    TypeError, ValueError
        If the encoding is incomplete or the values cannot be packed.
    """
    if "dtype" not in encoding:
        raise ValueError(f"{where}: the encoding needs the stored 'dtype' (e.g. '<i2')")
    dtype = np.dtype(encoding["dtype"])
    scale = scalar(encoding.get("scale_factor"))
    offset = scalar(encoding.get("add_offset"))
    data = np.asarray(values, dtype=np.float64)
    if offset is not None:
        data = data - offset
    if scale is not None:
        data = data / scale
    missing = np.isnan(data)
    fill = encoding.get("_FillValue", encoding.get("missing_value"))
    if missing.any() and fill is None:
        raise ValueError(
            f"{where}: NaN values but no '_FillValue' or 'missing_value' in the encoding"
        )
    if dtype.kind in "iu":
        data = np.round(data)
    if fill is not None:
        data[missing] = np.asarray(fill).reshape(-1)[0]
    return data.astype(dtype)
