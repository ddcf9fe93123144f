"""Checks made on an untrusted HDF5 file before h5py reads any data from it.

An HDF5 file can make libhdf5 read *other* files: an external link (``h5py.ExternalLink``)
opens another HDF5 file, external raw storage (``create_dataset(..., external=...)``)
reads a dataset's bytes from any file, and a virtual dataset (VDS) maps other files'
datasets. A repository's bytes are written by someone else, so any of these would hand the
reader a copy of ``/etc/passwd`` or an SSH key; and a VDS read through a file object
(memory, S3, database storages) crashes libhdf5 outright. None of them is ever followed:

* paths are resolved here, one link at a time (`resolve`, `child`): hard links and soft
  links *within the file* are followed, an external or user-defined link is refused before
  libhdf5 traverses it;
* every dataset reached is opened here (`open_dataset`) and refused if it is virtual or
  has external raw storage, before a single element is read;
* as defence in depth, datasets are opened with a dataset access property list whose
  external-file and VDS prefixes name a directory that does not exist, so a *relative*
  external name (which libhdf5 would otherwise resolve against the working directory or
  the file's directory) cannot be found either. libhdf5 offers no property that refuses
  absolute names (h5py does not expose the external-link traversal callback), which is
  why the checks above come first and are the guarantee.

Size: `nbytes` is what reading a dataset (or a selection) allocates, computed from the
declared shape and dtype, for `butler.ButlerLocation.check_read_size`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import h5py
import numpy as np

from butler import ButlerLocation, FormatError, UnsafeFormatError

__all__ = [
    "MAX_SOFT_LINKS",
    "check_dataset",
    "child",
    "chunk_nbytes",
    "memory_errors",
    "nbytes",
    "object_key",
    "open_dataset",
    "read_attr",
    "resolve",
]

#: Soft links followed in a row before a path is declared a cycle (libhdf5's default is 16).
MAX_SOFT_LINKS = 16
#: Prefix given to libhdf5 for relative external/VDS file names: a directory that cannot exist.
_NOWHERE = b"/nonexistent/butler-never-reads-files-an-hdf5-file-names"
#: Most elements an attribute butler reads may hold (its own attributes are scalars).
_MAX_ATTR_ELEMENTS = 1


def _refuse(location: ButlerLocation, what: str) -> UnsafeFormatError:
    return UnsafeFormatError(
        f"{location.describe()}: {what}. butler never reads data from outside the file it "
        f"opens: an HDF5 file can name any file the reading process can read (another "
        f"user's data, /etc/passwd), and the repository's bytes are written by someone "
        f"else. There is no option to allow it; if you trust this file, read it with h5py "
        f"directly, or store the data itself in the file (h5py: "
        f"f.create_dataset(name, data=...)) and put it again"
    )


def _join(group_path: str, name: str) -> str:
    return f"{group_path.rstrip('/')}/{name}"


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve(
    location: ButlerLocation, root: h5py.Group, path: str, *, hops: int = 0
) -> h5py.Group | h5py.Dataset | h5py.Datatype | None:
    """The object at the absolute ``path``, or None if nothing is there.

    Every component is looked up with `child`: external links are refused before libhdf5
    follows them, soft links are resolved here (within the file only), and a dataset
    reached is checked with `check_dataset`.

    Raises
    ------
    UnsafeFormatError
        If the path goes through an external or user-defined link, or ends at a virtual
        dataset or one with external raw storage.
    FormatError
        For a soft-link cycle.
    """
    node: Any = root
    where = "/"
    for name in _parts(path):
        if not isinstance(node, h5py.Group):
            return None  # the path goes through a dataset
        node = child(location, root, node, where, name, hops=hops)
        if node is None:
            return None
        where = _join(where, name)
    return node


def child(
    location: ButlerLocation,
    root: h5py.Group,
    group: h5py.Group,
    group_path: str,
    name: str,
    *,
    hops: int = 0,
) -> h5py.Group | h5py.Dataset | h5py.Datatype | None:
    """The object ``name`` links to in ``group``, links checked; None if it dangles."""
    where = _join(group_path, name)
    try:
        link = group.get(name, getlink=True)
    except TypeError as exc:  # h5py's "Unknown link type": a user-defined link class
        raise _refuse(location, f"HDF5 object {where!r} is a user-defined link") from exc
    if link is None:
        return None
    if isinstance(link, h5py.ExternalLink):
        raise _refuse(
            location,
            f"HDF5 object {where!r} is an external link to object {link.path!r} of the file "
            f"{link.filename!r}",
        )
    if isinstance(link, h5py.SoftLink):
        if hops >= MAX_SOFT_LINKS:
            raise location.format_error(
                f"HDF5 object {where!r}: more than {MAX_SOFT_LINKS} soft links in a row "
                f"(a cycle of soft links?)"
            )
        target = link.path if link.path.startswith("/") else _join(group_path, link.path)
        return resolve(location, root, target, hops=hops + 1)
    encoded = name.encode("utf-8")
    info = h5py.h5o.get_info(group.id, encoded)
    if info.type == h5py.h5o.TYPE_DATASET:
        return open_dataset(location, group, name, where)
    return group[name]  # a group or a named datatype


def _access_plist() -> Any:
    dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    dapl.set_efile_prefix(_NOWHERE)
    dapl.set_virtual_prefix(_NOWHERE)
    return dapl


def open_dataset(
    location: ButlerLocation, group: h5py.Group, name: str, where: str
) -> h5py.Dataset:
    """Open the dataset hard-linked as ``name`` in ``group`` and `check_dataset` it."""
    dsid = h5py.h5d.open(group.id, name.encode("utf-8"), dapl=_access_plist())
    dataset = h5py.Dataset(dsid)
    check_dataset(location, dataset, where)
    return dataset


def check_dataset(location: ButlerLocation, dataset: h5py.Dataset, where: str) -> None:
    """Refuse a virtual dataset or one whose bytes live in external files.

    Only the dataset's creation properties are consulted: no element is read, so libhdf5
    never opens the files they name (reading a VDS through a file object would crash it).
    """
    dcpl = dataset.id.get_create_plist()
    if dcpl.get_layout() == h5py.h5d.VIRTUAL:
        sources = sorted(
            {
                f"{dcpl.get_virtual_filename(i)}:{dcpl.get_virtual_dsetname(i)}"
                for i in range(min(dcpl.get_virtual_count(), 5))
            }
        )
        raise _refuse(
            location,
            f"HDF5 dataset {where!r} is a virtual dataset mapping data from {sources}",
        )
    count = dcpl.get_external_count()
    if count:
        files = sorted(
            {dcpl.get_external(i)[0].decode("utf-8", "replace") for i in range(min(count, 5))}
        )
        raise _refuse(
            location,
            f"HDF5 dataset {where!r} keeps its bytes in external raw storage, in the "
            f"file(s) {files}",
        )


def object_key(node: h5py.HLObject) -> tuple[int, int]:
    """An identity for the object (not the link): equal for two links to one object."""
    return (node.id.fileno, h5py.h5o.get_info(node.id).addr)


def read_attr(location: ButlerLocation, node: h5py.HLObject, name: str, where: str) -> Any:
    """The value of a small attribute butler reads (a type or kind name), or None.

    Butler's own attributes are scalars; a hostile file could declare a huge one (or one
    whose variable-length items all point at one large heap object), so anything bigger is
    refused before it is read.
    """
    if name not in node.attrs:
        return None
    attr_id = node.attrs.get_id(name)
    elements = math.prod(attr_id.shape) if attr_id.shape else 1
    if elements > _MAX_ATTR_ELEMENTS:
        raise location.format_error(
            f"HDF5 object {where!r}: attribute {name!r} has shape {attr_id.shape}; butler "
            f"writes a scalar there"
        )
    value = node.attrs[name]
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else None
    return value


def nbytes(
    dataset: h5py.Dataset,
    shape: Sequence[int] | None = None,
    dtype: np.dtype[Any] | None = None,
    original: np.dtype[Any] | None = None,
) -> int:
    """Bytes that reading ``shape`` elements (default: all) of ``dataset`` allocates.

    ``dtype`` is the type read (default: the dataset's; a subset of fields reads less) and
    ``original`` the dtype the data is converted back to, when one was recorded. Computed
    in Python integers from what the file *declares*, so nothing overflows or is allocated.
    """
    if shape is None:
        if dataset.shape is None:
            return 0  # a null dataspace holds nothing
        shape = dataset.shape
    itemsize = (dtype if dtype is not None else dataset.dtype).itemsize
    if original is not None:
        itemsize = max(itemsize, original.itemsize)
    return math.prod(int(n) for n in shape) * itemsize


def chunk_nbytes(dataset: h5py.Dataset) -> int:
    """Bytes libhdf5 allocates on its own to decompress one chunk (0 if unfiltered).

    A filtered chunk is decompressed whole even when a single element of it is selected,
    and a chunk may declare up to 4 GiB: a small slice of a small file can cost that much.
    """
    if dataset.chunks is None or not dataset.id.get_create_plist().get_nfilters():
        return 0
    return math.prod(int(n) for n in dataset.chunks) * dataset.dtype.itemsize


@contextlib.contextmanager
def memory_errors(location: ButlerLocation, what: str) -> Iterator[None]:
    """Turn a `MemoryError` (an allocation that still failed) into a `FormatError`."""
    try:
        yield
    except MemoryError:
        raise FormatError(
            f"{location.describe()}: not enough memory to read {what}; read a part of it with "
            f"parameters={{'slice': ...}}"
        ) from None
