"""Structural ABCs the registry's ABC-aware lookup can match without a common base class."""

from __future__ import annotations

import dataclasses
from abc import ABCMeta
from typing import Any

__all__ = ["DataclassLike"]


class DataclassLike(metaclass=ABCMeta):  # noqa: B024 - structural, no methods
    """Every dataclass is a virtual subclass, so one registration serves all dataclasses.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Point:
    ...     x: int
    >>> issubclass(Point, DataclassLike)
    True
    """

    @classmethod
    def __subclasshook__(cls, subclass: type) -> Any:
        if cls is DataclassLike:
            return dataclasses.is_dataclass(subclass) or NotImplemented
        return NotImplemented
