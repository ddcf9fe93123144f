"""The ``pickle`` format: anything picklable; reading requires an explicit opt-in."""

from __future__ import annotations

import pickle
from typing import Any

from .._errors import UnsafeFormatError
from .._location import ButlerLocation

__all__ = ["read", "write"]


def write(obj: Any, location: ButlerLocation, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    """Pickle ``obj`` (streamed to the storage)."""
    with location.open_write() as f:
        pickle.dump(obj, f, protocol=protocol)


def read(location: ButlerLocation, **_: Any) -> Any:
    """Unpickle, only when the reader allows it (per call or per Butler; never the repository).

    Raises
    ------
    UnsafeFormatError
        Unpickling runs code chosen by whoever wrote the file; it needs ``allow_pickle=True``.
    """
    if not location.allow_pickle:
        raise UnsafeFormatError(
            f"{location.describe()} is a pickle, and unpickling can execute arbitrary code; "
            f"pass allow_pickle=True to get() or Butler() if you trust whoever can write "
            f"this repository (its policy cannot allow it for you)"
        )
    with location.open_read() as f:
        obj = pickle.load(f)
    expected = location.read_type()
    if not isinstance(obj, expected):
        raise location.format_error(
            f"unpickled a {type(obj).__qualname__!r}, not the expected {expected.__qualname__!r}"
        )
    return obj
