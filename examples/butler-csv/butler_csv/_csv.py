"""The ``csv`` serializer: a dict of equal-length columns <-> CSV with a typed header.

A file written here starts with a header such as ``visit:int,seeing:float,ok:bool,name:str``
so values come back with their types. Files from elsewhere, whose header has no types, are
read too: each column becomes ``int``, ``float`` or ``str``, whichever fits all its values.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from butler import ButlerLocation

__all__ = ["read", "write"]

_TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


def _column_type(name: str, values: Sequence[Any], location: ButlerLocation) -> str:
    kinds = {type(v) for v in values}
    if kinds <= {bool}:
        return "bool"
    if kinds <= {int}:
        return "int"
    if kinds <= {int, float}:
        return "float"
    if kinds <= {str}:
        return "str"
    names = sorted(k.__name__ for k in kinds)
    raise location.format_error(
        f"column {name!r} holds {names}; a CSV column holds only one of bool, int, float, str"
    )


def _check(obj: Any, location: ButlerLocation) -> list[tuple[str, str, Sequence[Any]]]:
    """Validate before writing a byte, so a bad object never costs the previous dataset."""
    columns: list[tuple[str, str, Sequence[Any]]] = []
    lengths: dict[str, int] = {}
    for name, values in obj.items():
        if not isinstance(name, str) or not name:
            raise location.format_error(f"column names must be non-empty strings, not {name!r}")
        if not isinstance(values, list | tuple):
            raise location.format_error(
                f"column {name!r} is a {type(values).__name__}, not a list of values"
            )
        lengths[name] = len(values)
        columns.append((name, _column_type(name, values, location), values))
    if len(set(lengths.values())) > 1:
        raise location.format_error(f"columns have different lengths: {lengths}")
    return columns


def write(obj: dict[str, Any], location: ButlerLocation, *, delimiter: str = ",") -> None:
    """Write a dict of columns as CSV.

    Parameters
    ----------
    obj
        ``{name: [values...]}``; all columns of one length, each of one type.
    location
        Where to write; `ButlerLocation.open_write` makes the write atomic.
    delimiter
        Field separator (serializer argument of the dataset type's policy).

    Raises
    ------
    FormatError
        For ragged columns, mixed or unsupported value types, bad column names.
    """
    columns = _check(obj, location)
    rows = zip(*(values for _, _, values in columns), strict=True)
    with location.open_write() as raw:
        # Stream through a text layer; detach() so the storage, not the wrapper, closes
        # (and commits) the underlying file.
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        out = csv.writer(text, delimiter=delimiter, lineterminator="\n")
        out.writerow([f"{name}:{kind}" for name, kind, _ in columns])
        out.writerows(rows)
        text.flush()
        text.detach()


def _parse(kind: str) -> Callable[[str], Any]:
    if kind == "bool":
        return lambda s: {"True": True, "False": False}[s]
    return _TYPES[kind]


def _infer(values: list[str]) -> list[Any]:
    for kind in (int, float):
        try:
            return [kind(v) for v in values]
        except ValueError:
            continue
    return values


def _rows(location: ButlerLocation, delimiter: str) -> Iterator[list[str]]:
    with location.open_read() as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        try:
            yield from csv.reader(text, delimiter=delimiter, strict=True)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise location.format_error(f"not a UTF-8 CSV file: {exc}") from exc
        finally:
            text.detach()


def read(location: ButlerLocation, *, delimiter: str = ",") -> dict[str, Any]:
    """Read a CSV file as a dict of columns (as the subclass that was written, if any).

    ``location.parameters["columns"]`` (a list of names) selects columns.

    Raises
    ------
    FormatError
        For a file that is empty, not UTF-8 CSV, or has rows of the wrong length or
        values that do not match the header's types.
    """
    rows = _rows(location, delimiter)
    header = next(rows, None)
    if header is None:
        raise location.format_error("empty file: a CSV dataset has at least a header row")
    names, kinds = [], []
    for field in header:
        name, sep, kind = field.rpartition(":")
        if not sep or kind not in _TYPES:
            name, kind = field, ""  # a foreign file: types are inferred
        names.append(name)
        kinds.append(kind)
    if len(set(names)) != len(names):
        raise location.format_error(f"duplicate column names in header {header}")
    cells: list[list[str]] = [[] for _ in names]
    for line, row in enumerate(rows, start=2):
        if len(row) != len(names):
            raise location.format_error(
                f"line {line} has {len(row)} fields, the header {len(names)} (truncated?)"
            )
        for column, value in zip(cells, row, strict=True):
            column.append(value)
    wanted = location.parameters.get("columns", names)
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise location.format_error(f"no columns {unknown}; the file has {names}")
    data = {}
    for name, kind, values in zip(names, kinds, cells, strict=True):
        if name not in wanted:
            continue
        try:
            data[name] = [_parse(kind)(v) for v in values] if kind else _infer(values)
        except (KeyError, ValueError) as exc:
            message = f"column {name!r} is typed {kind!r}: bad value {exc}"
            raise location.format_error(message) from exc
    cls = location.read_type()  # dict, or the dict subclass that was written
    return data if cls is dict else cls(data)
