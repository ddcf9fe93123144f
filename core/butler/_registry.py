"""The (python type, storage, format) → serializer registry.

Lookup follows `functools.singledispatch`: the class's MRO, extended with the registered
abstract base classes it satisfies, most derived first; at each class an exact storage
beats ``"*"``. String-registered types are matched against ``sys.modules`` only, so
registering ``"astropy.table.Table"`` never imports astropy.
"""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from ._declarations import FormatDescriptor, Serializer, StorageSpec
from ._errors import (
    DuplicateFormatError,
    DuplicateSerializerError,
    DuplicateStorageError,
    FormatError,
    NoSerializerError,
    StorageError,
)
from ._types import loaded_type, type_name
from ._urls import mask_url

__all__ = ["KNOWN_PLUGINS", "Registry"]

#: First-party distributions that add a format or storage, keyed by its name. Kept
#: alphabetical (checked below) so a miss can tell the user what to install.
KNOWN_PLUGINS: Mapping[str, str] = MappingProxyType(
    {
        "database": "butler-db",
        "fits": "butler-fits",
        "hdf5": "butler-hdf5",
        "s3": "butler-s3",
        "sql-table": "butler-db",
    }
)
assert list(KNOWN_PLUGINS) == sorted(KNOWN_PLUGINS), "keep KNOWN_PLUGINS alphabetical"

#: URI schemes served by first-party plugins, for the "install X" hint.
KNOWN_SCHEMES: Mapping[str, str] = MappingProxyType(
    {
        "mariadb": "butler-db",
        "mysql": "butler-db",
        "postgres": "butler-db",
        "postgresql": "butler-db",
        "s3": "butler-s3",
        "sqlite": "butler-db",
    }
)

ANY_STORAGE = "*"


def install_hint(name: str) -> str:
    """Return "install X to ..." text for a first-party format/storage/scheme, or ''."""
    dist = KNOWN_PLUGINS.get(name) or KNOWN_SCHEMES.get(name)
    return f"Install {dist!r} (pip install {dist}) to add {name!r}." if dist else ""


class Registry:
    """Serializers, storages and formats known to one process or one embedding.

    `butler.default_registry` returns the process-wide instance filled by plugin discovery;
    ``Registry()`` builds an empty, independent one (tests, embedding).

    Examples
    --------
    >>> reg = Registry()
    >>> reg.register(dict, "*", "json", "json:dump", "json:load")
    >>> reg.find(dict, "posix", "json").format
    'json'
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        # python type name -> {(storage, format): Serializer}
        self._by_type: dict[str, dict[tuple[str, str], Serializer]] = {}
        self._cache: dict[tuple[type, str, str], Serializer] = {}
        self._generation = 0  # bumped on every change, so a racing lookup never caches stale
        # Classes registered as classes: local and dynamically created classes cannot be
        # found again by their dotted name.
        self._classes: dict[str, type] = {}
        self._resolved: dict[type, str] | None = None
        # module names of string-registered types not yet imported; when one appears in
        # sys.modules the cache may be stale (a new ABC or alias became matchable).
        self._pending_modules: set[str] = set()
        # len(sys.modules) when the pending modules were last checked: a lookup rescans
        # them only when the process imported (or dropped) a module since.
        self._modules_seen = -1
        # Registered classes whose metaclass customizes issubclass (ABCs): only these can
        # be satisfied without being in a class's MRO. None until the next change.
        self._virtual: list[type] | None = None
        self._type_names: frozenset[str] | None = None
        self._storages: dict[str, StorageSpec] = {}
        self._schemes: dict[str, str] = {}
        self._formats: dict[str, FormatDescriptor] = {}
        # What the last plugin discovery put in, so that a refresh replaces exactly that
        # and keeps what was registered through the API (or overwritten by it).
        self._discovered: tuple[list[Serializer], list[StorageSpec], list[FormatDescriptor]] = (
            [],
            [],
            [],
        )
        #: Set by plugin discovery: "name (distribution): error" of each failed plugin.
        self.plugin_failures: list[str] = []

    # -- serializers -------------------------------------------------------------------

    def register(
        self,
        python_type: type | str,
        storage: str,
        format: str,
        write: Any,
        read: Any,
        *,
        overwrite: bool = False,
        priority: int = 0,
        distribution: str = "user",
        decode: Any = None,
    ) -> Serializer:
        """Register ``write``/``read`` for (python type, storage, format).

        Parameters
        ----------
        python_type
            A class, or a dotted string such as ``"astropy.table.Table"`` matched without
            importing anything.
        storage
            Storage type name (``"posix"``, ``"s3"``, ...), or ``"*"`` for serializers that
            work on any storage through `ButlerLocation` file helpers.
        format
            Format name (``"json"``, ``"fits"``, ...).
        write, read
            ``write(obj, location, **serializer_args)`` and
            ``read(location, **serializer_args)``: callables or ``"module:function"``.
        overwrite
            Replace an existing registration for the same key instead of raising.
        priority, distribution
            Recorded for plugin conflict resolution and reporting.
        decode
            Optional small-get shortcut ``decode(data, cls)`` (see `Serializer`).

            .. versionadded:: 0.3

        Returns
        -------
        Serializer
            The registered (or already present, identical) entry.

        Raises
        ------
        DuplicateSerializerError
            If the key is taken by different callables and ``overwrite`` is false.
        TypeError
            If an argument has the wrong type (see `Serializer`).
        """
        given: Any = python_type  # a class is kept by the Serializer, stored by name
        new = Serializer(given, storage, format, write, read, priority, distribution, decode)
        return self.add(new, overwrite=overwrite)

    def add(self, serializer: Serializer, *, overwrite: bool = False) -> Serializer:
        """Register a `Serializer` built elsewhere (a plugin's declaration).

        .. versionadded:: 0.2

        Returns
        -------
        Serializer
            ``serializer``, or the identical entry already registered for its key.

        Raises
        ------
        DuplicateSerializerError
            If the key is taken by different callables and ``overwrite`` is false.
        """
        name, storage, format = serializer.key
        with self._lock:
            table = self._by_type.setdefault(name, {})
            old = table.get((storage, format))
            if old is not None and not overwrite:
                if old.same_callables(serializer):
                    return old  # re-importing a module that registers is harmless
                raise DuplicateSerializerError(
                    f"a serializer for type {name!r}, storage {storage!r} and format "
                    f"{format!r} is already registered by {old.distribution!r} ({old!r}); "
                    f"pass overwrite=True to replace it"
                )
            table[(storage, format)] = serializer
            self._note_type(serializer)
            self._changed()
        return serializer

    def _note_type(self, serializer: Serializer) -> None:
        """Remember a registered class, or the module a string type waits for."""
        if serializer._class is not None:
            self._classes[serializer.python_type] = serializer._class
        elif loaded_type(serializer.python_type) is None:
            self._pending_modules.add(serializer.python_type.rsplit(".", 1)[0])

    @property
    def type_names(self) -> frozenset[str]:
        """The python type names serializers are registered for (kept until a change).

        .. versionadded:: 0.3
        """
        names = self._type_names
        if names is None:
            with self._lock:
                names = self._type_names = frozenset(self._by_type)
        return names

    @property
    def serializers(self) -> Mapping[tuple[str, str, str], Serializer]:
        """Read-only snapshot of every registration, keyed by (type, storage, format)."""
        return MappingProxyType(
            {s.key: s for table in self._by_type.values() for s in table.values()}
        )

    def find(self, python_type: type, storage: str, format: str) -> Serializer:
        """Return the serializer for a class, a storage type and a format.

        The keys come in the order `register` takes them: ``(python_type, storage, format)``.

        Raises
        ------
        NoSerializerError
            Naming the type, format and storage, listing what is registered for the type
            and which distribution would add a missing format or storage.
        TypeError
            If nothing is found and ``storage`` names a format (and ``format`` does not):
            the keys were given in the pre-0.2 order ``(python_type, format, storage)``.
        """
        key = (python_type, storage, format)
        self._notice_imports()
        try:
            return self._cache[key]
        except KeyError:
            pass
        generation = self._generation
        found = self._lookup(python_type, storage, format)
        if found is None:
            self._check_order(python_type, storage, format)
            raise NoSerializerError(self._miss_message(python_type, format, storage))
        with self._lock:
            if generation == self._generation:
                self._cache[key] = found
        return found

    def _check_order(self, python_type: type, storage: str, format: str) -> None:
        """Refuse a miss whose storage is a format name: the keys were swapped.

        Only called on a miss, so a lookup that finds something never pays for it.
        """
        formats = set(self._formats)
        storages = set(self._storages)
        for table in list(self._by_type.values()):
            for s_storage, s_format in list(table):
                formats.add(s_format)
                storages.add(s_storage)
        storages.discard(ANY_STORAGE)
        if storage in formats and storage not in storages and format not in formats:
            name = python_type.__name__ if isinstance(python_type, type) else repr(python_type)
            raise TypeError(
                f"Registry.find takes (python_type, storage, format), the order of register; "
                f"got storage={storage!r}, which is a format, and format={format!r}, which is "
                f"{'a storage' if format in storages or format == ANY_STORAGE else 'no format'}"
                f". Call find({name}, {format!r}, {storage!r})."
            )

    def _current_generation(self) -> int:
        """The generation of what `find` answers now, for callers that keep its answers.

        A string-registered type whose module was imported since the last lookup changes
        what `find` answers without a `register`: that is accounted for first, as `find`
        does (one comparison when nothing is pending).

        Returns
        -------
        int
            A number that changes whenever an answer of `find` may have changed.
        """
        self._notice_imports()
        return self._generation

    def _notice_imports(self) -> None:
        """Match string-registered types whose module was imported since the last look
        (one comparison when nothing is pending)."""
        if self._pending_modules and len(sys.modules) != self._modules_seen:
            self._refresh_pending()

    def _changed(self) -> None:
        """Invalidate cached lookups (caller holds the lock)."""
        self._generation += 1
        self._cache.clear()
        self._resolved = None
        self._virtual = None
        self._type_names = None

    def _refresh_pending(self) -> None:
        """Invalidate the cache if a module a string-registered type waits for is imported.

        Called only when ``len(sys.modules)`` changed since the last check, so a cached
        lookup costs one comparison, not a scan of the pending modules. (An import that
        exactly balances a removal from ``sys.modules`` between two lookups goes unseen
        until the next import or registration.)
        """
        modules = sys.modules
        seen = len(modules)
        loaded = [m for m in self._pending_modules if m in modules]
        if loaded:
            with self._lock:
                self._pending_modules.difference_update(loaded)
                self._changed()
        self._modules_seen = seen

    def _resolved_types(self) -> dict[type, str]:
        """Registered type names that currently resolve to a class (no import).

        Kept until the next change: a registration, or a pending module getting imported.
        """
        resolved = self._resolved
        if resolved is None:
            resolved = {}
            for name in list(self._by_type):
                cls = self._classes.get(name) or loaded_type(name)
                if cls is not None:
                    resolved.setdefault(cls, name)
            self._resolved = resolved
        return resolved

    def _tables_along_mro(self, python_type: type) -> Iterator[dict[tuple[str, str], Serializer]]:
        """The registrations of each class the lookup visits, most derived first.

        That order is singledispatch's own MRO composition: the class's MRO plus the
        registered ABCs it satisfies (explicitly, virtually or via ``__subclasshook__``).
        """
        resolved = self._resolved_types()
        mro: Sequence[type] = python_type.__mro__
        outside = self._outside(python_type, resolved)
        if outside:
            mro = functools._compose_mro(python_type, outside)  # type: ignore[attr-defined]
        for cls in mro:
            name = resolved.get(cls)
            if name is not None:
                yield self._by_type.get(name, {})

    def _outside(self, python_type: type, resolved: Mapping[type, str]) -> list[type]:
        """The registered classes ``python_type`` satisfies from outside its MRO.

        A plain registered class matches only through the MRO; only classes whose
        metaclass customizes issubclass (ABCs) can match from outside it. When none
        does, singledispatch's composition is the MRO itself.
        """
        mro = python_type.__mro__
        return [
            cls for cls in self._virtual_types(resolved)
            if cls not in mro and issubclass(python_type, cls)
        ]  # fmt: skip

    def _virtual_types(self, resolved: Mapping[type, str]) -> list[type]:
        """The resolved registered classes that may be satisfied virtually (their
        metaclass overrides ``__subclasscheck__``), kept until the next change."""
        virtual = self._virtual
        if virtual is None:
            virtual = [
                cls for cls in resolved
                if getattr(type(cls), "__subclasscheck__", None) is not type.__subclasscheck__
            ]  # fmt: skip
            self._virtual = virtual
        return virtual

    def _lookup(self, python_type: type, storage: str, format: str) -> Serializer | None:
        """The first registration for ``(storage or any, format)`` along singledispatch's
        MRO composition of ``python_type`` (see `_tables_along_mro`)."""
        resolved = self._resolved_types()
        mro: Sequence[type] = python_type.__mro__
        outside = self._outside(python_type, resolved)
        if outside:
            # The composition (``functools._compose_mro``: 10-15 us) only orders the
            # candidates. Skipped when no class from outside the MRO has an entry for this
            # format (the MRO decides alone), or just one has and no class in the MRO does
            # (a dataclass -> DataclassLike): the answer is the same in any order.
            found = [
                e for c in outside if (e := self._entry(resolved[c], storage, format)) is not None
            ]
            if len(found) == 1 and not any(
                self._entry(resolved[c], storage, format) is not None for c in mro if c in resolved
            ):
                return found[0]
            if found:
                mro = functools._compose_mro(python_type, outside)  # type: ignore[attr-defined]
        for cls in mro:
            name = resolved.get(cls)
            if name is not None:
                entry = self._entry(name, storage, format)
                if entry is not None:
                    return entry
        return None

    def _entry(self, name: str, storage: str, format: str) -> Serializer | None:
        """The registration of type ``name`` for ``storage`` (else any storage) and
        ``format``."""
        table = self._by_type.get(name, {})
        entry = table.get((storage, format))
        return entry if entry is not None else table.get((ANY_STORAGE, format))

    def _miss_message(self, python_type: type, format: str, storage: str) -> str:
        name = type_name(python_type)
        lines = [f"No serializer for type {name!r} in format {format!r} on storage {storage!r}."]
        available = sorted(
            (entry.format, entry.storage, entry.python_type, entry.distribution)
            for table in self._tables_along_mro(python_type)
            for entry in table.values()
        )
        if available:
            lines.append(f"Registered for {name!r} and its bases (format / storage / type / from):")
            lines += [f"  {f:<10} {s:<9} {t}  [{d}]" for f, s, t, d in available]
        else:
            lines.append(f"Nothing is registered for {name!r} or any of its bases.")
        for missing in (format, storage):
            hint = install_hint(missing)
            if hint and not self._knows(missing):
                lines.append(hint)
        if self.plugin_failures:
            lines.append("Plugins that failed to load: " + "; ".join(self.plugin_failures))
        return "\n".join(lines)

    def _knows(self, name: str) -> bool:
        return (
            name in self._formats
            or name in self._storages
            or any(
                (s.format == name or s.storage == name)
                for table in self._by_type.values()
                for s in table.values()
            )
        )

    # -- storages ---------------------------------------------------------------------

    def register_storage(self, spec: StorageSpec, *, overwrite: bool = False) -> None:
        """Register a storage type and the URI schemes it serves.

        Raises
        ------
        DuplicateStorageError
            If another storage of that name is registered and ``overwrite`` is false.
        """
        with self._lock:
            old = self._storages.get(spec.type_name)
            if old is not None and old != spec and not overwrite:
                raise DuplicateStorageError(
                    f"storage {spec.type_name!r} is already registered by {old.distribution!r} "
                    f"({old.cls!r}); pass overwrite=True to replace it"
                )
            self._storages[spec.type_name] = spec
            for scheme in spec.schemes:
                self._schemes[scheme] = spec.type_name

    @property
    def storages(self) -> Mapping[str, StorageSpec]:
        """Read-only view of the registered storage types."""
        return MappingProxyType(self._storages)

    def storage_spec_for_scheme(self, scheme: str, uri: str) -> StorageSpec:
        """Return the storage type serving a URI scheme.

        Raises
        ------
        StorageError
            Naming the scheme, the known schemes and the distribution to install.
        """
        base = scheme.split("+", 1)[0]
        name = self._schemes.get(scheme) or self._schemes.get(base)
        if name is None:
            known = ", ".join(sorted(self._schemes)) or "none"
            hint = install_hint(base)
            raise StorageError(
                f"No storage serves the URI scheme {scheme!r} in {mask_url(uri)!r} (known schemes: "
                f"{known}).{' ' + hint if hint else ''}"
            )
        return self._storages[name]

    # -- formats ----------------------------------------------------------------------

    def register_format(self, descriptor: FormatDescriptor, *, overwrite: bool = False) -> None:
        """Register a format descriptor (name, extensions, identification).

        Raises
        ------
        DuplicateFormatError
            If another format of that name is registered and ``overwrite`` is false.
        """
        with self._lock:
            old = self._formats.get(descriptor.name)
            if old is not None and old != descriptor and not overwrite:
                raise DuplicateFormatError(
                    f"format {descriptor.name!r} is already registered by {old.distribution!r}; "
                    f"pass overwrite=True to replace it"
                )
            self._formats[descriptor.name] = descriptor
            if old != descriptor:
                # What a format declares (reads_other_types...) decides resolutions that
                # callers keep by generation (`Butler._resolve_read_at`).
                self._changed()

    @property
    def formats(self) -> Mapping[str, FormatDescriptor]:
        """Read-only view of the registered format descriptors."""
        return MappingProxyType(self._formats)

    def format(self, name: str) -> FormatDescriptor:
        """Return the descriptor of a format, or raise `NoSerializerError` with a hint."""
        try:
            return self._formats[name]
        except KeyError:
            hint = install_hint(name)
            known = ", ".join(sorted(self._formats)) or "none"
            raise NoSerializerError(
                f"Unknown format {name!r} (known formats: {known}).{' ' + hint if hint else ''}"
            ) from None

    def identify_format(self, name: str, first_bytes: bytes | None = None) -> str:
        """Guess a file's format from its first bytes, then from its name.

        A descriptor whose ``identify`` raises is warned about and skipped.

        Raises
        ------
        FormatError
            If no format recognises the file.
        """
        if first_bytes:
            for descriptor in self._sorted_formats():
                try:
                    if descriptor.matches_bytes(first_bytes):
                        return descriptor.name
                except Exception as exc:
                    warnings.warn(
                        f"format {descriptor.name!r} identify() failed: {exc!r}",
                        RuntimeWarning,
                        stacklevel=2,
                    )
        # The longest matching extension wins: ".fits.gz" is FITS, not gzip.
        best = max(
            (
                (len(ext), d.name)
                for d in self._sorted_formats()
                for ext in d.extensions
                if name.lower().endswith(ext)
            ),
            default=None,
        )
        if best is not None:
            return best[1]
        known = ", ".join(f"{d.name} ({' '.join(d.extensions)})" for d in self._sorted_formats())
        raise FormatError(f"cannot identify the format of {name!r}; known formats: {known}")

    # -- plugin discovery ---------------------------------------------------------------

    def _install_discovered(
        self,
        serializers: Iterable[Serializer],
        storages: Iterable[StorageSpec],
        formats: Iterable[FormatDescriptor],
        failures: list[str],
    ) -> list[tuple[str, tuple[str, ...], str, str]]:
        """Replace what the previous discovery installed with a new discovery's winners.

        Entries registered through the API (``register``, ``add``, ``register_storage``,
        ``register_format``), including those that overwrote a plugin's, are kept and win
        over a plugin declaring the same key. Done in place so that every `Butler` holding
        this registry sees the result.

        Returns
        -------
        list
            ``(kind, key, plugin distribution, kept distribution)`` for each declaration
            left out because an API registration holds its key.
        """
        shadowed: list[tuple[str, tuple[str, ...], str, str]] = []
        with self._lock:
            old_serializers, old_storages, old_formats = self._discovered
            by_type = {name: dict(table) for name, table in self._by_type.items()}
            for s in old_serializers:
                table = by_type.get(s.python_type, {})
                if table.get((s.storage, s.format)) is s:
                    del table[(s.storage, s.format)]
            storages_ = {k: v for k, v in self._storages.items() if not _any_is(v, old_storages)}
            formats_ = {k: v for k, v in self._formats.items() if not _any_is(v, old_formats)}
            new: tuple[list[Serializer], list[StorageSpec], list[FormatDescriptor]] = ([], [], [])
            for s in serializers:
                table = by_type.setdefault(s.python_type, {})
                kept = table.get((s.storage, s.format))
                if kept is not None:
                    shadowed.append(("serializer", s.key, s.distribution, kept.distribution))
                    continue
                table[(s.storage, s.format)] = s
                new[0].append(s)
            for spec in storages:
                if spec.type_name in storages_:
                    kept_dist = storages_[spec.type_name].distribution
                    shadowed.append(("storage", (spec.type_name,), spec.distribution, kept_dist))
                    continue
                storages_[spec.type_name] = spec
                new[1].append(spec)
            for descriptor in formats:
                if descriptor.name in formats_:
                    kept_dist = formats_[descriptor.name].distribution
                    shadowed.append(
                        ("format", (descriptor.name,), descriptor.distribution, kept_dist)
                    )
                    continue
                formats_[descriptor.name] = descriptor
                new[2].append(descriptor)
            self._by_type = {name: table for name, table in by_type.items() if table}
            self._classes = {n: c for n, c in self._classes.items() if n in self._by_type}
            self._pending_modules = set()
            for table in self._by_type.values():
                for s in table.values():
                    self._note_type(s)
            # API-registered storages are added last: their schemes win.
            self._storages = storages_
            self._schemes = {
                scheme: spec.type_name
                for spec in sorted(storages_.values(), key=lambda sp: not _any_is(sp, new[1]))
                for scheme in spec.schemes
            }
            self._formats = formats_
            self._discovered = new
            self.plugin_failures = list(failures)
            self._changed()
        return shadowed

    def _sorted_formats(self) -> Iterable[FormatDescriptor]:
        return [self._formats[k] for k in sorted(self._formats)]

    def __repr__(self) -> str:
        n = sum(len(t) for t in self._by_type.values())
        return (
            f"<Registry: {n} serializers, formats {sorted(self._formats)}, "
            f"storages {sorted(self._storages)}>"
        )


def _any_is(item: object, items: Iterable[object]) -> bool:
    """Identity, not equality: an equal declaration registered through the API is kept."""
    return any(item is other for other in items)
