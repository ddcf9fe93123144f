"""How much memory one read may allocate, decided by the reader (never by the repository).

A 1 KB HDF5 file can declare a 2 GiB dataset and a 1 MB ``.fits.gz`` can inflate to 1 GiB.
Serializers call `ButlerLocation.check_read_size` with the size a file *declares* before
allocating it; past the limit the read fails with a `FormatError` naming the declared size
and how to raise the limit.
"""

from __future__ import annotations

import os

from ._errors import ButlerError

__all__ = ["ENV_MAX_READ_BYTES", "default_max_read_bytes", "parse_size"]

#: Environment variable overriding the default limit (bytes, or ``"4GiB"``-style).
ENV_MAX_READ_BYTES = "BUTLER_MAX_READ_BYTES"

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class LimitError(ButlerError, ValueError):
    """A size limit given by the caller is not a size."""


def parse_size(value: int | str) -> int:
    """``1024``, ``"512MiB"``, ``"4 GB"`` → bytes.

    Raises
    ------
    LimitError
        If ``value`` is not a non-negative size.
    """
    if isinstance(value, bool):
        raise LimitError(f"size {value!r} is not a number of bytes")
    if isinstance(value, int):
        number, unit = value, ""
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits) :]
        try:
            number = int(float(digits)) if digits else -1
        except ValueError:
            number = -1
    else:
        raise LimitError(f"size {value!r} is not a number of bytes")
    if number < 0 or unit not in _UNITS:
        raise LimitError(f"size {value!r} is not a number of bytes (e.g. 1073741824 or '1GiB')")
    return number * _UNITS[unit]


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # no /proc (not Linux) or an unexpected format: ask sysconf below
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def default_max_read_bytes() -> int:
    """The limit when the caller set none: ``$BUTLER_MAX_READ_BYTES``, else the memory
    available now (``MemAvailable``), else 4 GiB."""
    env = os.environ.get(ENV_MAX_READ_BYTES)
    if env:
        return parse_size(env)
    return _available_memory() or 4 * 2**30
