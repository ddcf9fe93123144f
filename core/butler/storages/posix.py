"""Local-disk storage with crash-safe writes that never follows a link inside the repository.

**Atomic writes.** A write goes to a hidden temporary file in the destination directory, is
flushed and fsync'ed (with its metadata in a ``user.butler`` extended attribute, so bytes
and metadata commit together), then renamed over the destination (``rename``) — or, when
overwriting is not allowed, renamed with ``renameat2(RENAME_NOREPLACE)`` (Linux) or
hard-linked to it, both of which fail atomically if the name exists. A writer killed at
any moment leaves either the old file or the new one, plus at worst a hidden temporary
file that `list` never reports and `purge_debris` removes.

**Without extended attributes** (ramfs, some network file systems) metadata lives in a
hidden sidecar named after the data file's *inode*: ``..butler-meta.<inode>.<name>``. It is
written before the data is committed, under a name that applies to no file yet; the commit
(one rename or link) makes bytes and metadata current together, and a refused or killed
write leaves the old pair valid. Sidecars of 0.1 repositories (``.<name>.butler-meta``) are
still read when a file has no sidecar of its own.

**Untrusted repositories.** Keys are resolved ``openat``-style (`._resolve`): from a
descriptor of the root (resolved once, it may be a link the user chose), each directory is
opened with ``O_NOFOLLOW`` relative to its parent, and the file itself with
``O_NOFOLLOW | O_NONBLOCK`` and checked to be a regular file. A symbolic link, FIFO, socket
or device anywhere in a key is refused with a `StorageError`, never followed or blocked on.
On Linux a read first asks the kernel for the same in one call (``openat2`` with
``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS``, `._linux`); whatever that refuses or cannot do
goes through the walk, which says what is wrong. Paths handed to libraries (`local_path`,
`atomic_local_path`) are ``/proc/self/fd/...`` paths of the descriptors opened that way
where the system has them, so a concurrent swap of a directory for a link cannot redirect
the library either.

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
import io
import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from .._builtins import butler_storages
from .._errors import (
    ButlerError,
    DatasetExistsError,
    DatasetNotFoundError,
    StorageError,
)
from .._json import dumps_compact
from .._storage import (
    COPY_CHUNK,
    POLICY_KEY,
    CountingWriter,
    ProgressCallback,
    ProgressReader,
    ReadHints,
    Storage,
)
from ._linux import fgetxattr, openat2_beneath, rename_noreplace
from ._resolve import (
    CLOEXEC,
    CREATE_FLAGS,
    DIR_FLAGS,
    LEGACY_SIDECAR,
    LOCK_DIR,
    LOCK_NAME,
    MAX_SIDECAR,
    NO_XATTR,
    READ_FLAGS,
    TMP_PREFIX,
    XATTR,
    Absent,
    DescriptorResolution,
    fd_sha256,
    proc_fd,
    purge_dir,
    read_json,
    sidecar_name,
    split_key,
    tmp_name,
)

__all__ = ["PosixStorage"]

XATTR_NAME = os.fsencode(XATTR)

if TYPE_CHECKING:
    from .._index import Index

#: How long a descriptor opened by `PosixStorage.metadata` waits for the read of the same
#: key in the same thread (`Butler.get` calls them back to back).
_HANDOFF_SECONDS = 2.0


def _note_pid() -> None:
    global _pid
    _pid = os.getpid()


#: This process's id, kept up to date across forks (``os.getpid`` is a system call).
_pid = os.getpid()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_pid)


class _Kept:
    """A checked descriptor of ``key``, handed from `PosixStorage.metadata` to the next
    `~PosixStorage.open` or `~PosixStorage.local_path` of ``key`` in the same thread: one
    resolution per get instead of two, and the bytes read are those of the very file whose
    metadata was read, even if a writer replaces it in between."""

    __slots__ = ("fd", "key", "pid", "size", "until")

    def __init__(self, fd: int, key: str, size: int | None = None) -> None:
        self.fd = fd
        self.key = key
        self.size = size
        self.pid = _pid  # a forked child shares the file offset: never hand it over
        self.until = time.monotonic() + _HANDOFF_SECONDS

    def take(self, key: str) -> tuple[int, int | None] | None:
        """(descriptor, size if known) for ``key``, once; ``None`` if it is not for it."""
        if self.key != key or self.pid != _pid or time.monotonic() > self.until:
            return None
        fd, self.fd = self.fd, -1
        return fd, self.size

    def __del__(self) -> None:
        if self.fd >= 0:
            try:  # noqa: SIM105 - no contextlib: it may be gone at interpreter exit
                os.close(self.fd)
            except Exception:
                pass


#: Files up to this size get no read advice: the kernel's default read-ahead window
#: (128 KiB) already covers them, so the advice would be a system call for nothing.
_ADVICE_MIN_SIZE = 128 * 1024
_ADVICE = {
    access: getattr(os, name)
    for access, name in (("random", "POSIX_FADV_RANDOM"), ("sequential", "POSIX_FADV_SEQUENTIAL"))
    if hasattr(os, "posix_fadvise") and hasattr(os, name)
}


def _advise(fd: int, hints: ReadHints, size: int | None) -> None:
    """Tell the kernel how the file will be read (read-ahead for sequential reads, none
    for random ones). Advice only: a system without ``posix_fadvise`` reads the same."""
    if size is not None and size <= _ADVICE_MIN_SIZE:
        return
    advice = _ADVICE.get(hints.access)
    if advice is not None:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, advice)


class PosixStorage(DescriptorResolution, Storage, declared_by=butler_storages):
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
    xattrs
        Where new metadata goes: ``None`` (default) asks the file system whether it has
        user extended attributes; ``False`` always writes hidden sidecar files (for file
        systems whose xattrs are unreliable, such as some network mounts). Reads look at
        both either way.
    """

    has_local_paths = True

    def __init__(
        self,
        root: str,
        *,
        durable: bool = True,
        sync_directories: bool = False,
        xattrs: bool | None = None,
    ) -> None:
        if xattrs not in (None, True, False):
            raise StorageError(f"posix option xattrs must be None, True or False, not {xattrs!r}")
        if root.startswith("file://"):
            root = root[len("file://") :]
        # The root is the user's choice: resolve a link there once, refuse links below it.
        root = os.path.realpath(os.path.expanduser(root))
        super().__init__(root)
        self.durable = durable
        self.sync_directories = sync_directories
        self._use_xattr: bool | None = None if xattrs else xattrs
        self._lock_depth = 0
        self._root_fd: int | None = None
        self._retired: list[int] = []
        self._kept = threading.local()

    # -- paths -------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """Absolute path of a key; refuses keys that would leave the root or name butler's
        hidden files. (The path is for display and tests: I/O goes through descriptors.)"""
        return os.path.join(self.root, *split_key(key.rstrip("/") or key))

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
        """Whether the file system under the root accepts user extended attributes.

        Asked by *reading* first (``getxattr`` on the root says ENODATA where user xattrs
        exist, ENOTSUP where they do not), so opening a read-only repository writes
        nothing; a probe file is written only when the answer is unclear.
        """
        if not hasattr(os, "setxattr"):
            return False
        try:
            dfd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
        except OSError:
            return False
        try:
            os.getxattr(dfd, XATTR)
            os.close(dfd)
            return True
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                os.close(dfd)
                return exc.errno == errno.ENODATA
        probe = f"{TMP_PREFIX}{secrets.token_hex(6)}.xattr-probe"  # purgeable if killed
        try:
            fd = os.open(probe, CREATE_FLAGS, 0o600, dir_fd=dfd)
            try:
                os.setxattr(fd, XATTR, b"{}")
            finally:
                os.close(fd)
            return True
        except OSError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(probe, dir_fd=dfd)
            os.close(dfd)

    # -- resolution (see _resolve.py) ----------------------------------------------------

    def _write_dir(self, parts: Sequence[str], key: str) -> int:
        """`_open_dir` creating directories, with errors for writers."""
        try:
            return self._open_dir(parts[:-1], key, create=True)
        except Absent as exc:
            raise StorageError(
                f"cannot write {self.uri(key)!r}: {exc.detail or 'its directory vanished'}, "
                "not a directory (another dataset's file is in the way of this key)"
            ) from None
        except OSError as exc:
            if isinstance(exc, ButlerError):
                raise
            raise self.wrap_os_error(exc, "create the directory for", key) from exc

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
                try:  # noqa: SIM105 - no contextlib: also runs at interpreter exit
                    os.close(fd)
                except OSError:
                    pass

    def __del__(self) -> None:
        try:  # noqa: SIM105 - at interpreter exit the modules close() uses may be gone
            self.close()
        except Exception:
            pass

    def initialize(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise self.wrap_os_error(exc, "create repository directory", "") from exc

    def default_index(self, repository: str) -> Index | None:
        """The index in ``.butler/index.sqlite3``, opened through the kept descriptor of
        ``.butler`` (``/proc/self/fd/N/...``: a swapped directory symlink cannot redirect
        it); the file and SQLite's ``-wal``/``-shm`` must be regular files, not links.
        ``None`` when a reader cannot create the reserved area (queries then list)."""
        from .._index import INDEX_NAME, SqliteIndex

        key = f"{LOCK_DIR}/{INDEX_NAME}"
        try:
            dfd = self._open_dir((LOCK_DIR,), key, create=True)
        except (Absent, PermissionError):
            return None
        except OSError as exc:
            if isinstance(exc, ButlerError):
                raise
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None
            raise self.wrap_os_error(exc, "open the index directory", key) from exc

        def check() -> None:
            for name in (INDEX_NAME, f"{INDEX_NAME}-wal", f"{INDEX_NAME}-shm"):
                try:
                    st = os.lstat(name, dir_fd=dfd)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    raise self._refused(f"{LOCK_DIR}/{name}", (LOCK_DIR, name), st.st_mode)

        if proc_fd():
            path = f"/proc/self/fd/{dfd}/{INDEX_NAME}"
        else:
            path = os.path.join(self.root, LOCK_DIR, INDEX_NAME)
        return SqliteIndex(
            path,
            repository,
            description=self.uri(key),
            opener=check,
            on_close=lambda: os.close(dfd),
        )

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
        """Descriptor of ``.butler/policy.lock`` to ``flock``; ``None`` where this process
        can create no lock file at all (a read-only repository: it cannot write either)."""
        key = f"{LOCK_DIR}/{LOCK_NAME}"
        try:
            return self._lock_fd(key, create=True)
        except OSError as exc:
            if isinstance(exc, ButlerError):
                raise
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise self.wrap_os_error(exc, "create the policy lock", key) from exc
        try:  # another user's lock file: flock needs no write permission
            return self._lock_fd(key, create=False)
        except (Absent, PermissionError):
            return None

    def _lock_fd(self, key: str, create: bool) -> int:
        try:
            dfd = self._open_dir((LOCK_DIR,), key, create=create)
        except Absent as exc:
            if not create:
                raise
            raise StorageError(f"cannot create the policy lock {self.uri(key)!r}") from exc
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC
        flags |= os.O_RDWR | os.O_CREAT if create else os.O_RDONLY
        try:
            fd = os.open(LOCK_NAME, flags, 0o666, dir_fd=dfd)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise self._explain(exc, dfd, (LOCK_DIR, LOCK_NAME), key) from None
        finally:
            os.close(dfd)
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise self._refused(key, (LOCK_DIR, LOCK_NAME), mode)
        return fd

    # -- reading -------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return self._lstat(key) is not None

    def size(self, key: str) -> int:
        st = self._lstat(key)
        if st is None:
            raise self.not_found(key)
        return st.st_size

    def _open(self, key: str, hints: ReadHints, progress: ProgressCallback | None) -> BinaryIO:
        parts = split_key(key)
        fd, size = self._read_fd(key, parts)
        _advise(fd, hints, size)
        raw = io.FileIO(fd, "rb", closefd=True)
        raw.name = os.path.join(self.root, *parts)  # for messages, as open(path) would
        f = io.BufferedReader(raw)
        if progress is None:
            return f
        return ProgressReader(f, os.fstat(fd).st_size, progress)  # type: ignore[return-value]

    def _read_all(self, key: str) -> bytes:
        """A whole dataset's bytes, read straight from the checked descriptor (no file
        object: the small-dataset get path)."""
        fd, size = self._read_fd(key, split_key(key))
        try:
            chunks = []
            # One read for a file of known size (plus one to see the end: a short read
            # is not the end on every file system); a file that grows meanwhile is read
            # to its end, as a file object's read() would.
            want = size + 1 if size is not None else COPY_CHUNK
            while chunk := os.read(fd, want):
                chunks.append(chunk)
                want = COPY_CHUNK
        except OSError as exc:
            raise self.wrap_os_error(exc, "read", key) from exc
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def read_small(self, key: str, max_bytes: int) -> tuple[dict[str, Any], bytes] | None:
        # openat2 (no link, no escape), fgetxattr, one read. No fstat: the kernel keeps
        # user extended attributes to regular files and directories (xattr(7)), and a
        # directory fails the read; the recorded size bounds the read, and a file of
        # another size than recorded (or a changed one) goes to the general path.
        root = self._root_fd
        if root is None:
            return None
        try:
            # The key rule every other method applies (cached): openat2 beneath the root
            # would take ``..``, ``.``, empty and hidden segments that stay inside it.
            split_key(key)
        except ButlerError:  # InvalidDataIdError: the general path raises it
            return None
        fd = openat2_beneath(root, key, READ_FLAGS)
        if fd is None:
            return None
        try:
            raw = fgetxattr(fd, XATTR_NAME)
            if raw is None:
                return None
            meta = read_json(raw)
            size = meta.get("size")
            if type(size) is not int or not 0 <= size <= max_bytes:
                return None
            data = os.read(fd, size + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        return (meta, data) if len(data) == size else None

    def _read_fd(self, key: str, parts: Sequence[str]) -> tuple[int, int | None]:
        """(checked descriptor, size if known) of the stored file: the one `metadata`
        just opened for this key in this thread, else a fresh resolution."""
        kept = getattr(self._kept, "slot", None)
        if kept is not None:
            self._kept.slot = None
            taken = kept.take(key)
            if taken is not None:
                return taken
        fast = self._open_regular(key)
        if fast is not None:
            return fast
        try:
            dfd, fd = self._open_file(key, parts)
        except Absent:
            raise self.not_found(key) from None
        os.close(dfd)
        return fd, None

    def _forget(self) -> None:
        """Drop the descriptor kept by `metadata` (before this thread changes a dataset)."""
        self._kept.slot = None

    def metadata(self, key: str) -> dict[str, Any]:
        parts = split_key(key)
        self._kept.slot = None
        # The common case in two system calls (openat2, fgetxattr); anything unusual (no
        # openat2, a link, no xattr, a large one) takes the full path below, which says
        # what is wrong.
        fast = self._open_regular(key)
        if fast is not None:
            fd, size = fast
            raw = fgetxattr(fd, XATTR_NAME)
            if raw is not None:
                self._kept.slot = _Kept(fd, key, size)
                return read_json(raw)
            os.close(fd)
        try:
            dfd, fd = self._open_file(key, parts)
        except Absent:
            raise self.not_found(key) from None
        try:
            meta = None
            if hasattr(os, "getxattr"):
                try:
                    meta = read_json(os.getxattr(fd, XATTR))
                except OSError as exc:
                    if exc.errno not in NO_XATTR:
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
        for sidecar in (sidecar_name(name, inode), f".{name}{LEGACY_SIDECAR}"):
            try:
                fd = os.open(sidecar, READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENAMETOOLONG):
                    continue
                raise self._explain(exc, dfd, (*parts[:-1], sidecar), key) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise self._refused(key, (*parts[:-1], sidecar), st.st_mode)
                if st.st_size > MAX_SIDECAR:
                    return {}  # butler never writes such a sidecar: not metadata
                raw = os.read(fd, st.st_size + 1)
            except ButlerError:
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "read the metadata of", key) from exc
            finally:
                os.close(fd)
            return read_json(raw[:MAX_SIDECAR])
        return {}

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[str]:
        """Path of the stored file, for libraries that insist on one.

        It is ``/proc/self/fd/N`` of the descriptor opened (and checked) here, valid
        inside the ``with`` block only: a link swapped in meanwhile cannot redirect the
        library. Without ``/proc`` it is the real path, checked just before (a concurrent
        writer of the repository could still swap a directory for a link in between).
        """
        parts = split_key(key)
        fd, _ = self._read_fd(key, parts)
        try:
            yield f"/proc/self/fd/{fd}" if proc_fd() else os.path.join(self.root, *parts)
        finally:
            os.close(fd)

    def list(self, prefix: str = "") -> Iterator[str]:
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        parts = split_key(directory) if directory else ()
        self._root_replaced()  # an empty walk is no miss: check the kept root first
        try:
            dfd = self._open_dir(parts, prefix)
        except (Absent, StorageError):  # nothing there, or a link: never listed
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
        try:
            with os.scandir(dfd) as it:
                entries = sorted(
                    (e for e in it if not e.name.startswith(".")), key=lambda e: e.name
                )
        except OSError:  # unreadable directory: skipped, as os.walk does
            return
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
                child = os.open(name, DIR_FLAGS, dir_fd=dfd)
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
        parts = split_key(key)
        self._forget()
        dfd = self._write_dir(parts, key)
        tmp = tmp_name(parts[-1])
        gone = False
        try:
            try:
                fd = os.open(tmp, CREATE_FLAGS, 0o666, dir_fd=dfd)
                with open(fd, "wb") as raw:
                    writer = CountingWriter(raw, checksum=checksum, progress=progress)
                    yield writer  # type: ignore[misc]
                    raw.flush()
                    meta = self.full_metadata(metadata, writer.size, writer.sha256)
                    inode = self._seal(raw.fileno(), meta)
            except ButlerError:  # some are OSErrors too: never re-wrap them
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "write", key) from exc
            gone = self._commit(dfd, tmp, parts, key, overwrite, meta, inode)
        finally:
            if not gone:
                with contextlib.suppress(OSError):  # the fs may be read-only
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
        parts = split_key(key)
        self._forget()
        dfd = self._write_dir(parts, key)
        tmp = tmp_name(parts[-1])  # keeps the extension: libraries choose compression by it
        gone = False
        try:
            # The library writes through the directory descriptor checked above.
            yield (
                f"/proc/self/fd/{dfd}/{tmp}"
                if proc_fd()
                else os.path.join(self.root, *parts[:-1], tmp)
            )
            try:
                fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | CLOEXEC, dir_fd=dfd)
            except FileNotFoundError as exc:
                raise StorageError(f"the serializer wrote nothing for {self.uri(key)!r}") from exc
            except OSError as exc:
                raise self._explain(exc, dfd, (*parts[:-1], tmp), key) from None
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    raise self._refused(key, (*parts[:-1], tmp), st.st_mode)
                sha = fd_sha256(fd) if checksum else None
                meta = self.full_metadata(metadata, st.st_size, sha)
                inode = self._seal(fd, meta)
            except ButlerError:
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "write", key) from exc
            finally:
                os.close(fd)
            if progress is not None:
                progress(st.st_size, st.st_size)
            gone = self._commit(dfd, tmp, parts, key, overwrite, meta, inode)
        finally:
            if not gone:
                with contextlib.suppress(OSError):  # the fs may be read-only
                    os.unlink(tmp, dir_fd=dfd)
            os.close(dfd)

    def _seal(self, fd: int, meta: Mapping[str, Any]) -> int:
        """Attach the metadata (xattr) and fsync the temporary file; return its inode,
        which only a sidecar needs (0 with xattrs: one ``fstat`` fewer per put)."""
        if self.use_xattr:
            os.setxattr(fd, XATTR, dumps_compact(meta).encode())
        if self.durable:
            os.fsync(fd)
        return 0 if self.use_xattr else os.fstat(fd).st_ino

    def _commit(
        self,
        dfd: int,
        tmp: str,
        parts: Sequence[str],
        key: str,
        overwrite: bool,
        meta: Mapping[str, Any],
        inode: int,
    ) -> bool:
        """Make the temporary file ``tmp`` (inode ``inode``) the dataset, in one rename or
        link; without xattrs its sidecar is written first, under a name bound to ``inode``
        that applies to no file until that very rename. Returns whether ``tmp`` is surely
        gone (renamed; after a link, or a rename over a name with other links, the caller
        unlinks it)."""
        name = parts[-1]
        sidecar: str | None = None
        try:
            # What is there now: a replace must refuse a non-file, a sidecar is spared
            # when the name is taken. A create-only commit with xattrs needs neither
            # (the rename refuses an existing name; `_stat_name` then says what is there).
            old = None
            if overwrite or not self.use_xattr:
                old = self._stat_name(dfd, name)
            if old is not None and not stat.S_ISREG(old.st_mode):
                raise self._refused(key, parts, old.st_mode)
            if old is not None and not overwrite:  # link() would refuse: spare the sidecar
                raise DatasetExistsError(f"a dataset already exists at {self.uri(key)!r}")
            if not self.use_xattr:
                sidecar = sidecar_name(name, inode)
                self._write_sidecar(dfd, sidecar, meta)
            renamed = True
            if overwrite:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                # rename(2) onto another link of the same file succeeds and does nothing:
                # a replaced name with other links may have been that, so the caller
                # unlinks the temporary name (a no-op when it is gone).
                renamed = old is None or old.st_nlink == 1
            else:
                try:
                    # One atomic create-only rename where the system has it, else link
                    # (the temporary name is then unlinked by the caller).
                    renamed = rename_noreplace(dfd, tmp, name)
                    if not renamed:
                        os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    taken = self._stat_name(dfd, name)
                    if taken is not None and not stat.S_ISREG(taken.st_mode):
                        raise self._refused(key, parts, taken.st_mode) from None
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
            stale = [f".{name}{LEGACY_SIDECAR}"]
            if old is not None and old.st_ino != inode:
                stale.append(sidecar_name(name, old.st_ino))
            for path in stale:
                with contextlib.suppress(OSError):
                    os.unlink(path, dir_fd=dfd)
        return renamed

    @staticmethod
    def _stat_name(dfd: int, name: str) -> os.stat_result | None:
        """``lstat`` of ``name`` in the directory ``dfd``; ``None`` if nothing is there."""
        try:
            return os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _write_sidecar(self, dfd: int, sidecar: str, meta: Mapping[str, Any]) -> None:
        with contextlib.suppress(FileNotFoundError):  # an orphan of a reused inode
            os.unlink(sidecar, dir_fd=dfd)
        fd = os.open(sidecar, CREATE_FLAGS, 0o666, dir_fd=dfd)
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
        except Absent:
            return []
        try:
            purge_dir(dfd, "", limit, removed)
        finally:
            os.close(dfd)
        return sorted(removed)

    def remove(self, key: str) -> None:
        parts = split_key(key)
        self._forget()
        name = parts[-1]
        try:
            dfd = self._open_dir(parts[:-1], key)
        except Absent:
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
            for sidecar in (sidecar_name(name, st.st_ino), f".{name}{LEGACY_SIDECAR}"):
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
            except (Absent, OSError):
                return
            try:
                os.rmdir(parts[depth - 1], dir_fd=dfd)  # fails on a link: never followed
            except OSError:
                return
            finally:
                os.close(dfd)
