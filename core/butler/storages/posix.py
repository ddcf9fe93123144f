"""Local-disk storage with crash-safe writes that never follows a link inside the repository.

**Atomic writes.** A write goes to a hidden temporary file in the destination directory, is
flushed and fsync'ed (with its metadata in a ``user.butler`` extended attribute, so bytes
and metadata commit together), then renamed over the destination (``rename``) — or
hard-linked to it when overwriting is not allowed, since ``link`` fails atomically if the
name exists. A writer killed at any moment leaves either the old file or the new one, plus
at worst a hidden temporary file that `list` never reports and `purge_debris` removes.

**Without extended attributes** (ramfs, some network file systems) metadata lives in a
hidden sidecar named after the data file's *inode*: ``..butler-meta.<inode>.<name>``. It is
written before the data is committed, under a name that applies to no file yet; the commit
(one rename or link) makes bytes and metadata current together, and a refused or killed
write leaves the old pair valid. Sidecars of 0.1 repositories (``.<name>.butler-meta``) are
still read when a file has no sidecar of its own.

**Untrusted repositories.** Keys are resolved ``openat``-style: from a descriptor of the
root (resolved once, it may be a link the user chose), each directory is opened with
``O_NOFOLLOW`` relative to its parent, and the file itself with ``O_NOFOLLOW | O_NONBLOCK``
and checked to be a regular file. A symbolic link, FIFO, socket or device anywhere in a key
is refused with a `StorageError`, never followed or blocked on. Paths handed to libraries
(`local_path`, `atomic_local_path`) are ``/proc/self/fd/...`` paths of the descriptors
opened that way where the system has them, so a concurrent swap of a directory for a link
cannot redirect the library either.

**Names.** Temporary files start with ``..butler-tmp.`` and sidecars with
``..butler-meta.`` (or ``.<name>.butler-meta`` in 0.1): a dataset key segment never starts
with ``"."``, so no data ID can produce either, and `purge_debris` can never mistake a
dataset for debris.

**Durability.** Because the bytes are on disk before the name points at them, a power loss
cannot expose a partial file either. What it can do, unless ``sync_directories=True`` also
fsyncs the directory after the rename, is undo a put that had returned: the dataset is
then the complete previous version. That directory fsync doubles the cost of small puts,
so it is opt-in.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import io
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from .._errors import (
    ButlerError,
    DatasetExistsError,
    DatasetNotFoundError,
    InvalidDataIdError,
    StorageError,
)
from .._storage import (
    COPY_CHUNK,
    POLICY_KEY,
    RESERVED_PREFIX,
    CountingWriter,
    ProgressCallback,
    ProgressReader,
    Storage,
)

__all__ = ["PosixStorage"]

_XATTR = "user.butler"
#: Prefix of temporary files (and xattr probes): no dataset or sidecar name starts with it.
_TMP_PREFIX = "..butler-tmp."
#: Prefix of sidecars bound to a data file's inode.
_META_PREFIX = "..butler-meta."
#: Suffix of 0.1 sidecars, ``.<name>.butler-meta`` (read, never written).
_LEGACY_SIDECAR = ".butler-meta"
#: 0.1 temporary files, ``.<name>.<12 hex>.butler-tmp[.<ext>...]``, and 0.1 temporary
#: sidecars, ``..<name>.butler-meta.<12 hex>.butler-tmp``.
_LEGACY_TMP = re.compile(r"^\.(?!\.).+\.[0-9a-f]{12}\.butler-tmp(\.[^.]+)*$")
_LEGACY_SIDECAR_TMP = re.compile(r"^\.\..+\.butler-meta\.[0-9a-f]{12}\.butler-tmp$")
#: Longest file name (bytes) on the file systems butler supports.
_NAME_MAX = 255
#: Largest sidecar butler reads: it never writes more than a few kilobytes.
_MAX_SIDECAR = 1024 * 1024
_LOCK_DIR = RESERVED_PREFIX.rstrip("/")
_LOCK_NAME = "policy.lock"

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_NO_XATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


#: How long a descriptor opened by `PosixStorage.metadata` waits for the read of the same
#: key in the same thread (`Butler.get` calls them back to back).
_HANDOFF_SECONDS = 2.0


class _Kept:
    """A checked descriptor of ``key``, handed from `PosixStorage.metadata` to the next
    `~PosixStorage.open` or `~PosixStorage.local_path` of ``key`` in the same thread: one
    resolution per get instead of two, and the bytes read are those of the very file whose
    metadata was read, even if a writer replaces it in between."""

    __slots__ = ("fd", "key", "pid", "until")

    def __init__(self, fd: int, key: str) -> None:
        self.fd = fd
        self.key = key
        self.pid = os.getpid()  # a forked child shares the file offset: never hand it over
        self.until = time.monotonic() + _HANDOFF_SECONDS

    def take(self, key: str) -> int | None:
        if self.key != key or self.pid != os.getpid() or time.monotonic() > self.until:
            return None
        fd, self.fd = self.fd, -1
        return fd

    def __del__(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)


class _Absent(Exception):
    """Internal: nothing is stored under the key (``detail`` says why)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


@functools.lru_cache(maxsize=4096)
def _split_key(key: str) -> tuple[str, ...]:
    """The path segments of a key, validated (pure, hence cached: this is the hot path).

    No segment may be empty, ``.`` or ``..``, or start with ``"."`` (hidden names belong to
    butler: temporary files and sidecars), except the reserved area ``.butler/``; and no
    segment may exceed the 255-byte file-name limit.
    """
    if not key or "\0" in key or key.startswith("/") or "\\" in key:
        raise InvalidDataIdError(f"invalid storage key {key!r}")
    parts = tuple(key.split("/"))
    reserved = parts[0] == _LOCK_DIR
    for part in parts:
        if part == "..":
            raise InvalidDataIdError(f"storage key {key!r} would leave the repository root")
        if part in ("", "."):
            raise InvalidDataIdError(f"invalid storage key {key!r}: empty or '.' segment")
        if part.startswith("..") or (part.startswith(".") and not reserved):
            raise InvalidDataIdError(
                f"invalid storage key {key!r}: segment {part!r} starts with '.'; hidden "
                "names are butler's own (temporary files, sidecars)"
            )
        size = len(os.fsencode(part))
        if size > _NAME_MAX:
            raise InvalidDataIdError(
                f"storage key {key!r}: path segment {part[:40] + '...'!r} is {size} bytes, "
                f"longer than the {_NAME_MAX}-byte file name limit of posix file systems; "
                "use shorter data ID values or a template with more directories"
            )
    return parts


def _fit(prefix: str, name: str) -> str:
    """``prefix + name`` if it fits the file-name limit, else ``prefix`` plus a hash of
    ``name`` and ``name``'s extension (so libraries still recognize the format)."""
    full = prefix + name
    if len(os.fsencode(full)) <= _NAME_MAX:
        return full
    ext = _extension(name)
    while len(os.fsencode(ext)) > 100:
        ext = ext[ext.find(".", 1) :] if ext.find(".", 1) > 0 else ""
    return f"{prefix}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:40]}{ext}"


def _tmp_name(name: str) -> str:
    return _fit(f"{_TMP_PREFIX}{secrets.token_hex(6)}.", name)


def _sidecar_name(name: str, inode: int) -> str:
    return _fit(f"{_META_PREFIX}{inode}.", name)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


@functools.cache
def _proc_fd() -> bool:
    """Whether ``/proc/self/fd/N`` paths reach open descriptors (Linux)."""
    return os.path.isdir("/proc/self/fd")


def _fd_sha256(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, COPY_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _read_json(raw: bytes) -> dict[str, Any]:
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):  # corrupt or hostile: a foreign file's metadata
        return {}
    return meta if isinstance(meta, dict) else {}


class PosixStorage(Storage):
    """Datasets as files under a local directory.

    Parameters
    ----------
    root
        Directory path, or a ``file://`` URI. A symbolic link here is resolved once;
        links *inside* the repository are refused.
    durable
        fsync each file before it becomes visible (default), so even a power loss never
        exposes a partial dataset. Turning it off keeps atomicity against crashes of the
        writer process, not against power loss.
    sync_directories
        Also fsync the directory after each commit, so a put that returned survives a
        power loss (rather than reverting to the previous version). Off by default: it
        doubles the cost of small puts.
    """

    type_name = "posix"
    schemes = ("file",)
    description = "Local or network-mounted file system (atomic rename, fsync)"
    has_local_paths = True

    def __init__(self, root: str, *, durable: bool = True, sync_directories: bool = False) -> None:
        if root.startswith("file://"):
            root = root[len("file://") :]
        # The root is the user's choice: resolve a link there once, refuse links below it.
        root = os.path.realpath(os.path.expanduser(root))
        super().__init__(root)
        self.durable = durable
        self.sync_directories = sync_directories
        self._use_xattr: bool | None = None
        self._lock_depth = 0
        self._root_fd: int | None = None
        self._retired: list[int] = []
        self._kept = threading.local()

    # -- paths -------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """Absolute path of a key; refuses keys that would leave the root or name butler's
        hidden files. (The path is for display and tests: I/O goes through descriptors.)"""
        return os.path.join(self.root, *_split_key(key.rstrip("/") or key))

    def uri(self, key: str = "") -> str:
        return os.path.join(self.root, key) if key else self.root

    @property
    def use_xattr(self) -> bool:
        """Whether new metadata goes to extended attributes (else to hidden sidecar files).

        Reads always look at both: a repository may have been copied between file systems.
        """
        if self._use_xattr is None:
            self._use_xattr = self._xattrs_supported()
        return self._use_xattr

    @use_xattr.setter
    def use_xattr(self, value: bool) -> None:
        self._use_xattr = value

    def _xattrs_supported(self) -> bool:
        """Probe whether the file system under the root accepts user extended attributes."""
        if not hasattr(os, "setxattr"):
            return False
        try:
            dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        except OSError:
            return False
        probe = f"{_TMP_PREFIX}{secrets.token_hex(6)}.xattr-probe"  # purgeable if killed
        try:
            fd = os.open(probe, _CREATE_FLAGS, 0o600, dir_fd=dfd)
            try:
                os.setxattr(fd, _XATTR, b"{}")
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe, dir_fd=dfd)
            os.close(dfd)

    # -- descriptor-based resolution ---------------------------------------------------

    def _refused(self, key: str, parts: Sequence[str], mode: int) -> StorageError:
        where = os.path.join(self.root, *parts)
        return StorageError(
            f"refused {self.uri(key)!r}: {where!r} is {_kind(mode)}; butler never follows "
            "links or opens special files inside a repository (a link could lead outside "
            "it, a FIFO could block forever). Replace it with a regular file or directory."
        )

    def _explain(self, exc: OSError, dfd: int, parts: Sequence[str], key: str) -> Exception:
        """The error for ``parts[-1]`` (in directory ``dfd``) failing to open: `_Absent`
        if nothing is there or a file is in the way, a refusal for links and special files."""
        if exc.errno == errno.ENOENT:
            return _Absent()
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENXIO, errno.EISDIR):
            try:
                mode = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False).st_mode
            except OSError:
                return _Absent()
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                where = os.path.join(self.root, *parts)
                return _Absent(f"{where!r} is {_kind(mode)}")
            return self._refused(key, parts, mode)
        return self.wrap_os_error(exc, "open", key)

    def _root(self, create: bool = False) -> int:
        """Descriptor of the root directory, opened once and kept (the root is the user's
        choice; everything below it is resolved afresh on every call)."""
        fd = self._root_fd
        if fd is None:
            with self._local_policy_lock:
                if self._root_fd is None:
                    flags = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
                    try:
                        self._root_fd = os.open(self.root, flags)
                    except FileNotFoundError:
                        if not create:
                            raise _Absent() from None
                        os.makedirs(self.root, exist_ok=True)
                        self._root_fd = os.open(self.root, flags)
                fd = self._root_fd
        return fd

    def _root_replaced(self) -> bool:
        """After a miss: whether the kept root descriptor is of a since-deleted directory
        (the repository was deleted and created again); if so, the next call reopens it.

        The old descriptor stays open until `close`: another thread may be using it, and
        closing it could let its number be reused under that thread's feet.
        """
        fd = self._root_fd
        if fd is None:
            return False
        try:
            if os.fstat(fd).st_nlink > 0:
                return False
        except OSError:
            return False
        with self._local_policy_lock:
            if self._root_fd == fd:
                self._retired.append(fd)
                self._root_fd = None
        return True

    def _open_dir(self, parts: Sequence[str], key: str, *, create: bool = False) -> int:
        """A new descriptor of the directory ``root/parts...``, opened one segment at a
        time relative to its parent without following links (created when ``create``)."""
        if create:  # writers would otherwise fail in a deleted root: check it first
            self._root_replaced()
        try:
            return self._walk(parts, key, create)
        except (_Absent, FileNotFoundError):
            if not self._root_replaced():
                raise
        return self._walk(parts, key, create)

    def _walk(self, parts: Sequence[str], key: str, create: bool) -> int:
        root = self._root(create)
        fd = root
        try:
            for i, name in enumerate(parts):
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Absent() from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    try:
                        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                    except OSError as exc:
                        raise self._explain(exc, fd, parts[: i + 1], key) from None
                except OSError as exc:
                    raise self._explain(exc, fd, parts[: i + 1], key) from None
                if fd != root:
                    os.close(fd)
                fd = child
        except BaseException:
            if fd != root:
                os.close(fd)
            raise
        return os.dup(root) if fd == root else fd

    def _write_dir(self, parts: Sequence[str], key: str) -> int:
        """`_open_dir` creating directories, with errors for writers."""
        try:
            return self._open_dir(parts[:-1], key, create=True)
        except _Absent as exc:
            raise StorageError(
                f"cannot write {self.uri(key)!r}: {exc.detail or 'its directory vanished'}, "
                "not a directory (another dataset's file is in the way of this key)"
            ) from None
        except OSError as exc:
            if isinstance(exc, ButlerError):
                raise
            raise self.wrap_os_error(exc, "create the directory for", key) from exc

    def _open_file(self, key: str, parts: Sequence[str]) -> tuple[int, int]:
        """(directory fd, file fd) of a stored regular file; `_Absent` if there is none."""
        try:
            return self._open_file_once(key, parts)
        except _Absent:
            if not self._root_replaced():
                raise
        return self._open_file_once(key, parts)

    def _open_file_once(self, key: str, parts: Sequence[str]) -> tuple[int, int]:
        dfd = self._open_dir(parts[:-1], key)
        try:
            try:
                fd = os.open(parts[-1], _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                raise self._explain(exc, dfd, parts, key) from None
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                os.close(fd)
                if stat.S_ISDIR(mode):
                    raise _Absent()
                raise self._refused(key, parts, mode)
        except BaseException:
            os.close(dfd)
            raise
        return dfd, fd

    def _lstat(self, key: str) -> os.stat_result | None:
        """stat of a stored regular file (``None`` if absent); refuses links and specials."""
        found = self._lstat_once(key)
        if found is None and self._root_replaced():
            found = self._lstat_once(key)
        return found

    def _lstat_once(self, key: str) -> os.stat_result | None:
        parts = _split_key(key)
        try:
            dfd = self._open_dir(parts[:-1], key)
        except _Absent:
            return None
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise self.wrap_os_error(exc, "stat", key) from exc
        finally:
            os.close(dfd)
        if stat.S_ISREG(st.st_mode):
            return st
        if stat.S_ISDIR(st.st_mode):
            return None
        raise self._refused(key, parts, st.st_mode)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the kept root descriptor (reopened if the storage is used again)."""
        kept = getattr(self, "_kept", None)
        if kept is not None:
            kept.slot = None
        fds = [getattr(self, "_root_fd", None), *getattr(self, "_retired", ())]
        self._root_fd = None
        self._retired = []
        for fd in fds:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __del__(self) -> None:
        self.close()

    def initialize(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise self.wrap_os_error(exc, "create repository directory", "") from exc

    @contextlib.contextmanager
    def policy_lock(self) -> Iterator[None]:
        """Serialize policy changes between threads *and* processes: the thread lock plus
        an exclusive ``flock`` on ``.butler/policy.lock`` (re-entrant within a thread)."""
        with self._local_policy_lock:
            if self._lock_depth:  # flock on a second descriptor would deadlock with ours
                self._lock_depth += 1
                try:
                    yield
                finally:
                    self._lock_depth -= 1
                return
            fd = self._open_lock()
            try:
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_depth = 1
                try:
                    yield
                finally:
                    self._lock_depth = 0
            finally:
                if fd is not None:
                    os.close(fd)  # releases the flock

    def _open_lock(self) -> int | None:
        key = f"{_LOCK_DIR}/{_LOCK_NAME}"
        try:
            dfd = self._open_dir((_LOCK_DIR,), key, create=True)
        except _Absent as exc:
            raise StorageError(f"cannot create the policy lock {self.uri(key)!r}") from exc
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return None  # nobody can change the policy of a read-only repository
            if isinstance(exc, ButlerError):
                raise
            raise self.wrap_os_error(exc, "create the policy lock", key) from exc
        try:
            fd = os.open(
                _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC,
                0o666, dir_fd=dfd,
            )  # fmt: skip
        except OSError as exc:
            if exc.errno == errno.EROFS:
                return None
            raise self._explain(exc, dfd, (_LOCK_DIR, _LOCK_NAME), key) from None
        finally:
            os.close(dfd)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise self._refused(key, (_LOCK_DIR, _LOCK_NAME), mode)
        return fd

    # -- reading -------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self._lstat(key) is not None

    def size(self, key: str) -> int:
        st = self._lstat(key)
        if st is None:
            raise self.not_found(key)
        return st.st_size

    def open(
        self, key: str, mode: str = "rb", *, progress: ProgressCallback | None = None
    ) -> BinaryIO:
        if mode != "rb":
            raise ValueError("PosixStorage.open() only reads; write with atomic_write()")
        parts = _split_key(key)
        fd = self._read_fd(key, parts)
        raw = io.FileIO(fd, "rb", closefd=True)
        raw.name = os.path.join(self.root, *parts)  # for messages, as open(path) would
        f = io.BufferedReader(raw)
        if progress is None:
            return f
        return ProgressReader(f, os.fstat(fd).st_size, progress)  # type: ignore[return-value]

    def _read_fd(self, key: str, parts: Sequence[str]) -> int:
        """A checked descriptor of the stored file: the one `metadata` just opened for this
        key in this thread, else a fresh resolution."""
        kept = getattr(self._kept, "slot", None)
        if kept is not None:
            self._kept.slot = None
            fd = kept.take(key)
            if fd is not None:
                return fd
        try:
            dfd, fd = self._open_file(key, parts)
        except _Absent:
            raise self.not_found(key) from None
        os.close(dfd)
        return fd

    def _forget(self) -> None:
        """Drop the descriptor kept by `metadata` (before this thread changes a dataset)."""
        self._kept.slot = None

    def metadata(self, key: str) -> dict[str, Any]:
        parts = _split_key(key)
        self._kept.slot = None
        try:
            dfd, fd = self._open_file(key, parts)
        except _Absent:
            raise self.not_found(key) from None
        try:
            meta = None
            if hasattr(os, "getxattr"):
                try:
                    meta = _read_json(os.getxattr(fd, _XATTR))
                except OSError as exc:
                    if exc.errno not in _NO_XATTR:
                        raise self.wrap_os_error(exc, "read the metadata of", key) from exc
            if meta is None:
                meta = self._read_sidecar(dfd, parts, os.fstat(fd).st_ino, key)
        except BaseException:
            os.close(fd)
            raise
        finally:
            os.close(dfd)
        self._kept.slot = _Kept(fd, key)
        return meta

    def _read_sidecar(self, dfd: int, parts: Sequence[str], inode: int, key: str) -> dict:
        """Metadata written for exactly this data file (its inode), else a 0.1 sidecar."""
        name = parts[-1]
        for sidecar in (_sidecar_name(name, inode), f".{name}{_LEGACY_SIDECAR}"):
            try:
                fd = os.open(sidecar, _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENAMETOOLONG):
                    continue
                raise self._explain(exc, dfd, (*parts[:-1], sidecar), key) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise self._refused(key, (*parts[:-1], sidecar), st.st_mode)
                if st.st_size > _MAX_SIDECAR:
                    return {}  # butler never writes such a sidecar: not metadata
                raw = os.read(fd, st.st_size + 1)
            except ButlerError:
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "read the metadata of", key) from exc
            finally:
                os.close(fd)
            return _read_json(raw[:_MAX_SIDECAR])
        return {}

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[str]:
        """Path of the stored file, for libraries that insist on one.

        It is ``/proc/self/fd/N`` of the descriptor opened (and checked) here, valid
        inside the ``with`` block only: a link swapped in meanwhile cannot redirect the
        library. Without ``/proc`` it is the real path, checked just before (a concurrent
        writer of the repository could still swap a directory for a link in between).
        """
        parts = _split_key(key)
        fd = self._read_fd(key, parts)
        try:
            yield f"/proc/self/fd/{fd}" if _proc_fd() else os.path.join(self.root, *parts)
        finally:
            os.close(fd)

    def list(self, prefix: str = "") -> Iterator[str]:
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        parts = _split_key(directory) if directory else ()
        self._root_replaced()  # an empty walk is no miss: check the kept root first
        try:
            dfd = self._open_dir(parts, prefix)
        except (_Absent, StorageError):  # nothing there, or a link: never listed
            return
        try:
            for key in self._scan(dfd, f"{directory}/" if directory else "", prefix):
                if key != POLICY_KEY:
                    yield key
        finally:
            os.close(dfd)

    def _scan(self, dfd: int, rel: str, prefix: str) -> Iterator[str]:
        """Regular files under directory ``dfd`` (``rel`` is its key prefix), sorted, files
        before subdirectories; hidden names, links and special files are skipped."""
        with os.scandir(dfd) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        subdirs = []
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                key = rel + entry.name
                if key.startswith(prefix):
                    yield key
            elif entry.is_dir(follow_symlinks=False):
                sub = f"{rel}{entry.name}/"
                if sub.startswith(prefix) or prefix.startswith(sub):
                    subdirs.append(entry.name)
        for name in subdirs:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            except OSError:
                continue  # removed, or swapped for a link, since the scan
            try:
                yield from self._scan(child, f"{rel}{name}/", prefix)
            finally:
                os.close(child)

    # -- writing -------------------------------------------------------------------------

    @contextlib.contextmanager
    def atomic_write(
        self,
        key: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        overwrite: bool = True,
        checksum: bool = False,
        progress: ProgressCallback | None = None,
    ) -> Iterator[BinaryIO]:
        parts = _split_key(key)
        self._forget()
        dfd = self._write_dir(parts, key)
        tmp = _tmp_name(parts[-1])
        try:
            try:
                fd = os.open(tmp, _CREATE_FLAGS, 0o666, dir_fd=dfd)
                with open(fd, "wb") as raw:
                    writer = CountingWriter(raw, checksum=checksum, progress=progress)
                    yield writer  # type: ignore[misc]
                    raw.flush()
                    meta = self._full_metadata(metadata, writer.size, writer.sha256)
                    inode = self._seal(raw.fileno(), meta)
            except ButlerError:  # some are OSErrors too: never re-wrap them
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "write", key) from exc
            self._commit(dfd, tmp, parts, key, overwrite, meta, inode)
        finally:
            with contextlib.suppress(OSError):  # gone already, or the fs is read-only
                os.unlink(tmp, dir_fd=dfd)
            os.close(dfd)

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
        parts = _split_key(key)
        self._forget()
        dfd = self._write_dir(parts, key)
        tmp = _tmp_name(parts[-1])  # keeps the extension: libraries choose compression by it
        try:
            # The library writes through the directory descriptor checked above.
            yield (
                f"/proc/self/fd/{dfd}/{tmp}"
                if _proc_fd()
                else os.path.join(self.root, *parts[:-1], tmp)
            )
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, dir_fd=dfd)
            except FileNotFoundError as exc:
                raise StorageError(f"the serializer wrote nothing for {self.uri(key)!r}") from exc
            except OSError as exc:
                raise self._explain(exc, dfd, (*parts[:-1], tmp), key) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise self._refused(key, (*parts[:-1], tmp), st.st_mode)
                sha = _fd_sha256(fd) if checksum else None
                meta = self._full_metadata(metadata, st.st_size, sha)
                inode = self._seal(fd, meta)
            except ButlerError:
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "write", key) from exc
            finally:
                os.close(fd)
            if progress is not None:
                progress(st.st_size, st.st_size)
            self._commit(dfd, tmp, parts, key, overwrite, meta, inode)
        finally:
            with contextlib.suppress(OSError):  # gone already, or the fs is read-only
                os.unlink(tmp, dir_fd=dfd)
            os.close(dfd)

    @staticmethod
    def _full_metadata(
        metadata: Mapping[str, Any] | None, size: int, sha256: str | None
    ) -> dict[str, Any]:
        meta = dict(metadata or {})
        meta["size"] = size
        if sha256 is not None:
            meta["sha256"] = sha256
        return meta

    def _seal(self, fd: int, meta: Mapping[str, Any]) -> int:
        """Attach the metadata (xattr) and fsync the temporary file; return its inode."""
        if self.use_xattr:
            os.setxattr(fd, _XATTR, json.dumps(meta, separators=(",", ":")).encode())
        if self.durable:
            os.fsync(fd)
        return os.fstat(fd).st_ino

    def _commit(
        self,
        dfd: int,
        tmp: str,
        parts: Sequence[str],
        key: str,
        overwrite: bool,
        meta: Mapping[str, Any],
        inode: int,
    ) -> None:
        """Make the temporary file ``tmp`` (inode ``inode``) the dataset, in one rename or
        link; without xattrs its sidecar is written first, under a name bound to ``inode``
        that applies to no file until that very rename."""
        name = parts[-1]
        sidecar: str | None = None
        try:
            try:
                old = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            if old is not None and not stat.S_ISREG(old.st_mode):
                raise self._refused(key, parts, old.st_mode)
            if not self.use_xattr:
                sidecar = _sidecar_name(name, inode)
                self._write_sidecar(dfd, sidecar, meta)
            if overwrite:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            else:
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    raise DatasetExistsError(
                        f"a dataset already exists at {self.uri(key)!r}"
                    ) from None
            sidecar = None  # committed: it is now the dataset's metadata
            if self.sync_directories:
                os.fsync(dfd)
        except ButlerError:
            raise
        except OSError as exc:
            raise self.wrap_os_error(exc, "commit", key) from exc
        finally:
            if sidecar is not None:  # never applied to any file: drop it
                with contextlib.suppress(OSError):
                    os.unlink(sidecar, dir_fd=dfd)
        if not self.use_xattr:  # sidecars of the replaced file no longer apply
            stale = [f".{name}{_LEGACY_SIDECAR}"]
            if old is not None and old.st_ino != inode:
                stale.append(_sidecar_name(name, old.st_ino))
            for path in stale:
                with contextlib.suppress(OSError):
                    os.unlink(path, dir_fd=dfd)

    def _write_sidecar(self, dfd: int, sidecar: str, meta: Mapping[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):  # an orphan of a reused inode
            os.unlink(sidecar, dir_fd=dfd)
        fd = os.open(sidecar, _CREATE_FLAGS, 0o666, dir_fd=dfd)
        try:
            os.write(fd, json.dumps(dict(meta), separators=(",", ":")).encode())
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def purge_debris(self, older_than: float = 3600.0) -> Sequence[str]:
        """Delete what killed writers left, not modified for ``older_than`` seconds (a live
        writer's files are younger): temporary files (``..butler-tmp.*``, 0.1's
        ``.<name>.<12 hex>.butler-tmp*``) and sidecars that belong to no data file.
        Datasets, whatever their names, are never touched; links are never followed."""
        limit = time.time() - older_than
        removed: list[str] = []
        self._root_replaced()
        try:
            dfd = self._open_dir((), "")
        except _Absent:
            return []
        try:
            _purge_dir(dfd, "", limit, removed)
        finally:
            os.close(dfd)
        return sorted(removed)

    def remove(self, key: str) -> None:
        parts = _split_key(key)
        self._forget()
        name = parts[-1]
        try:
            dfd = self._open_dir(parts[:-1], key)
        except _Absent:
            raise self.not_found(key) from None
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                raise self.not_found(key) from None
            if not stat.S_ISREG(st.st_mode):
                if stat.S_ISDIR(st.st_mode):
                    raise self.not_found(key)
                raise self._refused(key, parts, st.st_mode)
            os.unlink(name, dir_fd=dfd)  # unlinkat never follows the last segment
            for sidecar in (_sidecar_name(name, st.st_ino), f".{name}{_LEGACY_SIDECAR}"):
                with contextlib.suppress(OSError):
                    os.unlink(sidecar, dir_fd=dfd)
        except (ButlerError, DatasetNotFoundError):
            raise
        except FileNotFoundError:
            raise self.not_found(key) from None
        except OSError as exc:
            raise self.wrap_os_error(exc, "remove", key) from exc
        finally:
            os.close(dfd)
        self._prune_empty_dirs(parts[:-1])

    def _prune_empty_dirs(self, parts: Sequence[str]) -> None:
        """Remove now-empty directories from the deepest up, through descriptors."""
        for depth in range(len(parts), 0, -1):
            try:
                dfd = self._open_dir(parts[: depth - 1], "/".join(parts))
            except (_Absent, OSError):
                return
            try:
                os.rmdir(parts[depth - 1], dir_fd=dfd)  # fails on a link: never followed
            except OSError:
                return
            finally:
                os.close(dfd)


def _purge_dir(dfd: int, rel: str, limit: float, removed: list[str]) -> None:
    with os.scandir(dfd) as it:
        entries = list(it)
    live_sidecars: set[str] | None = None
    for entry in entries:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    _purge_dir(child, f"{rel}{name}/", limit, removed)
                finally:
                    os.close(child)
            continue
        if not name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        if name.startswith(_META_PREFIX):
            if live_sidecars is None:
                live_sidecars = _live_sidecars(entries)
            if name in live_sidecars:
                continue
        elif not (
            name.startswith(_TMP_PREFIX)
            or (_LEGACY_TMP.match(name) and not name.endswith(_LEGACY_SIDECAR))
            or _LEGACY_SIDECAR_TMP.match(name)
        ):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime < limit:
                os.unlink(name, dir_fd=dfd)
                removed.append(rel + name)


def _live_sidecars(entries: Sequence[os.DirEntry[str]]) -> set[str]:
    live = set()
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                inode = entry.stat(follow_symlinks=False).st_ino
                live.add(_sidecar_name(entry.name, inode))
    return live


def _extension(name: str) -> str:
    dot = name.find(".")
    return name[dot:] if dot > 0 else ""
