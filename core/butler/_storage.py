"""The `Storage` base class: one kind of place where datasets' bytes live.

A storage moves bytes by key (a relative, ``/``-separated path under the repository root);
it never serializes. Serializers reach it through `ButlerLocation`'s file helpers.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO, ClassVar, Literal, get_args

from ._errors import DatasetNotFoundError, FormatError, InvalidDataIdError, StorageError

if TYPE_CHECKING:
    from ._declarations import StorageSpec
    from ._index import Index

__all__ = [
    "POLICY_KEY",
    "READ_HINTS",
    "RESERVED_PREFIX",
    "ProgressCallback",
    "RandomAccessReader",
    "ReadAccess",
    "ReadHints",
    "Storage",
    "is_reserved_key",
    "key_suffix",
]

#: ``progress(bytes_done, bytes_total_or_None)``, called as bytes move.
ProgressCallback = Callable[[int, "int | None"], None]

#: Where the repository policy lives in storages that keep it as a file.
POLICY_KEY = "butler.yaml"

#: Keys under this prefix belong to butler itself (locks, index, sidecars of the repository).
#: Templates cannot produce it: no key segment may start with ``"."``.
RESERVED_PREFIX = ".butler/"


#: How a reader will move through a file: ``"sequential"`` (front to back, the whole file or
#: most of it) or ``"random"`` (seeks to small pieces: a cutout, a slice, HDF5 chunks).
ReadAccess = Literal["random", "sequential"]


@dataclass(frozen=True)
class ReadHints:
    """What a serializer tells `Storage.open` about the read to come.

    Every storage accepts every hint and ignores those it cannot use: a serializer never
    needs to know which storage it reads from.

    Attributes
    ----------
    access
        ``"sequential"`` (default) or ``"random"``. Posix advises the kernel
        (``posix_fadvise``); S3 uses small cached blocks for random reads.
    block_size
        Bytes fetched per request by storages that read remote bytes in blocks (S3).
    cache_blocks
        How many such blocks a reader keeps (S3).
    cache_type
        The storage's own name for a read strategy, for storages that have several (S3:
        ``"blocks"``, butler-s3's reader, or an fsspec cache name such as
        ``"readahead"``); others ignore it.

    .. versionadded:: 0.2
    """

    access: ReadAccess = "sequential"
    block_size: int | None = None
    cache_blocks: int | None = None
    cache_type: str | None = None

    def __post_init__(self) -> None:
        # Hints may come from a repository's policy (serializer_args): checked, by name.
        if self.access not in get_args(ReadAccess):
            raise StorageError(
                f"read hint access={self.access!r}: expected one of {list(get_args(ReadAccess))}"
            )
        for name in ("block_size", "cache_blocks"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise StorageError(f"read hint {name}={value!r}: expected an integer >= 1 or None")
            if value is not None and value < 1:
                raise StorageError(f"read hint {name}={value!r}: expected an integer >= 1 or None")
        if self.cache_type is not None and not isinstance(self.cache_type, str):
            raise StorageError(f"read hint cache_type={self.cache_type!r}: expected a string")


_DEFAULT_HINTS = ReadHints()

#: The keyword arguments every `Storage.open` accepts besides ``mode`` and ``progress``.
READ_HINTS = ("access", "block_size", "cache_blocks", "cache_type")


def key_suffix(key: str) -> str:
    """The extension(s) of a key's last segment (``"a/b.fits.gz"`` -> ``".fits.gz"``), kept
    on temporary local files because libraries choose compression and format by them."""
    name = key.rsplit("/", 1)[-1]
    dot = name.find(".")
    return name[dot:] if dot > 0 else ""


def is_reserved_key(key: str) -> bool:
    """True for keys that belong to butler itself (the policy, anything under
    `RESERVED_PREFIX`): no dataset may be written, read or removed there."""
    return key == POLICY_KEY or key.startswith(RESERVED_PREFIX) or key == RESERVED_PREFIX[:-1]


#: Largest policy butler reads (a policy with thousands of dataset types is ~1 MB).
MAX_POLICY_BYTES = 16 * 2**20

#: Chunk size for copies between file objects.
COPY_CHUNK = 8 * 1024 * 1024


class CountingWriter(io.RawIOBase):
    """A write-only file wrapper that counts bytes, optionally hashes them, and reports progress.

    The hash is computed while the bytes stream, so a checksum costs no second pass.
    """

    def __init__(
        self, raw: IO[bytes], *, checksum: bool = False, progress: ProgressCallback | None = None
    ) -> None:
        super().__init__()
        self.raw = raw
        self.size = 0
        self._hash = hashlib.sha256() if checksum else None
        self._progress = progress

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = self.raw.write(view)
        n = len(view) if written is None else written
        if self._hash is not None:
            self._hash.update(view[:n])
        self.size += n
        if self._progress is not None:
            self._progress(self.size, None)
        return n

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()

    @property
    def sha256(self) -> str | None:
        """Hex digest of everything written, when checksumming."""
        return None if self._hash is None else self._hash.hexdigest()

    def close(self) -> None:  # the storage owns (and closes) ``raw``
        super().close()


class ProgressReader(io.RawIOBase):
    """A read-only wrapper reporting progress; seeks and tells pass through."""

    def __init__(self, raw: IO[bytes], total: int | None, progress: ProgressCallback) -> None:
        super().__init__()
        self.raw = raw
        self.total = total
        self._progress = progress
        self._done = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self.raw.seekable()

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            # Progress is the furthest byte reached: re-reads after a seek do not count twice.
            end = self.raw.tell() if self.raw.seekable() else self._done + n
            if end > self._done:
                self._done = end
                self._progress(self._done, self.total)
        return n or 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.raw.close()
        super().close()


class RandomAccessReader(io.RawIOBase):
    """Base of seekable readers over remote bytes of known ``size`` (S3 objects, database
    blobs): position bookkeeping and the `io` protocol. Subclasses implement ``readinto``
    (reading at ``self._pos`` and advancing it) and may override ``read``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise OSError(22, f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        remaining = max(0, self.size - self._pos)
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n == 0:
            return b""
        buffer = bytearray(n)
        got = self.readinto(buffer)
        del buffer[got:]
        return bytes(buffer)

    def readall(self) -> bytes:
        return self.read(-1)


def file_sha256(path: str) -> str:
    """sha256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class Storage(abc.ABC):
    """Base class of storages. Subclasses implement the primitives; the base does the rest.

    Parameters
    ----------
    root
        The repository root as given by the user (path or URI).
    **options
        Storage-specific connection options (credentials, endpoints). They are kept in
        memory only and never written to the repository policy.

    Notes
    -----
    Keys are relative ``/``-separated paths, checked by `check_key` (one rule for every
    storage). Every write goes through `atomic_write` or `atomic_local_path`: readers see
    the complete old dataset or the complete new one, and ``metadata`` (completed by
    `full_metadata`) is committed together with the bytes.

    A subclass implements `exists`, `_open`, `atomic_write`, `metadata`, `size`, `remove`,
    `list` and `uri`; the base gives `open` (mode, key and read hints checked once),
    `local_path` and `atomic_local_path` (through a local temporary file), the policy
    helpers and the error helpers.

    Its identity (`type_name`, `schemes`, `description`) is declared once, in the plugin's
    `StorageSpec` (which discovery reads without importing the storage's module), and read
    from there when the class is defined::

        class S3Storage(Storage, declared_by=butler_s3._plugin.butler_storages): ...

    The spec naming ``"<module>:<class>"`` of the class is the one used.
    """

    #: Storage type name used in serializer registrations (``"posix"``).
    type_name: ClassVar[str] = ""
    #: URI schemes this storage serves (``("file",)``).
    schemes: ClassVar[tuple[str, ...]] = ()
    #: One line shown by ``butler plugins``.
    description: ClassVar[str] = ""
    #: True when `local_path` returns the dataset's real file without copying.
    has_local_paths: ClassVar[bool] = False
    #: True when `exists` is cheap next to a write (a stat, a row lookup). `Butler.put`
    #: then refuses an existing dataset before serializing; a storage whose `exists` is a
    #: request of its own (S3) sets it False and lets the create-only commit refuse it.
    #:
    #: .. versionadded:: 0.2
    cheap_exists: ClassVar[bool] = True
    #: True when the class overrides `read_small` and no read method (`metadata`,
    #: `read_bytes`, `_read_all`, `open`, `_open`) is overridden below that override
    #: (set when the class is defined): `Butler.get` tries its small-get shortcut only
    #: then, so a storage without one does not map each data ID twice, and a subclass
    #: changing what reads return (decrypting, adding metadata) is never bypassed by the
    #: ``read_small`` it inherits.
    #:
    #: .. versionadded:: 0.3
    small_reads: ClassVar[bool] = False
    #: Directory for local temporary files (`local_path`, `atomic_local_path`); ``None``:
    #: the system's.
    tmpdir: str | None = None

    def __init_subclass__(
        cls, *, declared_by: Callable[[], Iterable[StorageSpec]] | None = None, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        cls.small_reads = _small_reads(cls)
        if declared_by is None:
            return
        ref = f"{cls.__module__}:{cls.__qualname__}"
        specs = [s for s in declared_by() if s.cls == ref or s.cls is cls]
        if len(specs) != 1:
            raise TypeError(
                f"{declared_by.__module__}.{declared_by.__qualname__}() declares "
                f"{len(specs)} storage(s) for {ref!r}; expected exactly one StorageSpec "
                f"naming it"
            )
        spec = specs[0]
        cls.type_name = spec.type_name
        cls.schemes = tuple(spec.schemes)
        cls.description = spec.description

    def __init__(self, root: str, **options: Any) -> None:
        self.root = root
        self.options = options
        self._local_policy_lock = threading.RLock()

    # -- repository lifecycle ---------------------------------------------------------

    def initialize(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Create whatever the repository needs (directory, bucket prefix, schema)."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. The storage may not be used afterwards."""

    @staticmethod
    def policy_from_bytes(data: bytes, *, where: str) -> dict[str, Any]:
        """Parse stored policy bytes as untrusted input: safe YAML tags only, no anchors
        or aliases, and a mapping at the top (`FormatError` otherwise, naming ``where``)."""
        from ._yaml import load

        policy = load(data, what=f"repository policy {where!r}")
        if not isinstance(policy, dict):
            raise FormatError(f"repository policy {where!r} is not a mapping")
        return policy

    @staticmethod
    def policy_to_bytes(policy: Mapping[str, Any]) -> bytes:
        """Serialize a policy as `policy_from_bytes` reads it back (never with anchors)."""
        from ._yaml import dump

        return dump(dict(policy)).encode()

    def read_policy(self) -> dict[str, Any] | None:
        """Return the stored repository policy, or ``None`` if there is no repository.

        The policy is untrusted input: YAML tags that build objects and YAML anchors/aliases
        (unbounded expansion) are refused with a `FormatError`.
        """
        if not self.exists(POLICY_KEY):
            return None
        with self.open(POLICY_KEY) as f:
            data = f.read(MAX_POLICY_BYTES + 1)
        if len(data) > MAX_POLICY_BYTES:
            raise FormatError(
                f"repository policy {self.uri(POLICY_KEY)!r} is larger than "
                f"{MAX_POLICY_BYTES:,} bytes; butler never writes such a policy"
            )
        return self.policy_from_bytes(data, where=self.uri(POLICY_KEY))

    def write_policy(self, policy: Mapping[str, Any]) -> None:
        """Atomically replace the repository policy (use `update_policy` to change it)."""
        with self.atomic_write(POLICY_KEY) as f:
            f.write(self.policy_to_bytes(policy))

    @contextlib.contextmanager
    def policy_lock(self) -> Iterator[None]:
        """Hold the lock that serializes policy changes.

        The default only serializes the threads of this process; storages shared between
        processes override it (posix: ``flock`` on a reserved lock file) or override
        `update_policy` with a compare-and-swap (S3: conditional PUT; databases: a
        transaction).
        """
        with self._local_policy_lock:
            yield

    def update_policy(
        self, change: Callable[[dict[str, Any] | None], Mapping[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read-modify-write the policy atomically with respect to every other writer.

        ``change`` receives the current policy (``None`` if there is none) and returns the
        new one, or ``None`` to leave it as is. It may be called more than once (after a
        lost compare-and-swap) and must not have side effects. Returns the policy now stored.
        """
        with self.policy_lock():
            current = self.read_policy()
            new = change(current)
            if new is None:
                return current
            self.write_policy(new)
            return dict(new)

    # -- dataset I/O (subclasses implement) -------------------------------------------

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True when a dataset is stored under ``key``."""

    def check_key(self, key: str) -> tuple[str, ...]:
        """Refuse keys that could reach outside the repository or butler's own files;
        return the key's segments.

        One rule for every storage: a key is a non-empty relative ``/``-separated path
        without NUL or backslash, whose segments are neither empty, ``.`` nor ``..``, and
        never start with ``"."`` (hidden names are butler's own: temporary files, sidecars)
        except under the reserved ``.butler/`` area. Storages add their own limits (file
        name lengths, S3 key bytes) after calling it.

        Raises
        ------
        InvalidDataIdError
            Naming the key and what is wrong with it.
        """
        return check_key(key)

    def full_metadata(
        self, metadata: Mapping[str, Any] | None, size: int, sha256: str | None
    ) -> dict[str, Any]:
        """The metadata committed with a write: the caller's, plus ``size`` and, when
        checksumming, ``sha256``.

        Storages call it just before their commit step; the result is also kept for the
        calling thread (`last_committed_metadata`), so that `Butler` can index the dataset
        without reading its metadata back.

        .. versionchanged:: 0.2
           An instance method (it was a static method).
        """
        meta = dict(metadata or {})
        meta["size"] = size
        if sha256 is not None:
            meta["sha256"] = sha256
        self._receipts().last = meta
        return meta

    def _receipts(self) -> threading.local:
        receipts = self.__dict__.get("_receipt_local")
        if receipts is None:  # storages that skip Storage.__init__ still work
            receipts = self.__dict__.setdefault("_receipt_local", threading.local())
        return receipts

    def last_committed_metadata(self, *, clear: bool = False) -> dict[str, Any] | None:
        """The metadata this thread's last write prepared with `full_metadata` (``None`` if
        none, or if the storage never calls it); ``clear`` forgets it.

        .. versionadded:: 0.2
        """
        receipts = self._receipts()
        meta = getattr(receipts, "last", None)
        if clear:
            receipts.last = None
        return meta

    def default_index(self, repository: str) -> Index | None:
        """The embedded dataset index of this kind of storage for a repository, or ``None``
        when it has none (queries then list the storage).

        Posix: a SQLite file in the reserved area (``.butler/index.sqlite3``); memory: an
        in-process index; databases: tables in the same database. A database storage opened
        on an index URL gives the index of another repository kept in its database.

        .. versionadded:: 0.2
        """
        return None

    def open(
        self,
        key: str,
        mode: str = "rb",
        *,
        progress: ProgressCallback | None = None,
        access: ReadAccess = "sequential",
        block_size: int | None = None,
        cache_blocks: int | None = None,
        cache_type: str | None = None,
    ) -> BinaryIO:
        """Open a stored dataset for binary reading (seekable where the storage allows).

        Parameters
        ----------
        key
            The dataset's key.
        mode
            ``"rb"``: storages only read through `open` (write with `atomic_write`).
        progress
            Called as bytes are read.
        access, block_size, cache_blocks, cache_type
            Read hints (`ReadHints`): every storage accepts them and ignores what it
            cannot use, so a serializer tunes its reads without knowing the storage.

        Raises
        ------
        DatasetNotFoundError
            If nothing is stored under ``key``.
        StorageError
            For another mode, or a hint of the wrong type or value (naming it).
        InvalidDataIdError
            For a key `check_key` refuses.

        .. versionchanged:: 0.2
           The read hints.
        """
        if mode != "rb":
            raise StorageError(
                f"{type(self).__name__}.open() only reads (mode 'rb', not {mode!r}); "
                f"write with atomic_write()"
            )
        if access == "sequential" and block_size is cache_blocks is cache_type is None:
            hints = _DEFAULT_HINTS  # what nearly every read asks: built and checked once
        else:
            hints = ReadHints(access, block_size, cache_blocks, cache_type)
        return self._open(key, hints, progress)

    @abc.abstractmethod
    def _open(self, key: str, hints: ReadHints, progress: ProgressCallback | None) -> BinaryIO:
        """`open`'s primitive: ``mode`` and ``hints`` are checked; ``key`` is not yet."""

    @abc.abstractmethod
    def atomic_write(
        self,
        key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> contextlib.AbstractContextManager[BinaryIO]:
        """Context manager yielding a binary file; its bytes become visible only on success.

        On an exception (or a killed process) the previous dataset stays intact and nothing
        partial is visible. ``metadata`` (plus ``size`` and, with ``checksum``, ``sha256``)
        is committed with the bytes.

        Raises
        ------
        DatasetExistsError
            At commit, if ``overwrite`` is false and ``key`` exists (even if another process
            created it meanwhile).
        """

    @abc.abstractmethod
    def metadata(self, key: str) -> dict[str, Any]:
        """The metadata committed with a dataset (``{}`` for foreign files)."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Size of a stored dataset in bytes."""

    @abc.abstractmethod
    def remove(self, key: str) -> None:
        """Delete a dataset. Raises `DatasetNotFoundError` if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Yield the keys of stored datasets under ``prefix`` (never temporary files)."""

    @abc.abstractmethod
    def uri(self, key: str = "") -> str:
        """A displayable URI for a key (never containing secrets)."""

    def purge_debris(self, older_than: float = 3600.0) -> Sequence[str]:
        """Remove what killed writers left behind, if older than ``older_than`` seconds.

        Debris is never visible as a dataset (temporary files are hidden, incomplete
        uploads are not objects) but takes space. Returns descriptions of what was
        removed. Storages whose writes leave nothing behind (memory, database
        transactions) have nothing to purge.
        """
        return []

    # -- local paths (generic versions; posix overrides with real paths) --------------

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[str]:
        """Yield a local file path holding the dataset, for libraries that insist on one.

        The generic version downloads to a temporary file (in `tmpdir`, keeping the key's
        extension) removed afterwards. Prefer `open`.
        """
        self.check_key(key)
        fd, path = tempfile.mkstemp(prefix="butler-", suffix=key_suffix(key), dir=self.tmpdir)
        try:
            with os.fdopen(fd, "wb") as dst, self.open(key) as src:
                shutil.copyfileobj(src, dst, COPY_CHUNK)
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    @contextlib.contextmanager
    def atomic_local_path(
        self,
        key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Iterator[str]:
        """Yield a local path to write; on success its content is committed atomically.

        The generic version writes to a local temporary file (in `tmpdir`) and then
        streams it through `atomic_write`; the temporary file is removed in every case.

        Raises
        ------
        StorageError
            If the serializer wrote nothing at the path.
        """
        self.check_key(key)  # before the serializer does any work
        fd, path = tempfile.mkstemp(prefix="butler-", suffix=key_suffix(key), dir=self.tmpdir)
        os.close(fd)
        try:
            yield path
            if not os.path.exists(path):  # the serializer removed or renamed it
                raise StorageError(f"the serializer wrote nothing for {self.uri(key)!r}")
            with (
                open(path, "rb") as source,
                self.atomic_write(
                    key,
                    metadata=metadata,
                    overwrite=overwrite,
                    checksum=checksum,
                    progress=progress,
                ) as dst,
            ):
                shutil.copyfileobj(source, dst, COPY_CHUNK)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    # -- conveniences -----------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        """Return a whole dataset's bytes."""
        return self._read_all(key)

    def read_small(self, key: str, max_bytes: int) -> tuple[dict[str, Any], bytes] | None:
        """A small dataset's metadata and whole bytes in one step, or ``None``.

        The shortcut of small gets: a storage that can hand both over cheaply (posix: one
        descriptor, its extended attribute, one read) answers when the stored file is a
        plain dataset of at most ``max_bytes`` bytes whose metadata records its ``size``,
        and the bytes read are exactly that size. ``None`` for anything else (absent,
        larger, unusual, or a storage without the shortcut, as by default): the caller
        then takes the general path (`metadata`, then a read), which reports what is
        wrong. It never raises for the dataset's state, and answers ``None`` for a key
        `check_key` refuses (the general path raises that error).

        .. versionadded:: 0.3
        """
        return None

    def _read_all(self, key: str) -> bytes:
        """`read_bytes`'s primitive: through `open` by default; a storage that can read a
        whole dataset without a file object (posix: straight from the descriptor) answers
        it here.

        .. versionadded:: 0.3
        """
        with self.open(key) as f:
            return f.read()

    def write_bytes(self, key: str, data: bytes, **kwargs: Any) -> None:
        """Atomically write ``data`` under ``key`` (keyword arguments as `atomic_write`)."""
        with self.atomic_write(key, **kwargs) as f:
            f.write(data)

    def not_found(self, key: str) -> DatasetNotFoundError:
        """The error to raise for a missing key."""
        return DatasetNotFoundError(f"no dataset at {self.uri(key)!r}")

    def wrap_os_error(self, exc: OSError, action: str, key: str) -> StorageError:
        """Translate an `OSError` into a `StorageError` naming the action and location."""
        return StorageError(f"cannot {action} {self.uri(key)!r}: {exc.strerror or exc}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri()!r})"


#: What `read_small` hands over in one step, each of which a subclass may change.
_SMALL_READ_METHODS = ("metadata", "read_bytes", "_read_all", "open", "_open")


def _small_reads(cls: type) -> bool:
    """`Storage.small_reads` of ``cls``: its ``read_small`` is an override at least as
    derived as every read method it stands for."""

    def owner(name: str) -> type:
        return next(k for k in cls.__mro__ if name in vars(k))

    small = owner("read_small")
    # The MRO, not issubclass: ABCMeta's check is not ready while the class is made.
    return small is not Storage and all(
        owner(name) in small.__mro__ for name in _SMALL_READ_METHODS
    )


#: What a key segment may not be.
_BAD_SEGMENTS = ("", ".")
_RESERVED_SEGMENT = RESERVED_PREFIX.rstrip("/")


def check_key(key: str) -> tuple[str, ...]:
    """`Storage.check_key` as a function (pure: storages cache it on their hot paths)."""
    if not isinstance(key, str) or not key or "\0" in key or key.startswith("/") or "\\" in key:
        raise InvalidDataIdError(f"invalid storage key {key!r}")
    parts = tuple(key.split("/"))
    reserved = parts[0] == _RESERVED_SEGMENT
    for part in parts:
        if part == "..":
            raise InvalidDataIdError(f"storage key {key!r} would leave the repository root")
        if part in _BAD_SEGMENTS:
            raise InvalidDataIdError(f"invalid storage key {key!r}: empty or '.' segment")
        if part.startswith("..") or (part.startswith(".") and not reserved):
            raise InvalidDataIdError(
                f"invalid storage key {key!r}: segment {part!r} starts with '.'; hidden "
                "names are butler's own (temporary files, sidecars)"
            )
    return parts
