"""``dict``: nested mappings as HDF5 groups, their values as datasets.

Every node records what it holds in a ``butler.kind`` attribute, so the read gives back the
same nested dict with the same Python types:

=============================  ==============================  ======================
value                          HDF5                            ``butler.kind``
=============================  ==============================  ======================
mapping (string keys)          group (creation order kept)     ``dict``
`numpy.ndarray`                dataset (filters applied)       ``ndarray``
numpy scalar                   scalar dataset                  ``numpy``
``bool``, ``int``, ``float``   scalar dataset                  ``bool``/``int``/``float``
``complex``                    scalar dataset                  ``complex``
``str`` / ``bytes``            UTF-8 string / uint8 array      ``str`` / ``bytes``
``None``                       empty dataset                   ``none``
list or tuple of numbers,      1-d dataset (per-item kinds     ``list`` / ``tuple``
bools or strings               kept for int/float mixes)
=============================  ==============================  ======================

Files written by other programs read as dicts too: groups become dicts, datasets arrays
(scalar datasets numpy scalars, text ``str``). Attributes (butler's own excepted) are
carried under the reserved keys ``"@attrs"`` and ``"@encoding"`` (see `butler_hdf5._attrs`),
and written back from them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from butler import ButlerLocation
from butler.types import type_name

from . import _arrays, _attrs, _dtypes, _guards, h5py_

__all__ = ["read", "read_group", "write", "write_group"]

#: Where a dict is stored inside the file when ``additional_data`` names no ``path``.
DEFAULT_PATH = "/"
_ITEM_KINDS = "butler.item_kinds"  # "ifb..." per item of a list mixing ints and floats
_INT64 = np.iinfo(np.int64)


def _check_key(key: Any, where: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"the hdf5 format needs string keys; {where} has the key {key!r}")
    if not key or key in (".", "..") or "/" in key:
        raise ValueError(f"{where}: {key!r} cannot be an HDF5 name (empty, '.', or has '/')")
    return key


def _list_values(value: Sequence[Any], where: str) -> tuple[np.ndarray, str | None]:
    """The array storing a flat list, and the per-item kinds when ints and floats mix."""
    items = list(value)
    if not items:
        return np.zeros(0, dtype=np.float64), None
    if all(isinstance(x, str) for x in items):
        return np.array(items, dtype=str), None
    if all(isinstance(x, bool) for x in items):
        return np.array(items, dtype=bool), None
    if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        try:
            return np.array(items, dtype=np.int64), None
        except OverflowError:
            raise OverflowError(f"{where}: a list item does not fit a 64-bit integer") from None
    if all(isinstance(x, (int, float)) for x in items):
        kinds = "".join(
            "b" if isinstance(x, bool) else "i" if isinstance(x, int) else "f" for x in items
        )
        for x in items:
            if isinstance(x, int) and abs(x) > 2**53:
                raise OverflowError(f"{where}: {x} mixed with floats would lose precision")
        return np.array(items, dtype=np.float64), (None if set(kinds) == {"f"} else kinds)
    if all(isinstance(x, complex | int | float) for x in items):
        return np.array(items, dtype=np.complex128), None
    raise TypeError(
        f"{where}: the hdf5 format stores lists of numbers, bools or strings only; store "
        f"other sequences as numpy arrays or nested dicts"
    )


def _scalar(group: h5py.Group, name: str, value: Any, kind: str, dtype: Any = None) -> None:
    dataset = group.create_dataset(name, data=value, dtype=dtype, track_order=True)
    dataset.attrs[h5py_.ATTR_KIND] = kind


def write_group(
    group: h5py.Group, mapping: Mapping[Any, Any], options: dict[str, Any], where: str = "/"
) -> None:
    """Write the items of ``mapping`` into ``group`` (recursively).

    Raises
    ------
    TypeError, ValueError, OverflowError
        For keys or values the format cannot store faithfully (naming their place).
    """
    encodings = mapping.get(_attrs.ENCODING_KEY, {})
    if not isinstance(encodings, Mapping):
        raise TypeError(f"{where}: {_attrs.ENCODING_KEY!r} must map member names to encodings")
    for key, value in mapping.items():
        if key in (_attrs.ATTRS_KEY, _attrs.ENCODING_KEY):
            continue  # written once the members exist
        name = _check_key(key, where)
        path = f"{where.rstrip('/')}/{name}"
        if name in encodings:
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{path}: only arrays can be CF-packed (an '@encoding' entry)")
            value = _attrs.encode(value, encodings[name], path)
        if isinstance(value, Mapping):
            sub = group.create_group(name, track_order=True)
            sub.attrs[h5py_.ATTR_KIND] = "dict"
            write_group(sub, value, options, path)
        elif isinstance(value, np.ndarray):
            try:
                dataset = _arrays.create_array(group, name, value, options, strict=False)
            except TypeError as exc:
                raise TypeError(f"{path}: {exc}") from None
            dataset.attrs[h5py_.ATTR_KIND] = "ndarray"
        elif isinstance(value, bool):
            _scalar(group, name, value, "bool", np.bool_)
        elif isinstance(value, np.generic) and not isinstance(value, str | bytes):
            stored, original = _dtypes.to_storable(np.asarray(value))
            _scalar(group, name, stored, "numpy")
            if original is not None:
                group[name].attrs[h5py_.ATTR_DTYPE] = _dtypes.encode_dtype(original)
        elif isinstance(value, int):
            if not _INT64.min <= value <= _INT64.max:
                raise OverflowError(f"{path}: {value} does not fit a 64-bit integer")
            _scalar(group, name, value, "int", np.int64)
        elif isinstance(value, float):
            _scalar(group, name, value, "float", np.float64)
        elif isinstance(value, complex):
            _scalar(group, name, value, "complex", np.complex128)
        elif isinstance(value, str):
            _scalar(group, name, value, "str", h5py.string_dtype("utf-8"))
        elif isinstance(value, bytes):
            _scalar(group, name, np.frombuffer(value, dtype=np.uint8), "bytes")
        elif value is None:
            _scalar(group, name, h5py.Empty("i1"), "none")
        elif isinstance(value, list | tuple):
            values, kinds = _list_values(value, path)
            dataset = _arrays.create_array(group, name, values, options, strict=False)
            dataset.attrs[h5py_.ATTR_KIND] = "tuple" if isinstance(value, tuple) else "list"
            if kinds is not None:
                dataset.attrs[_ITEM_KINDS] = kinds
        else:
            raise TypeError(
                f"{path}: the hdf5 format cannot store a {type_name(type(value))!r} inside a "
                f"dict (arrays, numbers, strings, bytes, None, lists and dicts only)"
            )
    _write_member_attrs(group, mapping, encodings, where)


def _write_member_attrs(
    group: h5py.Group, mapping: Mapping[Any, Any], encodings: Mapping[Any, Any], where: str
) -> None:
    """Set the attributes ``mapping["@attrs"]`` names, and the packing of ``"@encoding"``."""
    attrs = mapping.get(_attrs.ATTRS_KEY, {})
    if not isinstance(attrs, Mapping):
        raise TypeError(f"{where}: {_attrs.ATTRS_KEY!r} must map '.' or member names to attributes")
    for name in [*attrs, *encodings]:
        if name != "." and name not in mapping:
            raise KeyError(
                f"{where}: attributes or encoding given for {name!r}, which is not a member "
                f"of this dict; its members are {[k for k in mapping if not k.startswith('@')]}"
            )
    for name, values in attrs.items():
        node = group if name == "." else group[name]
        _attrs.write_attrs(node, values, where if name == "." else f"{where.rstrip('/')}/{name}")
    for name, encoding in encodings.items():
        packing = {k: encoding[k] for k in _attrs.PACKING if k in encoding}
        _attrs.write_attrs(group[name], packing, f"{where.rstrip('/')}/{name}")


def _read_dataset(location: ButlerLocation, dataset: h5py.Dataset, where: str) -> Any:
    kind = _guards.read_attr(location, dataset, h5py_.ATTR_KIND, where)
    if kind == "none":
        return None
    if kind == "str":
        return dataset.asstr()[()]
    if kind == "bytes":
        return np.asarray(dataset[()], dtype=np.uint8).tobytes()
    if kind in ("bool", "int", "float", "complex"):
        return {"bool": bool, "int": int, "float": float, "complex": complex}[kind](dataset[()])
    recorded = _guards.read_attr(location, dataset, h5py_.ATTR_DTYPE, where)
    if kind in ("list", "tuple"):
        data = _arrays.read_array(dataset, recorded=recorded)
        items = data.tolist()
        kinds = _guards.read_attr(location, dataset, _ITEM_KINDS, where)
        if kinds is not None:
            cast = {"b": bool, "i": int, "f": float}
            items = [cast[k](x) for k, x in zip(str(kinds), items, strict=True)]
        return tuple(items) if kind == "tuple" else items
    if dataset.shape is None:
        return None  # an empty (null) dataspace written by another program
    data = _arrays.read_array(dataset, recorded=recorded)
    if kind is None and data.ndim == 0 and data.dtype.kind == "U":
        return str(data[()])  # scalar text written by another program
    if kind == "numpy" or (kind is None and data.ndim == 0):
        return data[()]
    return data


@dataclass
class _Group:
    """A group to read: its children in order, each a `_Group` or an `h5py.Dataset`."""

    node: h5py.Group
    children: list[tuple[str, Any]] = field(default_factory=list)


@dataclass
class _Plan:
    """What reading a tree allocates, and each object once (two links may share one)."""

    #: Read parameters: attributes wanted, CF packing decoded.
    attrs: bool = True
    mask_and_scale: bool = True
    nbytes: int = 0
    #: The largest filtered chunk: libhdf5 decompresses one at a time.
    chunk: int = 0
    seen: dict[tuple[int, int], Any] = field(default_factory=dict)


def _plan_dataset(location: ButlerLocation, node: h5py.Dataset, path: str, plan: _Plan) -> None:
    """Count what reading a dataset (and its attributes, and its decoding) allocates."""
    recorded = _guards.read_attr(location, node, h5py_.ATTR_DTYPE, path)
    original = None if recorded is None else _dtypes.decode_dtype(recorded)
    plan.nbytes += _guards.nbytes(node, original=original)
    plan.chunk = max(plan.chunk, _guards.chunk_nbytes(node))
    if plan.attrs:
        plan.nbytes += _attrs.attrs_nbytes(node)
        if plan.mask_and_scale and _attrs.is_packed(node.attrs):
            plan.nbytes += _guards.nbytes(node, original=np.dtype(np.float64))


def _plan(
    location: ButlerLocation,
    root: h5py.Group,
    group: h5py.Group,
    where: str,
    plan: _Plan,
    ancestors: tuple[tuple[int, int], ...],
    names: list[str] | None = None,
) -> _Group:
    """Walk ``group`` (or its members ``names``) without reading data: links and layouts
    checked, sizes summed.

    An object reached through two links is planned (and later read) once, so a file whose
    groups link to each other many times over cannot make the walk explode; a group that
    links back to one of its ancestors is refused.
    """
    planned = _Group(group)
    if plan.attrs and names is None:
        plan.nbytes += _attrs.attrs_nbytes(group)
    for name in group if names is None else names:
        path = f"{where.rstrip('/')}/{name}"
        if name in (_attrs.ATTRS_KEY, _attrs.ENCODING_KEY):
            raise location.format_error(
                f"HDF5 object {path!r} has a name butler reserves for attributes in dicts; "
                f"read the file with h5py directly"
            )
        node = _guards.child(location, root, group, where, name)
        if node is None or not isinstance(node, h5py.Group | h5py.Dataset):
            continue  # dangling soft links and named datatypes hold no data
        key = _guards.object_key(node)
        if key in ancestors:
            raise location.format_error(
                f"HDF5 group {path!r} links back to its ancestor group: the file's groups "
                f"form a cycle, which no dict can represent"
            )
        if key not in plan.seen:
            if isinstance(node, h5py.Group):
                plan.seen[key] = _plan(location, root, node, path, plan, (*ancestors, key))
            else:
                _plan_dataset(location, node, path, plan)
                plan.seen[key] = node
        planned.children.append((name, plan.seen[key]))
    return planned


def _decoded(
    location: ButlerLocation, value: Any, attrs: dict[str, Any], path: str
) -> tuple[Any, dict[str, Any] | None]:
    """``value`` decoded from CF packing (and the encoding it had), or unchanged."""
    if not isinstance(value, np.ndarray | np.number):
        return value, None
    raw = np.asarray(value)
    data = _attrs.decode_for(location, raw, attrs, path)
    encoding = {k: attrs.pop(k) for k in _attrs.PACKING if k in attrs}
    encoding["dtype"] = raw.dtype.str
    return (data if isinstance(value, np.ndarray) else data[()]), encoding


def _materialize(
    location: ButlerLocation,
    planned: _Group,
    where: str,
    done: dict[int, Any],
    plan: _Plan,
    *,
    own_attrs: bool = True,
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    done[id(planned)] = result
    attrs: dict[str, Any] = {}
    encodings: dict[str, Any] = {}
    if plan.attrs and own_attrs:
        group_attrs = _attrs.read_attrs(location, planned.node, where)
        if group_attrs:
            attrs["."] = group_attrs
    for name, item in planned.children:
        path = f"{where.rstrip('/')}/{name}"
        if isinstance(item, _Group):
            if id(item) not in done:
                _materialize(location, item, path, done, plan)
            result[name] = done[id(item)]
            continue
        if id(item) not in done:
            done[id(item)] = _read_dataset(location, item, path)
        value = done[id(item)]
        if plan.attrs:
            member_attrs = _attrs.read_attrs(location, item, path)
            if plan.mask_and_scale and _attrs.is_packed(member_attrs):
                value, encodings[name] = _decoded(location, value, member_attrs, path)
            if member_attrs:
                attrs[name] = member_attrs
        result[name] = value
    if attrs:
        result[_attrs.ATTRS_KEY] = attrs
    if encodings:
        result[_attrs.ENCODING_KEY] = encodings
    return result


def read_group(
    location: ButlerLocation,
    group: h5py.Group,
    where: str = "/",
    *,
    names: list[str] | None = None,
    attrs: bool = True,
    mask_and_scale: bool = True,
) -> dict[str, Any]:
    """Read a group as a dict (recursively); other programs' files read as plain data.

    The whole tree is walked first, without reading any data: every link and dataset is
    checked (`_guards`) and the bytes the datasets (and attributes) declare are summed and
    checked against the read limit (``location.check_read_size``). Only then is data
    read. An object two links lead to is read once and appears twice in the dict.

    Parameters
    ----------
    names
        Read only these members of ``group`` (and not the group's own attributes).
    attrs
        Carry attributes under ``"@attrs"`` (see `butler_hdf5._attrs`).
    mask_and_scale
        Decode CF-packed datasets as xarray does (their packing under ``"@encoding"``).
    """
    plan = _Plan(attrs=attrs, mask_and_scale=mask_and_scale)
    root = group.file
    key = _guards.object_key(group)
    planned = _plan(location, root, group, where, plan, (key,), names)
    location.check_read_size(
        plan.nbytes + plan.chunk, what=f"HDF5 group {where!r} (all its datasets)"
    )
    return _materialize(location, planned, where, {}, plan, own_attrs=names is None)


def write(obj: Mapping[str, Any], location: ButlerLocation, **serializer_args: Any) -> None:
    """Write a (nested) dict as groups and datasets under ``additional_data["path"]``.

    Parameters
    ----------
    obj
        The dict; keys must be strings that are valid HDF5 names. The reserved keys
        ``"@attrs"`` and ``"@encoding"`` (as a read gives them) become attributes.
    location
        Where to write.
    **serializer_args
        ``compression``, ``compression_opts``, ``chunks``, ``shuffle``... applied to every
        array and list in the dict (a ``chunks`` shape only to arrays of its rank).
    """
    path = h5py_.target_path(location, DEFAULT_PATH)
    with h5py_.open_write(location) as f:
        root = f if path == "/" else f.create_group(path, track_order=True)
        root.attrs[h5py_.ATTR_KIND] = "dict"
        root.attrs[h5py_.ATTR_TYPE] = type_name(type(obj))
        write_group(root, obj, dict(serializer_args), path)


def _read(location: ButlerLocation, opener: Callable[..., Any], args: dict[str, Any]) -> Any:
    path = h5py_.target_path(location, DEFAULT_PATH)
    options = {name: h5py_.flag(location, name) for name in ("attrs", "mask_and_scale")}
    with opener(location, **args) as f:
        node = h5py_.node_at(location, f, path)
        names = None
        if isinstance(node, h5py.Dataset):
            # One dataset asked for by path: the dict of its group holding just that member.
            parent_path, _, name = path.rpartition("/")
            path = parent_path or "/"
            node = h5py_.node_at(location, f, path)
            names = [name]
            recorded = None
        else:
            recorded = _guards.read_attr(location, node, h5py_.ATTR_TYPE, path)
        cls = location.read_type(None if recorded is None else str(recorded))
        with _guards.memory_errors(location, f"HDF5 group {path!r}"):
            data = read_group(location, node, path, names=names, **options)
    return data if cls is dict else cls(data)


def read(location: ButlerLocation, **serializer_args: Any) -> Any:
    """Read the dict from any storage (`h5py_.open_read`)."""
    return _read(location, h5py_.open_read, serializer_args)
