"""Local-disk storage with crash-safe writes.

A write goes to a hidden temporary file in the destination directory, is flushed and
fsync'ed (with its metadata in a ``user.butler`` extended attribute, so bytes and metadata
commit together), then renamed over the destination (``os.replace``) — or hard-linked to it
when overwriting is not allowed, since ``link`` fails atomically if the name exists. A
writer killed at any moment leaves either the old file or the new one, plus at worst a
hidden ``*.butler-tmp*`` file that `list` never reports.

Because the bytes are on disk before the name points at them, a power loss cannot expose a
partial file either. What it can do, unless ``sync_directories=True`` also fsyncs the
directory after the rename, is undo a put that had returned: the dataset is then the
complete previous version. That directory fsync doubles the cost of small puts, so it is
opt-in.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import posixpath
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, BinaryIO

from .._errors import ButlerError, DatasetExistsError, InvalidDataIdError, StorageError
from .._storage import CountingWriter, ProgressCallback, ProgressReader, Storage, file_sha256

__all__ = ["PosixStorage"]

_XATTR = "user.butler"
_TMP_MARK = ".butler-tmp"
_SIDECAR = ".butler-meta"


def _xattrs_supported(directory: str) -> bool:
    """Probe whether the filesystem under ``directory`` accepts user extended attributes."""
    if not hasattr(os, "setxattr"):
        return False
    probe = os.path.join(directory, f".butler-probe-{secrets.token_hex(4)}")
    try:
        with open(probe, "wb"):
            pass
        os.setxattr(probe, _XATTR, b"{}")
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


class PosixStorage(Storage):
    """Datasets as files under a local directory.

    Parameters
    ----------
    root
        Directory path, or a ``file://`` URI.
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

    def __init__(
        self,
        root: str,
        *,
        durable: bool = True,
        sync_directories: bool = False,
        **options: Any,
    ) -> None:
        if root.startswith("file://"):
            root = root[len("file://") :]
        root = os.path.abspath(os.path.expanduser(root))
        super().__init__(root, **options)
        self.durable = durable
        self.sync_directories = sync_directories
        self._use_xattr: bool | None = None

    # -- paths -------------------------------------------------------------------------

    def path(self, key: str) -> str:
        """Absolute path of a key; refuses keys that would leave the root."""
        if not key or "\0" in key or key.startswith("/") or "\\" in key:
            raise InvalidDataIdError(f"invalid storage key {key!r}")
        normal = posixpath.normpath(key)
        if normal == ".." or normal.startswith("../") or normal != key.rstrip("/"):
            raise InvalidDataIdError(f"storage key {key!r} would leave the repository root")
        return os.path.join(self.root, normal)

    def uri(self, key: str = "") -> str:
        return os.path.join(self.root, key) if key else self.root

    @property
    def use_xattr(self) -> bool:
        """Whether metadata is kept in extended attributes (else in hidden sidecar files)."""
        if self._use_xattr is None:
            self._use_xattr = os.path.isdir(self.root) and _xattrs_supported(self.root)
        return self._use_xattr

    @use_xattr.setter
    def use_xattr(self, value: bool) -> None:
        self._use_xattr = value

    # -- lifecycle -----------------------------------------------------------------------

    def initialize(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise self.wrap_os_error(exc, "create repository directory", "") from exc

    # -- reading -------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        return os.path.isfile(self.path(key))

    def open(
        self, key: str, mode: str = "rb", *, progress: ProgressCallback | None = None
    ) -> BinaryIO:
        if mode != "rb":
            raise ValueError("PosixStorage.open() only reads; write with atomic_write()")
        try:
            f = open(self.path(key), "rb")  # noqa: SIM115 - returned to the caller
        except FileNotFoundError:
            raise self.not_found(key) from None
        except OSError as exc:
            raise self.wrap_os_error(exc, "open", key) from exc
        if progress is None:
            return f
        return ProgressReader(f, os.fstat(f.fileno()).st_size, progress)  # type: ignore[return-value]

    def size(self, key: str) -> int:
        try:
            return os.stat(self.path(key)).st_size
        except FileNotFoundError:
            raise self.not_found(key) from None

    def metadata(self, key: str) -> dict[str, Any]:
        path = self.path(key)
        raw: bytes | None = None
        try:
            if self.use_xattr:
                try:
                    raw = os.getxattr(path, _XATTR)
                except OSError as exc:
                    if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
                        raise
            if raw is None:
                with contextlib.suppress(FileNotFoundError), open(self._sidecar(path), "rb") as f:
                    raw = f.read()
        except FileNotFoundError:
            raise self.not_found(key) from None
        if raw is None:
            if not os.path.exists(path):
                raise self.not_found(key)
            return {}
        try:
            meta = json.loads(raw)
        except ValueError:
            return {}
        return meta if isinstance(meta, dict) else {}

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[str]:
        path = self.path(key)
        if not os.path.isfile(path):
            raise self.not_found(key)
        yield path

    def list(self, prefix: str = "") -> Iterator[str]:
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.path(directory) if directory else self.root
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for name in sorted(filenames):
                if name.startswith("."):
                    continue  # temporary files, sidecars, probes
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if key.startswith(prefix) and key != "butler.yaml":
                    yield key

    # -- writing -------------------------------------------------------------------------

    def _tmp_path(self, final: str, suffix: str = "") -> str:
        directory, name = os.path.split(final)
        return os.path.join(directory, f".{name}.{secrets.token_hex(6)}{_TMP_MARK}{suffix}")

    @staticmethod
    def _sidecar(path: str) -> str:
        directory, name = os.path.split(path)
        return os.path.join(directory, f".{name}{_SIDECAR}")

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
        final = self.path(key)
        tmp = self._open_tmp_dir(final, key)
        try:
            try:
                with open(tmp, "xb") as raw:
                    writer = CountingWriter(raw, checksum=checksum, progress=progress)
                    yield writer  # type: ignore[misc]
                    raw.flush()
                    meta = self._full_metadata(metadata, writer.size, writer.sha256)
                    self._set_metadata(raw.fileno(), meta)
                    if self.durable:
                        os.fsync(raw.fileno())
            except ButlerError:  # some are OSErrors too: never re-wrap them
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "write", key) from exc
            self._commit(tmp, final, key, overwrite, meta)
        finally:
            with contextlib.suppress(OSError):  # gone already, or the fs is read-only
                os.unlink(tmp)

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
        final = self.path(key)
        self._open_tmp_dir(final, key)
        tmp = self._tmp_path(final, suffix=_extension(final))
        try:
            yield tmp
            try:
                size = os.path.getsize(tmp)
                meta = self._full_metadata(metadata, size, file_sha256(tmp) if checksum else None)
                fd = os.open(tmp, os.O_RDWR)
                try:
                    self._set_metadata(fd, meta)
                    if self.durable:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except FileNotFoundError as exc:
                raise StorageError(f"the serializer wrote nothing for {self.uri(key)!r}") from exc
            except ButlerError:
                raise
            except OSError as exc:
                raise self.wrap_os_error(exc, "write", key) from exc
            if progress is not None:
                progress(size, size)
            self._commit(tmp, final, key, overwrite, meta)
        finally:
            with contextlib.suppress(OSError):  # gone already, or the fs is read-only
                os.unlink(tmp)

    def _open_tmp_dir(self, final: str, key: str) -> str:
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
        except OSError as exc:
            raise self.wrap_os_error(exc, "create the directory for", key) from exc
        return self._tmp_path(final)

    @staticmethod
    def _full_metadata(
        metadata: Mapping[str, Any] | None, size: int, sha256: str | None
    ) -> dict[str, Any]:
        meta = dict(metadata or {})
        meta["size"] = size
        if sha256 is not None:
            meta["sha256"] = sha256
        return meta

    def _set_metadata(self, fd: int, meta: Mapping[str, Any]) -> None:
        if self.use_xattr:
            os.setxattr(fd, _XATTR, json.dumps(meta, separators=(",", ":")).encode())

    def _commit(
        self, tmp: str, final: str, key: str, overwrite: bool, meta: Mapping[str, Any]
    ) -> None:
        try:
            if not self.use_xattr:
                self._write_sidecar(final, meta)
            if overwrite:
                os.replace(tmp, final)
            else:
                try:
                    os.link(tmp, final)  # atomic create-if-absent, unlike rename
                except FileExistsError:
                    raise DatasetExistsError(
                        f"a dataset already exists at {self.uri(key)!r}"
                    ) from None
            if self.sync_directories:
                self._fsync_dir(os.path.dirname(final))
        except ButlerError:
            raise
        except OSError as exc:
            raise self.wrap_os_error(exc, "commit", key) from exc

    def _write_sidecar(self, final: str, meta: Mapping[str, Any]) -> None:
        # Without xattrs metadata lives in a hidden sidecar, written (atomically) just before
        # the data is renamed into place.
        sidecar = self._sidecar(final)
        tmp = self._tmp_path(sidecar)
        with open(tmp, "w") as f:
            json.dump(dict(meta), f)
        os.replace(tmp, sidecar)

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def purge_debris(self, older_than: float = 3600.0) -> Sequence[str]:
        """Delete ``*.butler-tmp*`` files (from killed writers) not modified for
        ``older_than`` seconds; a live writer's temporary file is younger than that."""
        import time

        limit = time.time() - older_than
        removed = []
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if _TMP_MARK not in name:
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < limit:
                        os.unlink(path)
                        removed.append(os.path.relpath(path, self.root))
        return sorted(removed)

    def remove(self, key: str) -> None:
        path = self.path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise self.not_found(key) from None
        except OSError as exc:
            raise self.wrap_os_error(exc, "remove", key) from exc
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._sidecar(path))
        self._prune_empty_dirs(os.path.dirname(path))

    def _prune_empty_dirs(self, directory: str) -> None:
        while directory != self.root and directory.startswith(self.root):
            try:
                os.rmdir(directory)
            except OSError:
                return
            directory = os.path.dirname(directory)


def _extension(path: str) -> str:
    name = os.path.basename(path)
    dot = name.find(".")
    return name[dot:] if dot > 0 else ""
