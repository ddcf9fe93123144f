"""Entry points of one group, read from the installed distributions without importlib.metadata.

Why not ``importlib.metadata``
------------------------------
Importing it (with ``email``, ``zipfile``, ``csv``, ``socket``, ``calendar`` ...) costs about
30 ms of CPU, a third of ``import butler`` plus discovery, only to read a handful of small
text files. Reading them here does the same file-system work importlib.metadata's own
``entry_points()`` does (list each ``sys.path`` directory, read each distribution's
``entry_points.txt``) in 1 to 2 ms, with nothing to import.

Always fresh, so nothing to invalidate
--------------------------------------
Every call looks at the file system as it is now: there is no cache that installing or
removing a distribution could make stale, so a removed distribution's plugin can never be
loaded and a new one is seen by the next discovery (``refresh_plugins``).

Same view as importlib.metadata
-------------------------------
The scan follows ``importlib.metadata.entry_points()`` (CPython 3.11 to 3.13,
``MetadataPathFinder``/``FastPath``/``Lookup``): every ``*.dist-info`` and ``*.egg-info``
entry of every ``sys.path`` directory, in ``sys.path`` order; a distribution name (the part
of the entry's name before the first ``-``, PEP 503-normalised) seen again later is
ignored, as ``_unique`` does; ``entry_points.txt`` is parsed like its ``Sectioned`` parser
(stripped lines, ``#`` comments, ``[group]`` headers, ``name = value``) and values are loaded
with the same pattern as `importlib.metadata.EntryPoint.load`. Where the file system alone
does not describe what importlib.metadata would see, the scan does not guess:
`entry_points` defers to importlib.metadata itself (see `_needs_importlib_metadata`).

One difference, on purpose: a line without ``=`` in some distribution's
``entry_points.txt`` is skipped, where importlib.metadata raises for the
whole call (``TypeError`` on 3.11) and so would hide every plugin because of one broken
distribution.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from dataclasses import dataclass
from typing import Any

from ._errors import PluginError

__all__ = ["EntryPoint", "Installed", "distribution_version", "entry_points"]

_INFO_SUFFIXES = (".dist-info", ".egg-info")
_SEPARATORS = re.compile(r"[-_.]+")
# importlib.metadata.EntryPoint.pattern, verbatim.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


@dataclass(frozen=True)
class EntryPoint:
    """One entry point, with the name and version of the distribution declaring it."""

    name: str
    value: str
    group: str
    distribution: str
    version: str

    def load(self) -> Any:
        """Import the module (and attribute) the value names, as importlib.metadata does."""
        match = _VALUE.match(self.value)
        if match is None:
            raise PluginError(
                f"entry point {self.name!r} of {self.distribution!r} names no importable "
                f"object: {self.value!r} is not 'module' or 'module:attribute'"
            )
        target: Any = importlib.import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            target = getattr(target, attr)
        return target


def _normalize(name: str) -> str:
    """PEP 503 normalisation with dashes as underscores (importlib.metadata's ``Prepared``)."""
    return _SEPARATORS.sub("_", name.lower())


def _needs_importlib_metadata() -> bool:
    """Whether some distributions could be visible to importlib.metadata but not to the scan.

    That is: a finder on ``sys.meta_path`` other than the standard path finder that provides
    its own distributions (``find_distributions``), or a ``sys.path`` entry that is not a plain
    directory name yet may hold distributions (a zip archive or an unzipped ``.egg``).
    """
    from importlib.machinery import PathFinder

    for finder in sys.meta_path:
        if finder is PathFinder or _is_backport_path_finder(finder):
            continue
        if hasattr(finder, "find_distributions"):
            return True
    for entry in sys.path:
        if not isinstance(entry, str) or entry.lower().endswith(".egg"):
            return True
        if entry and os.path.exists(entry) and not os.path.isdir(entry):
            return True
    return False


def _is_backport_path_finder(finder: object) -> bool:
    """The ``importlib_metadata`` backport's finder, which it adds to ``sys.meta_path`` when
    imported (dask, among others, imports it): it finds the distributions of ``sys.path``
    directories, exactly those the scan reads, so it needs no hand-over."""
    cls = finder if isinstance(finder, type) else type(finder)
    return cls.__name__ == "MetadataPathFinder" and cls.__module__.startswith("importlib_metadata")


def _stem_name(child: str) -> str:
    """The normalised distribution name of a metadata entry such as ``Foo_Bar-1.0.dist-info``."""
    return _normalize(child.lower().rpartition(".")[0].partition("-")[0])


def _info_directories() -> dict[str, str]:
    """Normalised distribution name -> its metadata directory, the first one on sys.path."""
    found: dict[str, str] = {}
    for entry in sys.path:
        root = entry or "."
        try:
            children = os.listdir(root)
        except OSError:  # absent or unreadable: importlib.metadata sees nothing there either
            continue
        # importlib.metadata's Lookup groups a directory's entries by name in order of first
        # appearance; the first entry of a name on sys.path wins (``_unique``).
        for child in children:
            if child.lower().endswith(_INFO_SUFFIXES):
                found.setdefault(_stem_name(child), os.path.join(root, child))
    return found


def _read_bytes(path: str) -> bytes | None:
    """The file's bytes, or None if it cannot be read (missing, a file-form egg-info ...).

    Plain descriptor calls: this runs for every installed distribution at each discovery,
    and a Python file object costs more than the read itself.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _decode(data: bytes | None) -> str | None:
    try:
        return None if data is None else data.decode("utf-8")
    except UnicodeDecodeError:  # importlib.metadata would fail on it too: nothing to read
        return None


def _read(path: str) -> str | None:
    return _decode(_read_bytes(path))


def _group_entries(text: str, group: str) -> list[tuple[str, str]]:
    """``(name, value)`` pairs of ``[group]`` in an ``entry_points.txt`` text."""
    pairs: list[tuple[str, str]] = []
    section: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            pairs.append((name.strip(), value.strip()))
    return pairs


def _metadata(info: str) -> dict[str, str]:
    """The header fields of a distribution's ``METADATA`` (or an egg's ``PKG-INFO``)."""
    text = _read(os.path.join(info, "METADATA")) or _read(os.path.join(info, "PKG-INFO")) or ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # the body (long description) starts here
        key, sep, value = line.partition(":")
        if sep and not line[0].isspace():
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def _from_importlib_metadata(group: str) -> list[EntryPoint]:
    from importlib.metadata import entry_points as metadata_entry_points

    found = []
    for ep in metadata_entry_points(group=group):
        dist = ep.dist
        distribution = dist.metadata["Name"] if dist is not None else "unknown"
        version = dist.version if dist is not None else "?"
        found.append(EntryPoint(ep.name, ep.value, group, distribution or "unknown", version))
    return found


class Installed:
    """The distributions installed now: one look at ``sys.path``, for one discovery run.

    Taken once per run so that the entry points and the versions come from the same scan;
    never kept between runs (a new discovery takes a new one).
    """

    def __init__(self) -> None:
        self.via_importlib_metadata = _needs_importlib_metadata()
        self._infos = {} if self.via_importlib_metadata else _info_directories()

    def entry_points(self, group: str) -> list[EntryPoint]:
        """The entry points of ``group``, in ``sys.path`` order.

        Parameters
        ----------
        group
            The entry-point group, e.g. ``"butler"``.

        Returns
        -------
        list of EntryPoint
            What ``importlib.metadata.entry_points(group=group)`` returns, with each one's
            distribution name and version.
        """
        if self.via_importlib_metadata:
            return _from_importlib_metadata(group)
        found: list[EntryPoint] = []
        header = f"[{group}]".encode()
        for stem, info in self._infos.items():
            data = _read_bytes(os.path.join(info, "entry_points.txt"))
            # Most distributions declare no entry point of this group: skip decoding them.
            if not data or header not in data:
                continue
            text = _decode(data)
            pairs = _group_entries(text, group) if text else []
            if not pairs:
                continue
            meta = _metadata(info)
            distribution = meta.get("name") or stem
            version = meta.get("version") or "?"
            found += [EntryPoint(n, value, group, distribution, version) for n, value in pairs]
        return found

    def version(self, name: str) -> str | None:
        """The version of distribution ``name``, or None if it is not installed."""
        if self.via_importlib_metadata:
            from importlib.metadata import PackageNotFoundError, version

            try:
                return version(name)
            except PackageNotFoundError:
                return None
        info = self._infos.get(_normalize(name))
        return None if info is None else _metadata(info).get("version")


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of ``group`` declared by the installed distributions (see `Installed`)."""
    return Installed().entry_points(group)


def distribution_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None if it is not installed."""
    return Installed().version(name)
