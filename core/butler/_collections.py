"""`Butler`'s run, collection and provenance methods (a mixin, to keep `_butler.py` about
put, get and queries): runs and their counts, a data ID's history across runs, removing a
run, named chains, references, provenance and recording inputs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import DatasetNotFoundError, InvalidDataIdError
from ._provenance import DatasetRef, Provenance, read_provenance, ref_from_metadata
from ._runs import (
    DEFAULT_RUN,
    RUNS_SEGMENT,
    check_run_name,
    collection_names,
    expand_collections,
    is_run_key,
    run_key,
    run_of_key,
    run_prefix,
)

if TYPE_CHECKING:
    import threading

    from ._index import Index
    from ._location import ButlerLocation
    from ._mapper import Mapper
    from ._policy import DatasetType, RepositoryPolicy
    from ._storage import Storage

__all__ = ["CollectionsMixin", "DatasetVersion"]


@dataclass(frozen=True)
class DatasetVersion:
    """One run's dataset for a data ID, as `Butler.history` lists it.

    Attributes
    ----------
    ref
        The dataset (its run, creation time and checksum).
    size
        Bytes stored.
    """

    ref: DatasetRef
    size: int | None = None

    @property
    def run(self) -> str:
        """The run holding it."""
        return self.ref.run

    @property
    def created(self) -> str | None:
        """Its creation time (ISO 8601 UTC)."""
        return self.ref.created

    @property
    def checksum(self) -> str | None:
        """Its sha256, when the repository keeps checksums."""
        return self.ref.checksum


class CollectionsMixin:
    """Runs, collections and provenance for `Butler` (see `butler._runs`)."""

    if TYPE_CHECKING:
        run: str
        storage: Storage
        mapper: Mapper
        _policy: RepositoryPolicy
        _recording: threading.local
        _lock: threading.RLock

        @property
        def index(self) -> Index | None: ...

        def dataset_type(self, name: str) -> DatasetType: ...
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
        def _find(
            self, dt: DatasetType, data_id: Mapping[str, Any], runs: Sequence[str]
        ) -> ButlerLocation: ...
        def _key_data_id(self, dt: DatasetType, key: str) -> dict[str, Any] | None: ...
        def _stored_all(self, dt: DatasetType) -> Iterator[tuple[str, str, dict[str, Any]]]: ...
        def _query_index(self) -> Index | None: ...
        def _location_at(
            self,
            dt: DatasetType,
            key: str,
            data_id: dict[str, Any],
            parameters: Mapping[str, Any] | None = None,
            overwrite: bool = False,
            allow_pickle: bool | None = None,
            progress: Any = None,
            *,
            run: str = DEFAULT_RUN,
        ) -> ButlerLocation: ...
        def _remove_at(self, dt: DatasetType, location: ButlerLocation) -> None: ...
        def _parse_policy(self, data: Mapping[str, Any] | None) -> RepositoryPolicy: ...

    # -- references and provenance ------------------------------------------------------

    def ref(
        self,
        dataset_type: str,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Sequence[str] | None = None,
        **data_id_kw: Any,
    ) -> DatasetRef:
        """The `DatasetRef` of the dataset `get` would read (same arguments): dataset type,
        data ID, run, checksum and creation time. Pass it in a put's ``inputs``.

        Raises
        ------
        DatasetNotFoundError
            If no searched run holds the dataset.
        """
        dt = self.dataset_type(dataset_type)
        merged, runs = self._split_run(dt, data_id, data_id_kw, collections)
        found = self._find(dt, merged, runs)
        assert found.stored is not None
        return ref_from_metadata(dt.name, found.data_id, found.run, found.stored)

    def provenance(
        self,
        dataset_type: str,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Sequence[str] | None = None,
        **data_id_kw: Any,
    ) -> Provenance:
        """How the dataset `get` would read was made: its run and creation time, user,
        host, versions (butler, the serializer's distribution, Python) and inputs, as
        recorded with its bytes (datasets written before provenance existed have none)."""
        dt = self.dataset_type(dataset_type)
        merged, runs = self._split_run(dt, data_id, data_id_kw, collections)
        found = self._find(dt, merged, runs)
        assert found.stored is not None
        ref = ref_from_metadata(dt.name, found.data_id, found.run, found.stored)
        return read_provenance(self.storage, ref, found.stored)

    @contextlib.contextmanager
    def recording(self) -> Iterator[list[DatasetRef]]:
        """Within the block, every `get` (in this thread) is recorded, and every put gets
        all the refs recorded so far in the block as inputs (besides its own ``inputs``).
        Yields the list of recorded refs. Nested blocks share the outer block's list.

        Examples
        --------
        >>> with b.recording():  # doctest: +SKIP
        ...     raw = b.get("raw", visit=1)
        ...     b.put(calibrate(raw), "calexp", visit=1)  # inputs: raw visit=1
        """
        refs = getattr(self._recording, "refs", None)
        if refs is not None:  # nested: the outer block keeps recording
            yield refs
            return
        self._recording.refs = []
        try:
            yield self._recording.refs
        finally:
            self._recording.refs = None

    # -- runs ---------------------------------------------------------------------------

    def history(
        self, dataset_type: str, data_id: Mapping[str, Any] | None = None, **data_id_kw: Any
    ) -> list[DatasetVersion]:
        """Every run's dataset for one data ID, oldest first: run, creation time, size,
        checksum. From the index when the repository has one, else by listing the runs."""
        dt = self.dataset_type(dataset_type)
        key, normal = self._map(dt, {**(data_id or {}), **data_id_kw})
        index = self._query_index()
        if index is not None:
            return [
                DatasetVersion(
                    ref_from_metadata(
                        dt.name,
                        normal,
                        e.run,
                        {"provenance": e.provenance, "created": e.created, "sha256": e.checksum},
                    ),
                    e.size,
                )
                for e in index.history(dt, normal)
            ]
        versions = []
        for run in self._runs_listed():
            try:
                meta = self.storage.metadata(run_key(run, key))
            except DatasetNotFoundError:
                continue
            size = meta.get("size")
            versions.append(
                DatasetVersion(
                    ref_from_metadata(dt.name, normal, run, meta),
                    size if isinstance(size, int) else None,
                )
            )
        return sorted(versions, key=lambda v: (v.created or "", v.run))

    def runs(self) -> dict[str, int]:
        """The runs holding datasets, with how many each holds."""
        index = self._query_index()
        if index is not None:
            return index.runs()
        counts: dict[str, int] = {}
        for name in sorted(self._policy.dataset_types):
            for _key, run, _data_id in self._stored_all(self.dataset_type(name)):
                counts[run] = counts.get(run, 0) + 1
        return dict(sorted(counts.items()))

    def _runs_listed(self) -> list[str]:
        """The runs present in storage (default first), by listing the runs area."""
        runs = {DEFAULT_RUN}
        for key in self.storage.list(f"{RUNS_SEGMENT}/"):
            parsed = run_of_key(key)
            if parsed is not None:
                runs.add(parsed[0])
        return [DEFAULT_RUN, *sorted(runs - {DEFAULT_RUN})]

    def remove_run(self, name: str) -> int:
        """Remove every dataset of a run; returns how many were removed.

        Each dataset goes as `remove` does (index row, then bytes): an interrupted
        removal leaves whole datasets, never half of one, and running it again finishes it.
        """
        check_run_name(name)
        if name in self.chains:  # a chain holds nothing: 0 would look like a done job
            raise InvalidDataIdError(
                f"{name!r} is a collection chain ({', '.join(self.chains[name])}), not a "
                f"run: remove_run removes one run's datasets"
            )
        removed = 0
        types = [self.dataset_type(t) for t in sorted(self._policy.dataset_types)]
        prefix = run_prefix(name)
        keys = [k for k in self.storage.list(prefix) if prefix or not is_run_key(k)]
        for key in keys:  # one listing of the run's own keys, whatever the dataset types
            for dt in types:
                data_id = self._key_data_id(dt, key[len(prefix) :])
                if data_id is None:
                    continue
                with contextlib.suppress(DatasetNotFoundError):  # removed concurrently
                    self._remove_at(dt, self._location_at(dt, key, data_id, run=name))
                    removed += 1
                break
        index = self.index
        if index is not None:  # rows of bytes removed behind butler's back (not new puts)
            for type_name in sorted(self._policy.dataset_types):
                dt = self.dataset_type(type_name)
                stale = [
                    e.data_id
                    for e in index.entries(dt)
                    if e.run == name
                    and not self.storage.exists(run_key(name, self._map(dt, e.data_id)[0]))
                ]
                index.discard(dt, stale, name)
        return removed

    # -- chains ---------------------------------------------------------------------------

    def define_collection(self, name: str, members: Sequence[str]) -> list[str]:
        """Define (or redefine) a named chain of collections, stored in the repository:
        reads through it search its members in order. Concurrent definitions of other
        chains are merged, never lost. Returns the runs it expands to.

        Raises
        ------
        InvalidDataIdError
            An invalid name, a name that is a run holding datasets or the default run, or
            a chain that would contain itself.
        """
        check_run_name(name, what="collection")
        members = [
            check_run_name(m, what="collection")
            for m in collection_names(members, what=f"the members of chain {name!r}")
        ]
        if name == DEFAULT_RUN:
            raise InvalidDataIdError(f"{name!r} is the default run; a chain needs another name")
        if next(iter(self.storage.list(run_prefix(name))), None):
            raise InvalidDataIdError(
                f"{name!r} is a run holding datasets; a chain needs another name"
            )

        def change(data: dict[str, Any] | None) -> dict[str, Any] | None:
            policy = self._parse_policy(data)
            if policy.collections.get(name) == members:
                return None
            chains = {**policy.collections, name: members}
            expand_collections([name], chains)  # refuses cycles before anything is stored
            policy.collections = chains
            return policy.to_dict()

        with self._lock:
            self._policy = self._parse_policy(self.storage.update_policy(change))
        return list(expand_collections([name], self._policy.collections))

    def remove_collection(self, name: str) -> None:
        """Forget a named chain (its runs and datasets stay). Chains that name it then
        search it as a run (holding nothing unless such a run exists).

        Raises
        ------
        InvalidDataIdError
            If no chain has that name.
        """
        check_run_name(name, what="collection")

        def change(data: dict[str, Any] | None) -> dict[str, Any] | None:
            policy = self._parse_policy(data)
            if name not in policy.collections:
                raise InvalidDataIdError(
                    f"no collection chain named {name!r}; defined: {sorted(policy.collections)}"
                )
            del policy.collections[name]
            return policy.to_dict()

        with self._lock:
            self._policy = self._parse_policy(self.storage.update_policy(change))

    @property
    def chains(self) -> dict[str, list[str]]:
        """The named collection chains defined in the repository."""
        return {n: list(m) for n, m in self._policy.collections.items()}
