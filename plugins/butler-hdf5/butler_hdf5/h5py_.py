"""h5py plumbing shared by the serializers: opening files, dataset options, selections.

Reading
    `open_read`, for every storage, through the Storage contract: where the storage has
    real local files (posix) h5py opens the file by path (no Python I/O layer); elsewhere
    it reads the storage's seekable file object, opened with read hints
    (``access="random"``, ``block_size``, ``cache_type``, ``cache_blocks``: HDF5 makes
    many small reads), which S3 turns into small cached range requests and the other
    storages ignore.

Writing
    h5py needs a seekable target, so `open_write` writes to
    ``location.local_path_for_write()``: a local temporary file committed atomically (on
    posix, in the destination directory; elsewhere uploaded through the storage's atomic
    write) and removed in every case.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO

import h5py
import numpy as np

from butler import ButlerLocation

from . import _guards
from ._plugin import DATASET_ARGS, READ_ARGS

__all__ = [
    "ATTR_DTYPE",
    "ATTR_KIND",
    "ATTR_TYPE",
    "DEFAULT_S3_BLOCK_SIZE",
    "dataset_options",
    "flag",
    "node_at",
    "open_read",
    "open_write",
    "read_selection",
    "target_path",
]

#: Attribute recording the concrete Python type written (``numpy.ndarray``, a subclass...).
ATTR_TYPE = "butler.python_type"
#: Attribute recording what a node of a dict holds (``int``, ``str``, ``list``...).
ATTR_KIND = "butler.kind"
#: Attribute recording the original numpy dtype when it had to be converted for HDF5.
ATTR_DTYPE = "butler.numpy_dtype"

#: Default ``block_size`` read hint: the range-request size on S3 (chosen with
#: ``bench/hdf5.py``).
DEFAULT_S3_BLOCK_SIZE = 256 * 1024

_COMPRESSIONS = ("gzip", "lzf", "szip")


# -- opening files ----------------------------------------------------------------------


def _open_file(location: ButlerLocation, target: str | BinaryIO) -> h5py.File:
    """``h5py.File(target, "r")``, a non-HDF5 or truncated file becoming a `FormatError`.

    HDF5 file locking is off: committed datasets never change in place (writes go to a
    new file renamed over the old one), and locks fail on some network file systems.
    """
    try:
        return h5py.File(target, "r", locking=False)
    except OSError as exc:
        if exc.errno is not None:
            raise  # a real I/O failure: the location turns it into a StorageError
        raise location.format_error(f"is not a readable HDF5 file: {exc}") from exc


@contextlib.contextmanager
def open_read(
    location: ButlerLocation,
    *,
    block_size: int | None = None,
    cache_type: str | None = None,
    cache_blocks: int | None = None,
    **_: Any,
) -> Iterator[h5py.File]:
    """Open the dataset for reading, the best way its storage offers.

    A storage with real local files (`~butler.storage.Storage.has_local_paths`) gives h5py
    the file's path. Any other gives a seekable file object opened with the read hints
    ``access="random"``, ``block_size`` (default `DEFAULT_S3_BLOCK_SIZE`), ``cache_type``
    and ``cache_blocks``, taken from the read ``parameters`` or else the serializer
    arguments: HDF5 makes many small reads (metadata, B-tree nodes, chunks), so on S3
    small blocks that are kept cached keep a slice read down to little more than the
    chunks it touches. Storages ignore the hints they cannot use.
    """
    if location.storage.has_local_paths:
        with location.local_path() as path, _open_file(location, path) as f:
            yield f
        return
    params = location.parameters
    hints = {
        "block_size": params.get("block_size", block_size or DEFAULT_S3_BLOCK_SIZE),
        "cache_type": params.get("cache_type", cache_type),
        "cache_blocks": params.get("cache_blocks", cache_blocks),
    }
    hints = {k: v for k, v in hints.items() if v is not None}
    with (
        location.open_read(access="random", **hints) as raw,
        _open_file(location, raw) as f,
    ):
        yield f


@contextlib.contextmanager
def open_write(location: ButlerLocation) -> Iterator[h5py.File]:
    """A new HDF5 file whose content replaces the dataset atomically on success."""
    with location.local_path_for_write() as path, h5py.File(path, "w", track_order=True) as f:
        yield f


# -- paths inside the file --------------------------------------------------------------


def target_path(location: ButlerLocation, default: str) -> str:
    """The group/dataset path inside the file: the read parameter ``path`` (one dataset or
    group of a file, ``read_file(..., parameters={"path": "grp/ds"})``), else
    ``additional_data["path"]``, else ``default``."""
    source = "parameters" if "path" in location.parameters else "additional_data"
    path = location.parameters.get("path", location.additional_data.get("path", default))
    if not isinstance(path, str):
        raise location.format_error(f"{source} 'path' must be a string, not {path!r}")
    return "/" + path.strip("/")


def node_at(location: ButlerLocation, f: h5py.File, path: str) -> h5py.Group | h5py.Dataset:
    """The group or dataset at ``path``, or a `FormatError` listing what the file holds.

    The path is resolved link by link (`_guards.resolve`): external links, virtual datasets
    and external raw storage are refused with `~butler.UnsafeFormatError` before libhdf5
    reads anything outside the file.
    """
    node = _guards.resolve(location, f, path)
    if node is None:
        held = sorted(f.keys())
        raise location.format_error(
            f"the HDF5 file has nothing at {path!r}; its top level holds {held}"
        )
    if not isinstance(node, h5py.Group | h5py.Dataset):
        raise location.format_error(f"{path!r} in the HDF5 file is a named datatype, not data")
    return node


def flag(location: ButlerLocation, name: str) -> bool:
    """The boolean read parameter ``name`` (default True): ``attrs``, ``mask_and_scale``."""
    value = location.parameters.get(name, True)
    if not isinstance(value, bool):
        raise location.format_error(f"parameter {name!r} must be True or False, not {value!r}")
    return value


# -- dataset creation -------------------------------------------------------------------


def dataset_options(
    args: Mapping[str, Any], shape: tuple[int, ...], *, strict: bool = True
) -> dict[str, Any]:
    """``create_dataset`` keyword arguments from the serializer arguments.

    Parameters
    ----------
    args
        Serializer arguments: ``compression`` (``"gzip"``, ``"lzf"``, ``"szip"`` or a gzip
        level 0-9), ``compression_opts``, ``chunks`` (``True`` or a shape), ``shuffle``,
        ``fletcher32``, ``scaleoffset``. Others are ignored.
    shape
        Shape of the dataset to create.
    strict
        Raise if a ``chunks`` shape does not fit the dataset's rank; otherwise (datasets
        inside a dict) let h5py choose chunks for datasets of another rank.

    Notes
    -----
    Scalar and empty datasets cannot be chunked or filtered: they get no options. Chunk
    dimensions larger than the data are clipped to it.
    """
    unknown = set(args) - set(DATASET_ARGS) - set(READ_ARGS)
    if unknown:
        known = sorted((*DATASET_ARGS, *READ_ARGS))
        raise ValueError(f"unknown hdf5 serializer arguments {sorted(unknown)}; known: {known}")
    options = {k: args[k] for k in DATASET_ARGS if args.get(k) not in (None, False)}
    compression = options.get("compression")
    if compression is not None and not (
        compression in _COMPRESSIONS or (isinstance(compression, int) and 0 <= compression <= 9)
    ):
        raise ValueError(
            f"unknown hdf5 compression {compression!r}; use one of {list(_COMPRESSIONS)} "
            f"or a gzip level 0-9"
        )
    if not shape or 0 in shape:
        return {}
    chunks = options.get("chunks")
    if chunks is not None and chunks is not True:
        chunks = tuple(int(c) for c in chunks)
        if len(chunks) != len(shape):
            if strict:
                raise ValueError(f"chunks {chunks} do not fit a dataset of shape {shape}")
            chunks = True
        else:
            chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, shape, strict=True))
        options["chunks"] = chunks
    return options


# -- reading selections -----------------------------------------------------------------


def _expand(selection: Any, ndim: int) -> list[Any]:
    """Normalise a selection to one item per axis (Ellipsis expanded, missing axes full)."""
    if selection is None:
        items: list[Any] = []
    elif isinstance(selection, tuple):
        items = list(selection)
    elif isinstance(selection, list) and all(isinstance(s, slice) for s in selection):
        items = list(selection)  # a list of slices, e.g. from a config file
    else:
        items = [selection]
    ellipses = [i for i, item in enumerate(items) if item is Ellipsis]
    if len(ellipses) > 1:
        raise IndexError("a selection may contain only one Ellipsis (...)")
    if ellipses:
        at = ellipses[0]
        fill = ndim - (len(items) - 1)
        items[at : at + 1] = [slice(None)] * max(fill, 0)
    if len(items) > ndim:
        raise IndexError(f"too many indices ({len(items)}) for a {ndim}-dimensional dataset")
    return items + [slice(None)] * (ndim - len(items))


def _split_selection(
    selection: Any, shape: tuple[int, ...]
) -> tuple[tuple[Any, ...], tuple[Any, ...] | None]:
    """Split a numpy-style selection into one h5py can read and a numpy index to apply after.

    h5py reads only increasing slices and sorted unique index lists; negative steps and
    arbitrary index arrays are read as the covering increasing range and finished in numpy,
    so only the needed part of the dataset is ever read.
    """
    h5sel: list[Any] = []
    post: list[Any] = []
    advanced = 0
    for item, n in zip(_expand(selection, len(shape)), shape, strict=True):
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step > 0:
                h5sel.append(slice(start, stop, step))
                post.append(slice(None))
                continue
            span = range(start, stop, step)
            if not span:
                h5sel.append(slice(0, 0))
                post.append(slice(None))
            else:
                h5sel.append(slice(span[-1], span[0] + 1, -step))
                post.append(slice(None, None, -1))
            continue
        if isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
            index = operator.index(item)
            if not -n <= index < n:
                raise IndexError(f"index {index} is out of bounds for an axis of size {n}")
            h5sel.append(index % n)  # the axis disappears, as in numpy
            post.append(None)
            continue
        index_array = np.asarray(item)
        if index_array.dtype == bool:
            if index_array.shape != (n,):
                raise IndexError(f"a boolean index must have shape ({n},)")
            index_array = np.flatnonzero(index_array)
        if index_array.dtype.kind not in "iu" or index_array.ndim != 1:
            raise IndexError(f"unsupported index {item!r}: use ints, slices or 1-d int arrays")
        advanced += 1
        if advanced > 1:
            raise IndexError("at most one index array per selection is supported")
        if np.any((index_array < -n) | (index_array >= n)):
            raise IndexError(f"index array {item!r} is out of bounds for an axis of size {n}")
        index_array = index_array % n if n else index_array
        low = int(index_array.min()) if index_array.size else 0
        high = int(index_array.max()) + 1 if index_array.size else 0
        h5sel.append(slice(low, high))
        post.append(index_array - low)
    if advanced:
        # numpy places the dimensions of combined integer/array indices by its own rules:
        # read integer axes as length-1 ranges and let numpy index them the same way.
        h5sel = [slice(h, h + 1) if p is None else h for h, p in zip(h5sel, post, strict=True)]
        post = [0 if p is None else p for p in post]
    else:
        post = [p for p in post if p is not None]
    needs_post = any(not (isinstance(p, slice) and p == slice(None)) for p in post)
    return tuple(h5sel), (tuple(post) if needs_post else None)


def _selected_shape(h5sel: tuple[Any, ...], shape: tuple[int, ...]) -> list[int]:
    """Shape h5py allocates for ``h5sel`` (increasing slices and indices, per axis)."""
    out = []
    for item, n in zip(h5sel, shape, strict=True):
        if isinstance(item, slice):
            out.append(len(range(*item.indices(n))))
    return out


def read_selection(
    dataset: h5py.Dataset,
    selection: Any = None,
    fields: str | Sequence[str] | None = None,
    *,
    check: Callable[[int], None] | None = None,
    original: np.dtype[Any] | None = None,
) -> np.ndarray:
    """Read part of a dataset: only the selected elements (and fields) leave the file.

    ``check`` is called with the bytes the read will allocate (from the declared shape of
    the selection and the dtype, plus one decompressed chunk for a filtered dataset;
    ``original`` is the dtype the data is converted back to) before anything is read, e.g.
    `butler.ButlerLocation.check_read_size`.
    """
    source: Any = dataset
    dtype = dataset.dtype
    chunk = _guards.chunk_nbytes(dataset) if check is not None else 0
    if fields is not None:
        names = [fields] if isinstance(fields, str) else list(fields)
        source = dataset.fields(fields if isinstance(fields, str) else names)
        dtype = np.dtype([(n, dataset.dtype.fields[n][0]) for n in names])
    if selection is None:
        if check is not None:
            check(_guards.nbytes(dataset, None, dtype, original) + chunk)
        return np.asarray(source[()])
    h5sel, post = _split_selection(selection, dataset.shape)
    if check is not None:
        selected = _selected_shape(h5sel, dataset.shape)
        check(_guards.nbytes(dataset, selected, dtype, original) + chunk)
    data = np.asarray(source[h5sel])
    return data if post is None else data[post]
