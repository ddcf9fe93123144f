"""butler-core's own component declarations: the fields of dataclasses, the keys of dicts.

Referenced as ``"butler._core_components:..."`` strings from `butler._builtins`, so they
cost nothing until a dataset of such a type is split, assembled or read by component.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = [
    "assemble_dataclass",
    "assemble_mapping",
    "dataclass_fields",
    "extract_mapping",
    "split_dataclass",
    "split_mapping",
]


def dataclass_fields(cls: type) -> dict[str, type | str]:
    """Each field of a dataclass is a component; its type is the annotated one when that
    is a class, else ``builtins.object`` (string annotations are not evaluated: that could
    import modules)."""
    names = {}
    for f in dataclasses.fields(cls):
        names[f.name] = f.type if isinstance(f.type, type) else "builtins.object"
    return names


def split_dataclass(obj: Any) -> dict[str, Any]:
    """Field name → value (not copied: the values are the object's own)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def assemble_dataclass(cls: type, parts: Mapping[str, Any]) -> Any:
    """``cls(**init_fields)``, then the fields the constructor does not take."""
    fields = dataclasses.fields(cls)
    obj = cls(**{f.name: parts[f.name] for f in fields if f.init and f.name in parts})
    for f in fields:
        if not f.init and f.name in parts:
            object.__setattr__(obj, f.name, parts[f.name])  # frozen dataclasses too
    return obj


def split_mapping(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Key → value. Every key must be a string (a component's name): a dict with another
    key cannot be split without losing it, so it is refused, never truncated.

    Raises
    ------
    ComponentError
        Naming the first key that is not a string.
    """
    for key in obj:
        if not isinstance(key, str):
            from ._components import ComponentError

            raise ComponentError(
                f"a {type(obj).__name__}'s components are its keys, and key {key!r} is not a "
                f"string: it cannot be split into components (store it assembled)"
            )
    return dict(obj)


def extract_mapping(obj: Mapping[str, Any], name: str) -> Any:
    """``obj[name]`` (a `KeyError` names nothing: the caller lists the keys)."""
    return obj[name]


def assemble_mapping(cls: type, parts: Mapping[str, Any]) -> Any:
    """``cls(parts)``: a dict subclass comes back as itself."""
    return cls(parts)
