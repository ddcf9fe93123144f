"""Disassembled storage: a composite stored as one dataset per component under one record.

A dataset type registered with ``disassemble=True`` writes, for each put:

1. every component as its own atomic dataset (its own format, its own metadata and
   checksum) under a fresh per-put token: ``@parts/<dataset key>/<token>/<name>``;
2. then the *composite record* at the dataset's own key, atomically (format
   ``"composite"``, a small JSON document naming the token, the class written and each
   part's key, format and class). This commit is the put: the index row, ``datasets``,
   ``remove``, ``verify`` and runs see the record as the dataset;
3. then, on an overwrite, the previous put's parts are removed.

Readers read the record, then the parts it names. Parts of one put are never changed, so a
reader assembles parts of one put only; when a concurrent overwrite removed the parts of
the record it read, it reads the new record and starts again. A writer killed before step
2 leaves parts no record names: `unreferenced_parts` finds them (``verify`` lists them,
``purge_debris`` removes them once older than its threshold); the old composite stays
whole. Parts live in the ``@parts/`` area, which (like the runs area, ``@runs/``) no
template or data ID can address and listings of datasets skip.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._component_read import declaration, written_class
from ._components import Components
from ._errors import (
    DatasetNotFoundError,
    FormatError,
    NoSerializerError,
    ParameterError,
    StorageError,
)
from ._policy import is_format_name
from ._runs import PARTS_SEGMENT
from ._types import type_name

if TYPE_CHECKING:
    from ._location import ButlerLocation
    from ._storage import Storage

__all__ = [
    "COMPOSITE_FORMAT",
    "PARTS_PREFIX",
    "read",
    "read_part",
    "remove_parts",
    "unreferenced_parts",
    "write",
]

#: Format name recorded for a composite record.
COMPOSITE_FORMAT = "composite"
#: Where the parts of disassembled composites live: an area no data ID can address.
PARTS_PREFIX = f"{PARTS_SEGMENT}/"
#: Largest composite record read (a record names its parts: a few hundred bytes each).
MAX_RECORD_BYTES = 4 * 2**20
#: How many times a reader starts again when an overwrite removed the parts it was reading.
READ_ATTEMPTS = 8
RECORD_VERSION = 1
#: Longest component segment of a part's key (file names are limited to 255 bytes).
MAX_SEGMENT = 120


def parts_dir(key: str) -> str:
    """Key prefix of every part of the dataset stored at ``key`` (all puts)."""
    return f"{PARTS_PREFIX}{key}/"


def _extension(location: ButlerLocation, fmt: str) -> str:
    descriptor = location._registry().formats.get(fmt)
    return descriptor.extension if descriptor is not None else ""


# -- write ------------------------------------------------------------------------------


def write(obj: Any, location: ButlerLocation, **serializer_args: Any) -> None:
    """Write ``obj``'s components under a fresh token, then commit its record.

    ``location.additional_data`` carries ``component_formats`` (name → format) and
    ``default_format`` (the dataset type's format) from the dataset type. A put that fails
    (a component the format refuses, an existing dataset at commit) removes the parts it
    wrote; only a killed writer leaves any.
    """
    cls = type(obj)
    found = declaration(location._registry(), cls, location.describe())
    parts = found.split_object(obj)
    _check_serializers(location, parts)
    previous = _record_or_none(location) if location.overwrite else None
    token = secrets.token_hex(8)
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "token": token,
        "python_type": type_name(cls),
        "parts": {},
    }
    try:
        for name, value in parts.items():
            record["parts"][name] = _write_part(
                location, found, cls, token, name, value, serializer_args
            )
        with location.open_write() as f:  # parts in split order: assembly keeps the order
            f.write(json.dumps(record).encode())
    except BaseException:
        # Unless the record did commit (an error after the commit itself), its parts are
        # unreferenced: take them away now rather than leave them to purge.
        if _referenced(location.storage, location.key) != token:
            remove_parts(location.storage, location.key, record)
        raise
    if previous is not None and previous.get("token") != token:
        remove_parts(location.storage, location.key, previous)


def part_segment(name: str) -> str:
    """A component name as one key segment: percent-quoted (a dict key may hold ``/`` or
    start with ``.``), long names shortened with a digest (file name limits)."""
    from urllib.parse import quote

    segment = quote(name, safe="-_")
    if segment.startswith(".") or not segment:
        segment = "%2E" + segment[1:] if segment else "%00"
    if len(segment) > MAX_SEGMENT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        segment = f"{segment[: MAX_SEGMENT - 17]}-{digest}"
    return segment


def _part_format(location: ButlerLocation, name: str) -> str:
    extra = location.additional_data
    default = str(extra.get("default_format") or "")
    return str((extra.get("component_formats") or {}).get(name, default))


def _check_serializers(location: ButlerLocation, parts: Mapping[str, Any]) -> None:
    """Refuse, before a byte is written, a component no serializer can write."""
    registry = location._registry()
    for name, value in parts.items():
        if value is None:
            continue
        fmt = _part_format(location, name)
        try:
            registry.find(type(value), location.storage.type_name, fmt)
        except NoSerializerError as exc:
            raise NoSerializerError(
                f"{location.describe()}: component {name!r} cannot be stored disassembled "
                f"in format {fmt!r} (set component_formats={{{name!r}: ...}}): {exc}"
            ) from None


def _write_part(
    location: ButlerLocation,
    found: Components,
    cls: type,
    token: str,
    name: str,
    value: Any,
    serializer_args: Mapping[str, Any],
) -> dict[str, Any] | None:
    """Write one component as its own dataset; its entry in the record (``None``: an
    absent optional component, such as a CCDData without mask)."""
    if value is None:
        return None
    fmt = _part_format(location, name)
    key = f"{parts_dir(location.key)}{token}/{part_segment(name)}{_extension(location, fmt)}"
    # The dataset type's serializer arguments are its format's: only parts in that format.
    with_args = fmt == location.additional_data.get("default_format")
    part = _part_location(
        location,
        found.type_of(cls, name),
        name,
        key,
        fmt,
        parameters={},
        serializer_args=serializer_args if with_args else {},
        written_type=None,
        overwrite=False,
        provenance=None,
    )
    part.write(value)
    return {"key": key, "format": fmt, "python_type": type_name(type(value)), "args": with_args}


# -- read -------------------------------------------------------------------------------


def _record(location: ButlerLocation) -> dict[str, Any]:
    """The composite record stored at the location (checked: it is untrusted input)."""
    with location.open_read() as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    if len(data) > MAX_RECORD_BYTES:
        raise location.format_error(f"composite record exceeds {MAX_RECORD_BYTES} bytes")
    try:
        record = json.loads(data)
    except ValueError as exc:
        raise location.format_error(f"composite record is not JSON: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("parts"), dict):
        raise location.format_error("composite record has no 'parts' mapping")
    if not isinstance(record.get("python_type"), str):
        raise location.format_error("composite record names no python type")
    return record


def _record_or_none(location: ButlerLocation) -> dict[str, Any] | None:
    try:
        if location.storage.metadata(location.key).get("format") != COMPOSITE_FORMAT:
            return None
        return _record(location)
    except (DatasetNotFoundError, FormatError):
        return None


def _entry_key(location: ButlerLocation, name: str, entry: Any) -> tuple[str, str]:
    """(key, format) of a part, refusing a record that points outside its own parts."""
    if not isinstance(entry, dict):
        raise location.format_error(f"composite record: part {name!r} is malformed")
    key, fmt = entry.get("key"), entry.get("format")
    if not isinstance(key, str) or not key.startswith(parts_dir(location.key)):
        raise location.format_error(
            f"composite record: part {name!r} points at {key!r}, outside this dataset's parts"
        )
    if not isinstance(fmt, str) or not is_format_name(fmt):
        raise location.format_error(f"composite record: part {name!r} has format {fmt!r}")
    location.storage.check_key(key)
    return key, fmt


def _part_location(
    location: ButlerLocation,
    python_type: str,
    name: str,
    key: str,
    fmt: str,
    **fields: Any,
) -> ButlerLocation:
    """The location of component ``name``'s part (its own dataset at ``key`` in ``fmt``),
    derived from the composite's: unresolved (serializer and expected type found again for
    the part), plus ``fields`` (parameters, serializer arguments, ...)."""
    return location.evolve(
        locations=[key],
        format=fmt,
        python_type=python_type,
        dataset_type=f"{location.dataset_type}.{name}",
        additional_data={},
        serializer=None,
        expected=None,
        **fields,
    )


def _read_entry(
    location: ButlerLocation, cls: type, name: str, entry: Any, parameters: Mapping[str, Any]
) -> Any:
    if entry is None:
        return None
    key, fmt = _entry_key(location, name, entry)
    stored = location.storage.metadata(key)  # DatasetNotFoundError: overwritten meanwhile
    found = declaration(location._registry(), cls, location.describe())
    part = _part_location(
        location,
        found.type_of(cls, name),
        name,
        key,
        fmt,
        parameters=dict(parameters),
        serializer_args=location.serializer_args if entry.get("args") else {},
        stored=stored,
    )
    return part.read()


def _retrying(location: ButlerLocation, attempt: Any) -> Any:
    """Run ``attempt(record)`` on the current record; again on the new record when an
    overwrite removed the parts being read (never parts of two puts)."""
    for _ in range(READ_ATTEMPTS):
        record = _record(location)
        try:
            return attempt(record)
        except DatasetNotFoundError:
            if _record(location).get("token") == record.get("token"):
                raise  # the record did not change: a part is really missing
    raise StorageError(
        f"{location.describe()}: overwritten {READ_ATTEMPTS} times while being read; try again"
    )


def read(location: ButlerLocation, **serializer_args: Any) -> Any:
    """Assemble the composite from the parts its record names."""
    if location.parameters:
        raise ParameterError(
            f"{location.describe()} is stored disassembled: read parameters "
            f"{sorted(location.parameters)} apply to one component "
            f"(get('{location.dataset_type}.<component>', parameters=...))"
        )

    def attempt(record: dict[str, Any]) -> Any:
        cls = location.read_type(record["python_type"])
        parts = {
            name: _read_entry(location, cls, name, entry, {})
            for name, entry in record["parts"].items()
        }
        return declaration(location._registry(), cls, location.describe()).assemble_parts(
            cls, parts
        )

    return _retrying(location, attempt)


def read_part(location: ButlerLocation, name: str) -> Any:
    """Read one component's part only (with the location's read parameters)."""
    cls = written_class(location)

    def attempt(record: dict[str, Any]) -> Any:
        if name not in record["parts"]:
            raise location.format_error(
                f"stored without component {name!r}; its parts are {sorted(record['parts'])}"
            )
        return _read_entry(location, cls, name, record["parts"][name], location.parameters)

    return _retrying(location, attempt)


# -- remove and debris -------------------------------------------------------------------


def record_at(location: ButlerLocation) -> dict[str, Any] | None:
    """The composite record stored at the location, or ``None`` (not composite, absent)."""
    return _record_or_none(location)


def remove_parts(storage: Storage, key: str, record: Mapping[str, Any]) -> None:
    """Remove the parts a record names (already unreferenced; missing ones are fine)."""
    prefix = parts_dir(key)
    for entry in record.get("parts", {}).values():
        part = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(part, str) and part.startswith(prefix):
            with contextlib.suppress(DatasetNotFoundError):
                storage.remove(part)


def _referenced(storage: Storage, key: str) -> str | None:
    """The token of the record stored at ``key`` (``None``: no composite there)."""
    try:
        if storage.metadata(key).get("format") != COMPOSITE_FORMAT:
            return None
        with storage.open(key) as f:
            record = json.loads(f.read(MAX_RECORD_BYTES))
    except (DatasetNotFoundError, ValueError):
        return None
    token = record.get("token") if isinstance(record, dict) else None
    return token if isinstance(token, str) else None


def unreferenced_parts(storage: Storage, older_than: float = 0.0) -> Iterator[str]:
    """Keys of parts no composite record names (left by a killed writer, or by a
    concurrent overwrite), committed more than ``older_than`` seconds ago."""
    tokens: dict[str, str | None] = {}
    now = time.time()
    for part in storage.list(PARTS_PREFIX):
        rest = part[len(PARTS_PREFIX) :].split("/")
        if len(rest) < 3:
            yield part  # not a part any butler writes
            continue
        key, token = "/".join(rest[:-2]), rest[-2]
        if key not in tokens:
            tokens[key] = _referenced(storage, key)
        if tokens[key] == token:
            continue
        try:
            created = storage.metadata(part).get("created", 0.0)
        except DatasetNotFoundError:
            continue
        if not isinstance(created, int | float) or now - created >= older_than:
            yield part


def purge_parts(storage: Storage, older_than: float) -> list[str]:
    """Remove unreferenced parts older than ``older_than`` seconds; returns their URIs."""
    removed = []
    for part in list(unreferenced_parts(storage, older_than)):
        try:
            storage.remove(part)
        except (DatasetNotFoundError, StorageError):
            continue
        removed.append(storage.uri(part))
    return removed


def part_keys(storage: Storage, key: str) -> list[str]:
    """Keys of the parts the record at ``key`` names (for verify)."""
    try:
        with storage.open(key) as f:
            record = json.loads(f.read(MAX_RECORD_BYTES))
    except (DatasetNotFoundError, ValueError):
        return []
    prefix = parts_dir(key)
    return [
        entry["key"]
        for entry in record.get("parts", {}).values()
        if isinstance(entry, dict)
        and isinstance(entry.get("key"), str)
        and entry["key"].startswith(prefix)
    ]
