"""Components of composite python types: what plugins declare and how butler finds it.

Two declarations, returned by the ``butler_components`` hook (lazy, like `Serializer`):

* `Components`: for one python type (found along the MRO and registered ABCs, as
  serializers are), the named components (each with its own python type), how to
  ``split`` an object into them and how to ``assemble`` it back. Types whose components
  are not known in advance (the keys of a dict, the extensions of an HDU list, the groups
  of an HDF5 file) say ``dynamic=True``.
* `ComponentReader`: a *format's* direct read of components, for one (type, storage,
  format) key: ``read(location, component, **serializer_args)`` reads only the bytes the
  component needs (FITS: a WCS from the primary header alone). Without one, butler reads
  the whole dataset and extracts the component.

`ComponentCatalog` holds both for one `Registry` (`catalog_for`).
"""

from __future__ import annotations

import functools
import sys
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._declarations import _LazyRef
from ._errors import DatasetTypeError
from ._types import loaded_type, type_name

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "SEPARATOR",
    "ComponentCatalog",
    "ComponentError",
    "ComponentReader",
    "Components",
    "catalog_for",
    "component_catalog",
    "register_components",
]

#: Separates a dataset type from its component (``"calexp.wcs"``) and nested components
#: from each other (``"cube.group.subgroup"``).
SEPARATOR = "."


#: Most reader lookups kept (dynamic component names are unbounded).
_MAX_CACHED = 4096


class ComponentError(DatasetTypeError):
    """A component that the dataset's python type does not have (the message names the
    ones it has), or a type without components."""


def _check_ref(what: str, value: Any, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not (callable(value) or isinstance(value, str)):
        raise TypeError(f"{what} must be a callable or a 'module:function' string, not {value!r}")


@dataclass(frozen=True, eq=False)
class Components:
    """The components of one python type: names and types, split and assemble.

    Parameters
    ----------
    python_type
        Class or dotted name (``"astropy.nddata.CCDData"``); subclasses and virtual
        subclasses of ABCs inherit the declaration.
    components
        Component name → dotted python type name (``{"wcs": "astropy.wcs.WCS"}``), or a
        ``"module:function"`` string/callable ``components(cls) -> Mapping`` when the
        names depend on the class (a dataclass: its fields).
    split
        ``split(obj) -> dict[str, Any]``: every component of ``obj`` (``None`` for an
        absent optional one, such as a CCDData without mask).
    assemble
        ``assemble(cls, parts) -> obj``: the object of class ``cls`` from its parts (the
        concrete class that was written, so a subclass comes back as itself).
    dynamic
        True when an object may have components not known in advance (dict keys, HDU
        list extensions): any name ``split`` yields is a component.
    component_type
        Dotted python type of dynamic components.
    extract
        Optional ``extract(obj, name) -> Any``, cheaper than splitting everything;
        raises `KeyError` for a name the object lacks.

    Examples
    --------
    >>> Components("mypkg.Exposure", {"image": "numpy.ndarray", "wcs": "astropy.wcs.WCS"},
    ...            "mypkg._parts:split", "mypkg._parts:assemble")  # doctest: +SKIP
    """

    python_type: Any
    components: Any
    split: Any
    assemble: Any
    dynamic: bool = False
    component_type: str = "builtins.object"
    extract: Any = None
    distribution: str = "user"
    priority: int = 0
    _class: type | None = field(init=False, repr=False)
    _refs: dict[str, _LazyRef] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        given = self.python_type
        if not isinstance(given, type | str) or not given:
            raise TypeError(f"python_type must be a class or a dotted string, not {given!r}")
        if not isinstance(self.components, Mapping):
            _check_ref("components", self.components)
        else:
            for name, kind in self.components.items():
                _check_name(name)
                if not isinstance(kind, str | type):
                    raise TypeError(f"component {name!r}: type must be a dotted name, not {kind!r}")
        _check_ref("split", self.split)
        _check_ref("assemble", self.assemble)
        _check_ref("extract", self.extract, optional=True)
        object.__setattr__(self, "python_type", type_name(given))
        object.__setattr__(self, "_class", given if isinstance(given, type) else None)
        refs = {"split": _LazyRef(self.split), "assemble": _LazyRef(self.assemble)}
        if not isinstance(self.components, Mapping):
            refs["components"] = _LazyRef(self.components)
        if self.extract is not None:
            refs["extract"] = _LazyRef(self.extract)
        object.__setattr__(self, "_refs", refs)

    def names(self, cls: type) -> dict[str, str]:
        """Component name → dotted type name for objects of class ``cls`` (dynamic
        components are not listed: they depend on the object)."""
        if isinstance(self.components, Mapping):
            found = self.components
        else:
            found = self._refs["components"].get()(cls)
        return {name: type_name(kind) for name, kind in found.items()}

    def type_of(self, cls: type, name: str) -> str:
        """Dotted type name of component ``name`` (`component_type` for dynamic ones)."""
        return self.names(cls).get(name, self.component_type)

    def knows(self, cls: type, name: str) -> bool:
        """True when ``name`` may be a component of a ``cls`` object."""
        return self.dynamic or name in self.names(cls)

    def split_object(self, obj: Any) -> dict[str, Any]:
        """Every component of ``obj``."""
        return dict(self._refs["split"].get()(obj))

    def assemble_parts(self, cls: type, parts: Mapping[str, Any]) -> Any:
        """The ``cls`` object made of ``parts``."""
        return self._refs["assemble"].get()(cls, dict(parts))

    def extract_one(self, obj: Any, name: str) -> Any:
        """Component ``name`` of ``obj``; `KeyError` if the object has no such part."""
        extract = self._refs.get("extract")
        if extract is not None:
            return extract.get()(obj, name)
        return self.split_object(obj)[name]

    def owned_by(self, distribution: str) -> Components:
        """A copy recorded as declared by ``distribution`` (discovery sets the owner)."""
        return _copy(self, distribution)

    def __repr__(self) -> str:
        shown = (
            sorted(self.components)
            if isinstance(self.components, Mapping)
            else self._refs["components"].describe()
        )
        return (
            f"Components(type={self.python_type!r}, components={shown!r}"
            f"{', dynamic' if self.dynamic else ''}, distribution={self.distribution!r})"
        )


@dataclass(frozen=True, eq=False)
class ComponentReader:
    """A format's direct read of components for one (python type, storage, format) key.

    ``read(location, component, **serializer_args)`` returns the component, reading only
    what it needs; read ``parameters`` (``section``) are in ``location.parameters``.

    Parameters
    ----------
    python_type, storage, format
        The key, as for `Serializer` (``storage="*"`` for any storage).
    read
        Callable or ``"module:function"`` string.
    components
        The components it reads (``None``: any, including dynamic ones); the others are
        extracted from a whole read.
    nested
        True when ``read`` takes a dotted path (``"group.subgroup"``) and reads it
        directly; otherwise it gets the first name and butler descends the rest.
    """

    python_type: Any
    storage: str
    format: str
    read: Any
    components: tuple[str, ...] | None = None
    nested: bool = False
    distribution: str = "user"
    priority: int = 0
    _class: type | None = field(init=False, repr=False)
    _read: _LazyRef = field(init=False, repr=False)

    def __post_init__(self) -> None:
        given = self.python_type
        if not isinstance(given, type | str) or not given:
            raise TypeError(f"python_type must be a class or a dotted string, not {given!r}")
        for what, value in (("storage", self.storage), ("format", self.format)):
            if not isinstance(value, str) or not value:
                raise TypeError(f"{what} must be a non-empty string, not {value!r}")
        _check_ref("read", self.read)
        if self.components is not None:
            object.__setattr__(self, "components", tuple(self.components))
        object.__setattr__(self, "python_type", type_name(given))
        object.__setattr__(self, "_class", given if isinstance(given, type) else None)
        object.__setattr__(self, "_read", _LazyRef(self.read))

    def reads(self, name: str) -> bool:
        """True when this reader reads component ``name`` directly."""
        return self.components is None or name in self.components

    def read_component(self, location: Any, component: str) -> Any:
        """Call the reader (imported on first use)."""
        return self._read.get()(location, component, **location.serializer_args)

    def owned_by(self, distribution: str) -> ComponentReader:
        """A copy recorded as declared by ``distribution``."""
        return _copy(self, distribution)

    def __repr__(self) -> str:
        return (
            f"ComponentReader(type={self.python_type!r}, storage={self.storage!r}, "
            f"format={self.format!r}, components={self.components!r}, "
            f"read={self._read.describe()!r}, distribution={self.distribution!r})"
        )


def _copy(item: Any, distribution: str) -> Any:
    from dataclasses import fields, replace

    given = {f.name: getattr(item, f.name) for f in fields(item) if f.init}
    given["python_type"] = item._class or item.python_type
    given["distribution"] = distribution
    return replace(item, **given)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or SEPARATOR in name:
        raise TypeError(f"component names are non-empty strings without {SEPARATOR!r}: {name!r}")


class ComponentCatalog:
    """The `Components` and `ComponentReader` declarations known to one `Registry`.

    Lookup is the registry's: the class's MRO extended with the declared ABCs it satisfies,
    most derived first; string-declared types match only once their module is imported.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._components: dict[str, Components] = {}
        self._readers: dict[str, list[ComponentReader]] = {}
        self._discovered: list[Components | ComponentReader] = []
        self._cache: dict[type, Components | None] = {}
        self._reader_cache: dict[tuple[type, str, str, str], ComponentReader | None] = {}
        self._modules = len(sys.modules)

    # -- filling -----------------------------------------------------------------------

    def add(self, declaration: Components | ComponentReader, *, overwrite: bool = False) -> None:
        """Add a declaration made through the API (kept across plugin refreshes).

        Raises
        ------
        DatasetTypeError
            If the type already has components from another declaration and ``overwrite``
            is false.
        """
        with self._lock:
            if isinstance(declaration, Components):
                old = self._components.get(declaration.python_type)
                if old is not None and old is not declaration and not overwrite:
                    raise DatasetTypeError(
                        f"components of {declaration.python_type!r} are already declared by "
                        f"{old.distribution!r}; pass overwrite=True to replace them"
                    )
                self._components[declaration.python_type] = declaration
            elif isinstance(declaration, ComponentReader):
                readers = self._readers.setdefault(declaration.python_type, [])
                readers.insert(0, declaration)  # the latest wins
            else:
                raise TypeError(f"not a component declaration: {declaration!r}")
            self._forget()

    def _forget(self) -> None:
        """Drop cached lookups (a declaration changed, or a declared type's module loaded)."""
        self._cache.clear()
        self._reader_cache.clear()

    def install_discovered(self, declarations: list[Any]) -> None:
        """Replace what the previous plugin discovery declared; API additions are kept and
        win over a plugin declaring the same type."""
        with self._lock:
            for old in self._discovered:
                if isinstance(old, Components):
                    if self._components.get(old.python_type) is old:
                        del self._components[old.python_type]
                else:
                    kept = [r for r in self._readers.get(old.python_type, []) if r is not old]
                    self._readers[old.python_type] = kept
            installed: list[Components | ComponentReader] = []
            ranked = sorted(declarations, key=lambda d: (-d.priority, d.distribution))
            for item in ranked:
                if isinstance(item, Components):
                    if item.python_type in self._components:
                        continue
                    self._components[item.python_type] = item
                else:
                    self._readers.setdefault(item.python_type, []).append(item)
                installed.append(item)
            self._discovered = installed
            self._forget()

    # -- lookup ------------------------------------------------------------------------

    @property
    def declared(self) -> Mapping[str, Components]:
        """Read-only copy of the `Components` declarations by type name."""
        return dict(self._components)

    @property
    def readers(self) -> list[ComponentReader]:
        """Every `ComponentReader` declaration."""
        return [r for readers in self._readers.values() for r in readers]

    def _mro(self, cls: type, names: list[str]) -> list[tuple[type, str]]:
        classes: dict[type, str] = {}
        for name in names:
            found = self._class_of(name)
            if found is not None:
                classes.setdefault(found, name)
        mro = functools._compose_mro(cls, list(classes))  # type: ignore[attr-defined]
        return [(c, classes[c]) for c in mro if c in classes]

    def _class_of(self, name: str) -> type | None:
        for item in (self._components.get(name), *self._readers.get(name, ())):
            if item is not None and item._class is not None:
                return item._class
        return loaded_type(name)

    def find(self, cls: type) -> Components | None:
        """The `Components` declaration of ``cls`` (its own or inherited), or ``None``."""
        self._check_modules()
        try:
            return self._cache[cls]
        except KeyError:
            pass
        with self._lock:
            found = None
            for _, name in self._mro(cls, list(self._components)):
                found = self._components[name]
                break
            self._cache[cls] = found
        return found

    def _check_modules(self) -> None:
        if len(sys.modules) != self._modules:  # a declared type's module may have loaded
            with self._lock:
                self._forget()
                self._modules = len(sys.modules)

    def reader(self, cls: type, storage: str, format: str, name: str) -> ComponentReader | None:
        """The direct reader of component ``name`` of a ``cls`` dataset stored in
        ``format`` on ``storage``, or ``None`` (then butler reads whole and extracts)."""
        self._check_modules()
        key = (cls, storage, format, name)
        try:
            return self._reader_cache[key]
        except KeyError:
            pass
        found = self._find_reader(cls, storage, format, name)
        with self._lock:
            if len(self._reader_cache) >= _MAX_CACHED:  # dynamic names: keep it bounded
                self._reader_cache.clear()
            self._reader_cache[key] = found
        return found

    def _find_reader(
        self, cls: type, storage: str, format: str, name: str
    ) -> ComponentReader | None:
        with self._lock:
            for _, type_key in self._mro(cls, [k for k, v in self._readers.items() if v]):
                for wanted in (storage, "*"):
                    for reader in self._readers[type_key]:
                        if (
                            reader.storage == wanted
                            and reader.format == format
                            and reader.reads(name)
                        ):
                            return reader
        return None

    def direct_components(self, type_key: str, format: str) -> tuple[str, ...] | None:
        """What the readers declared for a type name and format read directly (``None``:
        any component), or ``()`` when none is declared. For documentation and ``info``."""
        found: set[str] = set()
        for reader in self._readers.get(type_key, ()):
            if reader.format == format:
                if reader.components is None:
                    return None
                found.update(reader.components)
        return tuple(sorted(found))


_catalogs: weakref.WeakKeyDictionary[Any, ComponentCatalog] = weakref.WeakKeyDictionary()
_catalogs_lock = threading.Lock()


def catalog_for(registry: Registry) -> ComponentCatalog:
    """The component declarations of ``registry`` (created empty on first use; plugin
    discovery fills the process-wide registry's)."""
    with _catalogs_lock:
        found = _catalogs.get(registry)
        if found is None:
            found = _catalogs[registry] = ComponentCatalog()
        return found


def component_catalog(registry: Registry | None = None) -> ComponentCatalog:
    """The component declarations known to ``registry`` (default: the process-wide one):
    `ComponentCatalog.find` gives a class's `Components`, `ComponentCatalog.reader` the
    direct reader a format declares for one of them."""
    if registry is None:
        from ._plugins import default_registry

        registry = default_registry()
    return catalog_for(registry)


def register_components(
    declaration: Components | ComponentReader,
    *,
    registry: Registry | None = None,
    overwrite: bool = False,
) -> None:
    """Declare components (or a direct component reader) through the API.

    Parameters
    ----------
    declaration
        A `Components` or `ComponentReader`.
    registry
        Where to declare them (default: the process-wide registry).
    overwrite
        Replace another declaration of the same type's components.
    """
    if registry is None:
        from ._plugins import default_registry

        registry = default_registry()
    catalog_for(registry).add(declaration, overwrite=overwrite)
