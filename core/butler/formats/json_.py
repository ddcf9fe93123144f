"""The ``json`` format: dicts, lists, strings, numbers, bools, None and dataclasses."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from .._json import loads
from .._location import ButlerLocation
from ._plain import from_plain, is_plain, to_plain

__all__ = ["decode", "read", "write"]

#: ``json.dumps(obj, ensure_ascii=False)`` with the encoder built once (1.3 us a put).
_encode = json.JSONEncoder(ensure_ascii=False).encode


def write(obj: Any, location: ButlerLocation, *, indent: int | None = None) -> None:
    """Write ``obj`` as UTF-8 JSON (dataclasses as objects of their fields)."""
    # Plain data is encoded as it is; anything else goes through to_plain, which converts
    # dataclasses and mappings or raises naming the path of what is not plain data.
    plain = obj if is_plain(obj) else to_plain(obj)
    if indent is None:
        data = _encode(plain).encode()
    else:
        data = json.dumps(plain, indent=indent, ensure_ascii=False).encode()
    with location.open_write() as f:
        f.write(data)


def read(location: ButlerLocation, **_: Any) -> Any:
    """Read JSON and rebuild the recorded (sub)class."""
    data = loads(location.read_bytes())
    cls = location.read_type()
    return rebuild(cls, data, location)


def decode(data: bytes, cls: type) -> Any:
    """`read`'s result for a dataset of bytes ``data`` whose class resolved to ``cls``
    (the serializer's small-get shortcut); it raises where `read` would fail, and butler
    then calls `read`, which reports."""
    return _rebuilt(cls, loads(data))


def rebuild(cls: type, data: Any, location: ButlerLocation) -> Any:
    """Give plain ``data`` the class ``cls`` (dataclass, mapping/list subclass or scalar)."""
    try:
        return _rebuilt(cls, data)
    except _Mismatch as exc:
        raise location.format_error(str(exc)) from None


class _Mismatch(TypeError):
    """The JSON value cannot be given the expected class."""


def _rebuilt(cls: type, data: Any) -> Any:
    if type(data) is cls or cls is object:  # the common case (JSON holds no dataclass)
        return data
    if dataclasses.is_dataclass(cls):
        return from_plain(cls, data)
    if issubclass(cls, Mapping) and isinstance(data, dict):
        return cls(data)  # type: ignore[call-arg]
    if issubclass(cls, list) and isinstance(data, list):
        return cls(data)
    if isinstance(data, cls):
        return data
    if cls is float and isinstance(data, int):
        return float(data)
    raise _Mismatch(f"holds a {type(data).__name__!r}, not the expected {cls.__qualname__!r}")
