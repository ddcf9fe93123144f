"""``astropy.table.Table`` (and subclasses such as ``QTable``) as an astropy HDF5 table.

astropy's own HDF5 writer does the work (``serialize_meta=True``): the table is a compound
dataset at ``additional_data["path"]`` (default ``"data"``) and its metadata, units,
descriptions and mixin columns (``Quantity``, ``Time``...) are kept in the companion dataset
``<path>.__table_column_meta__``. This module is registered for the dotted name
``astropy.table.Table``, so it is active only where astropy is installed (and imported).

Text columns come back as unicode (``str``) columns, byte-string columns too (astropy stores
both as UTF-8 bytes), and numeric columns in native byte order (astropy's writer converts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h5py

from butler import ButlerLocation
from butler.types import type_name

from . import _guards, h5py_

__all__ = ["DEFAULT_PATH", "read", "write"]

#: Where a table is stored inside the file when ``additional_data`` names no ``path``.
DEFAULT_PATH = "data"
#: Name suffix of the companion dataset astropy's writer keeps the table's metadata in.
META_SUFFIX = ".__table_column_meta__"


def write(obj: Any, location: ButlerLocation, **serializer_args: Any) -> None:
    """Write a table with astropy's HDF5 writer, metadata and units included.

    Parameters
    ----------
    obj
        An `astropy.table.Table` or subclass.
    location
        Where to write.
    **serializer_args
        ``compression`` (``"gzip"``, ``"lzf"``), ``compression_opts``, ``chunks``,
        ``shuffle``... passed to ``create_dataset`` for the table's dataset.
    """
    path = h5py_.target_path(location, DEFAULT_PATH)
    if path == "/":
        raise location.format_error("a table needs a dataset path, not the root group '/'")
    options = h5py_.dataset_options(serializer_args, (len(obj),), strict=True)
    with h5py_.open_write(location) as f:
        group_path, _, name = path.rpartition("/")
        group = f.require_group(group_path) if group_path else f
        obj.write(group, format="hdf5", path=name, serialize_meta=True, **options)
        group[name].attrs[h5py_.ATTR_TYPE] = type_name(type(obj))


def _read(location: ButlerLocation, opener: Callable[..., Any], args: dict[str, Any]) -> Any:
    from astropy.table import Table

    path = h5py_.target_path(location, DEFAULT_PATH)
    with opener(location, **args) as f:
        node = h5py_.node_at(location, f, path)
        if not isinstance(node, h5py.Dataset):
            raise location.format_error(f"{path!r} in the HDF5 file is a group, not a table")
        recorded = _guards.read_attr(location, node, h5py_.ATTR_TYPE, path)
        cls = location.read_type(None if recorded is None else str(recorded))
        # astropy reads the companion metadata dataset by name: check it as the table
        # (links, layout, size) before astropy touches it.
        meta = _guards.resolve(location, f, path + META_SUFFIX)
        nbytes = _guards.nbytes(node) + _guards.chunk_nbytes(node)
        if isinstance(meta, h5py.Dataset):
            nbytes += _guards.nbytes(meta)
        location.check_read_size(nbytes, what=f"HDF5 table {path!r} and its metadata")
        # libhdf5 refuses to reopen a dataset with other access properties while it is
        # open with the guarded ones: close ours before astropy opens them by name.
        for checked in (node, meta):
            if isinstance(checked, h5py.Dataset):
                checked.id.close()
        group_path, _, name = path.rpartition("/")
        group = f[group_path] if group_path else f
        with _guards.memory_errors(location, f"HDF5 table {path!r}"):
            table = Table.read(group, format="hdf5", path=name)
    _bytes_to_text(table)
    return table if type(table) is cls else cls(table, copy=False)


def _bytes_to_text(table: Any) -> None:
    """Decode the UTF-8 byte-string columns astropy's writer made of text columns.

    ``character_as_bytes=False`` would do it, but fails on tables with mixin columns
    (``Time`` has no ``dtype``), so only plain columns are converted, keeping their info.
    """
    from astropy.table import Column, Table

    names = [
        name
        for name in table.colnames
        if isinstance(table[name], Column) and table[name].dtype.kind == "S"
    ]
    if names:
        text = Table([table[name] for name in names], copy=False)
        text.convert_bytestring_to_unicode()
        for name in names:
            table[name] = text[name]


def read(location: ButlerLocation, **serializer_args: Any) -> Any:
    """Read the table from any storage (`h5py_.open_read`)."""
    return _read(location, h5py_.open_read, serializer_args)
