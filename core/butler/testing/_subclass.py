"""Deriving a subclass of a plugin's type, and instances of it, for subclass checks.

A derived class is published as an attribute of this module, so that a serializer's
``location.read_type()`` finds it by its recorded dotted name like any importable class.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

__all__ = ["derive_subclass", "derived_class"]

_cache: dict[type, type | None] = {}


def derived_class(base: type) -> type | None:
    """An importable subclass of ``base`` (adding nothing), or ``None`` if ``base`` is final.

    The class is named ``Derived<Base>`` and lives in this module, under a unique name per
    base.
    """
    if base in _cache:
        return _cache[base]
    module = sys.modules[__name__]
    name = f"Derived{base.__name__}_{len(_cache)}"
    try:
        cls: type | None = type(name, (base,), {"__module__": __name__, "__qualname__": name})
    except TypeError:  # bool, NoneType, final extension types
        cls = None
    if cls is not None:
        setattr(module, name, cls)
    _cache[base] = cls
    return cls


def derive_subclass(obj: Any) -> Any:
    """A copy of ``obj`` whose class is a derived subclass of ``type(obj)``.

    Tries, in order: a NumPy ``view``; a shallow copy whose ``__class__`` is reassigned
    (keeps every attribute); ``Subclass(obj)``.

    Returns
    -------
    object or None
        ``None`` when the type cannot be subclassed or converted; write your own
        ``make_subclass_objects`` then.
    """
    cls = derived_class(type(obj))
    if cls is None:
        return None
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(obj, numpy.ndarray):
        return obj.view(cls)
    try:
        new = copy.copy(obj)
        object.__setattr__(new, "__class__", cls)  # not the class's own __setattr__
        if type(new) is cls:
            return new
    except (TypeError, AttributeError):
        pass
    try:
        new = cls(obj)
    except Exception:
        return None
    return new if type(new) is cls else None
