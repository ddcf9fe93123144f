"""Dataset types and the repository policy persisted in the repository (``butler.yaml``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._errors import DatasetTypeError
from ._types import type_name

__all__ = ["POLICY_VERSION", "DatasetType", "RepositoryPolicy"]

#: Version 2 adds the dataset index (``butler.index``): a butler that predates it would
#: write datasets without indexing them, so it must refuse such a repository. Policies
#: without an index keep writing version 1.
POLICY_VERSION = 2

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")

_FORMAT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]{0,63}$")
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_DIMENSION = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")

#: Names that cannot be dimensions: they are keyword arguments of `Butler.put`/`get`/...
#: (``put(obj, "t", dataset_type=1)`` could never pass such a data ID value).
RESERVED_DIMENSIONS = frozenset(
    {
        "obj",
        "dataset_type",
        "data_id",
        "parameters",
        "overwrite",
        "progress",
        "allow_pickle",
        "partial_data_id",
        "kw",
        "self",
        "where",
        "limit",
        "order_by",
    }
)

#: Dimension value types a policy may declare.
DIMENSION_TYPES = {"int": int, "str": str}


def is_format_name(name: str) -> bool:
    """True when ``name`` has the shape of a format name (``fits``, ``sql-table``)."""
    return bool(_FORMAT.match(name))


def validate_dataset_type_name(name: Any) -> str:
    """Return ``name`` if it is a valid dataset type name, else raise `DatasetTypeError`."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DatasetTypeError(
            f"invalid dataset type name {name!r}: use 1-128 letters, digits, '_', '.', '-', "
            f"starting with a letter or '_'"
        )
    return name


@dataclass(frozen=True)
class DatasetType:
    """A named kind of dataset: its python type, format, storage template and options.

    Parameters
    ----------
    name
        Dataset type name (``"calexp"``).
    python_type
        Dotted name of the python type stored (``"numpy.ndarray"``).
    format
        Default format for new datasets (old datasets keep the format they were written in).
    template
        ``str.format`` template of the storage key (``"calexp/{visit:06d}/{ccd}.fits"``).
    dimensions
        Data ID keys and their types (``{"visit": "int"}``); derived from the template when
        not given (``:d`` specs are ints, other fields strings).
    serializer_args
        Keyword arguments for the serializer; a nested ``per_storage`` mapping
        (``{"per_storage": {"s3": {...}}}``) adds arguments for one storage type only.
    additional_data
        Format-specific location details (``{"hdu": 1}``).
    disassemble
        Store each component as its own dataset under one composite record
        (`butler._composite`); ``format`` is then the components' default format.
    component_formats
        Format per component of a disassembled dataset type (``{"wcs": "json"}``).
    """

    name: str
    python_type: str
    format: str
    template: str
    dimensions: Mapping[str, str] = field(default_factory=dict)
    serializer_args: Mapping[str, Any] = field(default_factory=dict)
    additional_data: Mapping[str, Any] = field(default_factory=dict)
    disassemble: bool = False
    component_formats: Mapping[str, str] = field(default_factory=dict)

    def args_for(self, storage: str) -> dict[str, Any]:
        """Serializer keyword arguments for one storage type."""
        args = {k: v for k, v in self.serializer_args.items() if k != "per_storage"}
        args.update(self.serializer_args.get("per_storage", {}).get(storage, {}))
        return args

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for ``butler.yaml``."""
        data: dict[str, Any] = {
            "python_type": self.python_type,
            "format": self.format,
            "template": self.template,
            "dimensions": dict(self.dimensions),
            "serializer_args": _plain(self.serializer_args),
            "additional_data": _plain(self.additional_data),
        }
        if self.disassemble:  # only then: policies without composites stay as they were
            data["disassemble"] = True
            data["component_formats"] = dict(self.component_formats)
        return data

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> DatasetType:
        """Rebuild from `to_dict` output, validating it."""
        # Everything here was written by whoever can write the repository: validate it as
        # register_dataset_type would (no escape sequences reach a terminal, no template
        # leaves the root).
        from ._mapper import validate_template

        try:
            fmt = data["format"]
            if not isinstance(fmt, str) or not _FORMAT.match(fmt):
                raise DatasetTypeError(f"invalid format name {fmt!r}")
            validate_template(data["template"])
            return cls(
                name=validate_dataset_type_name(name),
                python_type=python_type_name(data["python_type"]),
                format=fmt,
                template=data["template"],
                dimensions=normalise_dimensions(data.get("dimensions") or {}),
                serializer_args=dict(data.get("serializer_args") or {}),
                additional_data=dict(data.get("additional_data") or {}),
                disassemble=data.get("disassemble", False) is True,
                component_formats=_component_formats(data.get("component_formats") or {}),
            )
        except (KeyError, TypeError, AttributeError, ValueError, DatasetTypeError) as exc:
            raise DatasetTypeError(f"malformed definition of dataset type {name!r}: {exc}") from exc


def _component_formats(given: Mapping[str, Any]) -> dict[str, str]:
    """Component name → format name, validated (the policy is untrusted input)."""
    if not isinstance(given, Mapping):
        raise DatasetTypeError(f"component_formats must be a mapping, not {given!r}")
    for name, fmt in given.items():
        if not isinstance(name, str) or not _DIMENSION.match(name):
            raise DatasetTypeError(f"invalid component name {name!r} in component_formats")
        if not isinstance(fmt, str) or not _FORMAT.match(fmt):
            raise DatasetTypeError(f"invalid format {fmt!r} for component {name!r}")
    return dict(given)


def _plain(value: Any) -> Any:
    """Mappings and sequences as plain dicts/lists (tuples of slices are not policy data)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class RepositoryPolicy:
    """Repository-wide settings and the dataset types, as stored in the repository."""

    storage: str
    dataset_types: dict[str, DatasetType] = field(default_factory=dict)
    checksum: bool = False
    allow_pickle: bool = False
    version: int = 1
    #: The repository's identity (a random hex string), binding an index to it.
    id: str | None = None
    #: Where the dataset index lives: ``"embedded"`` (the storage's own), a database URL
    #: without credentials, or ``None`` (no index: queries list the storage).
    index: str | None = None
    #: Named collection chains: name -> ordered member collections (runs or chains).
    collections: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for ``butler.yaml`` (never holds credentials)."""
        head: dict[str, Any] = {
            # An older butler would drop the chains on its next policy write, or write
            # unindexed datasets: version 2 makes it refuse the repository instead.
            "version": POLICY_VERSION if self.index or self.collections else self.version,
            "storage": self.storage,
            "checksum": self.checksum,
            "allow_pickle": self.allow_pickle,
        }
        if self.id is not None:
            head["id"] = self.id
        if self.index is not None:
            head["index"] = self.index
        data: dict[str, Any] = {
            "butler": head,
            "dataset_types": {n: d.to_dict() for n, d in sorted(self.dataset_types.items())},
        }
        if self.collections:
            data["collections"] = {n: list(m) for n, m in sorted(self.collections.items())}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepositoryPolicy:
        """Parse a stored policy."""
        head = data.get("butler")
        if not isinstance(head, Mapping):
            raise DatasetTypeError("repository policy has no 'butler' section")
        try:
            version = int(head.get("version", POLICY_VERSION))
        except (TypeError, ValueError):
            raise DatasetTypeError(
                f"repository policy version {head.get('version')!r} is not an integer"
            ) from None
        if version > POLICY_VERSION:
            raise DatasetTypeError(
                f"repository policy version {version} is newer than this butler understands "
                f"({POLICY_VERSION}); upgrade butler-core"
            )
        types = data.get("dataset_types") or {}
        if not isinstance(types, Mapping) or not all(
            isinstance(d, Mapping) for d in types.values()
        ):
            raise DatasetTypeError(
                "repository policy's 'dataset_types' is not a mapping of mappings"
            )
        repo_id, index = head.get("id"), head.get("index")
        if repo_id is not None and (not isinstance(repo_id, str) or not _ID.match(repo_id)):
            raise DatasetTypeError(f"repository policy id {repo_id!r} is not a hex string")
        if index is not None and (not isinstance(index, str) or not 0 < len(index) <= 2048):
            raise DatasetTypeError(f"repository policy index {index!r} is not a URL")
        chains = data.get("collections") or {}
        if not isinstance(chains, Mapping) or not all(
            isinstance(n, str)
            and isinstance(m, list)
            and len(m) <= 1000
            and all(isinstance(x, str) for x in m)
            for n, m in chains.items()
        ):
            raise DatasetTypeError(
                "repository policy's 'collections' is not a mapping of names to lists of names"
            )
        from ._errors import InvalidDataIdError
        from ._runs import check_run_name

        try:
            for name, members in chains.items():
                check_run_name(name, what="collection")
                for member in members:
                    check_run_name(member, what="collection")
        except InvalidDataIdError as exc:
            raise DatasetTypeError(f"repository policy's 'collections': {exc}") from None
        return cls(
            collections={str(n): list(m) for n, m in chains.items()},
            storage=str(head.get("storage", "")),
            dataset_types={n: DatasetType.from_dict(n, d) for n, d in types.items()},
            checksum=bool(head.get("checksum", False)),
            allow_pickle=bool(head.get("allow_pickle", False)),
            version=version,
            id=repo_id,
            index=index,
        )


def normalise_dimensions(dimensions: Mapping[str, Any] | Sequence[str] | None) -> dict[str, str]:
    """``["visit"]`` or ``{"visit": int}`` → ``{"visit": "int"}``-style mapping."""
    if dimensions is None:
        return {}
    if isinstance(dimensions, Mapping):
        items = list(dimensions.items())
    elif isinstance(dimensions, Sequence | set | frozenset) and not isinstance(dimensions, str):
        items = [(d, "str") for d in dimensions]
    else:
        raise DatasetTypeError(
            f"dimensions must be a list of names or a mapping of names to int/str, not "
            f"{dimensions!r}"
        )
    result = {}
    for key, kind in items:
        if not isinstance(key, str) or not _DIMENSION.match(key):
            raise DatasetTypeError(
                f"invalid dimension name {key!r}: use a Python identifier of 1-64 characters"
            )
        if key in RESERVED_DIMENSIONS:
            raise DatasetTypeError(
                f"dimension name {key!r} is reserved: it is a keyword argument of Butler's "
                f"methods ({', '.join(sorted(RESERVED_DIMENSIONS))}); rename it"
            )
        kind_name = kind.__name__ if isinstance(kind, type) else str(kind)
        if kind_name not in DIMENSION_TYPES:
            raise DatasetTypeError(
                f"dimension {key!r} has type {kind_name!r}; supported: {sorted(DIMENSION_TYPES)}"
            )
        result[str(key)] = kind_name
    return result


def python_type_name(python_type: type | str) -> str:
    """Dotted name of a class or string, validated for shape only (nothing imported)."""
    if not isinstance(python_type, type | str):
        raise DatasetTypeError(f"python type must be a class or a dotted name, not {python_type!r}")
    name = type_name(python_type)
    if not re.match(r"^[A-Za-z_][\w.]*$", name):
        raise DatasetTypeError(f"invalid python type name {name!r}")
    return name
