"""``numpy.ndarray`` (and subclasses, structured arrays) as one HDF5 dataset.

The dataset lives at ``additional_data["path"]`` (default ``"data"``) and carries the
concrete Python type written (``butler.python_type``), so a subclass comes back as itself,
and, when the dtype had to be converted (unicode, datetime), the original numpy dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from butler import ButlerLocation
from butler.types import type_name

from . import _attrs, _dtypes, _guards, h5py_

__all__ = ["DEFAULT_PATH", "create_array", "read", "read_array", "write"]

#: Where an array is stored inside the file when ``additional_data`` names no ``path``.
DEFAULT_PATH = "data"


def create_array(
    group: h5py.Group,
    name: str,
    values: np.ndarray,
    options: dict[str, Any],
    *,
    strict: bool = True,
) -> h5py.Dataset:
    """Create dataset ``name`` in ``group`` holding ``values`` exactly (dtype recorded).

    Raises
    ------
    TypeError
        For masked arrays (the mask would be lost) and object arrays.
    """
    if isinstance(values, np.ma.MaskedArray):
        raise TypeError("the hdf5 format cannot store masked arrays (the mask would be lost)")
    values = np.asarray(values)
    storable, original = _dtypes.to_storable(values)
    kwargs = h5py_.dataset_options(options, storable.shape, strict=strict)
    # Attribute creation order is tracked, so attributes read back in the order written.
    dataset = group.create_dataset(name, data=storable, track_order=True, **kwargs)
    if original is not None:
        dataset.attrs[h5py_.ATTR_DTYPE] = _dtypes.encode_dtype(original)
    return dataset


def read_array(
    dataset: h5py.Dataset,
    selection: Any = None,
    fields: str | list[str] | None = None,
    *,
    check: Callable[[int], None] | None = None,
    recorded: Any = None,
) -> np.ndarray:
    """Read a dataset (or the selected part of it) with its original numpy dtype.

    ``check`` is called with the bytes the read allocates before anything is read (see
    `h5py_.read_selection`); ``recorded`` is the dataset's ``butler.numpy_dtype`` attribute
    when the caller already read it (it is read here otherwise).
    """
    if recorded is None:
        recorded = dataset.attrs.get(h5py_.ATTR_DTYPE)
    original = None if recorded is None else _dtypes.decode_dtype(recorded)
    if fields is not None:
        names = [fields] if isinstance(fields, str) else list(fields)
        available = dataset.dtype.names or ()
        missing = [n for n in names if n not in available]
        if missing:
            raise KeyError(
                f"no field(s) {missing} in the dataset; its fields are {list(available)}"
            )
        if original is not None:
            parts = [(n, original.fields[n][0]) for n in names]  # type: ignore[index]
            original = parts[0][1] if isinstance(fields, str) else np.dtype(parts)
    data = h5py_.read_selection(dataset, selection, fields, check=check, original=original)
    if original is not None and data.dtype != original:
        data = _dtypes.restore(data, original)
    elif original is None and _variable_length_text(dataset, fields):
        data = _dtypes.decode_strings(data)  # variable-length strings written by others
    return data


def _variable_length_text(dataset: h5py.Dataset, fields: Any) -> bool:
    info = None if fields is not None else h5py.check_string_dtype(dataset.dtype)
    return info is not None and info.length is None


def write(obj: Any, location: ButlerLocation, **serializer_args: Any) -> None:
    """Write an array as the dataset at ``additional_data["path"]`` (default ``"data"``).

    Parameters
    ----------
    obj
        A `numpy.ndarray` or subclass (masked and object arrays are refused).
    location
        Where to write.
    **serializer_args
        ``compression`` (``"gzip"``, ``"lzf"``), ``compression_opts``, ``chunks``,
        ``shuffle``, ``fletcher32``, ``scaleoffset``.
    """
    if isinstance(obj, np.ma.MaskedArray):
        raise TypeError("the hdf5 format cannot store masked arrays (the mask would be lost)")
    _dtypes.needs_conversion(np.asarray(obj).dtype)  # refuse object arrays before any I/O
    path = h5py_.target_path(location, DEFAULT_PATH)
    if path == "/":
        raise location.format_error("an array needs a dataset path, not the root group '/'")
    with h5py_.open_write(location) as f:
        dataset = create_array(f, path, obj, serializer_args)
        dataset.attrs[h5py_.ATTR_TYPE] = type_name(type(obj))


def _read(location: ButlerLocation, opener: Callable[..., Any], args: dict[str, Any]) -> Any:
    path = h5py_.target_path(location, DEFAULT_PATH)
    selection = location.parameters.get("slice")
    fields = location.parameters.get("fields")
    with opener(location, **args) as f, _guards.memory_errors(location, f"HDF5 dataset {path!r}"):
        node = h5py_.node_at(location, f, path)
        if not isinstance(node, h5py.Dataset):
            raise location.format_error(
                f"{path!r} in the HDF5 file is a group, not an array dataset"
            )
        recorded = _guards.read_attr(location, node, h5py_.ATTR_TYPE, path)
        cls = location.read_type(None if recorded is None else str(recorded))
        original = _guards.read_attr(location, node, h5py_.ATTR_DTYPE, path)

        chunk = _guards.chunk_nbytes(node)
        what = f"HDF5 dataset {path!r}"
        if chunk:
            what += f" (the selection plus one decompressed chunk of {chunk:,} bytes)"

        def check(nbytes: int) -> None:
            location.check_read_size(nbytes, what=what)

        try:
            data = read_array(node, selection, fields, check=check, recorded=original)
        except (IndexError, KeyError, TypeError) as exc:
            raise location.format_error(
                f"cannot select slice={selection!r} fields={fields!r}: {exc}"
            ) from exc
        data = _unpacked(location, node, path, data, check)
    if isinstance(data, np.ndarray) and cls is not np.ndarray:
        return data.view(cls)
    return data


def _unpacked(
    location: ButlerLocation,
    node: h5py.Dataset,
    path: str,
    data: np.ndarray,
    check: Callable[[int], None],
) -> np.ndarray:
    """A CF-packed dataset (netCDF ``scale_factor``/``add_offset``) decoded as xarray does,
    unless ``parameters={"mask_and_scale": False}`` asks for the raw stored values."""
    if not h5py_.flag(location, "mask_and_scale") or not _attrs.is_packed(node.attrs):
        return data
    check(data.size * 8 + data.nbytes)
    attrs = _attrs.read_attrs(location, node, path)
    return _attrs.decode_for(location, data, attrs, path)


def read(location: ButlerLocation, **serializer_args: Any) -> Any:
    """Read the array from any storage (`h5py_.open_read`).

    Read ``parameters``: ``slice`` (a tuple of slices/indices) and ``fields`` (a field name
    or list of names of a structured array) read only the selected part of the dataset.
    """
    return _read(location, h5py_.open_read, serializer_args)
