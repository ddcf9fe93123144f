"""`ButlerLocation`: everything a serializer needs to read or write one dataset."""

from __future__ import annotations

import contextlib
import errno
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, BinaryIO

from ._errors import ButlerError, FormatError, StorageError
from ._storage import ProgressCallback, ReadAccess, Storage
from ._types import resolve_policy_type, resolve_subclass, type_name

if TYPE_CHECKING:
    from ._declarations import Serializer
    from ._registry import Registry

__all__ = ["ButlerLocation"]


@dataclass(frozen=True)
class ButlerLocation:
    """One dataset's place, format and options, handed to its serializer.

    Serializers never talk to the repository: they use this object's file helpers
    (`open_read`, `open_write`, `local_path`, `local_path_for_write`), which go through the
    storage's atomic writes, and `read_type` to restore the concrete class that was written.

    A location is immutable. `Butler.get` and `Butler.put` build it *resolved*, in one
    step: the stored metadata (read side), the format the dataset was written in, the
    dataset type's class, the concrete class being written (write side) and the
    serializer are all decided before it exists, so ``read()``/``write()`` go straight to
    the serializer. A location built without them (`Butler.location`, hand-built ones in
    tests) resolves what it needs on each call through ``registry`` (default: the
    process-wide one), never caching it on itself.

    Attributes
    ----------
    locations
        Storage keys (relative paths) of the dataset; most formats use only ``key``.
    storage
        The `Storage` holding the bytes.
    format
        Format name (on read: the format the dataset was *written* in).
    python_type
        Dotted name of the dataset type's python type.
    dataset_type, data_id
        What the user asked for; used in every error message.
    additional_data
        Format-specific location details from the policy (``hdu``, ``path``...).
    parameters
        Read-time selections (``section``, ``columns``, ``slice``...).
    serializer_args
        Keyword arguments for the serializer, from the dataset type's policy.
    serializer
        The resolved serializer (read: for the recorded concrete type and format; write:
        for the object's type), or ``None`` when not resolved.
    expected
        The dataset type's class, when resolved.
    written_type
        Dotted name of the concrete class being written (write side).
    stored
        Metadata committed with the dataset (read side), when resolved.
    """

    locations: list[str]
    storage: Storage
    format: str
    python_type: str
    dataset_type: str = ""
    data_id: Mapping[str, Any] = field(default_factory=dict)
    additional_data: Mapping[str, Any] = field(default_factory=dict)
    parameters: Mapping[str, Any] = field(default_factory=dict)
    serializer_args: Mapping[str, Any] = field(default_factory=dict)
    overwrite: bool = False
    checksum: bool = False
    allow_pickle: bool = False
    progress: ProgressCallback | None = field(default=None, repr=False)
    #: Most bytes one read may allocate (``None``: `default_max_read_bytes`).
    max_read_bytes: int | None = None
    serializer: Serializer | None = field(default=None, repr=False)
    expected: type | None = field(default=None, repr=False)
    written_type: str | None = None
    stored: Mapping[str, Any] | None = field(default=None, repr=False)
    #: Only for unresolved locations: where to look serializers up.
    registry: Registry | None = field(default=None, repr=False)
    #: The run the dataset belongs to.
    run: str = "default"
    #: Write side: the provenance record and creation time committed with the bytes.
    provenance: Mapping[str, Any] | None = field(default=None, repr=False)
    created: float | None = field(default=None, repr=False)
    #: A standalone file (`butler.read_file`, the CLI's FILE arguments), not a dataset.
    standalone: bool = False

    def evolve(self, **changes: Any) -> ButlerLocation:
        """A copy with ``changes`` (what `dataclasses.replace` does, without re-running
        ``__init__`` field by field: a get and a put each derive several locations).

        .. versionadded:: 0.3

        Raises
        ------
        TypeError
            For a name that is not a field.
        """
        if not _FIELD_NAMES.issuperset(changes):
            unknown = sorted(set(changes) - _FIELD_NAMES)
            raise TypeError(f"ButlerLocation has no field(s) {unknown}")
        if type(self) is not ButlerLocation:  # a subclass may validate in __init__
            return replace(self, **changes)
        new = object.__new__(ButlerLocation)
        state = new.__dict__
        state.update(self.__dict__)
        state.update(changes)
        return new

    # -- description -------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The primary storage key."""
        return self.locations[0]

    @property
    def uri(self) -> str:
        """Displayable URI of the primary key (no secrets)."""
        return self.storage.uri(self.key)

    def describe(self) -> str:
        """``dataset 'calexp' {'visit': 1} at /repo/calexp/000001.fits`` for messages;
        ``file '/data/img.fits'`` for a standalone file (`butler.read_file`, the CLI's
        FILE, SRC and DST), which has no dataset type nor data ID."""
        if self.standalone:
            return f"file {self.uri!r}"
        return f"dataset {self.dataset_type!r} {dict(self.data_id)} at {self.uri!r}"

    # -- files for serializers ---------------------------------------------------------

    def write_metadata(self) -> dict[str, Any]:
        """Metadata committed with the bytes: format, concrete type, dataset type, data ID,
        creation time and (from `Butler.put`) the provenance record."""
        meta = {
            "format": self.format,
            "python_type": self.written_type or self.python_type,
            "dataset_type": self.dataset_type,
            "data_id": dict(self.data_id),
            "created": time.time() if self.created is None else self.created,
        }
        if self.provenance is not None:
            meta["provenance"] = dict(self.provenance)
        return meta

    def open_write(self) -> contextlib.AbstractContextManager[BinaryIO]:
        """Binary file whose content replaces the dataset atomically when the block succeeds."""
        return self.storage.atomic_write(
            self.key,
            metadata=self.write_metadata(),
            overwrite=self.overwrite,
            checksum=self.checksum,
            progress=self.progress,
        )

    def local_path_for_write(self) -> contextlib.AbstractContextManager[str]:
        """Local path to write (for libraries that need one); committed atomically on success."""
        return self.storage.atomic_local_path(
            self.key,
            metadata=self.write_metadata(),
            overwrite=self.overwrite,
            checksum=self.checksum,
            progress=self.progress,
        )

    def open_read(
        self,
        *,
        access: ReadAccess = "sequential",
        block_size: int | None = None,
        cache_blocks: int | None = None,
        cache_type: str | None = None,
    ) -> BinaryIO:
        """Binary file object (seekable where the storage allows) of the stored dataset.

        The read hints (``access="random"`` for cutouts and slices, ``block_size``...) go
        to `Storage.open`; every storage accepts them and ignores what it cannot use.
        """
        return self.storage.open(
            self.key,
            progress=self.progress,
            access=access,
            block_size=block_size,
            cache_blocks=cache_blocks,
            cache_type=cache_type,
        )

    def read_bytes(self) -> bytes:
        """The stored dataset's bytes, whole (for formats that parse bytes, such as JSON).

        Goes through `Storage.read_bytes`, which a storage may answer without a file
        object; with a ``progress`` callback, through `open_read` so it is reported.

        .. versionadded:: 0.3
        """
        if self.progress is not None:
            with self.open_read() as f:
                return f.read()
        return self.storage.read_bytes(self.key)

    def local_path(self) -> contextlib.AbstractContextManager[str]:
        """Local path of the stored dataset; downloaded to a temporary file if need be."""
        return self.storage.local_path(self.key)

    # -- types -------------------------------------------------------------------------

    def stored_metadata(self) -> Mapping[str, Any]:
        """Metadata committed with the stored dataset (as resolved, else fetched now)."""
        if self.stored is not None:
            return self.stored
        return self.storage.metadata(self.key)

    def expected_type(self) -> type:
        """The dataset type's python type.

        It is imported only if an installed plugin registered a serializer for it (or the
        Butler's reader allowed its package): a repository's policy never chooses what runs.
        """
        if self.expected is not None:
            return self.expected
        return resolve_policy_type(self.python_type, registered=self._registry().type_names)

    def read_type(self, recorded: str | None = None) -> type:
        """Class to rebuild the dataset as: the recorded concrete type when it is a subclass of
        the dataset type's python type.

        Parameters
        ----------
        recorded
            Type name recorded inside the file by the serializer itself; defaults to the
            one in the storage metadata.

        Raises
        ------
        FormatError
            If the recorded type is not a subclass of the dataset type's python type.
        """
        if recorded is None:
            recorded = self.stored_metadata().get("python_type")
        if recorded is not None and not isinstance(recorded, str):
            raise self.format_error(f"the recorded python type {recorded!r} is not a name")
        expected = self.expected_type()
        if recorded is None or recorded == self.python_type:
            return expected  # the common case: no subclass, nothing to check or describe
        return resolve_subclass(recorded, expected, what=self.describe())

    # -- dispatch ----------------------------------------------------------------------

    def _registry(self) -> Registry:
        if self.registry is not None:
            return self.registry
        from ._plugins import default_registry

        return default_registry()

    def check_arguments(self) -> None:
        """Refuse parameters and serializer arguments the format does not declare, before
        any byte is read or written (``{"sectoin": ...}`` is an error, not ignored).

        Raises
        ------
        ParameterError
            Naming the unknown and the accepted names.
        """
        if not self.parameters and not self.serializer_args:
            return  # nothing to refuse (the common case: no description built)
        formats = self._registry().formats
        descriptor = formats.get(self.format)
        if descriptor is None:
            return  # the serializer lookup reports the missing format and what to install
        what = self.describe()
        descriptor.check_parameters(self.parameters, what=what)
        descriptor.check_serializer_args(self.serializer_args, what=what)

    def serializer_for(self, python_type: type) -> Serializer:
        """The serializer for ``python_type`` in this location's format and storage."""
        return self._registry().find(python_type, self.storage.type_name, self.format)

    def write(self, obj: Any) -> None:
        """Write ``obj`` with the resolved serializer (or the one registered for its type).

        Raises
        ------
        FormatError
            If the serializer fails on the object; `StorageError` if the storage does.
        """
        if self.serializer is None:  # resolved locations were checked when resolved
            self.check_arguments()
        location = self
        if self.serializer is None or self.written_type != type_name(type(obj)):
            location = self.evolve(
                serializer=self.serializer_for(type(obj)), written_type=type_name(type(obj))
            )
        assert location.serializer is not None
        try:
            location.serializer.write(obj, location, **location.serializer_args)
        except Exception as exc:
            raise location._translated(exc, "write")  # noqa: B904 - the cause is set there

    def read(self) -> Any:
        """Read the dataset with the resolved serializer (or the one for its recorded type).

        Raises
        ------
        FormatError
            If the bytes are corrupt, truncated or not in the recorded format.
        """
        if self.serializer is None:  # resolved locations were checked when resolved
            self.check_arguments()
        serializer = self.serializer or self.serializer_for(self.read_type())
        try:
            return serializer.read(self, **self.serializer_args)
        except Exception as exc:
            raise self._translated(exc, "read")  # noqa: B904 - the cause is set there

    def _translated(self, exc: Exception, action: str) -> Exception:
        """The error to raise for ``exc`` escaping a serializer: ``exc`` itself if it is a
        butler error, else a `StorageError` or `FormatError` naming the dataset, caused by
        ``exc``. (A plain ``try``/``except`` at the call, not a context manager: entering
        a generator-based one cost every get and put microseconds.)"""
        if isinstance(exc, ButlerError):
            return exc
        error: ButlerError
        if isinstance(exc, MemoryError):
            # What a file declares is checked against max_read_bytes first; this is the
            # rest (a size no check foresaw): never a raw MemoryError.
            error = FormatError(
                f"cannot {action} {self.describe()}: not enough memory; read part of it "
                f"(parameters such as a section or slice) or lower max_read_bytes so that "
                f"oversize reads are refused before allocating"
            )
            error.__cause__ = None
            error.__suppress_context__ = True  # "from None": the MemoryError says nothing
            return error
        # A real OS failure carries an errno, possibly on an error a library raised
        # while handling it (ENOSPC under astropy's own exception); libraries report
        # corrupt files as errno-less OSErrors, which are format errors.
        os_error = _storage_failure_in_chain(exc)
        if isinstance(exc, OSError) and exc.errno is not None:
            error = StorageError(f"cannot {action} {self.describe()}: {exc}")
        elif os_error is not None:
            error = StorageError(
                f"cannot {action} {self.describe()}: {os_error.strerror or os_error}"
            )
        elif isinstance(exc, OSError):
            error = FormatError(f"cannot {action} {self.describe()} as {self.format!r}: {exc}")
        else:
            error = FormatError(
                f"cannot {action} {self.describe()} as {self.format!r}: {type(exc).__name__}: {exc}"
            )
        error.__cause__ = exc  # as "raise error from exc"
        return error

    def check_read_size(self, nbytes: int, what: str = "the data") -> None:
        """Refuse to allocate ``nbytes`` (the size a file *declares*) past the read limit.

        Serializers call this before allocating what a header, shape or compressed stream
        announces, so a tiny hostile file cannot exhaust memory.

        Raises
        ------
        FormatError
            Naming the declared size, the limit and how to raise it.
        """
        from ._limits import ENV_MAX_READ_BYTES, default_max_read_bytes

        limit = self.max_read_bytes
        if limit is None:
            limit = default_max_read_bytes()
        if nbytes > limit:
            raise FormatError(
                f"{self.describe()}: {what} declares {nbytes:,} bytes, more than the read limit "
                f"of {limit:,} bytes; raise it with Butler(..., max_read_bytes=N), "
                f"read_file(..., max_read_bytes=N) or ${ENV_MAX_READ_BYTES} if you trust "
                f"this dataset"
            )

    def format_error(self, message: str) -> FormatError:
        """A `FormatError` naming this dataset, for serializers' own checks."""
        return FormatError(f"{self.describe()}: {message}")


def _storage_failure_in_chain(exc: BaseException) -> OSError | None:
    """An `OSError` saying the storage itself failed (disk full, quota, I/O error, read-only)
    in ``exc``'s cause/context chain: libraries sometimes hide it under their own error."""
    current: BaseException | None = exc.__cause__ or exc.__context__
    for _ in range(16):
        if current is None:
            return None
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


_STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS})
_FIELD_NAMES = frozenset(f.name for f in fields(ButlerLocation))
