"""Runs and collections: where a put goes and where a get looks.

A *run* holds at most one dataset per (dataset type, data ID); the same data ID may exist in
any number of runs. The *default run* is where every dataset of a repository written before
runs existed lives, under the keys it always had (nothing moves). Any other run's datasets
live under ``@runs/<run>/<the template's key>``: the first segment ``@runs`` is refused for
default-run keys, so no data ID of any dataset type can alias a dataset of a run.

A *collection* is a run or a named chain (an ordered list of collections, stored in the
repository's policy); reading searches a list of collections in order, first match wins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._errors import InvalidDataIdError

__all__ = [
    "DEFAULT_RUN",
    "RUNS_SEGMENT",
    "check_run_name",
    "expand_collections",
    "is_run_key",
    "run_key",
    "run_of_key",
    "run_prefix",
]

#: The run of datasets put without a run (and of every dataset written before runs).
DEFAULT_RUN = "default"

#: First key segment of the datasets of every run but the default one.
RUNS_SEGMENT = "@runs"

#: Run and chain names: letters, digits, ``_.-+=``; ``/``-separated parts (LSST's
#: ``u/someone/rerun-1``) are allowed and stored as ``~`` in the key segment. No ``,``:
#: the command line separates collections with it.
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*"
_RUN_NAME = re.compile(rf"{_PART}(?:/{_PART})*\Z")
_MAX_RUN = 128


def collection_names(value: Any, *, what: str = "collections") -> tuple[str, ...]:
    """``value`` as a tuple of names: one name, or any iterable of them (each checked by
    the caller). Anything else is an `InvalidDataIdError`, not Python's "not iterable"."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, bytes | Mapping) or not isinstance(value, Iterable):
        raise InvalidDataIdError(
            f"{what} must be a collection name or a list of names, not "
            f"{type(value).__name__} {repr(value)[:80]}"
        )
    return tuple(value)


def check_run_name(name: Any, *, what: str = "run") -> str:
    """Return ``name`` if it is a valid run or collection name, else `InvalidDataIdError`."""
    if not isinstance(name, str) or len(name) > _MAX_RUN or not _RUN_NAME.match(name):
        shown = repr(name)[:80]
        raise InvalidDataIdError(
            f"invalid {what} name {shown}: use 1-{_MAX_RUN} letters, digits and '_.-+=', "
            f"optionally in '/'-separated parts (like 'u/me/rerun-1'), no part starting "
            f"with '.', '-', '+' or '='"
        )
    return name


def run_prefix(run: str) -> str:
    """Key prefix of a run's datasets (``""`` for the default run)."""
    if run == DEFAULT_RUN:
        return ""
    return f"{RUNS_SEGMENT}/{run.replace('/', '~')}/"


def run_key(run: str, key: str) -> str:
    """The storage key of the dataset mapped to ``key`` in ``run``."""
    return run_prefix(run) + key


def run_of_key(key: str) -> tuple[str, str] | None:
    """(run, template key) of a stored key; ``None`` for a malformed run key."""
    if not key.startswith(f"{RUNS_SEGMENT}/"):
        return DEFAULT_RUN, key
    parts = key.split("/", 2)
    if len(parts) < 3 or not parts[1] or not parts[2]:
        return None
    run = parts[1].replace("~", "/")
    if not _RUN_NAME.match(run) or run == DEFAULT_RUN:
        return None
    return run, parts[2]


#: Top segment of the parts of disassembled composites (`butler._composite`): listable on
#: every storage (unlike ``.butler/``), and like the runs area never a data ID's key.
PARTS_SEGMENT = "@parts"


_AREAS = (RUNS_SEGMENT, PARTS_SEGMENT)
_AREA_PREFIXES = (f"{RUNS_SEGMENT}/", f"{PARTS_SEGMENT}/")


def is_run_key(key: str) -> bool:
    """True for keys in the runs area, or in the parts area of disassembled composites
    (never a default-run dataset's key)."""
    return key in _AREAS or key.startswith(_AREA_PREFIXES)


def expand_collections(
    collections: Iterable[str], chains: Mapping[str, Sequence[str]]
) -> tuple[str, ...]:
    """The runs searched for ``collections``, in order: chains expanded depth first, each
    run once (its first position counts). A cycle of chains is an `InvalidDataIdError`.

    Each chain is expanded once (a chain met again adds no run that is not already
    listed), without recursion: the cost is linear in the chains' sizes however deep or
    shared they are (the policy holding them is untrusted input).
    """
    result: list[str] = []
    seen: set[str] = set()
    done: set[str] = set()  # chains fully expanded: cycle-free, every run already listed

    for top in collections:
        name = check_run_name(top, what="collection")
        if name not in chains:
            if name not in seen:
                seen.add(name)
                result.append(name)
            continue
        if name in done:
            continue
        path = [name]  # the chains being expanded, outermost first
        on_path = {name}
        stack = [iter(chains[name])]
        while stack:
            member = next(stack[-1], None)
            if member is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if member in on_path:
                raise InvalidDataIdError(
                    f"collection chain cycle: {_cycle_text([*path, member])}; a chain "
                    f"cannot contain itself"
                )
            if member in chains:
                if member not in done:
                    path.append(member)
                    on_path.add(member)
                    stack.append(iter(chains[member]))
            elif member not in seen:
                seen.add(member)
                result.append(member)
    return tuple(result)


def _cycle_text(names: Sequence[str], most: int = 12) -> str:
    """``a -> b -> a``, the middle left out of a long one."""
    if len(names) > most:
        left = len(names) - most
        names = [*names[: most // 2], f"... ({left} more)", *names[-(most // 2) :]]
    return " -> ".join(names)
