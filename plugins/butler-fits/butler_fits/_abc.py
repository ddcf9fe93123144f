"""`FitsReadWritable`: the structural ABC behind the *common API* serializer."""

from __future__ import annotations

import inspect
from abc import ABCMeta
from typing import Any

__all__ = ["FitsReadWritable"]


def _has_fits_api(cls: type) -> bool:
    """True when ``cls`` has a callable ``writeFits`` and a ``readFits`` class/static method."""
    write = getattr(cls, "writeFits", None)
    try:
        read = inspect.getattr_static(cls, "readFits")
    except AttributeError:
        return False
    return callable(write) and isinstance(read, classmethod | staticmethod)


class FitsReadWritable(metaclass=ABCMeta):  # noqa: B024 - purely structural
    """Every class with ``writeFits(path)`` and a ``readFits(path, hdu=0)`` classmethod.

    Classes never inherit from it: ``__subclasshook__`` makes them virtual subclasses, so
    one serializer registered for this ABC serves all of them (the registry composes MROs
    with registered ABCs as `functools.singledispatch` does).

    Examples
    --------
    >>> class Exposure:
    ...     def writeFits(self, path): ...
    ...     @classmethod
    ...     def readFits(cls, path, hdu=0): ...
    >>> issubclass(Exposure, FitsReadWritable)
    True
    >>> issubclass(dict, FitsReadWritable)
    False

    .. versionadded:: 0.1.0
    """

    @classmethod
    def __subclasshook__(cls, subclass: type) -> Any:
        if cls is FitsReadWritable:
            return _has_fits_api(subclass) or NotImplemented
        return NotImplemented
