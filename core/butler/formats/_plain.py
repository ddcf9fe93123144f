"""Dataclasses to and from plain data (dicts, lists, scalars), without ``eval``.

Field types are read from ``dataclasses.fields``; string annotations (``from __future__
import annotations``) are resolved by plain name lookup in the class's module, never evaluated.
"""

from __future__ import annotations

import builtins
import dataclasses
import sys
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["from_plain", "is_plain", "to_plain"]

_SCALARS = (str, int, float, bool, type(None))
#: Exactly these classes (not subclasses) are plain data as they are.
_EXACT_SCALARS = frozenset(_SCALARS)
_STR_ONLY = frozenset({str})


def is_plain(obj: Any) -> bool:
    """Whether ``obj`` is already plain data, built of exactly ``dict`` (with ``str`` keys),
    ``list``, ``tuple`` and scalars, so that `to_plain` would return an equal copy.

    The hot path of the JSON writer: no copy and no per-element path, and whole
    containers of scalars are checked at C speed (``map(type, ...)``). ``False`` (also for
    subclasses, dataclasses and anything unusual) sends the caller to `to_plain`, which
    converts or raises naming the offending path.
    """
    kind = type(obj)
    if kind in _EXACT_SCALARS:
        return True
    if kind is dict:
        if not _STR_ONLY.issuperset(map(type, obj)):
            return False
        values: Any = obj.values()
    elif kind is list or kind is tuple:
        values = obj
    else:
        return False
    if _EXACT_SCALARS.issuperset(map(type, values)):
        return True
    try:
        return all(map(is_plain, values))
    except RecursionError:  # nested too deep (or circular): let to_plain report it
        return False


def to_plain(obj: Any, where: str = "value") -> Any:
    """Convert dataclasses, mappings, lists and tuples to JSON/YAML-ready plain data.

    Raises
    ------
    TypeError
        Naming the field whose value is not plain data.
    """
    if isinstance(obj, _SCALARS):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_plain(getattr(obj, f.name), f"{where}.{f.name}")
            for f in dataclasses.fields(obj)
        }
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{where} has a non-string key {key!r}")
            out[key] = to_plain(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, list | tuple):
        return [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where} is a {type(obj).__name__!r}, which is not plain data")


def _field_type(cls: type, annotation: Any) -> Any:
    """The class a field's annotation names (``Inner``, ``tuple[str, ...]``, ``Inner | None``).

    String annotations are looked up by name in the class's module and in builtins, never
    evaluated.
    """
    if not isinstance(annotation, str):
        return annotation
    candidates = [a.strip() for a in annotation.split("|")]
    names = [c for c in candidates if c != "None"]
    if len(names) != 1:
        return None
    name = names[0]
    for wrapper in ("Optional[", "typing.Optional["):
        if name.startswith(wrapper) and name.endswith("]"):
            name = name[len(wrapper) : -1]
    base = name.split("[", 1)[0].strip()
    module = sys.modules.get(cls.__module__)
    found = getattr(module, base, None) if module is not None else None
    return found if found is not None else getattr(builtins, base, None)


def from_plain(cls: type, data: Any) -> Any:
    """Rebuild a dataclass (recursively for dataclass-typed fields) from plain data."""
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(f"expected a mapping for {cls.__qualname__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TypeError(f"{cls.__qualname__} has no fields {unknown}")
    kwargs = {}
    for name, value in data.items():
        kind = _field_type(cls, fields[name].type)
        if value is None:
            pass
        elif isinstance(kind, type) and dataclasses.is_dataclass(kind):
            value = from_plain(kind, value)
        elif typing.get_origin(kind) is tuple or kind is tuple:
            value = tuple(value)
        kwargs[name] = value
    init_fields = {n for n, f in fields.items() if f.init}
    obj = cls(**{k: v for k, v in kwargs.items() if k in init_fields})
    for name in set(kwargs) - init_fields:
        object.__setattr__(obj, name, kwargs[name])
    return obj
