"""Checks shared by every FITS serializer that need no astropy (the common API uses them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["check_signature", "hdu_key"]

_SIGNATURES = (b"SIMPLE  =", b"\x1f\x8b", b"BZh")  # FITS, gzip- and bzip2-compressed FITS


def check_signature(head: bytes, location: ButlerLocation) -> None:
    """Raise `FormatError` unless ``head`` starts like a (possibly compressed) FITS file."""
    if not head:
        raise location.format_error("is empty, not a FITS file")
    if not head.startswith(_SIGNATURES):
        raise location.format_error(
            f"is not a FITS file: it starts with {head[:16]!r}, not 'SIMPLE  ='"
        )


def hdu_key(location: ButlerLocation) -> Any:
    """The HDU asked for: ``parameters["hdu"]``, else ``additional_data["hdu"]``, else None.

    An index, an EXTNAME, or an ``[EXTNAME, EXTVER]`` pair (lists from YAML become tuples).
    """
    key = location.parameters.get("hdu", location.additional_data.get("hdu"))
    if isinstance(key, list):
        key = tuple(key)
    return key
