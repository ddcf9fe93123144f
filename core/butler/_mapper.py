"""Mappers turn (dataset type, data ID) into storage keys and back.

The default `TemplateMapper` uses ``str.format`` templates (``"calexp/{visit:06d}/{ccd}.fits"``).
Data ID values are validated *before* anything is written: nothing a user passes can make
a key leave the repository root.
"""

from __future__ import annotations

import abc
import posixpath
import re
import string
from collections.abc import Mapping
from typing import Any

from ._errors import DatasetTypeError, InvalidDataIdError
from ._policy import DatasetType

__all__ = [
    "Mapper",
    "TemplateMapper",
    "coerce_value",
    "template_dimensions",
    "template_fields",
    "validate_template",
]

_MAX_VALUE_LEN = 200
#: Integer data ID values have at most 30 digits (as in keys parsed back from storage).
_MAX_INT = 10**30
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPEC = re.compile(r"^[0-9<>^=+\- #,._a-zA-Z]*$")
_INT_SPEC = re.compile(r".*[dnxXob]$")


def template_dimensions(template: str) -> dict[str, str]:
    """Dimensions implied by a template: ``:d``-style fields are ``int``, others ``str``."""
    dims: dict[str, str] = {}
    for _, name, spec in template_fields(template):
        if name and name not in dims:
            dims[name] = "int" if _INT_SPEC.match(spec) else "str"
    return dims


def template_fields(template: str) -> list[tuple[str, str, str]]:
    """Parse a template into (literal, field, spec) triples (field may be empty).

    Raises
    ------
    DatasetTypeError
        For attribute/index access, conversions, nested fields or unbalanced braces: a
        template can only place data ID values.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise DatasetTypeError(f"malformed template {template!r}: {exc}") from exc
    result = []
    for literal, name, spec, conversion in parsed:
        if name is not None:
            if not _FIELD.match(name):
                raise DatasetTypeError(
                    f"template {template!r}: field {{{name}}} must be a plain identifier "
                    f"(no attribute access, indexing or positional fields)"
                )
            if conversion is not None:
                raise DatasetTypeError(
                    f"template {template!r}: conversions like !r are not allowed"
                )
            if spec and ("{" in spec or not _SPEC.match(spec)):
                raise DatasetTypeError(f"template {template!r}: invalid format spec {spec!r}")
        result.append((literal, name or "", spec or ""))
    return result


def validate_template(template: str) -> list[str]:
    """Check that a template yields relative keys inside the root; return its field names."""
    if not isinstance(template, str) or not template.strip():
        raise DatasetTypeError(f"template must be a non-empty string, not {template!r}")
    parts = template_fields(template)
    literal = "".join(p[0] for p in parts)
    if template.startswith("/") or "\\" in literal or "\0" in template:
        raise DatasetTypeError(f"template {template!r} must be a relative '/'-separated path")
    segments = template.split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise DatasetTypeError(f"template {template!r} has an empty, '.' or '..' path segment")
    if any(seg.startswith(".") for seg in segments):
        raise DatasetTypeError(f"template {template!r}: path segments may not start with '.'")
    names = [name for _, name, _ in parts if name]
    if not names and template.endswith("/"):
        raise DatasetTypeError(f"template {template!r} names a directory, not a file")
    return list(dict.fromkeys(names))


class Mapper(abc.ABC):
    """Interface of mappers; subclass it to lay datasets out differently.

    A mapper is stateless apart from its configuration and must be consistent:
    ``data_id_for(dt, key_for(dt, data_id)) == normalised data_id``.
    """

    def map(
        self, dataset_type: DatasetType, data_id: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Storage key and normalised data ID of a dataset (what `Butler.location` uses).

        The default parses the key back with `data_id_for`; override when the mapper
        already knows the normalised data ID.
        """
        key = self.key_for(dataset_type, data_id)
        return key, self.data_id_for(dataset_type, key) or dict(data_id)

    @abc.abstractmethod
    def key_for(self, dataset_type: DatasetType, data_id: Mapping[str, Any]) -> str:
        """Storage key of a dataset. Raises `InvalidDataIdError` for bad data IDs."""

    @abc.abstractmethod
    def data_id_for(self, dataset_type: DatasetType, key: str) -> dict[str, Any] | None:
        """The data ID stored under ``key``, or ``None`` if the key is not of this type."""

    def prefix_for(self, dataset_type: DatasetType, partial: Mapping[str, Any]) -> str:
        """Longest key prefix shared by all datasets matching a partial data ID."""
        return ""


class TemplateMapper(Mapper):
    """The default mapper: keys from ``str.format`` templates, parsed back with a regex."""

    def __init__(self) -> None:
        self._regex_cache: dict[str, re.Pattern[str]] = {}
        # id(dataset type) -> (that dataset type, whether its template is unambiguous)
        self._unambiguous: dict[int, tuple[DatasetType, bool]] = {}

    def normalise(self, dataset_type: DatasetType, data_id: Mapping[str, Any]) -> dict[str, Any]:
        """Check keys against the dimensions and coerce and validate each value."""
        dims = dataset_type.dimensions
        name = dataset_type.name
        if data_id.keys() == dims.keys():  # the common case: exactly the dimensions
            return {d: _coerce(name, d, data_id[d], kind) for d, kind in dims.items()}
        missing = [d for d in dims if d not in data_id]
        extra = [k for k in data_id if k not in dims]
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing {missing}")
            if extra:
                problems.append(f"unknown {extra}")
            raise InvalidDataIdError(
                f"data ID {dict(data_id)} for dataset type {dataset_type.name!r}: "
                f"{' and '.join(problems)}; its dimensions are {list(dims)}"
            )
        return {d: _coerce(dataset_type.name, d, data_id[d], kind) for d, kind in dims.items()}

    def key_for(self, dataset_type: DatasetType, data_id: Mapping[str, Any]) -> str:
        return self.map(dataset_type, data_id)[0]

    def map(
        self, dataset_type: DatasetType, data_id: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        normal = self.normalise(dataset_type, data_id)
        try:
            key = dataset_type.template.format(**normal)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidDataIdError(
                f"data ID {normal} does not fit template {dataset_type.template!r} of dataset "
                f"type {dataset_type.name!r}: {exc}"
            ) from exc
        if self._is_unambiguous(dataset_type):
            return key, normal  # the checks below cannot fail: see `template_is_unambiguous`
        if posixpath.normpath(key) != key or key.startswith(("/", "../")) or key == "..":
            raise InvalidDataIdError(f"data ID {normal} gives key {key!r} outside the repository")
        # Ambiguous templates ("{a}_{b}" with a="x_y") must not alias another data ID.
        if self.data_id_for(dataset_type, key) != normal:
            raise InvalidDataIdError(
                f"data ID {normal} of dataset type {dataset_type.name!r} gives key {key!r}, "
                f"which reads back as a different data ID; use values without the template's "
                f"separators"
            )
        return key, normal

    def _is_unambiguous(self, dataset_type: DatasetType) -> bool:
        cached = self._unambiguous.get(id(dataset_type))
        if cached is not None and cached[0] is dataset_type:
            return cached[1]
        found = template_is_unambiguous(dataset_type.template, dataset_type.dimensions)
        if len(self._unambiguous) > 1024:  # dataset types redefined many times over
            self._unambiguous.clear()
        self._unambiguous[id(dataset_type)] = (dataset_type, found)
        return found

    def _regex(self, template: str, dims: Mapping[str, str]) -> re.Pattern[str]:
        cached = self._regex_cache.get(template)
        if cached is None:
            pattern, seen = [], set()
            for literal, name, _spec in template_fields(template):
                pattern.append(re.escape(literal))
                if not name:
                    continue
                if name in seen:
                    pattern.append(f"(?P={name})")
                    continue
                seen.add(name)
                body = r"[+-]?\d+" if dims.get(name) == "int" else r"[^/]+?"
                pattern.append(f"(?P<{name}>{body})")
            cached = re.compile("".join(pattern) + r"\Z")
            self._regex_cache[template] = cached
        return cached

    def data_id_for(self, dataset_type: DatasetType, key: str) -> dict[str, Any] | None:
        match = self._regex(dataset_type.template, dataset_type.dimensions).match(key)
        if match is None:
            return None
        found = match.groupdict()
        return {
            d: int(found[d]) if kind == "int" else found[d]
            for d, kind in dataset_type.dimensions.items()
        }

    def prefix_for(self, dataset_type: DatasetType, partial: Mapping[str, Any]) -> str:
        prefix = []
        for literal, name, spec in template_fields(dataset_type.template):
            prefix.append(literal)
            if not name:
                continue
            if name not in partial:
                break
            value = _coerce(dataset_type.name, name, partial[name], dataset_type.dimensions[name])
            prefix.append(format(value, spec))
        return "".join(prefix)


#: Format specs of int fields whose output the key regex reads back exactly: none, ``d``,
#: or zero padding (``06d``); a plain width pads with spaces, which do not read back.
_EXACT_INT_SPEC = re.compile(r"(0\d*)?d?\Z")


def template_is_unambiguous(template: str, dims: Mapping[str, str]) -> bool:
    """Whether every data ID that passes `coerce_value` formats into a key inside the
    root that the template's regex reads back as the same data ID.

    Then `TemplateMapper.map` can skip reading each key back (and normalising its path),
    which costs a get or put more than the formatting itself. True when the template is
    valid, names each dimension once, and every field is delimited so that the regex
    cannot take its value's end elsewhere:

    * a string field (no format spec) is the last field of the template, or is followed
      by ``/``: a value cannot contain ``/``;
    * an integer field (spec none, ``d`` or zero padding such as ``06d``) is the last
      field or is followed by a non-digit: its digits end where the literal starts.

    Coerced values are never empty, never start with ``.`` and contain no ``/``, and the
    template's own segments are checked by `validate_template`, so no segment of such a
    key can be empty, ``.`` or ``..``. Anything else keeps the full checks.
    """
    try:
        validate_template(template)
        fields = template_fields(template)
    except DatasetTypeError:
        return False
    names = [name for _, name, _ in fields if name]
    if len(set(names)) != len(names) or set(names) != set(dims):
        return False
    for i, (_literal, name, spec) in enumerate(fields):
        if not name:
            continue
        following = "".join(literal for literal, _, _ in fields[i + 1 :][:1])
        last = not any(other for _, other, _ in fields[i + 1 :])
        if dims[name] == "int":
            if not _EXACT_INT_SPEC.match(spec):
                return False
            if not last and (not following or following[0].isdigit()):
                return False
        elif spec or not (last or following.startswith("/")):
            return False
    return True


def _short_repr(value: Any, limit: int = 60) -> str:
    """``repr`` for messages: bounded, and never failing (huge ints cannot be printed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<int of about {int(value.bit_length() * 0.30103) + 1} digits>"
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def coerce_value(dataset_type: DatasetType, key: str, value: Any) -> Any:
    """A data ID value coerced to its dimension's declared type, or `InvalidDataIdError`."""
    return _coerce(dataset_type.name, key, value, dataset_type.dimensions[key])


#: Strings `_coerce_checked` accepts unchanged: 1 to 200 characters, no leading ``.``,
#: no ``/``, ``\\``, control characters or lone surrogates (not encodable as UTF-8).
_PLAIN_STR = re.compile(rf"(?!\.)[^/\\\x00-\x1f\x7f\ud800-\udfff]{{1,{_MAX_VALUE_LEN}}}\Z")


def _coerce(dataset_type: str, key: str, value: Any, kind: str) -> Any:
    """`_coerce_checked`, answering the common values (an ``int``, a plain ``str``)
    without building the description its errors need."""
    kind_of_value = type(value)
    if kind == "int":
        if kind_of_value is int and -_MAX_INT < value < _MAX_INT:
            return value
    elif kind_of_value is str and _PLAIN_STR.match(value):
        return value
    return _coerce_checked(dataset_type, key, value, kind)


def _coerce_checked(dataset_type: str, key: str, value: Any, kind: str) -> Any:
    where = f"data ID value {key}={_short_repr(value)} of dataset type {dataset_type!r}"
    if kind == "int":
        if isinstance(value, bool):
            raise InvalidDataIdError(f"{where} must be an integer, not a bool")
        if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,30}", value.strip()):
            return int(value)
        if isinstance(value, int) or (hasattr(value, "__index__") and not isinstance(value, str)):
            number = int(value.__index__())  # numpy integers too
            if abs(number) >= _MAX_INT:
                raise InvalidDataIdError(f"{where} must have at most 30 digits")
            return number
        raise InvalidDataIdError(f"{where} must be an integer")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidDataIdError(f"{where} must be a string or an integer")
    text = str(value)
    if not text or len(text) > _MAX_VALUE_LEN:
        raise InvalidDataIdError(f"{where} must have 1 to {_MAX_VALUE_LEN} characters")
    if text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text:
        raise InvalidDataIdError(
            f"{where} could leave the repository root or hide the dataset: no '/', '\\' or "
            f"leading '.' allowed"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise InvalidDataIdError(f"{where} contains control characters (NUL, newline, ...)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidDataIdError(f"{where} is not valid Unicode: {exc}") from exc
    return text
