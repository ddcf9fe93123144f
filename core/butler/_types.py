"""Naming Python types by dotted strings, resolving them, and checking recorded subclasses.

Everything here is careful about imports: `loaded_type` never imports, `import_type` does
(only for names the user or the repository policy asked for).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Iterable
from typing import Any

from ._errors import DatasetTypeError, FormatError

__all__ = [
    "check_type_findable",
    "import_type",
    "loaded_type",
    "resolve_policy_type",
    "resolve_subclass",
    "type_name",
]

#: Aliases so a policy can say ``dict`` instead of ``builtins.dict``.
_BUILTIN_NAMES = {
    name: f"builtins.{name}"
    for name in ("dict", "list", "str", "int", "float", "bool", "bytes", "object", "tuple")
}


def type_name(cls: type | str) -> str:
    """Return the fully qualified dotted name of a class (strings are normalised only).

    Examples
    --------
    >>> type_name(dict)
    'builtins.dict'
    """
    if isinstance(cls, str):
        return _BUILTIN_NAMES.get(cls, cls)
    if cls is type(None):  # reports module "builtins" but only lives in "types"
        return "types.NoneType"
    return f"{cls.__module__}.{cls.__qualname__}"


@functools.lru_cache(maxsize=1024)
def _split_candidates(name: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """All (module, attribute path) splits of a dotted name, longest module first.

    Pure, hence cached: every get resolves its dataset type's name (``builtins.dict``).
    """
    parts = name.split(".")
    return tuple((".".join(parts[:i]), tuple(parts[i:])) for i in range(len(parts) - 1, 0, -1))


def _walk(obj: Any, attrs: Iterable[str]) -> Any:
    for attr in attrs:
        obj = getattr(obj, attr)
    return obj


def loaded_type(name: str) -> type | None:
    """Return the class named ``name`` if its module is already imported, else ``None``.

    Never imports anything: an object of a type whose module is not loaded cannot exist,
    so a registry can match string-registered types for free.
    """
    name = _BUILTIN_NAMES.get(name, name)
    for module_name, attrs in _split_candidates(name):
        module = sys.modules.get(module_name)
        if module is not None:
            try:
                obj = _walk(module, attrs)
            except AttributeError:
                continue
            return obj if isinstance(obj, type) else None
    return None


def check_type_findable(name: str, registered: Iterable[str], what: str) -> None:
    """Refuse a python type name that can be seen to name nothing, importing nothing: a
    typo in a definition is an error when it is made, not at the first put.

    Accepted: a name an installed plugin registered; a class of an imported module; a
    name under an importable top-level package whose modules are not imported yet (the
    class is then checked when it is first used).

    Raises
    ------
    DatasetTypeError
        Naming what is missing: the module, or the class in an imported module.
    """
    full = _BUILTIN_NAMES.get(name, name)
    if full in registered or loaded_type(full) is not None:
        return
    if "." not in full:
        raise DatasetTypeError(
            f"{what}: python type {name!r} is not a builtin class; name a class by its "
            f"dotted path (module.Class)"
        )
    for module_name, attrs in _split_candidates(full):
        module = sys.modules.get(module_name)
        if module is not None:  # the longest imported module: the rest must be in it
            raise DatasetTypeError(
                f"{what}: python type {name!r}: module {module_name!r} has no class "
                f"{'.'.join(attrs)!r}"
            )
    top = full.split(".", 1)[0]
    try:
        found = importlib.util.find_spec(top) is not None  # a top-level name: no import
    except (ImportError, ValueError):
        found = False
    if not found:
        raise DatasetTypeError(
            f"{what}: python type {name!r}: no module named {top!r} is installed"
        )


def import_type(name: str) -> type:
    """Import and return the class named by a dotted string.

    Raises
    ------
    DatasetTypeError
        If the module cannot be imported or the name is not a class.
    """
    name = _BUILTIN_NAMES.get(name, name)
    found = loaded_type(name)
    if found is not None:
        return found
    errors = []
    for module_name, attrs in _split_candidates(name):
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            errors.append(f"{module_name}: {exc}")
            continue
        try:
            obj = _walk(module, attrs)
        except AttributeError:
            continue
        if isinstance(obj, type):
            return obj
        raise DatasetTypeError(f"{name!r} names a {type(obj).__name__}, not a class")
    detail = "; ".join(errors) if errors else "no such attribute"
    raise DatasetTypeError(f"cannot import python type {name!r} ({detail})")


def resolve_policy_type(
    name: str, *, registered: Iterable[str], allow_imports: Iterable[str] = ()
) -> type:
    """Resolve a dataset type's python type named by a repository policy.

    The policy is written by whoever can write the repository, so naming a type must not
    run a module the reader did not choose. A name resolves when its module is already
    imported, when an installed plugin registered a serializer for exactly that name
    (``"astropy.table.Table"``: installing the plugin vouches for it), or when its
    top-level package is in the reader's ``allow_imports``.

    Raises
    ------
    DatasetTypeError
        Naming the type and the two ways to allow it.
    """
    name = _BUILTIN_NAMES.get(name, name)
    found = loaded_type(name)
    if found is not None:
        return found
    top = name.split(".", 1)[0]
    if name in set(registered) or top in set(allow_imports):
        return import_type(name)
    raise DatasetTypeError(
        f"python type {name!r} named by the repository is not imported, and butler imports "
        f"only types that an installed plugin registered: import {top!r} yourself, or pass "
        f"allow_imports=[{top!r}] to Butler if you trust that package"
    )


def resolve_subclass(recorded: str | None, expected: type, *, what: str) -> type:
    """Return the class to rebuild a dataset as, from the type recorded when it was written.

    Parameters
    ----------
    recorded
        Dotted name stored with the dataset, or ``None`` if nothing was recorded.
    expected
        The dataset type's python type.
    what
        Description of the dataset, used in error messages.

    Returns
    -------
    type
        ``recorded`` when it is ``expected`` or a subclass of it, ``expected`` when nothing
        was recorded.

    Raises
    ------
    FormatError
        If the recorded type cannot be imported, or is not a subclass of ``expected``.
    """
    if recorded is None or recorded == type_name(expected):
        return expected
    cls = loaded_type(recorded)
    # A name read from data is imported only inside the expected type's own package: data
    # must never make butler import (and so run) arbitrary installed modules.
    top = type_name(expected).split(".", 1)[0]
    if cls is None and recorded.split(".", 1)[0] != top:
        raise FormatError(
            f"{what} was written as {recorded!r}, whose module is not imported; butler never "
            f"imports modules named by data outside {top!r}: import it before reading"
        )
    try:
        cls = cls or import_type(recorded)
    except DatasetTypeError as exc:
        raise FormatError(
            f"{what} was written as {recorded!r}, which cannot be loaded: {exc}"
        ) from exc
    if not issubclass(cls, expected):
        raise FormatError(
            f"{what} was written as {recorded!r}, which is not a subclass of the dataset "
            f"type's python type {type_name(expected)!r}; refusing to read it as such"
        )
    return cls
