"""The *common API* serializer: any class with ``writeFits(path)`` and ``readFits(path, hdu=0)``.

Registered once, for `FitsReadWritable`; the registry's ABC-aware lookup finds it for every
class with the two methods, without per-class code. Such classes write files themselves,
so they get local paths (committed atomically; on remote storages, staged in a temporary
file). Nothing here imports astropy: the class may use any FITS library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._checks import check_signature, disk_full_error, hdu_key

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]


def write(obj: Any, location: ButlerLocation, **_: Any) -> None:
    """Call ``obj.writeFits(path)`` on a path that becomes the dataset atomically.

    An OS error (a full disk...) hidden behind the class's own exception is re-raised, so
    it is reported as a `StorageError`, not as a format error.
    """
    with location.local_path_for_write() as path:
        try:
            obj.writeFits(path)
        except Exception as exc:
            error = disk_full_error(path, exc)
            if error is not None and error is not exc:
                raise error from None
            raise


def read(location: ButlerLocation, **_: Any) -> Any:
    """Call ``cls.readFits(path)`` (``hdu=`` too when one is asked for) on the recorded class."""
    cls = location.read_type()
    key = hdu_key(location)
    with location.local_path() as path:
        with open(path, "rb") as f:
            check_signature(f.read(80), location)
        if key is None:
            return cls.readFits(path)  # type: ignore[attr-defined]
        return cls.readFits(path, hdu=key)  # type: ignore[attr-defined]
