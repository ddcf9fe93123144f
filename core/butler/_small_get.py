"""The small-get shortcut's constants and bookkeeping (`Butler._get_small`, used by `get`
and `get_many`): what it reads, how it says "take the general path", and how a dataset
type that never fits it stops paying for the attempt."""

from __future__ import annotations

from typing import Any

__all__ = [
    "_GENERAL",
    "_MAX_SMALL_KEYS",
    "_SMALL_GET",
    "_SMALL_MISSES",
    "_SMALL_SKIP",
    "_small_miss",
]

#: The largest dataset `Butler._get_small` reads (a larger one takes the general path).
_SMALL_GET = 64 * 1024
#: Data IDs whose keys `Butler._small_key` keeps (all are dropped when full).
_MAX_SMALL_KEYS = 4096
#: Misses in a row after which `Butler._get_small` is skipped for `_SMALL_SKIP` gets.
_SMALL_MISSES = 4
_SMALL_SKIP = 256
#: `Butler._get_small`'s answer "take the general path".
_GENERAL: Any = object()


def _small_miss(hint: list[Any]) -> Any:
    """Count a `Butler._get_small` that read and could not answer (a large dataset, a
    class ``decode`` refuses...): after `_SMALL_MISSES` in a row, the next `_SMALL_SKIP`
    gets of the type take the general path at once, so a type that never fits the
    shortcut pays for its extra read (a query, on a database) on a few gets in hundreds.
    Returns `_GENERAL`."""
    hint[2] += 1
    if hint[2] >= _SMALL_MISSES:
        hint[2] = 0
        hint[1] = _SMALL_SKIP
    return _GENERAL
