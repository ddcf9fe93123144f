"""The ``config`` format: YAML recording the concrete type, read back as that subclass.

The file is ``{"python_type": "pkg.Cls", "data": {...}}`` written with ``yaml.safe_dump``
and read with butler's repository YAML loader (`butler._yaml.load`): no tag can construct
objects or run code, anchors and aliases are refused (no "billion laughs"), and the recorded
type must be a subclass of the dataset type's python type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml

from .._location import ButlerLocation
from .._types import type_name
from .._yaml import load
from ._plain import from_plain, to_plain

__all__ = ["read", "write"]


def write(obj: Any, location: ButlerLocation) -> None:
    """Write a `butler.Config`, mapping or dataclass as YAML with its type recorded."""
    document = {"python_type": type_name(type(obj)), "data": to_plain(obj)}
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    with location.open_write() as f:
        f.write(text.encode())


def read(location: ButlerLocation, **_: Any) -> Any:
    """Read the YAML document and rebuild its recorded class."""
    with location.open_read() as f:
        document = load(f, what=location.describe())
    if not isinstance(document, Mapping) or set(document) != {"python_type", "data"}:
        raise location.format_error("is not a butler config document (python_type + data)")
    cls = location.read_type(str(document["python_type"]))
    data = document["data"]
    if dataclasses.is_dataclass(cls):
        return from_plain(cls, data)
    if issubclass(cls, Mapping):
        if not isinstance(data, Mapping):
            raise location.format_error(f"config data is a {type(data).__name__}, not a mapping")
        return cls(data)  # type: ignore[call-arg]
    raise location.format_error(f"the config format cannot rebuild {cls.__qualname__!r}")
