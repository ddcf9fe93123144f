"""Public: butler on Dask — lazy reads, parallel writes and chunked arrays.

Install with ``pip install "butler-core[dask]"``. Dask is imported by these functions only
(``import butler`` never imports it).

* `read`: a `dask.bag.Bag` of the objects a query selects, one task per dataset (or per
  batch of ``partition_size`` datasets).
* `write`: puts the ``(obj, data_id)`` pairs of a bag on the workers; a `dask.bag.Bag` of
  the `DatasetRef` s written.
* `array`: a `dask.array.Array` over one stored array, each chunk read lazily as a partial
  read (an npy memory-map slice, a FITS section, an HDF5 slice).

**How a Butler reaches the workers.** The graph holds the Butler *pickled*
(`Butler.__reduce__`: its root and options, never an open connection). Each worker
process unpickles it once and keeps the reopened Butler for every later task of the same
repository (`_worker_butler`). Credentials reach the workers the way they reached the
client: from the workers' own environment or credential chain (``AWS_*`` variables,
``~/.aws``, instance roles, ``PGPASSWORD``/``~/.pgpass``), or — when the client's Butler
was opened with explicit storage options (``key=``, ``secret=``) — inside that pickle,
which Dask sends to the workers over its own connections. They never appear in a repr, a
graph key, a log line or an error: keys are hashes, and the handle's repr is the
Butler's masked URI.

**Retried writes.** Dask re-runs a task whose worker died. A put is atomic (readers see
the whole dataset or nothing), but a worker may die *after* its put committed; the
retried task then finds the dataset already there. `write` therefore treats a
create-only put that meets an existing dataset *holding an equal object* (read back and
compared: same type, and for arrays same shape, dtype and values) as written, repairs
its index row if the first attempt died before writing it, and returns its `DatasetRef`.
An existing dataset holding anything else still raises `DatasetExistsError`. With
``overwrite=True`` every attempt simply replaces the dataset.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ._butler import Butler
from ._declarations import parameters_dict
from ._errors import (
    ButlerError,
    DatasetExistsError,
    FormatError,
    InvalidDataIdError,
    ParameterError,
    check_overwrite,
)
from ._index import IndexEntry
from ._provenance import DatasetRef, ref_from_metadata

if TYPE_CHECKING:
    import dask.array
    import dask.bag

__all__ = ["PARTIAL_READ_PARAMETERS", "array", "read", "write"]

#: Read parameters that select part of an array by a tuple of slices, in the order they
#: are looked for in a format's `FormatDescriptor.parameters`: ``slice`` (npy, HDF5) and
#: ``section`` (FITS). A format declaring one of them can back `array`.
PARTIAL_READ_PARAMETERS = ("slice", "section")

_butlers: dict[str, Butler] = {}
_butlers_lock = threading.Lock()


def _import_dask() -> None:
    try:
        import dask.bag  # noqa: F401
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ButlerError(
            f"butler.dask needs dask and distributed ({exc}); install them with "
            f"pip install 'butler-core[dask]'"
        ) from None


class _Handle:
    """A Butler as a Dask graph holds it: its pickle (root and options), reopened once per
    worker process. Its repr is the masked URI, its token a digest: no secret shows."""

    def __init__(self, butler: Butler) -> None:
        self.payload = pickle.dumps(butler)
        self.digest = hashlib.sha256(self.payload).hexdigest()
        self.shown = repr(butler)

    def butler(self) -> Butler:
        return _worker_butler(self.digest, self.payload)

    def __dask_tokenize__(self) -> str:
        return self.digest

    def __repr__(self) -> str:
        return f"<butler.dask handle of {self.shown}>"


def _worker_butler(digest: str, payload: bytes) -> Butler:
    """The Butler a pickle reopens, once per process (keyed by the pickle's digest)."""
    found = _butlers.get(digest)
    if found is not None:
        return found
    with _butlers_lock:
        found = _butlers.get(digest)
        if found is None:
            found = _butlers[digest] = pickle.loads(payload)
        return found


def _partitioning(
    count: int, partition_size: int | None, npartitions: int | None
) -> dict[str, int]:
    if partition_size is not None and npartitions is not None:
        raise ParameterError("pass partition_size or npartitions, not both")
    for name, value in (("partition_size", partition_size), ("npartitions", npartitions)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ParameterError(f"{name} must be a positive integer, not {value!r}")
    if npartitions is not None:
        return {"npartitions": min(npartitions, max(count, 1))}
    return {"partition_size": partition_size or 1}


# -- read --------------------------------------------------------------------------------


def read(
    b: Butler,
    dataset_type: str,
    where: str | None = None,
    *,
    parameters: Mapping[str, Any] | None = None,
    partition_size: int | None = None,
    npartitions: int | None = None,
    collections: str | Sequence[str] | None = None,
    **constraints: Any,
) -> dask.bag.Bag:
    """A lazy `dask.bag.Bag` of the datasets ``b.datasets(dataset_type, where,
    **constraints)`` selects, in that order.

    The data IDs are selected now, on the client (through the index when the repository
    has one); each is read later, on a worker, from the run it was found in.

    Parameters
    ----------
    b
        The repository (pickled into the graph as its root and options).
    dataset_type, where, collections, **constraints
        As for `Butler.datasets`; ``dataset_type`` may name a component (``"calexp.wcs"``):
        the datasets of ``calexp`` are selected and each is read as its WCS (see `Butler.get`).
    parameters
        Read parameters for every dataset (``{"columns": [...]}``), as for `Butler.get`.
    partition_size
        Datasets per task (default 1: one task per dataset). Batch small datasets so that
        the per-task overhead (about a millisecond in Dask) does not dominate.
    npartitions
        Number of tasks instead (the datasets spread evenly).

    Raises
    ------
    DatasetTypeError, QueryError
        As `Butler.datasets`, at once.
    ParameterError
        Bad partitioning, or read parameters the format does not declare.
    """
    _import_dask()
    import dask.bag as db

    from ._disassembly import check_declared

    dt, component = b._dataset_type_and_component(dataset_type)
    given = parameters_dict(parameters, f"dataset type {dt.name!r}")
    if component is not None:  # "calexp.wcs": the datasets of calexp, each read as its WCS
        check_declared(b.registry, dt, component)
    elif given:  # (a component's parameters are its own format's: checked when read)
        b.registry.format(dt.format).check_parameters(given, what=f"dataset type {dt.name!r}")
    found = b.stored_locations(dt.name, where, collections=collections, **constraints)
    items = [(dict(location.data_id), location.run) for location in found]
    handle = _Handle(b)
    seq = db.from_sequence(items, **_partitioning(len(items), partition_size, npartitions))
    name = dt.name if component is None else f"{dt.name}.{component}"
    return db.map_partitions(
        _read_partition,
        seq,
        handle,
        name,
        given,
        token="butler-read",
    )


def _read_partition(
    items: Iterable[tuple[dict[str, Any], str]],
    handle: _Handle,
    dataset_type: str,
    parameters: dict[str, Any],
) -> list[Any]:
    b = handle.butler()
    return [
        b.get(dataset_type, data_id, parameters=parameters or None, collections=[run])
        for data_id, run in items
    ]


# -- write -------------------------------------------------------------------------------


def write(
    b: Butler,
    dataset_type: str,
    bag: dask.bag.Bag,
    *,
    overwrite: bool = False,
    parameters: Mapping[str, Any] | None = None,
) -> dask.bag.Bag:
    """Put every ``(obj, data_id)`` pair of ``bag`` into ``b``'s run, on the workers; a
    lazy `dask.bag.Bag` of the `DatasetRef` s written, in the bag's order.

    Each put is atomic and independent: a failed task leaves no partial dataset, and a
    task Dask retries (its worker died) succeeds even if the first attempt committed —
    a create-only put that finds an existing dataset holding an *equal* object counts
    as written (see the module's "Retried writes").

    Parameters
    ----------
    b
        The repository (pickled into the graph as its root and options, run included).
    dataset_type
        Dataset type of every object (checked now, on the client).
    bag
        Pairs ``(obj, data_id)``, ``data_id`` a mapping.
    overwrite
        Replace existing datasets (retries then trivially succeed).
    parameters
        Write parameters, as for `Butler.put`.

    Raises
    ------
    DatasetTypeError
        Unknown dataset type, at once.
    ParameterError
        ``overwrite`` is not True or False, at once.
    DatasetExistsError
        When computed: a data ID already holds a different object (without
        ``overwrite``).
    InvalidDataIdError
        When computed: an item is not an ``(obj, data_id)`` pair.
    """
    _import_dask()
    import dask.bag as db

    dt = b.dataset_type(dataset_type)
    check_overwrite(overwrite, "butler.dask.write", dt.name)
    handle = _Handle(b)
    return db.map_partitions(
        _write_partition,
        bag,
        handle,
        dt.name,
        overwrite,
        parameters_dict(parameters, f"dataset type {dt.name!r}"),
        token="butler-write",
    )


def _write_partition(
    items: Iterable[Any],
    handle: _Handle,
    dataset_type: str,
    overwrite: bool,
    parameters: dict[str, Any],
) -> list[DatasetRef]:
    b = handle.butler()
    refs = []
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], Mapping)):
            raise InvalidDataIdError(
                f"butler.dask.write({dataset_type!r}) takes (obj, data_id) pairs with a "
                f"mapping as data_id, not a {type(item).__name__}"
            )
        obj, data_id = item
        refs.append(_put_one(b, dataset_type, obj, dict(data_id), overwrite, parameters))
    return refs


def _put_one(
    b: Butler,
    dataset_type: str,
    obj: Any,
    data_id: dict[str, Any],
    overwrite: bool,
    parameters: dict[str, Any],
) -> DatasetRef:
    try:
        location = b.put(
            obj, dataset_type, data_id, overwrite=overwrite, parameters=parameters or None
        )
    except DatasetExistsError as exc:
        return _already_written(b, dataset_type, obj, data_id, exc)
    if b.policy.checksum:  # the sha256 was computed while writing: read it back
        return b.ref(dataset_type, location.data_id, collections=[location.run])
    created = (location.provenance or {}).get("created")
    return DatasetRef(dataset_type, dict(location.data_id), location.run, None, created)


def _already_written(
    b: Butler, dataset_type: str, obj: Any, data_id: dict[str, Any], exc: DatasetExistsError
) -> DatasetRef:
    """The ref of an existing dataset in ``b``'s run holding an object equal to ``obj``
    (a retried put whose first attempt committed), its index row repaired; otherwise
    ``exc`` again, saying why."""
    dt = b.dataset_type(dataset_type)
    try:
        found = b._find(dt, data_id, (b.run,))
        existing = found.read()
    except ButlerError as read_error:
        raise DatasetExistsError(
            f"{exc}; it could not be read back to compare with the object given ({read_error})"
        ) from None
    if not _equal(existing, obj):
        raise DatasetExistsError(
            f"{exc}; it holds a different object than the one given (butler.dask.write "
            f"treats an existing dataset as written only when it holds an equal object)"
        ) from None
    assert found.stored is not None
    index = b.index
    if index is not None:  # the first attempt may have died between bytes and row
        entry = IndexEntry.from_metadata(dt, found.key, found.data_id, found.stored, found.run)
        index.add(dt, [entry])
    return ref_from_metadata(dt.name, found.data_id, found.run, found.stored)


def _equal(stored: Any, given: Any, depth: int = 0) -> bool:
    """Whether a read-back object equals the one a put was given: same class; arrays by
    shape, dtype (byte order aside) and values (NaNs equal); dicts, lists and tuples item
    by item, recursively with these rules (``{"a": True}`` is not ``{"a": 1}``, nor
    ``[1.0]`` ``[1]``); anything else by ``==`` answering exactly True."""
    if type(stored) is not type(given):
        return False
    if isinstance(given, dict) and depth < _MAX_DEPTH:
        return stored.keys() == given.keys() and all(
            _equal(stored[k], given[k], depth + 1) for k in given
        )
    if isinstance(given, list | tuple) and depth < _MAX_DEPTH:
        return len(stored) == len(given) and all(
            _equal(a, b, depth + 1) for a, b in zip(stored, given, strict=True)
        )
    np = sys.modules.get("numpy")  # an ndarray was given only if numpy is imported
    if np is not None and isinstance(given, np.ndarray):
        if stored.shape != given.shape:
            return False
        if stored.dtype.newbyteorder("=") != given.dtype.newbyteorder("="):
            return False
        nan = stored.dtype.kind in "fc"
        return bool(np.array_equal(stored, given, equal_nan=nan))
    try:
        same = stored == given
    except Exception:
        return False
    return same is True


#: Nesting `_equal` compares item by item (deeper: by ``==``).
_MAX_DEPTH = 64


# -- array -------------------------------------------------------------------------------


def array(
    b: Butler,
    dataset_type: str,
    *,
    chunks: Any,
    parameters: Mapping[str, Any] | None = None,
    collections: str | Sequence[str] | None = None,
    **data_id: Any,
) -> dask.array.Array:
    """A lazy `dask.array.Array` over one stored array, each chunk a partial read.

    The dataset is found now, on the client, and pinned: every chunk reads the same run,
    and a chunk finding the dataset replaced since (another creation time) fails with a
    `FormatError` rather than mixing two versions. Shape and dtype come from two empty
    reads through the format's own reader (``[0:0, ...]`` and ``[..., 0:0]``; a 1-d array's
    length by doubling one-element reads), so they are exactly what the chunks return.

    Parameters
    ----------
    b
        The repository (pickled into the graph).
    dataset_type, **data_id
        The dataset, as for `Butler.get`.
    chunks
        As for `dask.array.from_array` (``(1024, 1024)``, ``"auto"``, ``-1``...).
    parameters
        Other read parameters (``{"hdu": 1}`` for FITS, ``{"path": "x"}`` for HDF5).
    collections
        As for `Butler.get`.

    Raises
    ------
    ParameterError
        The dataset's format declares no partial read (none of
        `PARTIAL_READ_PARAMETERS`), naming the format; ``parameters`` holds the
        partial-read parameter itself; or ``chunks`` do not fit the array's shape.
    DatasetNotFoundError
        No searched run holds the dataset.
    FormatError
        The dataset does not read as an array.
    """
    _import_dask()
    import dask.array as da
    import numpy as np
    from dask.base import tokenize

    dt = b.dataset_type(dataset_type)
    merged, runs = b._split_run(dt, None, dict(data_id), collections)
    found = b._find(dt, merged, runs)
    descriptor = b.registry.format(found.format)
    declared = descriptor.parameters or frozenset()
    selector = next((p for p in PARTIAL_READ_PARAMETERS if p in declared), None)
    if selector is None:
        raise ParameterError(
            f"butler.dask.array: {found.describe()} is in format {found.format!r}, which "
            f"declares no partial read (none of {list(PARTIAL_READ_PARAMETERS)} among its "
            f"parameters {sorted(declared)}); read it whole with butler.dask.read"
        )
    extra = parameters_dict(parameters, f"dataset type {dt.name!r}")
    if selector in extra:
        raise ParameterError(
            f"butler.dask.array selects chunks with parameter {selector!r} itself; do not "
            f"pass it in parameters"
        )
    descriptor.check_parameters({**extra, selector: ()}, what=f"dataset type {dt.name!r}")
    assert found.stored is not None
    pinned = ref_from_metadata(dt.name, found.data_id, found.run, found.stored)
    source = _Section(_Handle(b), pinned, selector, extra)
    first = source.read((slice(0, 0), Ellipsis), probe=True)
    if first.ndim == 1:
        shape: tuple[int, ...] = (_length(source),)
    else:
        last = source.read((Ellipsis, slice(0, 0)), probe=True)
        shape = (last.shape[0], *first.shape[1:])
    source.shape, source.dtype, source.ndim = shape, first.dtype, len(shape)
    chunks = _checked_chunks(chunks, shape, first.dtype, found.describe())
    name = f"butler-array-{tokenize(source, chunks)}"
    meta = np.empty((0,) * len(shape), dtype=first.dtype)
    return da.from_array(source, chunks=chunks, name=name, meta=meta, asarray=False)


def _checked_chunks(chunks: Any, shape: tuple[int, ...], dtype: Any, what: str) -> Any:
    """``chunks`` normalised by Dask for ``shape``; anything Dask cannot read (0, negative
    sizes, the wrong number of axes, sizes not adding up) or a bool (``True`` is 1: one
    task per element) is a `ParameterError` naming the dataset and its shape."""
    from dask.array.core import normalize_chunks

    def has_bool(value: Any) -> bool:
        if isinstance(value, bool):
            return True
        if isinstance(value, Mapping):
            return any(has_bool(v) for v in value.values())
        if isinstance(value, tuple | list):
            return any(has_bool(v) for v in value)
        return False

    problem = "a bool is no chunk size" if has_bool(chunks) else None
    if problem is None:
        try:
            return normalize_chunks(chunks, shape, dtype=dtype)
        except (ValueError, TypeError, ZeroDivisionError, KeyError, IndexError) as exc:
            problem = str(exc).splitlines()[0] or type(exc).__name__
    raise ParameterError(
        f"butler.dask.array: chunks={chunks!r} do not fit {what} of shape {shape} "
        f"({problem}); give one positive size (or -1, 'auto') per axis"
    )


def _length(source: _Section) -> int:
    """Length of a 1-d array by one-element reads: doubling, then bisection."""
    low, high = 0, 1  # the first ``low`` elements exist; probe element ``high - 1``
    while source.read((slice(high - 1, high),), probe=True).shape[0]:
        low, high = high, high * 2
    while high - low > 1:  # element low - 1 exists (or low == 0), element high - 1 does not
        middle = (low + high) // 2
        if source.read((slice(middle - 1, middle),), probe=True).shape[0]:
            low = middle
        else:
            high = middle
    return low


class _Section:
    """What `dask.array.from_array` slices: ``source[slices]`` reads that part of the
    pinned dataset through its format's partial read (on whichever process runs it)."""

    def __init__(
        self, handle: _Handle, ref: DatasetRef, selector: str, parameters: dict[str, Any]
    ) -> None:
        self.handle, self.ref, self.selector, self.parameters = handle, ref, selector, parameters
        self.shape: tuple[int, ...] = ()
        self.dtype: Any = None
        self.ndim = 0

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        ref = self.ref
        return (
            self.handle.digest,
            ref.dataset_type,
            repr(sorted(ref.data_id.items())),
            ref.run,
            ref.created,
            self.selector,
            repr(sorted(self.parameters.items())),
        )

    def __repr__(self) -> str:
        return f"<butler.dask array source {self.ref} of {self.handle.shown}>"

    def __getitem__(self, key: Any) -> Any:
        return self.read(key if isinstance(key, tuple) else (key,))

    def read(self, key: tuple[Any, ...], *, probe: bool = False) -> Any:
        """That part of the pinned dataset (refused if it was replaced since)."""
        import numpy as np

        b = self.handle.butler()
        ref = self.ref
        dt = b.dataset_type(ref.dataset_type)
        found = b._find(dt, ref.data_id, (ref.run,))
        assert found.stored is not None
        now = ref_from_metadata(dt.name, found.data_id, found.run, found.stored)
        if now.created != ref.created or now.checksum != ref.checksum:
            raise FormatError(
                f"butler.dask.array: {found.describe()} was replaced (created {now.created}) "
                f"since the array was built over the one created {ref.created}; rebuild the "
                f"array"
            )
        chunk = replace(found, parameters={**self.parameters, self.selector: key}).read()
        if not isinstance(chunk, np.ndarray) or chunk.dtype.hasobject:
            raise FormatError(
                f"butler.dask.array: {found.describe()} reads as a "
                f"{type(chunk).__name__}, not a numeric array"
            )
        if not probe:
            expected = _selected_shape(key, self.shape)
            if (expected is not None and chunk.shape != expected) or chunk.dtype != self.dtype:
                raise FormatError(
                    f"butler.dask.array: chunk {key} of {found.describe()} read as "
                    f"{chunk.shape} {chunk.dtype}, expected {expected} {self.dtype}"
                )
        return chunk


def _selected_shape(key: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The shape ``key`` (slices and integers, one per axis) selects; ``None`` for any
    other selection (its shape is left to the format)."""
    if len(key) != len(shape):
        return None
    selected = []
    for item, n in zip(key, shape, strict=True):
        if isinstance(item, slice):
            selected.append(len(range(*item.indices(n))))
        elif not isinstance(item, int):
            return None
    return tuple(selected)
