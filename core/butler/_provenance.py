"""Provenance: what made a dataset, recorded with its bytes.

Every put records, in the metadata committed with the bytes (so it survives any index
rebuild), the run, a creation time (UTC, microseconds, strictly increasing within a
process), the user, the host, butler's version, the serializer's distribution and
version, the Python version, and the inputs: `DatasetRef` s naming the datasets read to
make it (dataset type, data ID, run, checksum, created).

Inputs are kept inline when small. S3 caps an object's metadata at 2 KiB, so a longer
list is written first as an immutable, content-addressed record in the reserved area
(``.butler/provenance/<sha256>.json``) that the metadata names by its digest; a crash
between the two leaves an unreferenced record, never a dataset pointing at nothing.
Everything read back is untrusted: refs are validated, the record's digest is checked.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import (
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    FormatError,
    InvalidDataIdError,
)
from ._runs import check_run_name

if TYPE_CHECKING:
    from ._storage import Storage

__all__ = ["DatasetRef", "Provenance", "new_created", "provenance_record"]

#: Inline inputs up to this many bytes of JSON; longer lists go to a record.
MAX_INLINE_INPUTS = 600
#: Where input records live (reserved: never a dataset key).
RECORD_PREFIX = ".butler/provenance/"
#: Largest input record read back (about 40,000 refs).
MAX_RECORD_BYTES = 16 * 2**20

_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
_last_created = 0
_created_lock = threading.Lock()
_second: tuple[int, str] = (-1, "")  # (UNIX second, its ISO 8601 text) of the last put


def new_created() -> tuple[float, str]:
    """(UNIX seconds, ISO 8601 UTC with microseconds) of now, strictly increasing within
    the process: two puts never share a creation time, however fast."""
    global _last_created, _second
    with _created_lock:
        micros = max(time.time_ns() // 1000, _last_created + 1)
        _last_created = micros
    seconds, fraction = divmod(micros, 1_000_000)
    kept = _second  # the formatted second is the same for every put within it
    if kept[0] != seconds:
        kept = _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return micros / 1e6, f"{kept[1]}.{fraction:06d}Z"


@dataclass(frozen=True)
class DatasetRef:
    """A reference to one stored dataset: what `Butler.ref` returns and what a put's
    ``inputs`` name.

    Attributes
    ----------
    dataset_type, data_id, run
        Where it is: read it with ``b.get(ref.dataset_type, ref.data_id,
        collections=[ref.run])``.
    checksum
        Its sha256 when the repository keeps checksums.
    created
        Its creation time (ISO 8601 UTC): with the run, which version of the data ID it is.
    """

    dataset_type: str
    data_id: Mapping[str, Any] = field(default_factory=dict)
    run: str = "default"
    checksum: str | None = None
    created: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON)."""
        data: dict[str, Any] = {
            "dataset_type": self.dataset_type,
            "data_id": dict(self.data_id),
            "run": self.run,
        }
        if self.checksum is not None:
            data["checksum"] = self.checksum
        if self.created is not None:
            data["created"] = self.created
        return data

    @classmethod
    def from_dict(cls, data: Any) -> DatasetRef:
        """Rebuild from `to_dict` output read from a repository (validated: `FormatError`)."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError("not a mapping")
            name, data_id = data["dataset_type"], data.get("data_id", {})
            checksum, created = data.get("checksum"), data.get("created")
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise TypeError(f"dataset type {name!r}")
            if not isinstance(data_id, Mapping) or not all(
                isinstance(k, str)
                and isinstance(v, int | str)
                and not isinstance(v, bool)
                and len(str(v)) <= 200
                for k, v in data_id.items()
            ):
                raise TypeError(f"data ID {data_id!r}")
            if checksum is not None and not (isinstance(checksum, str) and _HEX64.match(checksum)):
                raise TypeError(f"checksum {checksum!r}")
            if created is not None and not (isinstance(created, str) and _ISO.match(created)):
                raise TypeError(f"created {created!r}")
            run = check_run_name(data.get("run", "default"))
        except (KeyError, TypeError, InvalidDataIdError) as exc:
            raise FormatError(f"malformed dataset reference in provenance: {exc}") from None
        return cls(name, dict(data_id), run, checksum, created)

    def __str__(self) -> str:
        ids = ", ".join(f"{k}={v!r}" for k, v in self.data_id.items())
        return f"{self.dataset_type}({ids}) in run {self.run!r}"


@dataclass(frozen=True)
class Provenance:
    """What `Butler.provenance` returns: how one dataset was made.

    Attributes
    ----------
    ref
        The dataset itself.
    user, host, python
        Who wrote it, where, with which Python.
    butler_version
        Version of butler-core that wrote it.
    serializer
        ``{"distribution": ..., "version": ...}`` of the plugin whose serializer wrote it.
    inputs
        The datasets it was made from, as recorded.
    """

    ref: DatasetRef
    user: str | None = None
    host: str | None = None
    python: str | None = None
    butler_version: str | None = None
    serializer: Mapping[str, Any] = field(default_factory=dict)
    inputs: tuple[DatasetRef, ...] = ()


@functools.cache
def _version(distribution: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(distribution)
    except Exception:  # not installed as a distribution (a user's own serializer)
        return None


@functools.cache
def _where() -> tuple[str | None, str | None]:
    import getpass
    import socket

    try:
        user: str | None = getpass.getuser()
    except Exception:  # no login name in this environment (containers)
        user = None
    return user, socket.gethostname() or None


@functools.cache
def _python_version() -> str:
    import platform  # here, not at ``import butler``: only puts need it

    return platform.python_version()


def provenance_record(
    storage: Storage,
    *,
    run: str,
    created: str,
    distribution: str,
    inputs: Sequence[DatasetRef],
) -> dict[str, Any]:
    """The provenance to commit with a put's bytes; writes the inputs record first when
    the inputs are too long to keep inline."""
    user, host = _where()
    record: dict[str, Any] = {
        "run": run,
        "created": created,
        "user": user,
        "host": host,
        "butler": _version("butler-core"),
        "python": _python_version(),
        "serializer": {"distribution": distribution, "version": _version(distribution)},
    }
    if inputs:
        refs = [r.to_dict() for r in inputs]
        text = json.dumps(refs, separators=(",", ":"), sort_keys=True)
        if len(text) <= MAX_INLINE_INPUTS:
            record["inputs"] = refs
        else:
            digest = hashlib.sha256(text.encode()).hexdigest()
            # Content-addressed: if it exists, the same inputs were recorded before.
            with contextlib.suppress(DatasetExistsError):
                storage.write_bytes(f"{RECORD_PREFIX}{digest}.json", text.encode(), overwrite=False)
            record["inputs_record"] = digest
            record["n_inputs"] = len(refs)
    return record


def read_provenance(storage: Storage, ref: DatasetRef, metadata: Mapping[str, Any]) -> Provenance:
    """The `Provenance` of a dataset from its stored metadata (untrusted: validated)."""
    record = metadata.get("provenance")
    if not isinstance(record, Mapping):
        return Provenance(ref=ref)

    def text(name: str) -> str | None:
        value = record.get(name)
        return value if isinstance(value, str) and len(value) <= 256 else None

    serializer = record.get("serializer")
    return Provenance(
        ref=ref,
        user=text("user"),
        host=text("host"),
        python=text("python"),
        butler_version=text("butler"),
        serializer={
            k: v
            for k, v in (serializer.items() if isinstance(serializer, Mapping) else ())
            if k in ("distribution", "version") and isinstance(v, str) and len(v) <= 256
        },
        inputs=tuple(_inputs(storage, record)),
    )


def _inputs(storage: Storage, record: Mapping[str, Any]) -> list[DatasetRef]:
    inline, digest = record.get("inputs"), record.get("inputs_record")
    if inline is not None:
        if not isinstance(inline, list):
            raise FormatError("provenance 'inputs' is not a list")
        return [DatasetRef.from_dict(r) for r in inline]
    if digest is None:
        return []
    if not isinstance(digest, str) or not _HEX64.match(digest):
        raise FormatError(f"provenance names an input record {str(digest)[:80]!r}; not a digest")
    key = f"{RECORD_PREFIX}{digest}.json"
    try:
        with storage.open(key) as f:
            data = f.read(MAX_RECORD_BYTES + 1)
    except DatasetNotFoundError:
        raise FormatError(
            f"provenance names the input record {storage.uri(key)!r}, which does not exist"
        ) from None
    if len(data) > MAX_RECORD_BYTES:  # told as such: "does not match its digest" hid it
        raise FormatError(
            f"the input record {storage.uri(key)!r} is larger than {MAX_RECORD_BYTES:,} "
            f"bytes, the most an input record may hold"
        )
    if hashlib.sha256(data).hexdigest() != digest:
        raise FormatError(f"the input record {storage.uri(key)!r} does not match its digest")
    try:
        refs = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"the input record {storage.uri(key)!r} is not JSON: {exc}") from None
    if not isinstance(refs, list):
        raise FormatError(f"the input record {storage.uri(key)!r} is not a list")
    return [DatasetRef.from_dict(r) for r in refs]


def check_inputs(inputs: object) -> None:
    """Refuse ``inputs`` given as one thing instead of a list of refs (``inputs="raw"``
    was iterated letter by letter, each refused as "not 'r'")."""
    if inputs is None or type(inputs) is list:  # every put: no ABC checks for the usual
        return
    if isinstance(inputs, str | bytes | Mapping | DatasetRef) or not isinstance(
        inputs, Iterable | None
    ):
        raise DatasetTypeError(
            f"inputs must be a list of DatasetRef objects (from Butler.ref), not a "
            f"{type(inputs).__name__}"
        )


def ref_from_metadata(
    dataset_type: str, data_id: Mapping[str, Any], run: str, meta: Mapping[str, Any]
) -> DatasetRef:
    """The `DatasetRef` of a stored dataset from its metadata."""
    record = meta.get("provenance")
    created = record.get("created") if isinstance(record, Mapping) else None
    if not (isinstance(created, str) and _ISO.match(created)):
        when = meta.get("created")
        created = None
        if isinstance(when, int | float) and not isinstance(when, bool) and when > 0:
            try:
                stamp = _dt.datetime.fromtimestamp(float(when), tz=_dt.UTC)
            except (OverflowError, OSError, ValueError):  # untrusted: beyond any date
                stamp = None
            if stamp is not None:
                created = stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    checksum = meta.get("sha256")
    if not (isinstance(checksum, str) and _HEX64.match(checksum)):
        checksum = None
    return DatasetRef(dataset_type, dict(data_id), run, checksum, created)
