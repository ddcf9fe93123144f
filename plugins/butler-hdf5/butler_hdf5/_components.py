"""HDF5's direct read of a nested dict's components: one group (or dataset) of the file.

``get("cube.calib.amps", ...)`` of a dict stored in HDF5 opens the file and reads the
group ``/calib/amps`` only (on S3: the metadata blocks and that group's chunks), built as
the whole read builds it (`butler_hdf5._mapping.read_group`), so it equals the same
component of the whole read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h5py

from butler import ComponentError

from . import _guards, h5py_
from ._mapping import DEFAULT_PATH, read_group

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read_component"]


def read_component(location: ButlerLocation, component: str, **args: Any) -> Any:
    """The group or dataset at ``component`` (dotted: nested groups) below the dict's root."""
    base = h5py_.target_path(location, DEFAULT_PATH).rstrip("/")
    names = component.split(".")
    path = f"{base}/{'/'.join(names)}"
    attrs, scale = h5py_.flag(location, "attrs"), h5py_.flag(location, "mask_and_scale")
    with h5py_.open_read(location, **args) as f:
        # A name HDF5 would read as a path ("/a" is "a", "a/b" two levels down) is no key
        # a dict written here can have (the writer refuses them): never read another node.
        odd = next((i for i, name in enumerate(names) if "/" in name or name == "."), None)
        if odd is not None:
            raise _missing(location, f, base, names[: odd + 1], absent=odd)
        parent_path = path.rpartition("/")[0] or "/"
        parent = _guards.resolve(location, f, parent_path)
        node = _guards.resolve(location, f, path) if parent is not None else None
        if node is None:
            raise _missing(location, f, base, names)
        with _guards.memory_errors(location, f"HDF5 group {path!r}"):
            if isinstance(node, h5py.Group):
                return read_group(location, node, path, attrs=attrs, mask_and_scale=scale)
            if not isinstance(parent, h5py.Group) or not isinstance(node, h5py.Dataset):
                raise location.format_error(f"{path!r} in the HDF5 file is not data")
            return read_group(
                location, parent, parent_path, names=[names[-1]], attrs=attrs, mask_and_scale=scale
            )[names[-1]]


def _missing(
    location: ButlerLocation,
    f: h5py.File,
    base: str,
    names: list[str],
    absent: int | None = None,
) -> ComponentError:
    """The error naming the first missing name (``absent``: known to be that one's index)
    and what its (existing) group holds."""
    group: Any = _guards.resolve(location, f, base or "/")
    depth = 0
    for depth in range(len(names)):
        if depth == absent:
            break
        found = _guards.resolve(location, f, f"{base}/{'/'.join(names[: depth + 1])}")
        if found is None:
            break
        if isinstance(found, h5py.Dataset) and depth < len(names) - 1:
            return ComponentError(
                f"{location.describe()}: component {'.'.join(names[: depth + 1])!r} is an HDF5 "
                f"dataset (an array or a value), which has no components"
            )
        group = found
    held = sorted(group.keys()) if isinstance(group, h5py.Group) else []
    where = ".".join(names[:depth])
    return ComponentError(
        f"{location.describe()}: 'builtins.dict' has no component {names[depth]!r}"
        f"{' in ' + repr(where) if where else ''}; its components are {held or 'none'}"
    )
