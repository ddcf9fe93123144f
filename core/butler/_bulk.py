"""`Butler`'s bulk calls (a mixin): many gets or puts at once, concurrently.

Each item is exactly one `Butler.get` or `Butler.put`, so each is atomic on its own; the
items run on a thread pool (storage calls release the GIL: file system calls, S3 requests,
database round trips). Failures are collected and raised together, as one `BulkError`, once
every item has finished.

Threads and per-thread state:

* The pool is kept by the Butler and reused by its later bulk calls: what storages and the
  index keep per thread (SQLite index connections, posix's kept descriptor, the commit
  receipt that `Butler._index_written` reads) is then bounded by the pool's size instead of
  growing with every call.
* `Butler.recording` is per thread: the calling thread records the refs of ``get_many``'s
  reads (in input order), and ``put_many`` passes the calling thread's recorded refs to
  every put as inputs.
* Progress callbacks run in the calling thread, with ``done`` increasing by one.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ._component_read import read_component
from ._errors import BulkError, ButlerError, InvalidDataIdError, check_overwrite
from ._provenance import DatasetRef, check_inputs, ref_from_metadata
from ._small_get import _GENERAL

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from ._location import ButlerLocation
    from ._policy import DatasetType
    from ._storage import Storage

__all__ = ["BulkMixin", "BulkProgress", "default_workers"]

#: ``progress(done, total)``: called after each item finishes (in the calling thread).
BulkProgress = Callable[[int, int], None]

#: Most threads a bulk call uses by default on a storage behind a network (S3...).
MAX_REMOTE_WORKERS = 32
#: Most threads a bulk call uses by default on a local storage (posix, memory).
MAX_LOCAL_WORKERS = 8
#: ``get_many`` on a local storage with the default ``max_workers`` first reads this many
#: items in the calling thread, timing them ...
PROBE_ITEMS = 16
#: ... and reads the rest there too when they took less than this each (seconds): reads that
#: short are Python work under the GIL (a small JSON get from the page cache is ~0.07 ms),
#: which threads only slow down; longer ones wait on the disk or release the GIL.
SERIAL_BELOW = 0.5e-3


def default_workers(storage: Storage) -> int:
    """Threads a bulk call uses when ``max_workers`` is not given.

    Local storages (posix, memory) are bound by the CPU and the disk: ``cpu + 2``, at most
    `MAX_LOCAL_WORKERS`. Storages behind a network mostly wait on round trips, whatever the
    number of cores: `MAX_REMOTE_WORKERS`, but no more than the storage's connection pool
    holds (SQLAlchemy's ``pool_size + max_overflow``: more threads would only queue for a
    connection).
    """
    cpus = os.cpu_count() or 1
    if storage.has_local_paths or storage.type_name == "memory":
        return max(1, min(MAX_LOCAL_WORKERS, cpus + 2))
    workers = MAX_REMOTE_WORKERS
    pool = getattr(getattr(storage, "engine", None), "pool", None)
    size = getattr(pool, "size", None)
    if callable(size):
        overflow = getattr(pool, "_max_overflow", 0)
        capacity = int(size()) + max(0, int(overflow) if isinstance(overflow, int) else 0)
        if capacity > 0:
            workers = min(workers, capacity)
    return max(1, workers)


class BulkMixin:
    """Bulk reads and writes for `Butler`: `get_many` and `put_many`."""

    if TYPE_CHECKING:
        run: str
        storage: Storage
        _recording: threading.local
        _lock: threading.RLock

        def dataset_type(self, name: str) -> DatasetType: ...
        def _dataset_type_and_component(self, name: str) -> tuple[DatasetType, str | None]: ...
        def _map(
            self, dt: DatasetType, data_id: Mapping[str, Any]
        ) -> tuple[str, dict[str, Any]]: ...
        def _split_run(
            self,
            dt: DatasetType,
            data_id: Mapping[str, Any] | None,
            data_id_kw: dict[str, Any],
            collections: str | Sequence[str] | None,
        ) -> tuple[dict[str, Any], tuple[str, ...]]: ...
        def _search(self, collections: str | Sequence[str] | None = None) -> tuple[str, ...]: ...
        def _get_small(
            self, name: str, data_id: dict[str, Any], run_given: bool = False
        ) -> Any: ...
        def _find(
            self,
            dt: DatasetType,
            data_id: Mapping[str, Any],
            runs: Sequence[str],
            parameters: Mapping[str, Any] | None = None,
            allow_pickle: bool | None = None,
            progress: Any = None,
        ) -> ButlerLocation: ...
        def put(
            self,
            obj: Any,
            dataset_type: str,
            data_id: Mapping[str, Any] | None = None,
            *,
            overwrite: bool = False,
            parameters: Mapping[str, Any] | None = None,
            progress: Any = None,
            inputs: Sequence[DatasetRef] | None = None,
            **data_id_kw: Any,
        ) -> ButlerLocation: ...

    def get_many(
        self,
        dataset_type: str,
        data_ids: Iterable[Mapping[str, Any]],
        *,
        parameters: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        collections: str | Sequence[str] | None = None,
        progress: BulkProgress | bool | None = None,
        allow_pickle: bool | None = None,
    ) -> list[Any]:
        """Read many datasets of one type concurrently; the objects, in the order of
        ``data_ids``. Each read is `get`'s (same search through the collections).

        Parameters
        ----------
        dataset_type
            The dataset type of every item.
        data_ids
            Data IDs (mappings); ``{"run": "x", ...}`` reads that item from run ``x``
            (unless ``run`` is a dimension), as ``get(..., run="x")`` does.
        parameters
            Read-time selection applied to every item (as `get`'s).
        max_workers
            Threads reading at once; default `default_workers` (``1`` reads in the calling
            thread, one after another).
        collections
            Runs and chains searched, in order (default: this Butler's).
        progress
            ``progress(done, total)`` after each item, in the calling thread; ``True`` draws
            a progress bar on stderr (needs rich: ``pip install 'butler-core[progress]'``).
        allow_pickle
            Opt in to unpickling for this call (as `get`'s).

        Inside a `recording` block, every dataset read is recorded (in input order).

        Raises
        ------
        BulkError
            After every item finished, if any failed: each failed data ID with its error
            (``.errors``), and the objects read (``.results``).
        DatasetTypeError
            Unknown dataset type (nothing is read).
        InvalidDataIdError
            A data ID that is not a mapping (nothing is read).
        """
        dt, component = self._dataset_type_and_component(dataset_type)
        given = _data_ids(data_ids)
        errors: dict[int, BaseException] = {}
        tasks: dict[int, Callable[[], tuple[Any, DatasetRef | None]]] = {}
        recording = getattr(self._recording, "refs", None) is not None
        # Items `Butler.get` would try its small-get shortcut for: try it too.
        plain = component is None and parameters is None and allow_pickle is None and not recording
        default_runs = self._search(None) if plain else None
        for i, data_id in enumerate(given):
            try:
                merged, runs = self._split_run(dt, None, dict(data_id), collections)
            except ButlerError as exc:
                errors[i] = exc
                continue
            tasks[i] = _reader(
                self, dt, merged, runs, parameters, allow_pickle, recording, component,
                small=runs == default_runs,
            )  # fmt: skip
        probe = max_workers is None and (
            self.storage.has_local_paths or self.storage.type_name == "memory"
        )
        done = self._run_bulk(
            tasks, len(given), errors, max_workers, progress, "get_many", probe=probe
        )
        results = {i: obj for i, (obj, _) in done.items()}
        refs = getattr(self._recording, "refs", None)
        if refs is not None:
            refs.extend(ref for _, (_, ref) in sorted(done.items()) if ref is not None)
        if errors:
            raise BulkError(
                f"get_many of dataset type {dt.name!r} from {self.storage.uri()!r}",
                len(given),
                errors,
                dict(enumerate(given)),
                results,
            )
        return [results[i] for i in range(len(given))]

    def put_many(
        self,
        dataset_type: str,
        items: Iterable[tuple[Any, Mapping[str, Any]]],
        *,
        overwrite: bool = False,
        max_workers: int | None = None,
        progress: BulkProgress | bool | None = None,
        inputs: Sequence[DatasetRef] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> list[ButlerLocation]:
        """Store many datasets of one type concurrently, in this Butler's run; their
        locations, in the order of ``items``. Each put is `put`'s: atomic on its own, its
        index row written after its bytes, its provenance recorded.

        Parameters
        ----------
        dataset_type
            The dataset type of every item.
        items
            ``(obj, data_id)`` pairs. A data ID given twice is stored once (the first);
            the later items fail with `InvalidDataIdError`.
        overwrite
            Replace existing datasets (default: an existing one fails its item with
            `DatasetExistsError`).
        max_workers
            Threads writing at once; default `default_workers` (``1`` writes in the calling
            thread, one after another).
        progress
            ``progress(done, total)`` after each item, in the calling thread; ``True`` draws
            a progress bar on stderr (needs rich: ``pip install 'butler-core[progress]'``).
        inputs
            `DatasetRef` s every dataset was made from (plus, inside a `recording` block,
            the refs recorded so far in the calling thread).
        parameters
            Write-time options for every item (as `put`'s).

        Raises
        ------
        BulkError
            After every item finished, if any failed: each failed data ID with its error
            (``.errors``), and the locations written (``.results``). A failed item left
            nothing stored for its data ID (an existing dataset stays as it was).
        DatasetTypeError
            Unknown dataset type (nothing is written).
        InvalidDataIdError
            An item that is not an ``(obj, data_id)`` pair (nothing is written).
        ParameterError
            ``overwrite`` is not True or False (nothing is written).
        """
        dt = self.dataset_type(dataset_type)
        check_overwrite(overwrite, "put_many", dt.name)
        pairs = _pairs(items)
        recorded = getattr(self._recording, "refs", None)
        check_inputs(inputs)  # at once, not per item
        all_inputs = [*(inputs or ()), *(recorded or ())]
        errors: dict[int, BaseException] = {}
        tasks: dict[int, Callable[[], ButlerLocation]] = {}
        first_of: dict[str, int] = {}
        for i, (obj, data_id) in enumerate(pairs):
            try:
                key, _ = self._map(dt, data_id)
            except ButlerError as exc:
                errors[i] = exc
                continue
            if key in first_of:
                errors[i] = InvalidDataIdError(
                    f"dataset {dt.name!r} {dict(data_id)} is item {first_of[key]} too; "
                    f"put_many stores one object per data ID"
                )
                continue
            first_of[key] = i
            tasks[i] = _writer(self, dt.name, obj, data_id, overwrite, all_inputs, parameters)
        done = self._run_bulk(tasks, len(pairs), errors, max_workers, progress, "put_many")
        if errors:
            raise BulkError(
                f"put_many of dataset type {dt.name!r} into run {self.run!r} "
                f"of {self.storage.uri()!r}",
                len(pairs),
                errors,
                {i: data_id for i, (_, data_id) in enumerate(pairs)},
                done,
            )
        return [done[i] for i in range(len(pairs))]

    # -- the pool ---------------------------------------------------------------------

    def _bulk_pool(self, workers: int) -> ThreadPoolExecutor:
        """This Butler's bulk threads, at least ``workers`` of them (kept between calls:
        what storages and the index keep per thread is reused, not reopened)."""
        with self._lock:
            pool: ThreadPoolExecutor | None = self.__dict__.get("_bulk_executor")
            if pool is None or self.__dict__.get("_bulk_size", 0) < workers:
                # Imported here: concurrent.futures (with logging) costs ~4 ms at import.
                from concurrent.futures import ThreadPoolExecutor

                if pool is not None:  # running items finish; its idle threads exit
                    pool.shutdown(wait=False)
                pool = ThreadPoolExecutor(workers, thread_name_prefix="butler-bulk")
                self.__dict__["_bulk_executor"] = pool
                self.__dict__["_bulk_size"] = workers
            return pool

    def _close_bulk_pool(self) -> None:
        """Let the bulk threads exit (once idle); a later bulk call starts new ones. For
        `Butler.close`."""
        with self._lock:
            pool = self.__dict__.pop("_bulk_executor", None)
            self.__dict__.pop("_bulk_size", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def _run_bulk(
        self,
        tasks: Mapping[int, Callable[[], Any]],
        total: int,
        errors: dict[int, BaseException],
        max_workers: int | None,
        progress: BulkProgress | bool | None,
        what: str,
        *,
        probe: bool = False,
    ) -> dict[int, Any]:
        """Run ``tasks`` (position -> callable), at most ``max_workers`` at once; the
        results by position. Failures go into ``errors`` (which may already hold items
        refused before running). ``progress`` counts both.

        Each worker thread takes the next item until none is left and hands back what it
        did through a queue, so an item costs one queue hand-off, not a future. With
        ``probe``, the first `PROBE_ITEMS` run in the calling thread, and the rest too if
        they took less than `SERIAL_BELOW` each."""
        workers = _check_workers(max_workers, self.storage)
        results: dict[int, Any] = {}
        with _reporter(progress, what, total) as report:
            done = len(errors)
            if done:
                report(done, total)

            def run_here(batch: Iterable[tuple[int, Callable[[], Any]]]) -> None:
                nonlocal done
                for i, task in batch:
                    try:
                        results[i] = task()
                    except Exception as exc:
                        errors[i] = exc
                    done += 1
                    report(done, total)

            items = list(tasks.items())
            if probe and workers > 1 and len(items) > 1:
                started = time.perf_counter()
                run_here(items[:PROBE_ITEMS])
                each = (time.perf_counter() - started) / len(items[:PROBE_ITEMS])
                items = items[PROBE_ITEMS:]
                if each < SERIAL_BELOW:
                    workers = 1
            if workers == 1 or len(items) <= 1:
                run_here(items)
                return results
            taken = itertools.count()  # next() is atomic: each item is taken once
            finished: queue.SimpleQueue[tuple[int, bool | None, Any]] = queue.SimpleQueue()
            stop = threading.Event()

            def work() -> None:
                while not stop.is_set():
                    k = next(taken)
                    if k >= len(items):
                        return
                    i, task = items[k]
                    try:
                        finished.put((i, True, task()))
                    except Exception as exc:
                        finished.put((i, False, exc))
                    except BaseException as exc:  # KeyboardInterrupt, SystemExit
                        finished.put((i, None, exc))
                        return

            running: list[Any] = []
            try:
                # Under the lock: another thread's bulk call asking for more threads shuts
                # this pool down and starts a bigger one, which must not happen between
                # taking the pool and submitting to it (a raw RuntimeError, items lost).
                with self._lock:
                    pool = self._bulk_pool(workers)
                    running = [pool.submit(work) for _ in range(min(workers, len(items)))]
                for _ in range(len(items)):
                    i, ok, value = finished.get()
                    if ok is None:
                        raise value
                    if ok:
                        results[i] = value
                    else:
                        errors[i] = value
                    done += 1
                    report(done, total)
            except BaseException:
                # Interrupted (Ctrl-C, a callback raising): the workers start nothing more,
                # and the items already running are let finish (bytes and index row) before
                # the exception goes on: a caller closing the Butler at once must not close
                # the index under them (their datasets would be stored but not indexed).
                stop.set()
                from concurrent.futures import wait

                wait(running)
                raise
            finally:
                stop.set()
        return results


def _reader(
    b: BulkMixin,
    dt: DatasetType,
    data_id: dict[str, Any],
    runs: tuple[str, ...],
    parameters: Mapping[str, Any] | None,
    allow_pickle: bool | None,
    recording: bool,
    component: str | None = None,
    *,
    small: bool = False,
) -> Callable[[], tuple[Any, DatasetRef | None]]:
    def read() -> tuple[Any, DatasetRef | None]:
        if small:
            found = b._get_small(dt.name, data_id)
            if found is not _GENERAL:
                return found, None
        resolved = b._find(dt, data_id, runs, parameters, allow_pickle)
        obj = resolved.read() if component is None else read_component(resolved, component)
        if not recording:
            return obj, None
        assert resolved.stored is not None
        return obj, ref_from_metadata(dt.name, resolved.data_id, resolved.run, resolved.stored)

    return read


def _writer(
    b: BulkMixin,
    name: str,
    obj: Any,
    data_id: Mapping[str, Any],
    overwrite: bool,
    inputs: Sequence[DatasetRef],
    parameters: Mapping[str, Any] | None,
) -> Callable[[], ButlerLocation]:
    def write() -> ButlerLocation:
        return b.put(obj, name, data_id, overwrite=overwrite, inputs=inputs, parameters=parameters)

    return write


def _data_ids(data_ids: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if isinstance(data_ids, (Mapping, str, bytes)):
        raise InvalidDataIdError(
            f"data_ids must be an iterable of data IDs (mappings), not {type(data_ids).__name__}"
        )
    given = list(_iterate(data_ids, "data_ids", "data IDs (mappings)"))
    for i, data_id in enumerate(given):
        if not isinstance(data_id, Mapping):
            raise InvalidDataIdError(
                f"data_ids[{i}] is {data_id!r}, not a data ID (a mapping like {{'visit': 1}})"
            )
    return given


def _pairs(items: Iterable[tuple[Any, Mapping[str, Any]]]) -> list[tuple[Any, Mapping[str, Any]]]:
    if isinstance(items, (Mapping, str, bytes)):
        raise InvalidDataIdError(
            f"items must be an iterable of (obj, data_id) pairs, not {type(items).__name__}"
        )
    pairs = []
    for i, item in enumerate(_iterate(items, "items", "(obj, data_id) pairs")):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InvalidDataIdError(
                f"items[{i}] is a {type(item).__name__}, not an (obj, data_id) pair"
            )
        obj, data_id = item
        if not isinstance(data_id, Mapping):
            raise InvalidDataIdError(
                f"items[{i}] has data ID {data_id!r}, not a mapping like {{'visit': 1}}"
            )
        pairs.append((obj, data_id))
    return pairs


def _iterate(given: Any, name: str, what: str) -> Iterable[Any]:
    """``iter(given)``; an object that is not iterable (``None``...) is an
    `InvalidDataIdError` naming the argument, not a bare ``TypeError``."""
    try:
        return iter(given)
    except TypeError:
        raise InvalidDataIdError(
            f"{name} must be an iterable of {what}, not {type(given).__name__}"
        ) from None


def _check_workers(max_workers: int | None, storage: Storage) -> int:
    if max_workers is None:
        return default_workers(storage)
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ButlerError(f"max_workers must be a positive integer or None, not {max_workers!r}")
    return max_workers


class _reporter:
    """Context manager yielding ``report(done, total)`` for a ``progress`` argument."""

    def __init__(self, progress: BulkProgress | bool | None, what: str, total: int) -> None:
        if progress is not None and not isinstance(progress, bool) and not callable(progress):
            raise ButlerError(
                f"progress must be a callable progress(done, total), True (a progress "
                f"bar) or None, not {progress!r}"
            )
        self.progress = progress
        self.what = what
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> BulkProgress:
        if self.progress is True:
            return self._bar()
        if callable(self.progress):
            return self.progress
        return _no_progress

    def _bar(self) -> BulkProgress:
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError:
            raise ButlerError(
                f"{self.what}(progress=True) draws its bar with rich, which is not "
                f"installed: pip install 'butler-core[progress]' (or pass a "
                f"progress(done, total) callable)"
            ) from None
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task(self.what, total=self.total)

        def update(done: int, total: int) -> None:
            self.bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def _no_progress(done: int, total: int) -> None:
    """No progress reporting."""
