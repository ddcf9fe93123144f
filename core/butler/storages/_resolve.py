"""Keys resolved through directory descriptors, never through links; butler's hidden names.

A repository is written by others, so the posix storage never hands a path to the kernel
for resolution: it keeps a descriptor of the root (the user's choice, resolved once) and
opens each directory of a key relative to its parent with ``O_NOFOLLOW``, then the file
with ``O_NOFOLLOW | O_NONBLOCK``, checked to be a regular file. A symbolic link, FIFO,
socket or device on the way is refused with a `StorageError` naming it.

Butler's own files in a repository directory start with ``"."``, which no dataset key
segment can: temporary files with ``..butler-tmp.``, sidecars with ``..butler-meta.``
(``.<name>.butler-meta`` in 0.1).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import secrets
import stat
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._errors import InvalidDataIdError, StorageError
from .._json import loads as loads_json
from .._storage import COPY_CHUNK, RESERVED_PREFIX, check_key, key_suffix
from ._linux import ABSENT, lstat_beneath, openat2_beneath

XATTR = "user.butler"
#: Prefix of temporary files (and xattr probes): no dataset or sidecar name starts with it.
TMP_PREFIX = "..butler-tmp."
#: Prefix of sidecars bound to a data file's inode.
META_PREFIX = "..butler-meta."
#: Suffix of 0.1 sidecars, ``.<name>.butler-meta`` (read, never written).
LEGACY_SIDECAR = ".butler-meta"
#: 0.1 temporary files, ``.<name>.<12 hex>.butler-tmp[.<ext>...]``, and 0.1 temporary
#: sidecars, ``..<name>.butler-meta.<12 hex>.butler-tmp``.
LEGACY_TMP = re.compile(r"^\.(?!\.).+\.[0-9a-f]{12}\.butler-tmp(\.[^.]+)*$")
LEGACY_SIDECAR_TMP = re.compile(r"^\.\..+\.butler-meta\.[0-9a-f]{12}\.butler-tmp$")
#: Longest file name (bytes) on the file systems butler supports.
NAME_MAX = 255
#: Largest sidecar butler reads: it never writes more than a few kilobytes.
MAX_SIDECAR = 1024 * 1024
LOCK_DIR = RESERVED_PREFIX.rstrip("/")
LOCK_NAME = "policy.lock"

CLOEXEC = getattr(os, "O_CLOEXEC", 0)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | CLOEXEC
NO_XATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


class Absent(Exception):
    """Internal: nothing is stored under the key (``detail`` says why)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


@functools.lru_cache(maxsize=4096)
def split_key(key: str) -> tuple[str, ...]:
    """The path segments of a key, validated (pure, hence cached: this is the hot path).

    `butler.storage.Storage.check_key`'s rule (the one every storage applies), plus what
    file systems add: every segment encodable as a file name and at most 255 bytes long.
    """
    parts = check_key(key)
    for part in parts:
        try:
            size = len(os.fsencode(part))
        except UnicodeEncodeError as exc:
            raise InvalidDataIdError(
                f"invalid storage key {key!r}: not encodable as a file name ({exc.reason})"
            ) from None
        if size > NAME_MAX:
            raise InvalidDataIdError(
                f"storage key {key!r}: path segment {part[:40] + '...'!r} is {size} bytes, "
                f"longer than the {NAME_MAX}-byte file name limit of posix file systems; "
                "use shorter data ID values or a template with more directories"
            )
    return parts


def fit(prefix: str, name: str) -> str:
    """``prefix + name`` if it fits the file-name limit, else ``prefix`` plus a hash of
    ``name`` and ``name``'s extension (so libraries still recognize the format)."""
    full = prefix + name
    if len(os.fsencode(full)) <= NAME_MAX:
        return full
    ext = key_suffix(name)
    while len(os.fsencode(ext)) > 100:
        ext = ext[ext.find(".", 1) :] if ext.find(".", 1) > 0 else ""
    return f"{prefix}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:40]}{ext}"


def tmp_name(name: str) -> str:
    """A fresh temporary name for writing ``name`` (keeps its extension)."""
    return fit(f"{TMP_PREFIX}{secrets.token_hex(6)}.", name)


def sidecar_name(name: str, inode: int) -> str:
    """The sidecar of data file ``name`` whose inode is ``inode``."""
    return fit(f"{META_PREFIX}{inode}.", name)


def kind(mode: int) -> str:
    """``"a symbolic link"``, ``"a FIFO"``...: what a file of this mode is, for messages."""
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
def proc_fd() -> bool:
    """Whether ``/proc/self/fd/N`` paths reach open descriptors (Linux)."""
    return os.path.isdir("/proc/self/fd")


def fd_sha256(fd: int) -> str:
    """sha256 of an open file's content (positional reads: the offset is left alone)."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, COPY_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def read_json(raw: bytes) -> dict[str, Any]:
    """Stored metadata as a dict; ``{}`` for anything else (untrusted bytes)."""
    try:
        meta = loads_json(raw)
    except (ValueError, RecursionError):  # corrupt or hostile: a foreign file's metadata
        return {}
    return meta if isinstance(meta, dict) else {}


class DescriptorResolution:
    """Mixin of `~butler.storages.posix.PosixStorage`: resolution of keys under ``root``
    through descriptors (``openat``-style), refusing links and special files."""

    if TYPE_CHECKING:
        root: str
        _root_fd: int | None
        _retired: list[int]
        _local_policy_lock: threading.RLock

        def uri(self, key: str = "") -> str: ...

        def wrap_os_error(self, exc: OSError, action: str, key: str) -> StorageError: ...

    def _refused(self, key: str, parts: Sequence[str], mode: int) -> StorageError:
        where = os.path.join(self.root, *parts)
        return StorageError(
            f"refused {self.uri(key)!r}: {where!r} is {kind(mode)}; butler never follows "
            "links or opens special files inside a repository (a link could lead outside "
            "it, a FIFO could block forever). Replace it with a regular file or directory."
        )

    def _explain(self, exc: OSError, dfd: int, parts: Sequence[str], key: str) -> Exception:
        """The error for ``parts[-1]`` (in directory ``dfd``) failing to open: `Absent`
        if nothing is there or a file is in the way, a refusal for links and special files."""
        if exc.errno == errno.ENOENT:
            return Absent()
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENXIO, errno.EISDIR):
            try:
                mode = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False).st_mode
            except OSError:
                return Absent()
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                where = os.path.join(self.root, *parts)
                return Absent(f"{where!r} is {kind(mode)}")
            return self._refused(key, parts, mode)
        return self.wrap_os_error(exc, "open", key)

    def _root(self, create: bool = False) -> int:
        """Descriptor of the root directory, opened once and kept (the root is the user's
        choice; everything below it is resolved afresh on every call)."""
        fd = self._root_fd
        if fd is None:
            with self._local_policy_lock:
                if self._root_fd is None:
                    flags = os.O_RDONLY | os.O_DIRECTORY | CLOEXEC
                    try:
                        try:
                            self._root_fd = os.open(self.root, flags)
                        except FileNotFoundError:
                            if not create:
                                raise Absent() from None
                            os.makedirs(self.root, exist_ok=True)
                            self._root_fd = os.open(self.root, flags)
                    except OSError as exc:
                        raise self.wrap_os_error(exc, "open the repository", "") from exc
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
        except (Absent, FileNotFoundError):
            if not self._root_replaced():
                raise
        return self._walk(parts, key, create)

    def _walk(self, parts: Sequence[str], key: str, create: bool) -> int:
        root = self._root(create)
        fd = root
        try:
            for i, name in enumerate(parts):
                try:
                    child = os.open(name, DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise Absent() from None
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    try:
                        child = os.open(name, DIR_FLAGS, dir_fd=fd)
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

    def _open_regular(self, key: str) -> tuple[int, int] | None:
        """(descriptor, size) of the stored regular file ``key`` in one ``openat2`` call
        (`._linux`), or ``None`` when that is unavailable or anything is unusual (absent,
        a link, a special file...): then `_open_file` resolves it and says what."""
        root = self._root_fd
        if root is None:
            return None
        fd = openat2_beneath(root, key, READ_FLAGS)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return None
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            return None
        return fd, st.st_size

    def _open_file(self, key: str, parts: Sequence[str]) -> tuple[int, int]:
        """(directory fd, file fd) of a stored regular file; `Absent` if there is none."""
        try:
            return self._open_file_once(key, parts)
        except Absent:
            if not self._root_replaced():
                raise
        return self._open_file_once(key, parts)

    def _open_file_once(self, key: str, parts: Sequence[str]) -> tuple[int, int]:
        dfd = self._open_dir(parts[:-1], key)
        try:
            try:
                fd = os.open(parts[-1], READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                raise self._explain(exc, dfd, parts, key) from None
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                os.close(fd)
                if stat.S_ISDIR(mode):
                    raise Absent()
                raise self._refused(key, parts, mode)
        except BaseException:
            os.close(dfd)
            raise
        return dfd, fd

    def _lstat(self, key: str) -> os.stat_result | None:
        """stat of a stored regular file (``None`` if absent); refuses links and specials."""
        split_key(key)  # validated first, whichever path answers
        root = self._root_fd
        if root is not None:
            # The common answers (a regular file, a directory, nothing there) in one
            # openat2; anything else takes the walk below, which says what is wrong.
            fast = lstat_beneath(root, key)
            if fast is not None and fast is not ABSENT:
                if stat.S_ISREG(fast.st_mode):
                    return fast
                if stat.S_ISDIR(fast.st_mode):
                    return None
            elif fast is ABSENT and not self._root_replaced():
                return None
        found = self._lstat_once(key)
        if found is None and self._root_replaced():
            found = self._lstat_once(key)
        return found

    def _lstat_once(self, key: str) -> os.stat_result | None:
        parts = split_key(key)
        try:
            dfd = self._open_dir(parts[:-1], key)
        except Absent:
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


def purge_dir(dfd: int, rel: str, limit: float, removed: list[str]) -> None:
    """Remove the debris in directory ``dfd`` (key prefix ``rel``) and below."""
    try:
        with os.scandir(dfd) as it:
            entries = list(it)
    except OSError:  # unreadable directory: nothing we could remove there anyway
        return
    live: set[str] | None = None
    for entry in entries:
        name = entry.name
        if entry.is_dir(follow_symlinks=False):
            with contextlib.suppress(OSError):
                child = os.open(name, DIR_FLAGS, dir_fd=dfd)
                try:
                    purge_dir(child, f"{rel}{name}/", limit, removed)
                finally:
                    os.close(child)
            continue
        if not name.startswith(".") or not entry.is_file(follow_symlinks=False):
            continue
        if name.startswith(META_PREFIX):
            if live is None:
                live = _live_sidecars(entries)
            if name in live:
                continue
        elif not (
            name.startswith(TMP_PREFIX)
            or (LEGACY_TMP.match(name) and not name.endswith(LEGACY_SIDECAR))
            or LEGACY_SIDECAR_TMP.match(name)
        ):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_mtime < limit:
                os.unlink(name, dir_fd=dfd)
                removed.append(rel + name)


def _live_sidecars(entries: Sequence[os.DirEntry[str]]) -> set[str]:
    """Names of the sidecars that apply to a data file among ``entries`` (its inode's)."""
    live = set()
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                inode = entry.stat(follow_symlinks=False).st_ino
                live.add(sidecar_name(entry.name, inode))
    return live
