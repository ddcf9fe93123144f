"""Two Linux system calls Python does not offer in the shape a get needs.

* ``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`` opens ``cfg/1/2.json``
  under the root descriptor in *one* call with the guarantees `._resolve` builds from one
  ``openat(O_NOFOLLOW)`` per segment: the kernel refuses a symbolic link anywhere in the
  path (``ELOOP``) and any escape from the root (``EXDEV``), atomically, so a concurrent
  swap of a directory for a link cannot redirect it either.
* ``fgetxattr`` into a 4 KiB buffer: ``os.getxattr`` first tries 128 bytes and, for
  butler's metadata (~330 bytes with provenance), fails with ``ERANGE`` and asks again
  with 64 KiB, on every read.

Both are reached through ``ctypes``, imported on the first call (never at
``import butler``). Where either is missing (not Linux, a kernel before 5.6, a seccomp
filter answering ``ENOSYS`` or ``EPERM``), the functions return ``None`` and the callers
take the portable path, which also produces every error message: these functions only
ever answer the common case faster, never differently.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from typing import Any

__all__ = ["ABSENT", "fgetxattr", "lstat_beneath", "openat2_beneath", "rename_noreplace"]

#: The ``openat2`` system call number (the same on every Linux architecture since 5.6).
_SYS_OPENAT2 = 437
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
#: Largest metadata read without a retry (butler writes ~330 bytes; more goes to os).
XATTR_BUFFER = 4096
#: `lstat_beneath`'s answer when nothing is at the path (a missing segment or file).
ABSENT: Any = object()
#: ``O_PATH``: a descriptor naming the file, without opening it for reading (so no
#: permission on the file is needed, as for ``stat``); 0 where the system has none.
_O_PATH = getattr(os, "O_PATH", 0)
#: Errors that mean "this system cannot": the fast path is then switched off for good.
_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG})

#: The flags ``fgetxattr`` loads the calls with when it comes first (those of reads).
_DEFAULT_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

_lock = threading.Lock()
_buffers = threading.local()  # each thread's fgetxattr buffer
_calls: Any = None  # None: not loaded yet; False: unavailable; else the loaded functions
#: Tests switch the fast path off to exercise the portable one.
enabled = sys.platform.startswith("linux")


class _Calls:
    """The ``ctypes`` functions and the ``open_how`` argument, loaded once."""

    def __init__(self, read_flags: int) -> None:
        import ctypes

        class OpenHow(ctypes.Structure):
            _fields_ = [
                ("flags", ctypes.c_uint64),
                ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64),
            ]

        libc = ctypes.CDLL(None, use_errno=True)
        self.ctypes = ctypes
        self.how = OpenHow(read_flags, 0, _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS)
        self.how_ref = ctypes.byref(self.how)
        self.how_size = ctypes.sizeof(self.how)
        resolve = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS
        self.how_path = OpenHow(_O_PATH | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0, resolve)
        self.how_path_ref = ctypes.byref(self.how_path)
        self.syscall = libc.syscall
        self.syscall.restype = ctypes.c_long
        self.syscall.argtypes = [
            ctypes.c_long,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        self.openat2_ok = True
        self.renameat2: Any = getattr(libc, "renameat2", None)  # glibc >= 2.28
        if self.renameat2 is not None:
            self.renameat2.restype = ctypes.c_int
            self.renameat2.argtypes = [
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_int,
                ctypes.c_char_p,
                ctypes.c_uint,
            ]
        self.fgetxattr = libc.fgetxattr
        self.fgetxattr.restype = ctypes.c_ssize_t
        self.fgetxattr.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]


def _load(read_flags: int) -> Any:
    global _calls
    with _lock:
        if _calls is None:
            try:
                _calls = _Calls(read_flags)
            except (ImportError, OSError, AttributeError):  # no ctypes, no libc symbol
                _calls = False
    return _calls


def openat2_beneath(dir_fd: int, path: str, flags: int) -> int | None:
    """A descriptor of ``path`` under ``dir_fd`` opened with ``flags`` (the same flags on
    every call of the process), refusing links and escapes in the kernel; ``None`` when
    that failed for any reason, or the system has no ``openat2``: the caller then
    resolves the path segment by segment and reports what is wrong."""
    if not enabled:
        return None
    calls = _calls if _calls is not None else _load(flags)
    if not calls or not calls.openat2_ok or calls.how.flags != flags:
        return None
    fd = _openat2(calls, dir_fd, path, calls.how_ref)
    return fd if fd >= 0 else None


def _openat2(calls: Any, dir_fd: int, path: str, how_ref: Any) -> int:
    """``openat2`` of ``path`` under ``dir_fd`` as ``how_ref`` says: the descriptor, or
    minus the error number (one that means "this system cannot" switches the calls off)."""
    fd = calls.syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), how_ref, calls.how_size)
    if fd >= 0:
        return int(fd)
    code = calls.ctypes.get_errno() or errno.EIO  # never 0: that would read as a descriptor
    if code in _UNSUPPORTED:
        calls.openat2_ok = False
    return -code


def lstat_beneath(dir_fd: int, path: str) -> os.stat_result | Any | None:
    """``lstat`` of ``path`` under ``dir_fd`` with `openat2_beneath`'s guarantees (no link
    anywhere in the path, no escape), in one ``openat2(O_PATH)`` and an ``fstat``.

    Returns the stat result, `ABSENT` when a segment or the file does not exist
    (``ENOENT``: a link or an escape is ``ELOOP``/``EXDEV``, never that), or ``None``
    for anything else (the system cannot, a link, a segment that is a file...): the
    caller then resolves the path segment by segment, which says what is wrong.
    """
    if not enabled or not _O_PATH:
        return None
    calls = _calls if _calls is not None else _load(_DEFAULT_FLAGS)
    if not calls or not calls.openat2_ok:
        return None
    fd = _openat2(calls, dir_fd, path, calls.how_path_ref)
    if fd < 0:
        return ABSENT if fd == -errno.ENOENT else None
    try:
        return os.fstat(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def fgetxattr(fd: int, name: bytes) -> bytes | None:
    """The value of extended attribute ``name`` of ``fd`` if it fits `XATTR_BUFFER`, else
    ``None`` (the caller asks ``os.getxattr``, which also raises the errors)."""
    if not enabled:
        return None
    calls = _calls if _calls is not None else _load(_DEFAULT_FLAGS)
    if not calls:
        return None
    kept = getattr(_buffers, "xattr", None)  # one buffer per thread, reused
    if kept is None:
        buffer = (calls.ctypes.c_char * XATTR_BUFFER)()
        kept = (buffer, memoryview(buffer).cast("B"))
    else:
        # Taken while in use: a call made on this thread before the value is copied out
        # (a signal handler or a finalizer doing a get) fills a buffer of its own.
        _buffers.xattr = None
    size = calls.fgetxattr(fd, name, kept[0], XATTR_BUFFER)
    # The value only (``buffer.raw`` copies all 4 KiB).
    value = kept[1][:size].tobytes() if size >= 0 else None
    _buffers.xattr = kept
    return value


#: ``renameat2`` flag: fail with ``EEXIST`` instead of replacing the destination.
_RENAME_NOREPLACE = 1


def rename_noreplace(dir_fd: int, src: str, dst: str) -> bool:
    """Rename ``src`` to ``dst`` in directory ``dir_fd`` unless ``dst`` exists, atomically
    (``renameat2(RENAME_NOREPLACE)``): a create-only commit in one operation, where the
    portable way is ``link`` then ``unlink`` of the temporary name.

    Returns
    -------
    bool
        ``True`` when renamed; ``False`` when the system or the file system cannot (the
        caller then links).

    Raises
    ------
    FileExistsError
        If ``dst`` exists (nothing was changed).
    OSError
        Any other failure of the rename itself.
    """
    if not enabled:
        return False
    calls = _calls if _calls is not None else _load(_DEFAULT_FLAGS)
    if not calls or calls.renameat2 is None:
        return False
    result = calls.renameat2(dir_fd, os.fsencode(src), dir_fd, os.fsencode(dst), _RENAME_NOREPLACE)
    if result == 0:
        return True
    code = calls.ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # no renameat2, or a file system without RENAME_NOREPLACE
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), dst)
    raise OSError(code, os.strerror(code), dst)
