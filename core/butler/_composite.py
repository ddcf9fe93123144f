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

A record is untrusted input (`parse_record`, the one place it is read): each part it names
must be exactly where the writer puts that component for that put's token, and agree with
the part's own metadata (format, class); else every reader refuses it with a
`FormatError`, verify reports it corrupted and purge leaves the parts under it alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
import secrets
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ._component_read import declaration, descend
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
#: Longest pause (seconds) before a reader's second attempt; doubled for each later one.
RETRY_PAUSE = 0.001
RECORD_VERSION = 1
#: Longest component segment of a part's key (file names are limited to 255 bytes).
MAX_SEGMENT = 120
#: What a put's token looks like (``secrets.token_hex(8)``).
_TOKEN = re.compile(r"[0-9a-f]{16}")


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

    Raises
    ------
    FormatError
        If the record would be larger than a reader accepts (`MAX_RECORD_BYTES`): refused
        before any part is written, since no reader could ever assemble it.
    """
    cls = type(obj)
    found = declaration(location._registry(), cls, location.describe())
    parts = found.split_object(obj)
    _check_serializers(location, parts)
    previous = _record_or_none(location) if location.overwrite else None
    token = secrets.token_hex(8)
    # The whole record first (parts in split order: assembly keeps the order), so that
    # one no reader would accept is refused before a byte is written.
    record: dict[str, Any] = {
        "version": RECORD_VERSION,
        "token": token,
        "python_type": type_name(cls),
        "parts": {name: _part_entry(location, token, name, value) for name, value in parts.items()},
    }
    keys: dict[str, str] = {}
    for name, entry in record["parts"].items():
        if entry is not None and keys.setdefault(entry["key"], name) != name:
            raise location.format_error(
                f"components {keys[entry['key']]!r} and {name!r} would be stored at the same "
                f"key {entry['key']!r}; store it assembled"
            )
    encoded = json.dumps(record).encode()
    if len(encoded) > MAX_RECORD_BYTES:
        raise location.format_error(
            f"its {len(parts)} components make a composite record of {len(encoded)} bytes, "
            f"more than the {MAX_RECORD_BYTES} bytes a reader accepts; store it assembled "
            f"(a dataset type without disassemble=True)"
        )
    try:
        for name, value in parts.items():
            entry = record["parts"][name]
            if entry is not None:
                _write_part(location, found, cls, name, value, entry, serializer_args)
        with location.open_write() as f:
            f.write(encoded)
    except BaseException:
        # Unless the record did commit (an error after the commit itself), its parts are
        # unreferenced: take them away now rather than leave them to purge.
        # Unknown (the record could not be read just now): keep them for purge, which
        # checks again; removing them could take a committed dataset's parts.
        now = _referenced(location.storage, location.key)
        if now is not _UNKNOWN and now != token:
            remove_parts(location.storage, location.key, record)
        raise
    if previous is not None and previous.get("token") != token:
        remove_parts(location.storage, location.key, previous)


def part_segment(name: str) -> str:
    """A component name as one key segment, different for different names: percent-quoted
    (a dict key may hold ``/`` or start with ``.``), long names shortened with a digest
    (file name limits). The two forms quoting cannot produce mark the empty name
    (``%empty``) and shortened ones (``%h<digest>``): ``quote`` writes ``%`` only before
    two hex digits, so neither can be another name's segment."""
    from urllib.parse import quote

    segment = quote(name, safe="-_")
    if not segment:
        segment = "%empty"
    elif segment.startswith("."):
        segment = "%2E" + segment[1:]
    if len(segment) > MAX_SEGMENT:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        segment = f"{segment[: MAX_SEGMENT - 18]}%h{digest}"
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


def _part_key(location: ButlerLocation, token: str, name: str, fmt: str) -> str:
    """Where component ``name`` of put ``token`` is stored in ``fmt``: the one key a
    record may name for it (a reader checks it, so a record cannot swap parts)."""
    return f"{parts_dir(location.key)}{token}/{part_segment(name)}{_extension(location, fmt)}"


def _part_entry(
    location: ButlerLocation, token: str, name: str, value: Any
) -> dict[str, Any] | None:
    """A component's entry in the record (``None``: an absent optional component, such as
    a CCDData without mask)."""
    if value is None:
        return None
    fmt = _part_format(location, name)
    return {
        "key": _part_key(location, token, name, fmt),
        "format": fmt,
        "python_type": type_name(type(value)),
        # The dataset type's serializer arguments are its format's: only parts in that format.
        "args": fmt == location.additional_data.get("default_format"),
    }


def _write_part(
    location: ButlerLocation,
    found: Components,
    cls: type,
    name: str,
    value: Any,
    entry: Mapping[str, Any],
    serializer_args: Mapping[str, Any],
) -> None:
    """Write one component as its own dataset, where its record entry says."""
    part = _part_location(
        location,
        found.type_of(cls, name),
        name,
        entry["key"],
        entry["format"],
        parameters={},
        serializer_args=serializer_args if entry["args"] else {},
        written_type=None,
        overwrite=False,
        provenance=None,
    )
    part.write(value)


# -- read -------------------------------------------------------------------------------


def parse_record(data: bytes, key: str, what: str) -> dict[str, Any]:
    """The composite record stored at ``key``, checked: it is untrusted input.

    The one place a record is read (get, verify, remove, purge). Beyond its shape, every
    part it names must be one key segment under *this* dataset's parts and *this* put's
    token: a record can name neither another dataset's parts, nor another put's (mixing),
    nor anything outside the parts area.

    Raises
    ------
    FormatError
        Naming ``what`` and what is wrong with the record.
    """

    def bad(message: str) -> FormatError:
        return FormatError(f"{what}: composite record {message}")

    if len(data) > MAX_RECORD_BYTES:
        raise bad(f"exceeds {MAX_RECORD_BYTES} bytes")
    try:
        record = json.loads(data)
    except RecursionError:
        raise bad("is nested too deeply to be one") from None
    except ValueError as exc:
        raise bad(f"is not JSON: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("parts"), dict):
        raise bad("has no 'parts' mapping")
    if record.get("version") != RECORD_VERSION:
        raise bad(
            f"has version {record.get('version')!r}; this butler reads version "
            f"{RECORD_VERSION} (written by a newer butler, or not by butler)"
        )
    token = record.get("token")
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise bad(f"token {token!r} is not a put's token (16 hex digits)")
    if not isinstance(record.get("python_type"), str):
        raise bad("names no python type")
    own = f"{parts_dir(key)}{token}/"
    for name, entry in record["parts"].items():
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise bad(f"part {name!r} is malformed")
        part, fmt = entry.get("key"), entry.get("format")
        if (
            not isinstance(part, str)
            or not part.startswith(own)
            or "/" in part[len(own) :]
            or part[len(own) :] in ("", ".", "..")
        ):
            raise bad(f"part {name!r} points at {part!r}, outside this put's parts ({own!r})")
        if not isinstance(fmt, str) or not is_format_name(fmt):
            raise bad(f"part {name!r} has format {fmt!r}")
    return record


def _record(location: ButlerLocation, *, current: bool = False) -> dict[str, Any]:
    """The composite record stored at the location: the version the location was resolved
    against, or with ``current`` the one stored now (everything a read uses comes from the
    record itself: its class, token and parts, all checked)."""
    opened = location.storage.open(location.key) if current else location.open_read()
    with opened as f:
        data = f.read(MAX_RECORD_BYTES + 1)
    return parse_record(data, location.key, location.describe())


def _stored_record(storage: Storage, key: str) -> dict[str, Any] | None:
    """The record at ``key`` read without a location (verify, purge); ``None`` when no
    composite is stored there. `FormatError` when one is, but it is not a valid record."""
    try:
        if storage.metadata(key).get("format") != COMPOSITE_FORMAT:
            return None
        with storage.open(key) as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    except DatasetNotFoundError:
        return None
    return parse_record(data, key, storage.uri(key))


def _record_or_none(location: ButlerLocation) -> dict[str, Any] | None:
    try:
        if location.storage.metadata(location.key).get("format") != COMPOSITE_FORMAT:
            return None
        return _record(location)
    except (DatasetNotFoundError, FormatError):
        return None


def _entry_key(location: ButlerLocation, record: Mapping[str, Any], name: str) -> tuple[str, str]:
    """(key, format) of a part of a parsed record, which must be where the writer puts
    component ``name`` in that format (a record cannot swap two parts of one put)."""
    entry = record["parts"][name]
    key, fmt = entry["key"], entry["format"]
    expected = _part_key(location, record["token"], name, fmt)
    if key != expected:
        raise location.format_error(
            f"composite record: part {name!r} is stored at {key!r}, not where this put "
            f"writes it ({expected!r})"
        )
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


def _checked_entry(
    location: ButlerLocation, record: Mapping[str, Any], name: str
) -> tuple[str, str, dict[str, Any]]:
    """(key, format, stored metadata) of part ``name`` of a parsed record, checked against
    the part's own metadata: when they disagree the record was edited (or the part
    replaced), and reading the part as the record says would read it as what it is not.

    Raises
    ------
    DatasetNotFoundError
        If the part is not stored (an overwrite removed it meanwhile, or it is lost).
    FormatError
        If the record and the part disagree.
    """
    key, fmt = _entry_key(location, record, name)
    stored = location.storage.metadata(key)
    entry = record["parts"][name]
    for field_name, recorded in (("format", fmt), ("python_type", entry.get("python_type"))):
        actual = stored.get(field_name)
        if recorded is not None and actual != recorded:
            raise location.format_error(
                f"composite record: part {name!r} records {field_name.replace('_', ' ')} "
                f"{recorded!r}, but the part is stored as {actual!r}"
            )
    return key, fmt, stored


def _read_entry(
    location: ButlerLocation,
    cls: type,
    record: Mapping[str, Any],
    name: str,
    parameters: Mapping[str, Any],
) -> Any:
    entry = record["parts"][name]
    if entry is None:
        return None
    key, fmt, stored = _checked_entry(location, record, name)
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


def _check_names(location: ButlerLocation, cls: type, found: Components, record: Any) -> None:
    """Refuse a record naming components the written class does not have (for classes
    whose components are known in advance)."""
    if found.dynamic:
        return
    extra = sorted(set(record["parts"]) - set(found.names(cls)))
    if extra:
        raise location.format_error(
            f"composite record: component(s) {extra}, which {type_name(cls)!r} does not "
            f"have (its components are {sorted(found.names(cls))})"
        )


def _back_off(tries: int) -> None:
    """Wait a little (random, growing with ``tries``) before reading a record again, so
    that a reader racing writers that overwrite back to back is not overtaken every time."""
    time.sleep(random.uniform(0.0, RETRY_PAUSE * 2**tries))


def _retrying(location: ButlerLocation, attempt: Any) -> Any:
    """Run ``attempt(record)`` on the current record; again on the new record when an
    overwrite removed the parts being read (never parts of two puts)."""
    current = False
    for tries in range(READ_ATTEMPTS):
        try:
            record = _record(location, current=current)
        except StorageError:
            if tries == READ_ATTEMPTS - 1:
                raise
            # The record was replaced while being read (S3 refuses to mix two versions of
            # an object: "it changed while being read"): read the current one, after a
            # pause when even that one was overtaken. An error that persists is raised by
            # the last attempt.
            if current:
                _back_off(tries)
            current = True
            continue
        try:
            return attempt(record)
        except DatasetNotFoundError:
            try:
                now = _record(location, current=True).get("token")
            except StorageError:
                # Replaced again while this check read it (S3: "it changed while being
                # read"): it changed. An error that persists is raised by the last attempt.
                now = None
            if now is not None and now == record.get("token"):
                raise  # the record did not change: a part is really missing
        current = True
        _back_off(tries)  # overtaken
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
    return _retrying(location, lambda record: _assemble(location, record))


def _assemble(location: ButlerLocation, record: Mapping[str, Any]) -> Any:
    cls = location.read_type(record["python_type"])
    found = declaration(location._registry(), cls, location.describe())
    _check_names(location, cls, found, record)
    parts = {name: _read_entry(location, cls, record, name, {}) for name in record["parts"]}
    obj = found.assemble_parts(cls, parts)
    if not found.dynamic:
        # A writer records every component split gives (an absent one as null): a record
        # without one was edited, and assembling would fill it in (a default, None).
        lacking = sorted(set(found.split_object(obj)) - set(record["parts"]))
        if lacking:
            raise location.format_error(
                f"composite record lacks component(s) {lacking} of {type_name(cls)!r}; "
                f"a put records every one (an absent one as null)"
            )
    return obj


def read_part(location: ButlerLocation, name: str) -> Any:
    """Read one component's part only (with the location's read parameters).

    A name the record stores no part for is taken from the assembled composite, as the
    declaration's ``extract`` takes it (an alias, such as CCDData's ``header`` for
    ``meta``; an HDU by index or by EXTNAME in any case), so a component reads the same
    assembled or disassembled; a name the composite lacks is a `ComponentError` then.
    """

    def attempt(record: dict[str, Any]) -> Any:
        cls = location.read_type(record["python_type"])
        found = declaration(location._registry(), cls, location.describe())
        _check_names(location, cls, found, record)
        if name in record["parts"]:
            return _read_entry(location, cls, record, name, location.parameters)
        if location.parameters:
            raise ParameterError(
                f"{location.describe()}: component {name!r} is stored in no part of its "
                f"own (its parts are {sorted(record['parts'])}), so read parameters "
                f"{sorted(location.parameters)} cannot apply to it"
            )
        return descend(location._registry(), _assemble(location, record), name, location.describe())

    return _retrying(location, attempt)


# -- remove and debris -------------------------------------------------------------------


def record_at(location: ButlerLocation) -> dict[str, Any] | None:
    """The composite record stored at the location, or ``None`` (not composite, absent).

    A record replaced while being read (S3 refuses to mix two versions of an object: "it
    changed while being read") is read again, as `_retrying` does for readers; an error
    that persists is raised by the last attempt."""
    for tries in range(READ_ATTEMPTS):
        try:
            return _record_or_none(location)
        except StorageError:
            if tries == READ_ATTEMPTS - 1:
                raise
            _back_off(tries)
    raise AssertionError("unreachable: the last attempt returns or raises")


def remove_parts(storage: Storage, key: str, record: Mapping[str, Any]) -> None:
    """Remove the parts a record names (already unreferenced; missing ones are fine)."""
    prefix = parts_dir(key)
    for entry in record.get("parts", {}).values():
        part = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(part, str) and part.startswith(prefix):
            with contextlib.suppress(DatasetNotFoundError):
                storage.remove(part)


#: `_referenced`'s answer for a record it cannot read: which parts it names is unknown.
_UNREADABLE = object()
#: `_referenced`'s answer when the storage failed to answer (replaced while being read,
#: a transient error): whether a record is there, and which, is unknown.
_UNKNOWN = object()


def _referenced(storage: Storage, key: str) -> Any:
    """The token of the record stored at ``key`` (``None``: no composite there;
    `_UNREADABLE`: a composite whose record is not valid; `_UNKNOWN`: the storage
    failed to say)."""
    try:
        record = _stored_record(storage, key)
    except FormatError:
        return _UNREADABLE
    except StorageError:
        return _UNKNOWN
    return None if record is None else record["token"]


def unreferenced_parts(storage: Storage, older_than: float = 0.0) -> Iterator[str]:
    """Keys of parts no composite record names (left by a killed writer, or by a
    concurrent overwrite), committed more than ``older_than`` seconds ago. Parts under a
    record that cannot be read, or that the storage failed to read just now, are not
    listed: they may be its parts (verify reports the
    record itself)."""
    tokens: dict[str, Any] = {}
    now = time.time()
    for part in storage.list(PARTS_PREFIX):
        rest = part[len(PARTS_PREFIX) :].split("/")
        if len(rest) < 3:
            yield part  # not a part any butler writes
            continue
        key, token = "/".join(rest[:-2]), rest[-2]
        if key not in tokens:
            tokens[key] = _referenced(storage, key)
        if tokens[key] == token or tokens[key] is _UNREADABLE or tokens[key] is _UNKNOWN:
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


def part_keys(location: ButlerLocation) -> list[str]:
    """Keys of the parts the record at the location names, each checked as a read checks
    it (for verify; a part that is not stored is listed: verify reports it missing).

    Raises
    ------
    FormatError
        If the record is not a valid composite record, or disagrees with a part.
    """
    record = _record(location)
    keys = []
    for name, entry in record["parts"].items():
        if entry is None:
            continue
        try:
            keys.append(_checked_entry(location, record, name)[0])
        except DatasetNotFoundError:
            keys.append(entry["key"])
    return keys
