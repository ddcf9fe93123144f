"""Checks shared by every FITS serializer that need no astropy (the common API uses them)."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["check_signature", "disk_full_error", "hdu_key", "identify", "os_error_in_chain"]

_SIGNATURES = (b"SIMPLE  =", b"\x1f\x8b", b"BZh")  # FITS, gzip- and bzip2-compressed FITS


def check_signature(head: bytes, location: ButlerLocation) -> None:
    """Raise `FormatError` unless ``head`` starts like a (possibly compressed) FITS file."""
    if not head:
        raise location.format_error("is empty, not a FITS file")
    if not head.startswith(_SIGNATURES):
        raise location.format_error(
            f"is not a FITS file: it starts with {head[:16]!r}, not 'SIMPLE  ='"
        )


def identify(first_bytes: bytes) -> bool:
    """True when ``first_bytes`` start a FITS file or a gzip stream that inflates to one.

    Files named without a FITS extension (``image.gz``, a download's temporary name) are
    still recognised; the ``SIMPLE  =`` signature itself is the descriptor's ``magic``.
    """
    import zlib

    if first_bytes.startswith(b"SIMPLE  ="):
        return True
    if not first_bytes.startswith(b"\x1f\x8b"):
        return False
    try:  # a few dozen compressed bytes inflate to at least the 9 of the signature
        head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(first_bytes, 16)
    except zlib.error:
        return False
    return head.startswith(b"SIMPLE  =")


def hdu_key(location: ButlerLocation) -> Any:
    """The HDU asked for: ``parameters["hdu"]``, else ``additional_data["hdu"]``, else None.

    An index, an EXTNAME, or an ``[EXTNAME, EXTVER]`` pair (lists from YAML become tuples).
    """
    key = location.parameters.get("hdu", location.additional_data.get("hdu"))
    if isinstance(key, list):
        key = tuple(key)
    return key


def os_error_in_chain(exc: BaseException) -> OSError | None:
    """The first OS error with an errno behind ``exc`` (itself, its cause or context).

    FITS writers hide the storage's failure: astropy answers ENOSPC with an errno-less
    ``OSError("Not enough space on disk ...")`` (on a path) or an AttributeError from its
    free-space check (on a stream), which butler would report as a format error.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        current = current.__cause__ or current.__context__
    return None


#: Free space under which an errno-less write error on a local path is taken as ENOSPC.
FULL_DISK_BYTES = 2**20


def disk_full_error(path: str, exc: BaseException) -> OSError | None:
    """The OS error behind a failed write to the local ``path``, when there is one.

    An errno in the exception chain wins. Otherwise, libraries writing to a path report a
    full disk without an errno (numpy: ``"524288 requested and 260248 written"``, astropy:
    ``"Not enough space on disk"``): when the file system is (nearly) full, that is what
    happened, and it is reported as ENOSPC rather than as a format error.
    """
    found = os_error_in_chain(exc)
    if found is not None or not isinstance(exc, OSError):
        return found
    try:
        stat = os.statvfs(os.path.dirname(os.path.abspath(path)) or ".")
    except (OSError, AttributeError):  # no statvfs (Windows) or the directory is gone
        return None
    if stat.f_bavail * stat.f_frsize >= FULL_DISK_BYTES:
        return None
    return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({exc})", path)
