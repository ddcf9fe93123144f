"""What a dataset type's ``disassemble`` setting changes: the record's format, what the
location carries to the composite serializer, and the checks made when defining it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._component_read import check_path
from ._composite import COMPOSITE_FORMAT
from ._errors import DatasetTypeError
from ._types import loaded_type

if TYPE_CHECKING:
    from ._policy import DatasetType
    from ._registry import Registry

__all__ = ["check_declared", "check_disassembly", "location_data", "record_format"]


def record_format(disassemble: bool, format: str) -> str:
    """The format new datasets are written in: the composite record's when disassembled."""
    return COMPOSITE_FORMAT if disassemble else format


def location_data(dt: DatasetType) -> dict[str, Any]:
    """The location's ``additional_data``: the dataset type's, plus (disassembled) the
    component formats the composite serializer writes each part in."""
    data = dict(dt.additional_data)
    if dt.disassemble:
        data["component_formats"] = dict(dt.component_formats)
        data["default_format"] = dt.format
    return data


def check_disassembly(
    registry: Registry, disassemble: bool, component_formats: Mapping[str, str] | None
) -> None:
    """Refuse component formats without disassembly, and formats nobody installed.

    Raises
    ------
    DatasetTypeError
        ``component_formats`` given without ``disassemble=True``, or not a mapping.
    NoSerializerError
        A component format that no installed plugin provides.
    """
    if not isinstance(disassemble, bool):
        raise DatasetTypeError(f"disassemble must be True or False, not {disassemble!r}")
    if component_formats is None:
        return
    if not isinstance(component_formats, Mapping):
        raise DatasetTypeError(f"component_formats must be a mapping, not {component_formats!r}")
    if component_formats and not disassemble:
        raise DatasetTypeError(
            "component_formats only apply to a disassembled dataset type: pass disassemble=True"
        )
    for fmt in component_formats.values():
        registry.format(fmt)


def check_declared(registry: Registry, dt: DatasetType, component: str) -> None:
    """Refuse a component path the dataset type's class cannot have, when that class is
    loaded (an object of it can only exist once it is: nothing is imported to check)."""
    cls = loaded_type(dt.python_type)
    if cls is not None:
        check_path(registry, cls, component, f"dataset type {dt.name!r}")


def describe_components(registry: Registry, dt: DatasetType) -> dict[str, Any]:
    """What ``butler info`` shows of a dataset type's components: their names (``"*"``
    for dynamic ones), which the format reads directly, whether it is disassembled.
    ``{}`` when its class has no components or cannot be resolved here."""
    from ._components import catalog_for
    from ._errors import ButlerError
    from ._types import resolve_policy_type

    catalog = catalog_for(registry)
    registered = [s.python_type for s in registry.serializers.values()]
    try:
        cls = resolve_policy_type(dt.python_type, registered=[*registered, *catalog.declared])
    except ButlerError:
        return {}
    found = catalog.find(cls)
    if found is None:
        return {}
    names = sorted(found.names(cls)) + (["*"] if found.dynamic else [])
    if dt.disassemble:
        direct: list[str] = names  # each part is its own dataset
    else:
        direct = [
            n
            for n in names
            if catalog.reader(cls, "*", dt.format, n) is not None
            or any(catalog.reader(cls, s, dt.format, n) for s in registry.storages)
        ]
    return {"components": names, "direct": direct, "disassembled": dt.disassemble}
