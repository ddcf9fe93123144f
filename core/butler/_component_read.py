"""Reading one component of a dataset: ``b.get("calexp.wcs", ...)``.

The dotted name is split into the dataset type and the component path. The component is
then read, in this order of preference:

1. disassembled storage: the component's own stored part (only its bytes);
2. a `ComponentReader` the dataset's format declares for the written class (a FITS WCS
   from the primary header alone);
3. the whole dataset, read with the same parameters, and the component extracted.

Components of components (``"cube.group.subgroup"``) descend one name at a time, each
through the declaration of the class found at that level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._components import SEPARATOR, ComponentError, Components, catalog_for
from ._errors import FormatError
from ._types import loaded_type, type_name

if TYPE_CHECKING:
    from ._location import ButlerLocation
    from ._policy import DatasetType
    from ._registry import Registry

__all__ = [
    "check_component",
    "check_path",
    "read_component",
    "split_name",
    "unknown_component",
    "written_class",
]


def split_name(known: Mapping[str, DatasetType], name: str) -> tuple[str, str | None]:
    """``("calexp", "wcs")`` for ``"calexp.wcs"``; a defined dataset type named with dots
    wins (``"calexp.wcs"`` defined as its own type is read as that type), else the longest
    defined prefix. ``(name, None)`` when nothing matches (the caller reports it)."""
    if name in known or not isinstance(name, str):
        return name, None
    end = len(name)
    while (end := name.rfind(SEPARATOR, 0, end)) > 0:
        if name[:end] in known:
            component = name[end + 1 :]
            if not component or any(not part for part in component.split(SEPARATOR)):
                raise ComponentError(f"malformed component in {name!r}: empty component name")
            return name[:end], component
    return name, None


def written_class(location: ButlerLocation) -> type:
    """The concrete class the dataset was written as (the dataset type's, for a file a
    ``reads_other_types`` format reads as that class)."""
    try:
        return location.read_type()
    except FormatError:
        descriptor = location._registry().formats.get(location.format)
        if descriptor is None or not descriptor.reads_other_types:
            raise
        return location.expected_type()


def declaration(registry: Registry, cls: type, what: str) -> Components:
    """The `Components` of ``cls``, or a `ComponentError` naming the types that have some."""
    found = catalog_for(registry).find(cls)
    if found is None:
        declared = sorted(catalog_for(registry).declared) or "none"
        raise ComponentError(
            f"{what}: python type {type_name(cls)!r} has no components (no installed plugin "
            f"declares any for it or its bases; types with components: {declared})"
        )
    return found


def check_component(registry: Registry, cls: type, path: str, what: str) -> None:
    """Refuse, before any byte is read, a first component name ``cls`` cannot have."""
    name = path.split(SEPARATOR, 1)[0]
    found = declaration(registry, cls, what)
    if not found.knows(cls, name):
        raise unknown_component(what, cls, name, sorted(found.names(cls)))


def check_path(registry: Registry, cls: type, path: str, what: str) -> None:
    """Refuse a component path no object of ``cls`` can have, name by name through the
    declared component types (``"arr.image.x"``: an ndarray has no components). A level
    whose type is not known in advance (dynamic components, ``builtins.object``) or not
    loaded ends the check: only the stored object can answer there."""
    current: type | None = cls
    for name in path.split(SEPARATOR):
        if current is None or current is object:
            return
        check_component(registry, current, name, what)
        found = declaration(registry, current, what)
        if found.dynamic and name not in found.names(current):
            return
        current = loaded_type(found.type_of(current, name))


def unknown_component(what: str, cls: type, name: str, known: list[str]) -> ComponentError:
    return ComponentError(
        f"{what}: {type_name(cls)!r} has no component {name!r}; its components are "
        f"{known or 'none'}"
    )


def read_component(location: ButlerLocation, path: str) -> Any:
    """Read component ``path`` (dotted for nested ones) of a resolved read location.

    Raises
    ------
    ComponentError
        If the written class has no such component (naming those it has).
    """
    from ._composite import COMPOSITE_FORMAT, read_part

    registry = location._registry()
    cls = written_class(location)
    what = location.describe()
    check_component(registry, cls, path, what)
    name, _, rest = path.partition(SEPARATOR)
    if location.format == COMPOSITE_FORMAT:
        return descend(registry, read_part(location, name), rest, what)
    reader = catalog_for(registry).reader(cls, location.storage.type_name, location.format, name)
    if reader is not None:
        try:
            if reader.nested:
                return reader.read_component(location, path)
            part = reader.read_component(location, name)
        except Exception as exc:
            raise location._translated(exc, "read")  # noqa: B904 - the cause is set there
        return descend(registry, part, rest, what)
    return descend(registry, location.read(), path, what)


def descend(registry: Registry, obj: Any, path: str, what: str) -> Any:
    """Component ``path`` of an object in memory, one name at a time."""
    for name in path.split(SEPARATOR) if path else ():
        found = declaration(registry, type(obj), what)
        if not found.knows(type(obj), name):
            raise unknown_component(what, type(obj), name, sorted(found.names(type(obj))))
        try:
            obj = found.extract_one(obj, name)
        except (KeyError, IndexError):
            raise unknown_component(what, type(obj), name, _present(found, obj)) from None
    return obj


def _present(found: Components, obj: Any) -> list[str]:
    """The component names an object in memory holds (for messages)."""
    try:
        return sorted(found.split_object(obj))
    except ComponentError:  # a dict with keys no dotted name can address: the others
        return sorted(k for k in obj if isinstance(k, str)) if isinstance(obj, Mapping) else []
