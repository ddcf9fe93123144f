"""`Butler`: put and get Python objects by dataset type and data ID."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import _composite as composite
from ._bulk import BulkMixin
from ._collections import CollectionsMixin
from ._component_read import read_component, split_name
from ._declarations import parameters_dict
from ._disassembly import check_declared, check_disassembly, location_data, record_format
from ._errors import (
    ButlerError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    FormatError,
    InvalidDataIdError,
    NoSerializerError,
    QueryError,
    StorageError,
    check_overwrite,
)
from ._index import INT_RANGE, Index, IndexEntry, entry_id
from ._limits import parse_size
from ._location import ButlerLocation
from ._mapper import (
    Mapper,
    TemplateMapper,
    template_dimensions,
    validate_template,
)
from ._open import open_storage
from ._policy import (
    DatasetType,
    RepositoryPolicy,
    is_format_name,
    normalise_dimensions,
    python_type_name,
    validate_dataset_type_name,
)
from ._provenance import (
    DatasetRef,
    check_inputs,
    new_created,
    provenance_record,
    ref_from_metadata,
)
from ._registry import Registry
from ._runs import (
    DEFAULT_RUN,
    PARTS_SEGMENT,
    RUNS_SEGMENT,
    check_run_name,
    collection_names,
    expand_collections,
    is_run_key,
    run_key,
    run_of_key,
    run_prefix,
)
from ._small_get import (
    _GENERAL,
    _MAX_SMALL_KEYS,
    _SMALL_GET,
    _small_miss,
)
from ._storage import COPY_CHUNK, POLICY_KEY, ProgressCallback, is_reserved_key
from ._types import check_type_findable, loaded_type, resolve_policy_type, type_name
from ._urls import TRUSTED_INDEXES_VARIABLE, index_trusted, mask_url, strip_credentials

__all__ = ["Butler", "ReindexReport", "VerifyReport"]

#: Seconds a Butler trusts its copy of the repository's collection chains (see
#: `Butler._fresh_chains`).
CHAINS_MAX_AGE = 1.0


@dataclass
class ReindexReport:
    """What `Butler.reindex` did: rows written, rows dropped (bytes gone), datasets
    skipped by a resumed run (done before the interruption), per the whole call."""

    listed: int = 0
    indexed: int = 0
    dropped: int = 0
    resumed: int = 0


@dataclass
class VerifyReport:
    """What `Butler.verify` found, as lists of human-readable dataset descriptions."""

    checked: int = 0
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)
    #: Stored datasets the index has no row for (a put interrupted between its two steps,
    #: or files copied in): queries through the index miss them until `Butler.reindex`.
    unindexed: list[str] = field(default_factory=list)
    #: Index rows for bytes that are not stored (a damaged or foreign index).
    stale: list[str] = field(default_factory=list)
    #: Parts of disassembled composites that no record names (a writer killed mid-put):
    #: invisible to readers, they only take space until `Butler.purge_debris`.
    unreferenced: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """True when every dataset was checked and nothing is missing, truncated or
        corrupted, and the index (if any) matches the storage both ways. A dataset without
        recorded metadata (``unrecorded``) could not be checked, so it makes the report
        unhealthy too: verify never vouches for what it did not check."""
        return not (
            self.missing
            or self.truncated
            or self.corrupted
            or self.unrecorded
            or self.unindexed
            or self.stale
        )


class Butler(CollectionsMixin, BulkMixin):
    """A data repository: typed datasets addressed by dataset type and data ID.

    Parameters
    ----------
    root
        Path or URI of an existing repository (``"./repo"``, ``"memory://x"``,
        ``"s3://bucket/prefix"``, ``"sqlite:///repo.db"``...). Use `Butler.create` for a new one.
    registry
        Serializer registry; defaults to the process-wide one filled by installed plugins.
    mapper
        Maps (dataset type, data ID) to storage keys; defaults to `TemplateMapper`.
    allow_pickle
        Allow unpickling (which runs code chosen by whoever wrote the pickle) in this
        session. Only the reader decides: a repository can suggest it, never enable it.
    max_read_bytes
        Most bytes one read may allocate for what a file declares (a shape, an inflated
        size), as an int or ``"4GiB"``; default ``$BUTLER_MAX_READ_BYTES`` or the memory
        available.
    allow_imports
        Top-level packages that a python type named by the repository's policy may be
        imported from. Types already imported and types an installed plugin registered
        always resolve; nothing else is imported, so a policy cannot run a module.
    run
        The run every put goes into (default: the default run, where datasets written
        before runs existed live). Within a run a dataset is create-only unless
        ``overwrite=True``; the same data ID can exist in any number of runs.
    collections
        Runs and named chains that reads (`get`, `exists`, `datasets`, `count`) search, in
        order, first match wins. Default: ``[run, "default"]`` (just ``["default"]``
        without a run).
    index
        The dataset index to use for queries: ``None`` (default) as the repository's policy
        says, ``False`` for none (queries list the storage), or a database URL with
        credentials (``"postgresql+psycopg://user:pw@host/db"``) for an index the policy
        records without them. An index the policy places outside the repository (a
        database URL) is opened only when given here or listed in the environment
        variable ``BUTLER_TRUSTED_INDEXES``: the policy is untrusted, and connecting where
        it says would send this reader's credentials to a server of its writer's choice.
    **storage_options
        Passed to the storage (credentials, endpoints); never written to the repository.
        Unknown options raise `StorageError` listing the valid ones.

    Examples
    --------
    >>> b = Butler.create("memory://doc")
    >>> b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    >>> b.put({"gain": 1.5}, "cfg", visit=1)
    >>> b.get("cfg", visit=1)
    {'gain': 1.5}
    """

    def __init__(
        self,
        root: str,
        *,
        registry: Registry | None = None,
        mapper: Mapper | None = None,
        allow_pickle: bool | None = None,
        max_read_bytes: int | str | None = None,
        allow_imports: Sequence[str] = (),
        index: str | bool | None = None,
        run: str | None = None,
        collections: str | Sequence[str] | None = None,
        **storage_options: Any,
    ) -> None:
        self.run = DEFAULT_RUN if run is None else check_run_name(run)
        if collections is None:
            searched: tuple[str, ...] = (self.run,)
            if self.run != DEFAULT_RUN:
                searched += (DEFAULT_RUN,)
        else:
            searched = collection_names(collections)
        self._collections = tuple(check_run_name(c, what="collection") for c in searched)
        self._recording = threading.local()
        self._policy_read = time.monotonic()
        # (id of a location base, format, class name, registry generation) -> that base,
        # allow_imports, the dataset type's class, the serializer, the names resolved and
        # the class `decode` is given: `_resolve_read_at`.
        self._read_resolutions: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        #: dataset type name -> [location base, gets left to skip, misses in a row]: whether
        #: `_get_small` is worth trying (see `_small_miss`).
        self._small_hints: dict[str, list[Any]] = {}
        #: (dataset type name, (dimension, value class, value)...) -> (dataset type, key).
        self._small_keys: dict[tuple[Any, ...], tuple[DatasetType, str]] = {}
        # (policy, collections, their runs, whether all are known chains): see `_search`.
        self._default_runs: tuple[Any, ...] | None = None
        if index is True or not (index is None or index is False or isinstance(index, str)):
            raise StorageError(f"index must be None, False or a database URL, not {index!r}")
        if isinstance(allow_imports, str) or not all(
            isinstance(p, str) and p.isidentifier() for p in allow_imports
        ):
            raise DatasetTypeError(
                f"allow_imports must be a list of top-level package names, not {allow_imports!r}"
            )
        if registry is None:
            from ._plugins import default_registry

            registry = default_registry()
        self.registry = registry
        self.mapper = mapper or TemplateMapper()
        self.storage = open_storage(root, registry, **storage_options)
        # What reopens this Butler elsewhere (a Dask worker): see __reduce__.
        self._reopen_args: dict[str, Any] = {
            "root": root,
            "registry": None if _is_default(registry) else registry,
            "mapper": mapper,
            "allow_pickle": allow_pickle,
            "max_read_bytes": max_read_bytes,
            "allow_imports": tuple(allow_imports),
            "index": index,
            "run": run,
            "collections": collections,
            "storage_options": dict(storage_options),
        }
        self._lock = threading.RLock()
        self._policy = self._load_policy()
        self._allow_pickle = allow_pickle
        self.allow_imports = tuple(allow_imports)
        self.max_read_bytes = max_read_bytes  # parsed by the setter
        self._index_choice = index
        self._index: Index | None = None
        self._index_opened = False
        self._index_complete = True
        self._index_storage: Any = None

    @classmethod
    def create(
        cls,
        root: str,
        *,
        registry: Registry | None = None,
        mapper: Mapper | None = None,
        checksum: bool = False,
        allow_pickle: bool = False,
        max_read_bytes: int | str | None = None,
        allow_imports: Sequence[str] = (),
        index: str | None = None,
        run: str | None = None,
        collections: str | Sequence[str] | None = None,
        **storage_options: Any,
    ) -> Butler:
        """Create a repository at ``root`` (or open it, if it exists) and return a Butler.

        Parameters
        ----------
        index
            Where to keep the dataset index: ``None`` (default) the storage's embedded one
            (posix: ``.butler/index.sqlite3``; memory: in process; databases: tables in
            the same database; S3 has none: queries list the bucket), ``"none"`` for no
            index, or a database URL served by an installed storage (butler-db:
            ``"postgresql+psycopg://user@host/db"``, MariaDB, ``sqlite:///file``). The
            policy records the URL without credentials; readers supply them (environment,
            ``~/.pgpass``, or ``Butler(root, index=url)``).
        run, collections
            As for `Butler`, for the returned Butler.
        checksum
            Keep a sha256 per dataset (computed while writing) so `verify` finds corruption.
        allow_pickle
            Record that this repository holds pickles its readers may want to allow, and
            allow them in the returned Butler. Other readers still opt in themselves.
        max_read_bytes, allow_imports
            As for `Butler`, for the returned Butler.
        """
        if registry is None:
            from ._plugins import default_registry

            registry = default_registry()
        storage = open_storage(root, registry, **storage_options)
        storage.initialize()
        repo_id = secrets.token_hex(16)
        policy = RepositoryPolicy(
            storage=storage.type_name,
            checksum=checksum,
            allow_pickle=allow_pickle,
            id=repo_id,
            index=_index_setting(storage, repo_id, index, registry),
        )
        try:
            # Create-if-absent under the policy lock: a concurrent create never clobbers.
            storage.update_policy(lambda data: policy.to_dict() if data is None else None)
        finally:
            storage.close()
        created = cls(
            root,
            registry=registry,
            mapper=mapper,
            allow_pickle=allow_pickle,
            max_read_bytes=max_read_bytes,
            allow_imports=allow_imports,
            index=index if index and index != "none" and index != "embedded" else None,
            run=run,
            collections=collections,
            **storage_options,
        )
        if created.policy.id == repo_id:
            # A new repository: its index is opened now and recorded complete (it holds
            # nothing, as the storage), not judged later while the first puts run.
            created.index  # noqa: B018 - opening it records its state
        return created

    def _load_policy(self) -> RepositoryPolicy:
        self._policy_read = time.monotonic()
        return self._parse_policy(self.storage.read_policy())

    def _parse_policy(self, data: Mapping[str, Any] | None) -> RepositoryPolicy:
        if data is None:
            raise StorageError(
                f"no butler repository at {self.storage.uri()!r}; create one with "
                f"Butler.create({self.storage.uri()!r}) or 'butler init'"
            )
        return RepositoryPolicy.from_dict(data)

    def close(self) -> None:
        """Close the storage's and the index's connections and stop the bulk threads."""
        self._close_bulk_pool()
        with self._lock:
            index, self._index, self._index_opened = self._index, None, False
            other, self._index_storage = self._index_storage, None
        if index is not None:
            index.close()
        if other is not None:
            other.close()
        self.storage.close()

    # -- the dataset index -------------------------------------------------------------

    @property
    def index(self) -> Index | None:
        """The dataset index puts record into, opened on first use; ``None`` when the
        repository has none (or the Butler was opened with ``index=False``). Queries use
        it only while it is complete (see `_query_index`)."""
        if self._index_opened:
            return self._index
        with self._lock:
            if not self._index_opened:
                index = self._open_index()
                self._index_complete = index is None or self._complete(index)
                self._index = index
                self._index_opened = True
        return self._index

    def _query_index(self) -> Index | None:
        """The index when queries may trust it; ``None`` when the repository has none or
        it is incomplete (lost and started again, or a reindex that did not finish):
        queries then list the storage, which is slower and right."""
        index = self.index
        return index if self._index_complete else None

    def _complete(self, index: Index) -> bool:
        """Whether ``index`` holds every stored dataset, as recorded in it; an index that
        never recorded it is judged here once: complete if it has tables (made before
        states were recorded) or the repository stores no dataset yet, else it is an
        index that was lost and created again empty (a deleted ``index.sqlite3``, a
        dropped schema), which `reindex` completes."""
        state = index.state()
        if state is not None:
            return state == "complete"
        complete = index.has_tables() or not any(
            next(self._stored_all(self.dataset_type(name)), None) is not None
            for name in sorted(self._policy.dataset_types)
        )
        with contextlib.suppress(StorageError):  # a read-only index: judged each time
            index.mark(complete)
        return complete

    def _open_index(self) -> Index | None:
        choice, policy = self._index_choice, self._policy
        if choice is False:
            return None
        where = choice if isinstance(choice, str) else policy.index
        if not where or where == "none":
            return None
        if policy.id is None:
            raise StorageError(
                f"repository {self.storage.uri()!r} has no id to bind an index to; run "
                f"'butler reindex' to create its index"
            )
        if where == "embedded":
            return self.storage.default_index(policy.id)
        if not isinstance(choice, str) and not index_trusted(where):
            # The policy is untrusted input: connecting where it says would send this
            # reader's credentials (PGPASSWORD, ~/.pgpass, an S3 key) to a server of its
            # writer's choosing, or create tables in any file the reader can write.
            shown = mask_url(where, hide_user=True)
            raise StorageError(
                f"repository {self.storage.uri()!r} keeps its dataset index at {shown!r}; "
                f"a repository does not choose where its readers connect: list that URL in "
                f"the environment variable {TRUSTED_INDEXES_VARIABLE} (whitespace-separated"
                f" URLs), or in Python pass it as Butler(root, index=URL)"
            )
        other = open_storage(where, self.registry)
        index = other.default_index(policy.id)
        if index is None:
            other.close()
            raise StorageError(
                f"the {other.type_name} storage cannot keep a dataset index "
                f"({mask_url(where, hide_user=True)!r}); use a database URL (butler-db)"
            )
        self._index_storage = other
        return index

    def __enter__(self) -> Butler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Butler({self.storage.uri()!r}, storage={self.storage.type_name!r})"

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickle as what reopens it (root and options), never as open connections: a
        Dask worker unpickling it opens the repository itself. Storage options (explicit
        credentials, if given) travel in the pickle; credentials from the environment or a
        credential chain are read on the worker. The default plugin registry is not
        pickled: the worker uses its own. An index this process trusts through
        ``BUTLER_TRUSTED_INDEXES`` travels as the ``index`` argument (its URL as the policy
        records it, without credentials): the worker connects where this process would."""
        # What is set now (allow_imports is a public attribute), not what was passed.
        args = {**self._reopen_args, "allow_imports": self.allow_imports}
        recorded = self._policy.index
        if (
            args["index"] is None
            and recorded not in (None, "embedded", "none")
            and index_trusted(str(recorded))
        ):
            args = {**args, "index": recorded}
        return (_reopen, (args,))

    @property
    def max_read_bytes(self) -> int | None:
        """Most bytes one read may allocate for what a file declares (``None``: the
        default, see the class text). Settable, as an int or a size such as ``"4GiB"``:
        parsed as the constructor parses it (`LimitError` for anything else), so every
        read (and a pickled copy of this Butler) sees a number of bytes."""
        return self._max_read_bytes

    @max_read_bytes.setter
    def max_read_bytes(self, value: int | str | None) -> None:
        limit = None if value is None else parse_size(value)
        self._max_read_bytes = limit
        # What `_get_small` asks the storage for: computed here, not on every get.
        self._small_limit = _SMALL_GET if limit is None else min(limit, _SMALL_GET)
        self._reopen_args["max_read_bytes"] = limit

    # -- dataset types -----------------------------------------------------------------

    @property
    def policy(self) -> RepositoryPolicy:
        """The repository policy as last read."""
        return self._policy

    @property
    def dataset_types(self) -> Mapping[str, DatasetType]:
        """Dataset types defined in the repository."""
        return dict(self._policy.dataset_types)

    def register_dataset_type(
        self,
        name: str,
        python_type: type | str,
        format: str,
        template: str | None = None,
        *,
        dimensions: Mapping[str, Any] | Sequence[str] | None = None,
        serializer_args: Mapping[str, Any] | None = None,
        additional_data: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        disassemble: bool = False,
        component_formats: Mapping[str, str] | None = None,
    ) -> DatasetType:
        """Define (and persist in the repository) a dataset type.

        Parameters
        ----------
        name
            Dataset type name.
        python_type
            Class or dotted name of the objects stored (subclasses are accepted on put).
            A name that can be seen to name nothing without importing anything (no such
            installed package, no such class in an imported module) is refused here.
        format
            Format of new datasets; changing it later (``overwrite=True``) still reads old
            datasets in the format they were written in.
        template
            Key template such as ``"calexp/{visit:06d}/{ccd}.fits"``. Default:
            ``"{name}/{dim1}/{dim2}<ext>"`` from ``dimensions``.
        dimensions
            Data ID keys, as a list (string values) or a mapping to ``int``/``str``.
            Derived from the template when omitted (``:d``-style specs are integers).
        serializer_args
            Keyword arguments for the serializer (``{"compress": "RICE_1"}``); put
            per-storage ones under ``"per_storage": {"s3": {...}}``.
        additional_data
            Format-specific location details (``{"hdu": 1}``).
        overwrite
            Replace a different existing definition.
        disassemble
            Store each component (see `butler.Components`) as its own dataset under one
            composite record; a put stays all-or-nothing for readers. ``format`` is then
            the components' default format.
        component_formats
            Format per component of a disassembled type (``{"wcs": "json"}``).

        Raises
        ------
        DatasetTypeError
            Invalid name, template or dimensions, or a conflicting existing definition.
        NoSerializerError
            Unknown format (naming the distribution that provides it).
        """
        validate_dataset_type_name(name)
        previous = self._policy.dataset_types.get(name)
        if previous is None:
            with self._lock:
                self._policy = self._load_policy()
            previous = self._policy.dataset_types.get(name)
        if template is None and previous is not None and overwrite:
            # Redefining (say, a new format) keeps the old key layout: a new default
            # template would make every stored dataset unreachable.
            template = previous.template
            if dimensions is None:
                dimensions = dict(previous.dimensions)
        try:
            descriptor = self.registry.format(format)
            dims = normalise_dimensions(dimensions)
            check_disassembly(self.registry, disassemble, component_formats)
            if template is None:
                fields = [f"{{{d}:d}}" if k == "int" else f"{{{d}}}" for d, k in dims.items()]
                extension = self.registry.format(record_format(disassemble, format)).extension
                template = "/".join([name, *fields]) + extension
            fields_in_template = validate_template(template)
        except (DatasetTypeError, NoSerializerError) as exc:  # say which dataset type
            raise type(exc)(f"dataset type {name!r}: {exc}") from None
        if dimensions is None:
            try:
                dims = normalise_dimensions(template_dimensions(template))
            except DatasetTypeError as exc:
                raise DatasetTypeError(f"dataset type {name!r}: {exc}") from None
        elif set(dims) != set(fields_in_template):
            raise DatasetTypeError(
                f"dataset type {name!r}: template {template!r} uses {fields_in_template} but the "
                f"dimensions are {list(dims)}"
            )
        descriptor.check_serializer_args(dict(serializer_args or {}), what=f"dataset type {name!r}")
        if isinstance(python_type, str):
            check_type_findable(python_type, self.registry.type_names, f"dataset type {name!r}")
        new = DatasetType(
            name=name,
            python_type=python_type_name(python_type),
            format=format,
            template=template,
            dimensions=dims,
            serializer_args=dict(serializer_args or {}),
            additional_data=dict(additional_data or {}),
            disassemble=disassemble,
            component_formats=dict(component_formats or {}),
        )
        area = template.split("/", 1)[0]
        if area in (RUNS_SEGMENT, PARTS_SEGMENT):  # every put would be refused
            raise DatasetTypeError(
                f"dataset type {name!r}: template {template!r} lies in {area + '/'!r}, which "
                f"is reserved for butler itself"
            )
        reserved = self.mapper.data_id_for(new, POLICY_KEY)
        if reserved is not None:
            raise DatasetTypeError(
                f"dataset type {name!r}: template {template!r} can address {POLICY_KEY!r} "
                f"(data ID {reserved}), which is reserved for butler itself"
            )

        def change(data: dict[str, Any] | None) -> dict[str, Any] | None:
            policy = self._parse_policy(data)
            old = policy.dataset_types.get(name)
            if old is not None and old.to_dict() == new.to_dict():
                return None
            if old is not None and not overwrite:
                raise DatasetTypeError(
                    f"dataset type {name!r} is already defined as {old.to_dict()}; pass "
                    f"overwrite=True to redefine it"
                )
            if old is not None and (old.template, old.dimensions) != (
                new.template,
                dict(new.dimensions),
            ):
                self._refuse_relayout(old, new)
            policy.dataset_types[name] = new
            return policy.to_dict()

        with self._lock:
            # A read-modify-write under the storage's policy lock or compare-and-swap, so
            # that concurrent definitions in other processes are merged, never lost.
            self._policy = self._parse_policy(self.storage.update_policy(change))
        return self._policy.dataset_types[name]

    def _refuse_relayout(self, old: DatasetType, new: DatasetType) -> None:
        """Refuse a new template or dimensions while datasets are stored under the old ones:
        they would vanish from ``get``, ``datasets``, ``info`` and ``verify``."""
        stored = next(self._stored_all(old), None)
        if stored is not None:
            raise DatasetTypeError(
                f"dataset type {old.name!r} has stored datasets (e.g. {stored[2]} in run "
                f"{stored[1]!r}) under "
                f"template {old.template!r}; redefining it with template {new.template!r} "
                f"would make them unreachable. Keep the template (omit it to keep the old "
                f"one), or define a new dataset type"
            )

    def dataset_type(self, name: str) -> DatasetType:
        """The definition of a dataset type (re-reading the policy once if unknown)."""
        found = self._policy.dataset_types.get(name)
        if found is None:
            with self._lock:
                self._policy = self._load_policy()
            found = self._policy.dataset_types.get(name)
        if found is None:
            known = sorted(self._policy.dataset_types) or "none"
            base, component = split_name(self._policy.dataset_types, name)
            if component is not None:  # put/remove/datasets("calexp.wcs"): a component
                raise DatasetTypeError(
                    f"{name!r} names component {component!r} of dataset type {base!r} in "
                    f"{self.storage.uri()!r}: only get, get_many and exists read components; "
                    f"a component is stored and removed with its dataset ({base!r})"
                )
            raise DatasetTypeError(
                f"unknown dataset type {name!r} in {self.storage.uri()!r}; defined: {known}. "
                f"Define it with register_dataset_type()"
            )
        return found

    # -- locations ---------------------------------------------------------------------

    def location(
        self,
        dataset_type: str,
        data_id: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        allow_pickle: bool | None = None,
        progress: ProgressCallback | None = None,
        **data_id_kw: Any,
    ) -> ButlerLocation:
        """The `ButlerLocation` of a dataset in this Butler's run (where a put would go;
        nothing is read or written)."""
        dt = self.dataset_type(dataset_type)
        key, normal = self._map(dt, _merge_data_id(data_id, data_id_kw))
        return self._location_at(
            dt,
            run_key(self.run, key),
            normal,
            parameters,
            overwrite,
            allow_pickle,
            progress,
            run=self.run,
        )

    def _map(self, dt: DatasetType, data_id: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """(template key, normalised data ID): the key before the run's prefix."""
        key, normal = self.mapper.map(dt, data_id)
        # Whatever the mapper: butler's own keys and the runs area are never a data ID's.
        if is_reserved_key(key) or is_run_key(key):
            area = (
                "its own files"
                if is_reserved_key(key)
                else "the parts of disassembled composites"
                if key.startswith(composite.PARTS_PREFIX)
                else "the runs area"
            )
            raise InvalidDataIdError(
                f"data ID {normal} of dataset type {dt.name!r} maps to {key!r}, which is "
                f"reserved for butler itself ({area})"
            )
        return key, normal

    def _split_run(
        self,
        dt: DatasetType,
        data_id: Mapping[str, Any] | None,
        data_id_kw: dict[str, Any],
        collections: str | Sequence[str] | None,
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """(data ID, runs to search): ``run=`` picks one run unless the dataset type has a
        dimension named ``run`` (then it is a data ID value: use ``collections=``)."""
        if "run" in data_id_kw and "run" not in dt.dimensions:
            if collections is not None:
                raise InvalidDataIdError("pass run= or collections=, not both")
            collections = (data_id_kw.pop("run"),)
        return _merge_data_id(data_id, data_id_kw), self._search(collections)

    def _search(self, collections: str | Sequence[str] | None = None) -> tuple[str, ...]:
        """The runs searched for ``collections`` (default: this Butler's), chains expanded."""
        if collections is None:
            # This Butler's expansion is kept with the policy it was made from: reused
            # while that policy is current and `_fresh_chains` would not re-read it.
            kept = self._default_runs
            if (
                kept is not None
                and kept[0] is self._policy
                and kept[1] is self._collections
                and (kept[3] or time.monotonic() - self._policy_read < CHAINS_MAX_AGE)
            ):
                return kept[2]
            names: Sequence[str] = self._collections
        else:
            names = collection_names(collections)
        self._fresh_chains(names)
        policy = self._policy
        runs = expand_collections(names, policy.collections)
        if collections is None:
            self._default_runs = (policy, names, runs, _all_known(names, policy.collections))
        return runs

    def _fresh_chains(self, names: Sequence[str]) -> None:
        """Re-read the policy when ``names`` include one that is not a known chain and the
        policy is older than `CHAINS_MAX_AGE`: a chain defined by another process since is
        seen within that time (a run name costs at most one policy read per interval)."""
        if _all_known(names, self._policy.collections):
            return
        if time.monotonic() - self._policy_read < CHAINS_MAX_AGE:
            return
        with self._lock:
            self._policy = self._load_policy()

    @property
    def collections(self) -> tuple[str, ...]:
        """The collections reads search, as given (chains not expanded)."""
        return self._collections

    def _location_at(
        self,
        dt: DatasetType,
        key: str,
        data_id: dict[str, Any],
        parameters: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        allow_pickle: bool | None = None,
        progress: ProgressCallback | None = None,
        *,
        run: str = DEFAULT_RUN,
        base: ButlerLocation | None = None,
    ) -> ButlerLocation:
        """The location of an already mapped dataset (key and normalised data ID), built
        from ``base`` (default: ``dt``'s `_location_base`)."""
        if allow_pickle is None:  # the reader's choice; the policy's flag only suggests it
            allow_pickle = bool(self._allow_pickle)
        if base is None:
            base = _location_base(self, dt)
        return base.evolve(
            locations=[key],
            data_id=data_id,
            additional_data=dict(base.additional_data) if base.additional_data else {},
            parameters=parameters_dict(parameters, f"dataset type {dt.name!r}")
            if parameters is not None
            else {},
            serializer_args=dict(base.serializer_args) if base.serializer_args else {},
            overwrite=overwrite,
            allow_pickle=allow_pickle,
            progress=progress,
            run=run,
        )

    # -- put / get ---------------------------------------------------------------------

    def put(
        self,
        obj: Any,
        dataset_type: str,
        data_id: Mapping[str, Any] | None = None,
        *,
        overwrite: bool = False,
        parameters: Mapping[str, Any] | None = None,
        progress: ProgressCallback | None = None,
        inputs: Sequence[DatasetRef] | None = None,
        **data_id_kw: Any,
    ) -> ButlerLocation:
        """Store ``obj`` as a dataset in this Butler's run; atomic: readers see the old or
        the new dataset.

        The provenance (run, creation time, user, host, versions, and ``inputs``: the
        `DatasetRef` s of what it was made from, plus every ``get`` of an enclosing
        `recording` block) is committed with the bytes.

        ``parameters`` are write-time options understood by the format. A parameter the
        format declares as merging (`FormatDescriptor.merging_parameters`, such as
        ``sql-table``'s ``{"mode": "append"}``) lets it merge into an existing dataset, so
        the existence check is then left to the format.

        Raises
        ------
        DatasetExistsError
            If the dataset exists and ``overwrite`` is false (also when another writer
            creates it concurrently: exactly one of them wins).
        DatasetTypeError
            If ``obj`` is not an instance of the dataset type's python type.
        InvalidDataIdError, NoSerializerError, FormatError, StorageError
        """
        location = self.location(
            dataset_type,
            data_id,
            parameters=parameters,
            overwrite=check_overwrite(overwrite, "put", dataset_type),
            progress=progress,
            **data_id_kw,
        )
        self._fresh_chains([self.run])
        if self.run in self._policy.collections:
            raise InvalidDataIdError(
                f"{self.run!r} is a collection chain, not a run: puts go into runs"
            )
        location = self._resolve_write(location, obj)
        location = self._with_provenance(location, inputs)
        index = self.index
        if index is not None:
            self._check_indexable(location)
            self.storage.last_committed_metadata(clear=True)
        try:
            location.write(obj)
        except DatasetExistsError:
            raise self._exists_error(location) from None
        if index is not None:
            self._index_written(index, location)
        return location

    def _with_provenance(
        self, location: ButlerLocation, inputs: Sequence[DatasetRef] | None
    ) -> ButlerLocation:
        """The write location carrying its provenance record (see `butler._provenance`)."""
        refs: list[DatasetRef] = []
        check_inputs(inputs)
        for ref in [*(inputs or ()), *(getattr(self._recording, "refs", None) or ())]:
            if not isinstance(ref, DatasetRef):
                raise DatasetTypeError(
                    f"inputs must be DatasetRef objects (from Butler.ref), not {ref!r}"
                )
            if ref not in refs:
                refs.append(ref)
        created, stamp = new_created()
        assert location.serializer is not None
        record = provenance_record(
            self.storage,
            run=self.run,
            created=stamp,
            distribution=location.serializer.distribution,
            inputs=refs,
        )
        return location.evolve(provenance=record, created=created)

    def _check_indexable(self, location: ButlerLocation) -> None:
        """Refuse, before writing, a data ID the index cannot hold (integers beyond 64
        bits): the bytes would be stored but never found by queries."""
        low, high = INT_RANGE
        for name, value in location.data_id.items():
            if isinstance(value, int) and not low <= value <= high:
                raise InvalidDataIdError(
                    f"data ID value {name}={value} of dataset type {location.dataset_type!r} "
                    f"does not fit the dataset index's 64-bit integers"
                )

    def _index_written(self, index: Index, location: ButlerLocation) -> None:
        """Second step of a put: the bytes are committed; now the index row. The metadata
        comes from the commit itself (no read back) when the storage reports it."""
        meta = self.storage.last_committed_metadata(clear=True)
        try:
            if (
                meta is None
                or meta.get("dataset_type") != location.dataset_type
                or meta.get("data_id") != dict(location.data_id)
            ):
                meta = self.storage.metadata(location.key)
            dt = self.dataset_type(location.dataset_type)
            entry = IndexEntry.from_metadata(dt, location.key, location.data_id, meta, location.run)
            index.add(dt, [entry])
        except ButlerError as exc:
            raise StorageError(
                f"{location.describe()} was stored, but the dataset index could not record "
                f"it ({exc}); queries through the index miss it until 'butler reindex "
                f"{self.storage.uri()}'"
            ) from exc

    def _expected_type(self, location: ButlerLocation) -> type:
        """The dataset type's class, resolved by the reader's rules (`resolve_policy_type`)."""
        return resolve_policy_type(
            location.python_type,
            registered=self.registry.type_names,
            allow_imports=self.allow_imports,
        )

    def _resolve_write(self, location: ButlerLocation, obj: Any) -> ButlerLocation:
        """The mapped location, resolved for writing ``obj``: class checked, serializer
        chosen for its concrete type, create-only refused early (before serializing)."""
        expected = self._expected_type(location)
        if not isinstance(obj, expected):
            raise DatasetTypeError(
                f"cannot put a {type_name(type(obj))!r} as dataset type "
                f"{location.dataset_type!r}, whose python type is {location.python_type!r}"
            )
        resolved = location.evolve(
            expected=expected,
            written_type=type_name(type(obj)),
            serializer=self.registry.find(type(obj), self.storage.type_name, location.format),
        )
        resolved.check_arguments()
        # A format may merge into an existing dataset (sql-table's append): it says so.
        # Otherwise an existing dataset is refused now rather than after serializing; the
        # storage's create-only commit still settles races.
        merging = self.registry.format(location.format).merges(location.parameters)
        if (
            not location.overwrite
            and not merging
            and self.storage.cheap_exists
            and self.storage.exists(location.key)
        ):
            raise self._exists_error(location)
        return resolved

    @staticmethod
    def _exists_error(location: ButlerLocation) -> DatasetExistsError:
        return DatasetExistsError(
            f"{location.describe()} already exists; pass overwrite=True to replace it"
        )

    def get(
        self,
        dataset_type: str,
        data_id: Mapping[str, Any] | None = None,
        *,
        parameters: Mapping[str, Any] | None = None,
        allow_pickle: bool | None = None,
        progress: ProgressCallback | None = None,
        collections: str | Sequence[str] | None = None,
        **data_id_kw: Any,
    ) -> Any:
        """Read a dataset, as the concrete (sub)class it was written as.

        Parameters
        ----------
        parameters
            Read-time selection understood by the format (``{"section": ...}``,
            ``{"columns": [...]}``).
        allow_pickle
            Opt in to unpickling for this call.
        collections
            Runs and chains to search, in order (default: this Butler's); ``run="x"``
            reads from one run (unless the dataset type has a ``run`` dimension).

        Raises
        ------
        DatasetNotFoundError
            If no searched run holds the dataset.
        FormatError
            If the stored bytes are corrupt or unreadable.
        ComponentError
            ``"calexp.nope"``: the written class has no such component (the message
            names the ones it has).

        ``dataset_type`` may name a component: ``"calexp.wcs"`` reads just the WCS (only
        its bytes when the format or a disassembled layout allows; see
        :doc:`components`); ``parameters`` then apply to the component.
        """
        if parameters is None and allow_pickle is None and progress is None and collections is None:
            if data_id is None:
                found = self._get_small(dataset_type, data_id_kw, "run" in data_id_kw)
            elif type(data_id) is dict and not data_id_kw:  # a run key there is a value
                found = self._get_small(dataset_type, data_id, False)
            else:
                found = _GENERAL
            if found is not _GENERAL:
                return found
        dt, component = self._dataset_type_and_component(dataset_type)
        merged, runs = self._split_run(dt, data_id, data_id_kw, collections)
        resolved = self._find(dt, merged, runs, parameters, allow_pickle, progress)
        obj = resolved.read() if component is None else read_component(resolved, component)
        refs = getattr(self._recording, "refs", None)
        if refs is not None:
            assert resolved.stored is not None
            refs.append(ref_from_metadata(dt.name, resolved.data_id, resolved.run, resolved.stored))
        return obj

    def _get_small(self, name: str, data_id: dict[str, Any], run_given: bool = False) -> Any:
        """`get`'s common case in fewer steps, or `_GENERAL` to take the general path.

        A get of a defined dataset type (no component), from the first run searched by
        default, of a small dataset the storage hands over with its metadata in one step
        (`Storage.read_small`), recorded in a format and class that the general path has
        already resolved to a serializer declaring ``decode``: the same checks as that
        path, without building a location. Anything else, and anything that fails here
        (decode included), returns `_GENERAL`: the general path then does it all again
        and reports what is wrong. A data ID that does not map raises the error the
        general path would. ``run_given``: the call passed ``run=``.
        """
        dt = self._policy.dataset_types.get(name)
        if (
            dt is None
            or not self.storage.small_reads  # no shortcut: do not map the data ID twice
            or getattr(self._recording, "refs", None) is not None
        ):
            return _GENERAL
        if run_given and "run" not in dt.dimensions:  # run= picks a run (`_split_run`)
            return _GENERAL
        runs = self._search(None)
        if not runs:
            return _GENERAL
        key = self._small_key(dt, data_id)
        base = _location_base(self, dt)
        hint = self._small_hints.get(dt.name)
        if hint is None or hint[0] is not base or base.serializer_args:
            return _GENERAL
        if hint[1]:  # recent gets of this type missed: not worth the extra read now
            hint[1] -= 1
            return _GENERAL
        got = self.storage.read_small(run_key(runs[0], key), self._small_limit)
        if got is None:
            return _small_miss(hint)
        stored, data = got
        recorded = stored.get("format", base.format)
        written = stored.get("python_type")
        if type(recorded) is not str or not (written is None or type(written) is str):
            return _GENERAL
        cached = self._kept_resolution(
            base, (id(base), recorded, written, self.registry._current_generation())
        )
        if cached is None or cached[5] is None:
            return _GENERAL
        try:
            decode = cached[3].decode
            obj = _GENERAL if decode is None else decode(data, cached[5])
        except Exception:  # the general path reads again and reports
            obj = _GENERAL
        if obj is _GENERAL:
            return _small_miss(hint)
        hint[2] = 0
        return obj

    def _small_key(self, dt: DatasetType, data_id: dict[str, Any]) -> str:
        """`_map`'s key for ``data_id``, kept for the default mapper (a pure function of
        the dataset type and the data ID) when every value is exactly an ``int`` or a
        ``str``: keyed by each value's class too, since ``True == 1`` hashes alike but is
        refused (other classes may format differently from one call to the next)."""
        if type(self.mapper) is not TemplateMapper:
            return self._map(dt, data_id)[0]
        signature = (dt.name, *[(k, v.__class__, v) for k, v in data_id.items()])
        if any(item[1] is not int and item[1] is not str for item in signature[1:]):
            return self._map(dt, data_id)[0]
        kept = self._small_keys.get(signature)
        if kept is not None and kept[0] is dt:
            return kept[1]
        key = self._map(dt, data_id)[0]
        if len(self._small_keys) >= _MAX_SMALL_KEYS:
            self._small_keys.clear()
        self._small_keys[signature] = (dt, key)
        return key

    def _dataset_type_and_component(self, name: str) -> tuple[DatasetType, str | None]:
        """The dataset type and component path a (maybe dotted) name addresses."""
        found = self._policy.dataset_types.get(name)
        if found is not None:  # the common case: a defined dataset type, no component
            return found, None
        base, component = split_name(self._policy.dataset_types, name)
        if base not in self._policy.dataset_types:
            with self._lock:
                self._policy = self._load_policy()
            base, component = split_name(self._policy.dataset_types, name)
        return self.dataset_type(base), component

    def _find(
        self,
        dt: DatasetType,
        data_id: Mapping[str, Any],
        runs: Sequence[str],
        parameters: Mapping[str, Any] | None = None,
        allow_pickle: bool | None = None,
        progress: ProgressCallback | None = None,
    ) -> ButlerLocation:
        """The resolved read location of a data ID in the first of ``runs`` holding it."""
        key, normal = self._map(dt, data_id)
        if allow_pickle is None:  # the reader's choice; the policy's flag only suggests it
            allow_pickle = bool(self._allow_pickle)
        for run in runs:
            try:
                return self._resolve_read_at(
                    dt, run_key(run, key), normal, run, parameters, allow_pickle, progress
                )
            except DatasetNotFoundError:
                continue
        if not runs:
            raise DatasetNotFoundError(f"dataset {dt.name!r} {normal}: no run to search")
        first = self._location_at(dt, run_key(runs[0], key), normal, run=runs[0])
        raise self._not_found(first, runs)

    def _not_found(self, location: ButlerLocation, runs: Sequence[str]) -> DatasetNotFoundError:
        if len(runs) == 1 and runs[0] == location.run:
            return DatasetNotFoundError(f"{location.describe()} does not exist")
        return DatasetNotFoundError(
            f"dataset {location.dataset_type!r} {dict(location.data_id)} does not exist in "
            f"runs {list(runs)} (searched in that order) of {self.storage.uri()!r}"
        )

    def _resolve_read_at(
        self,
        dt: DatasetType,
        key: str,
        data_id: dict[str, Any],
        run: str,
        parameters: Mapping[str, Any] | None,
        allow_pickle: bool,
        progress: ProgressCallback | None,
    ) -> ButlerLocation:
        """The location of the dataset at ``key``, resolved for reading: the stored
        metadata, the format the dataset was written in, the dataset type's class and the
        serializer of the recorded concrete class.

        The metadata is read first and the location built once, resolved. What the
        resolution decides depends only on the recorded format and class name, the dataset
        type's definition and the registry, so it is kept per (location base, format, class
        name, registry generation): a get of a dataset like the previous one looks nothing
        up again. Only successful resolutions are kept; a failing one is worked out, and
        raises, every time."""
        base = _location_base(self, dt)
        try:
            stored = self.storage.metadata(key)
        except DatasetNotFoundError:
            unresolved = base.evolve(locations=[key], data_id=data_id, run=run)
            raise DatasetNotFoundError(f"{unresolved.describe()} does not exist") from None
        # Old datasets keep the format they were written in. The metadata is untrusted: it
        # may name anything (only names of the right kind are looked up in the cache).
        recorded = stored.get("format", base.format)
        written = stored.get("python_type")
        location = self._location_at(
            dt, key, data_id, parameters, False, allow_pickle, progress, run=run, base=base
        )
        state = location.__dict__  # built just above and seen by nothing else yet
        state["stored"] = stored
        cacheable = type(recorded) is str and (written is None or type(written) is str)
        cache_key = (id(base), recorded, written, self.registry._current_generation())
        cached = self._kept_resolution(base, cache_key) if cacheable else None
        imports = self.allow_imports  # a public attribute: kept by identity
        if cached is None:
            resolved, cls = self._resolve_read(location, recorded)
            if cacheable:
                self._note_decoder(dt, base, resolved.serializer, fresh=True)
                # The class `_get_small` hands ``decode``: the one ``read`` rebuilds, known
                # only when the recorded class resolved as itself (not for a format
                # reading another class as the dataset type's).
                exact = cls if written is None or type_name(cls) == written else None
                if len(self._read_resolutions) >= _MAX_READ_RESOLUTIONS:
                    self._read_resolutions.clear()
                # The classes are checked on reuse: a module reloaded (or a class
                # redefined in it) since gives the class it holds now, as a new get would.
                named: tuple[tuple[Any, type | None], ...] = (
                    (base.python_type, resolved.expected),
                )
                if cls is not resolved.expected:
                    named += ((written, cls),)
                self._read_resolutions[cache_key] = (
                    base,
                    imports,
                    resolved.expected,
                    resolved.serializer,
                    named,
                    exact,
                )
            return resolved
        self._note_decoder(dt, base, cached[3], fresh=False)
        state["format"] = recorded
        state["expected"] = cached[2]
        state["serializer"] = cached[3]
        location.check_arguments()  # the only step that depends on the call's arguments
        return location

    def _kept_resolution(self, base: ButlerLocation, cache_key: tuple[Any, ...]) -> Any:
        """The resolution kept under ``cache_key`` (see `_resolve_read_at`) if it still
        holds: made for ``base`` and this reader's ``allow_imports``, its classes current;
        else ``None``."""
        cached = self._read_resolutions.get(cache_key)
        if (
            cached is None
            or cached[0] is not base
            or cached[1] is not self.allow_imports
            or not _classes_current(cached[4])
        ):
            return None
        return cached

    def _note_decoder(
        self, dt: DatasetType, base: ButlerLocation, serializer: Any, *, fresh: bool
    ) -> None:
        """Keep `_get_small`'s hint for ``dt`` in step with the serializer a get of it used:
        a fresh resolution sets it (counts reset) or drops it (no ``decode``); a kept one
        that can decode restores a hint another format's resolution dropped."""
        decodes = serializer is not None and serializer.decode_ref is not None
        if decodes and (fresh or dt.name not in self._small_hints):
            self._small_hints[dt.name] = [base, 0, 0]
        elif fresh and not decodes:
            self._small_hints.pop(dt.name, None)

    def _resolve_read(self, location: ButlerLocation, recorded: Any) -> tuple[ButlerLocation, type]:
        """``location``, whose stored metadata records format ``recorded``, resolved; and
        the class its serializer was chosen for."""
        if not isinstance(recorded, str) or not is_format_name(recorded):
            raise FormatError(
                f"{location.describe()} records format {recorded!r}, which is not a format "
                f"name; its metadata is corrupt or was written by another tool"
            )
        state = location.__dict__  # built by the caller and seen by nothing else yet
        state["format"] = recorded
        state["expected"] = self._expected_type(location)
        location.check_arguments()
        try:
            cls = location.read_type()
        except FormatError:
            # Written as an unrelated class: only a format that can read it as the dataset
            # type's own class (FITS: a CCDData file's image as an ndarray) goes on.
            if not self.registry.format(recorded).reads_other_types:
                raise
            cls = location.expected_type()
        state["serializer"] = self.registry.find(cls, self.storage.type_name, recorded)
        return location, cls

    def exists(
        self,
        dataset_type: str,
        data_id: Mapping[str, Any] | None = None,
        *,
        collections: str | Sequence[str] | None = None,
        **kw: Any,
    ) -> bool:
        """True when a searched run holds the dataset (arguments as `get`). For a component
        (``"calexp.wcs"``): whether the dataset is held and its type can have that
        component (checked against the dataset type's class when it is loaded; the
        component's bytes are not read)."""
        dt, component = self._dataset_type_and_component(dataset_type)
        if component is not None:
            check_declared(self.registry, dt, component)
        merged, runs = self._split_run(dt, data_id, kw, collections)
        key, _ = self._map(dt, merged)
        return any(self.storage.exists(run_key(run, key)) for run in runs)

    def remove(
        self, dataset_type: str, data_id: Mapping[str, Any] | None = None, **kw: Any
    ) -> None:
        """Delete a dataset of this Butler's run (``run="x"``: of run ``x``). Raises
        `DatasetNotFoundError` if it does not exist. The index row goes first: a crash
        between the two steps leaves an unindexed dataset, never a row for removed bytes."""
        dt = self.dataset_type(dataset_type)
        run = self.run
        if "run" in kw and "run" not in dt.dimensions:
            run = check_run_name(kw.pop("run"))
        key, normal = self._map(dt, _merge_data_id(data_id, kw))
        location = self._location_at(dt, run_key(run, key), normal, run=run)
        self._remove_at(dt, location)

    def _remove_at(self, dt: DatasetType, location: ButlerLocation) -> None:
        index = self.index
        record = composite.record_at(location)  # before anything changes: it may fail
        if index is not None:  # the row first: never a row for removed bytes
            index.discard(dt, [location.data_id], location.run)
        try:
            self.storage.remove(location.key)
        except DatasetNotFoundError:
            raise DatasetNotFoundError(f"{location.describe()} does not exist") from None
        if record is not None:  # the record is gone: its parts are unreferenced now
            composite.remove_parts(self.storage, location.key, record)
        if index is not None and not self.storage.exists(location.key):
            # A concurrent overwrite may have indexed its bytes between our two steps and
            # we removed them: drop its row again (docs/dataset-index.rst, "The
            # remove/overwrite race").
            index.discard(dt, [location.data_id], location.run)

    def datasets(
        self,
        dataset_type: str,
        where: str | None = None,
        *,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
        collections: str | Sequence[str] | None = None,
        **constraints: Any,
    ) -> Iterator[dict[str, Any]]:
        """The data IDs of stored datasets of a type, selected by data ID.

        Parameters
        ----------
        where
            An expression over the dimensions: ``"visit >= 100 and visit < 200 and ccd in
            (1, 2, 5) and band = 'r'"`` (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``,
            ``not in``, ``between``, ``and``, ``or``, ``not``, parentheses; strings in
            quotes). Parsed by butler into bound parameters, never pasted into SQL.
        limit
            At most this many data IDs.
        order_by
            Dimension names (``"-visit"`` for descending); the remaining dimensions follow
            in their declared order. Default: all dimensions in declared order.
        collections
            Runs and chains searched (default: this Butler's); a data ID held by several
            comes once. ``run="x"`` searches one run (unless ``run`` is a dimension).
        **constraints
            ``dimension=value``: a scalar (equal), a list/tuple/set (any of), a ``range``
            or a ``slice(lo, hi)`` (``lo <= value < hi``, either end open).

        Answers come from the dataset index when the repository has one, else from
        listing the storage (slower, same answers).

        Raises
        ------
        QueryError
            An unknown dimension, a bad token (with its position), a value of the wrong
            type.
        """
        dt = self.dataset_type(dataset_type)
        found = self._query(dt, where, limit, order_by, collections, constraints)
        return iter([data_id for data_id, _ in found])

    def count(
        self,
        dataset_type: str,
        where: str | None = None,
        *,
        collections: str | Sequence[str] | None = None,
        **constraints: Any,
    ) -> int:
        """How many data IDs `datasets` would yield (same arguments, no limit)."""
        from ._query import query_predicate  # the where language: not at 'import butler'

        dt = self.dataset_type(dataset_type)
        runs = self._query_runs(dt, collections, constraints)
        predicate = query_predicate(dt, where, constraints)
        index = self._query_index()
        if index is not None:
            return index.count(dt, predicate, runs)
        return len(self._listed_runs(dt, predicate, runs))

    def stored_locations(
        self,
        dataset_type: str,
        where: str | None = None,
        *,
        limit: int | None = None,
        order_by: str | Sequence[str] | None = None,
        collections: str | Sequence[str] | None = None,
        **constraints: Any,
    ) -> Iterator[ButlerLocation]:
        """The `ButlerLocation` of every dataset `datasets` selects (same arguments), in
        the run it was found in."""
        dt = self.dataset_type(dataset_type)
        found = self._query(dt, where, limit, order_by, collections, constraints)
        locations = []
        for data_id, run in found:
            key, normal = self._map(dt, data_id)
            locations.append(self._location_at(dt, run_key(run, key), normal, run=run))
        return iter(locations)

    def _query_runs(
        self,
        dt: DatasetType,
        collections: str | Sequence[str] | None,
        constraints: dict[str, Any],
    ) -> tuple[str, ...]:
        if "run" in constraints and "run" not in dt.dimensions:
            if collections is not None:
                raise InvalidDataIdError("pass run= or collections=, not both")
            collections = (constraints.pop("run"),)
        return self._search(collections)

    def _query(
        self,
        dt: DatasetType,
        where: str | None,
        limit: int | None,
        order_by: str | Sequence[str] | None,
        collections: str | Sequence[str] | None,
        constraints: Mapping[str, Any],
    ) -> list[tuple[dict[str, Any], str]]:
        """(data ID, run) selected, ordered and limited; through the index or by listing."""
        from ._query import parse_order_by, query_predicate, sort_key  # ~4 ms: used here only

        constraints = dict(constraints)
        runs = self._query_runs(dt, collections, constraints)
        predicate = query_predicate(dt, where, constraints)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise QueryError(f"limit must be a non-negative integer or None, not {limit!r}")
        order = parse_order_by(order_by, dt)
        named = {d for d, _ in order}
        order += [(d, False) for d in dt.dimensions if d not in named]
        index = self._query_index()
        if index is not None:
            return index.query(dt, predicate, order, limit, runs)
        found = self._listed_runs(dt, predicate, runs)
        by_data_id = sort_key(order, dt)
        found.sort(key=lambda item: by_data_id(item[0]))
        return found if limit is None else found[:limit]

    def _listed_runs(
        self, dt: DatasetType, predicate: Any, runs: Sequence[str]
    ) -> list[tuple[dict[str, Any], str]]:
        """(data ID, run) matching ``predicate`` in ``runs`` by listing; a data ID held
        by several runs comes once, with the first."""
        first: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}
        for run in runs:
            for _key, data_id in self._listed(dt, predicate, run):
                first.setdefault(tuple(data_id.values()), (data_id, run))
        return list(first.values())

    def _listed(
        self, dt: DatasetType, predicate: Any, run: str = DEFAULT_RUN
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(key, data ID) of one run's datasets matching ``predicate``, by listing the
        storage (narrowed to the key prefix the run and the predicate's equalities pin)."""
        base = run_prefix(run)
        prefix = base + self.mapper.prefix_for(dt, predicate.equalities())
        for key in self.storage.list(prefix):
            if is_reserved_key(key) or (not base and is_run_key(key)):
                continue
            data_id = self._key_data_id(dt, key[len(base) :])
            if data_id is not None and predicate.matches(data_id):
                yield key, data_id

    def _key_data_id(self, dt: DatasetType, key: str) -> dict[str, Any] | None:
        """The data ID stored under template key ``key``: only when that data ID maps back
        to exactly ``key``. A file the mapper's pattern merely parses (``c/01.json``,
        ``c/+1.json``, ``c/\u0661.json`` for visit=1, whose key is ``c/1.json``) is no
        dataset: it must never answer a query, be indexed, or be removed as one."""
        data_id = self.mapper.data_id_for(dt, key)
        if data_id is None:
            return None
        try:
            mapped, normal = self._map(dt, data_id)
        except InvalidDataIdError:
            return None
        return normal if mapped == key else None

    def _stored_all(self, dt: DatasetType) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(key, run, data ID) of every stored dataset of a type, in every run."""
        for key, data_id in self._listed(dt, _ALL):
            yield key, DEFAULT_RUN, data_id
        for key in self.storage.list(f"{RUNS_SEGMENT}/"):
            parsed = run_of_key(key)
            if parsed is None:
                continue
            run, rest = parsed
            in_run = self._key_data_id(dt, rest)
            if in_run is not None:
                yield key, run, in_run

    # -- maintenance -------------------------------------------------------------------

    def verify(self, dataset_type: str | None = None) -> VerifyReport:
        """Check every dataset's recorded size (and checksum, when kept) against its bytes,
        and the dataset index against the storage both ways (``unindexed``, ``stale``).

        The storage is listed (not the index): verify looks at what is really stored.
        """
        report = VerifyReport()
        names = [dataset_type] if dataset_type else sorted(self._policy.dataset_types)
        index = self.index
        for name in names:
            dt = self.dataset_type(name)
            stored: dict[str, ButlerLocation] = {}
            for key, run, data_id in self._stored_all(dt):
                location = self._location_at(dt, key, data_id, run=run)
                report.checked += 1
                self._verify_one(location, report)
                stored[entry_id(data_id, run)] = location
            if index is not None:
                self._verify_index(index, dt, stored, report)
        if dataset_type is None:
            report.unreferenced += [
                f"{self.storage.uri(part)}: part of no composite (purge_debris removes it)"
                for part in composite.unreferenced_parts(self.storage)
            ]
        return report

    def _verify_index(
        self,
        index: Index,
        dt: DatasetType,
        stored: Mapping[str, ButlerLocation],
        report: VerifyReport,
    ) -> None:
        indexed = set()
        corrupt: list[str] = []
        for entry in index.entries(dt, corrupt=corrupt):
            ident = entry_id(entry.data_id, entry.run)
            indexed.add(ident)
            if ident not in stored and not self._exists_now(dt, entry.data_id, entry.run):
                where = "" if entry.run == DEFAULT_RUN else f" in run {entry.run!r}"
                report.stale.append(
                    f"dataset {dt.name!r} {dict(entry.data_id)}{where}: indexed, but not stored"
                )
        report.stale.extend(
            f"dataset {dt.name!r}: index row {ident} is unreadable" for ident in corrupt
        )
        for ident, location in stored.items():
            if ident not in indexed and self.storage.exists(location.key):
                report.unindexed.append(f"{location.describe()}: stored, but not indexed")

    def _exists_now(
        self, dt: DatasetType, data_id: Mapping[str, Any], run: str = DEFAULT_RUN
    ) -> bool:
        """Whether a data ID is stored in a run now (a put may have landed since the
        listing)."""
        try:
            key, _ = self._map(dt, data_id)
            return self.storage.exists(run_key(check_run_name(run), key))
        except InvalidDataIdError:
            return False

    def reindex(
        self,
        dataset_type: str | None = None,
        *,
        index: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ReindexReport:
        """Rebuild or repair the dataset index from the storage: list every dataset, read
        the metadata stored with it, add the missing rows, refresh the others, drop rows
        for bytes that are gone.

        Resumable: the last key done is checkpointed in the index after each batch; an
        interrupted reindex (killed, Ctrl-C) starts again after it (the listing is
        repeated, the metadata of datasets already done is not re-read).

        Parameters
        ----------
        dataset_type
            Only this dataset type (default: all).
        index
            For a repository without an index: where to create it (as for
            `Butler.create`); the policy then records it. Default: the storage's
            embedded index.
        progress
            ``progress(dataset_type, done, total)`` after each batch.

        Raises
        ------
        StorageError
            If the repository has no index and the storage has no embedded one (S3: pass
            ``index="postgresql+psycopg://..."``).
        """
        from ._reindex import configure_index, reindex_type

        if self.index is None:
            if self._policy.index and self._index_choice is not False:
                raise StorageError(
                    f"repository {self.storage.uri()!r} records an index "
                    f"({mask_url(self._policy.index, hide_user=True)!r}) that this reader "
                    f"cannot open (a read-only repository?); reindex where it can be written"
                )
            configure_index(self, index)
        target = self.index
        if target is None:
            raise StorageError(f"no dataset index could be opened for {self.storage.uri()!r}")
        report = ReindexReport()
        names = [dataset_type] if dataset_type else sorted(self._policy.dataset_types)
        refused: list[str] = []
        whole = dataset_type is None
        if whole:  # until it finishes: a reindex cut short leaves queries listing
            target.mark(False)
            self._index_complete = False
        for name in names:
            refused += reindex_type(self, target, self.dataset_type(name), report, progress)
        if whole or self._index_complete:
            target.mark(True)  # (what cannot be indexed, below, no query could find)
            self._index_complete = True
        if refused:
            shown = "; ".join(refused[:5]) + (
                f"; and {len(refused) - 5} more" if len(refused) > 5 else ""
            )
            raise StorageError(
                f"reindexed everything else, but {len(refused)} stored file(s) cannot be "
                f"indexed: the index keeps integers in 64 bits, and their data IDs hold "
                f"larger ones: {shown}. Move them out of the repository (no put with an "
                f"index writes them)"
            )
        return report

    def purge_debris(self, older_than: float = 3600.0) -> list[str]:
        """Remove leftovers of killed writers (temporary files, incomplete uploads, parts of
        disassembled composites no record names) older than ``older_than`` seconds;
        returns what was removed. Datasets are never touched."""
        removed = list(self.storage.purge_debris(older_than))
        return removed + composite.purge_parts(self.storage, older_than)

    def _verify_one(self, location: ButlerLocation, report: VerifyReport) -> None:
        what = location.describe()
        try:
            meta = self.storage.metadata(location.key)
            actual = self.storage.size(location.key)
        except DatasetNotFoundError:
            report.missing.append(what)
            return
        if "size" not in meta:
            report.unrecorded.append(what)
            return
        if actual != meta["size"]:
            report.truncated.append(f"{what}: {actual} bytes, recorded {meta['size']}")
            return
        if "sha256" in meta:
            digest = hashlib.sha256()
            with self.storage.open(location.key) as f:
                while chunk := f.read(COPY_CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != meta["sha256"]:
                report.corrupted.append(f"{what}: sha256 mismatch")
                return
        if meta.get("format") == composite.COMPOSITE_FORMAT:
            # One dataset: healthy only when each of its parts is.
            parts = VerifyReport()
            try:
                keys = composite.part_keys(location)
            except FormatError as exc:
                report.corrupted.append(str(exc))
                return
            for key in keys:
                self._verify_one(location.evolve(locations=[key]), parts)
            for kind in ("missing", "truncated", "corrupted", "unrecorded"):
                getattr(report, kind).extend(getattr(parts, kind))
            if not parts.healthy:
                return
        report.ok.append(what)


#: Read resolutions a Butler keeps (see `Butler._resolve_read_at`); more clears them.
_MAX_READ_RESOLUTIONS = 512


def _classes_current(named: tuple[tuple[Any, type | None], ...]) -> bool:
    """Whether each (dotted name, class) pair of a kept read resolution still holds.

    Parameters
    ----------
    named
        The names a resolution resolved (the dataset type's python type, and the recorded
        subclass when the dataset was written as one) with the classes they gave.

    Returns
    -------
    bool
        True when every name's module is imported and holds that very class now; false
        after a reload or a redefinition (the resolution is then worked out again).
    """
    for name, cls in named:  # noqa: SIM110 - a loop: no generator object on every get
        if loaded_type(name) is not cls:
            return False
    return True


def _location_base(butler: Butler, dt: DatasetType) -> ButlerLocation:
    """The fields of ``dt``'s locations that do not depend on the data ID, built once per
    dataset type definition (a location has two dozen fields; a get builds one)."""
    inputs = (dt, butler.storage, butler.registry, butler._policy.checksum, butler._max_read_bytes)
    cache: dict[str, tuple[tuple[Any, ...], ButlerLocation]] = butler.__dict__.setdefault(
        "_location_bases", {}
    )
    cached = cache.get(dt.name)
    if cached is not None:
        old = cached[0]  # identity: any redefinition or reconfiguration builds a new base
        if (
            old[0] is dt
            and old[1] is inputs[1]
            and old[2] is inputs[2]
            and old[3] == inputs[3]
            and old[4] == inputs[4]
        ):
            return cached[1]
    base = ButlerLocation(
        locations=[],
        storage=butler.storage,
        format=record_format(dt.disassemble, dt.format),
        python_type=dt.python_type,
        dataset_type=dt.name,
        additional_data=location_data(dt),
        serializer_args=dt.args_for(butler.storage.type_name),
        registry=butler.registry,
        checksum=butler._policy.checksum,
        max_read_bytes=butler._max_read_bytes,
    )
    cache[dt.name] = (inputs, base)
    return base


def _is_default(registry: Registry) -> bool:
    from ._plugins import default_registry

    return registry is default_registry()


def _reopen(args: Mapping[str, Any]) -> Butler:
    """Unpickle a `Butler` (see `Butler.__reduce__`)."""
    options = dict(args)
    storage_options = options.pop("storage_options")
    return Butler(options.pop("root"), **options, **storage_options)


class _All:
    """The predicate every data ID matches (listing everything)."""

    @staticmethod
    def equalities() -> dict[str, Any]:
        return {}

    @staticmethod
    def matches(data_id: Mapping[str, Any]) -> bool:
        return True


_ALL = _All()


def _all_known(names: Sequence[str], chains: Mapping[str, Any]) -> bool:
    """Whether every collection name is a known chain or the default run (so no policy
    re-read could change what they expand to)."""
    return all(n in chains or n == DEFAULT_RUN for n in names)


def _merge_data_id(data_id: Mapping[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """``data_id`` and ``extra`` (the call's own ``**kw`` dict, returned as it is when
    there is nothing to merge: no copy on the hot path)."""
    if data_id is None:
        return extra
    merged = dict(data_id)
    clash = [k for k in extra if k in merged and merged[k] != extra[k]]
    if clash:
        raise InvalidDataIdError(f"data ID keys {clash} given twice with different values")
    merged.update(extra)
    return merged


def _index_setting(storage: Any, repo_id: str, index: str | None, registry: Registry) -> str | None:
    """What a new repository's policy records as its index (see `Butler.create`)."""
    if index is not None and not isinstance(index, str):
        raise StorageError(
            f"index must be None, 'none', 'embedded' or a database URL, not {index!r}"
        )
    if index == "none":
        return None
    if index is None or index == "embedded":
        embedded = storage.default_index(repo_id)
        if embedded is None:
            if index == "embedded":
                raise StorageError(
                    f"the {storage.type_name} storage has no embedded dataset index; pass a "
                    f"database URL (index='postgresql+psycopg://...') or index='none'"
                )
            return None
        embedded.close()
        return "embedded"
    other = open_storage(index, registry)  # checks that an installed storage serves it
    try:
        probe = other.default_index(repo_id)
        if probe is None:
            raise StorageError(
                f"the {other.type_name} storage cannot keep a dataset index "
                f"({mask_url(index, hide_user=True)!r}); use a database URL (butler-db)"
            )
        try:
            probe.counts()  # connects: an unreachable URL is refused, never recorded
        finally:
            probe.close()
    finally:
        other.close()
    return strip_credentials(index)
