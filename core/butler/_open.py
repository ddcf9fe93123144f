"""Opening the storage that serves a root: URI scheme → storage class → instance.

Below `Butler` and the standalone-file functions alike (both open storages through here),
and the one place a root's scheme is parsed.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import StorageError
from ._urls import mask_url, scheme_of

if TYPE_CHECKING:
    from ._registry import Registry
    from ._storage import Storage

__all__ = ["open_storage"]


def open_storage(root: str, registry: Registry, **options: Any) -> Storage:
    """Instantiate the storage serving ``root`` (a path or a URI).

    Plain paths and ``file://`` are posix, ``memory://`` is memory, other schemes whatever
    plugin registered them.

    Raises
    ------
    StorageError
        If no installed storage serves the URI's scheme (naming what to install).
    """
    if isinstance(root, os.PathLike):
        root = os.fspath(root)
    if not isinstance(root, str) or not root.strip():
        raise StorageError(
            f"a repository root must be a non-empty path or URI string, not {root!r}"
        )
    scheme = scheme_of(root)
    spec = registry.storage_spec_for_scheme(scheme, root)
    cls = spec.load()
    _check_options(cls, root, options)
    return cls(root, **options)  # type: ignore[no-any-return,unused-ignore]


def _check_options(cls: type, root: str, options: Mapping[str, Any]) -> None:
    """Refuse storage options the storage class does not declare (``durabel=False``)."""
    if not options:
        return
    params = inspect.signature(cls).parameters
    valid = sorted(
        name
        for name, p in list(params.items())[1:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise StorageError(
            f"unknown option(s) {unknown} for the {getattr(cls, 'type_name', cls.__name__)!r} "
            f"storage of {mask_url(root)!r}; valid options: {valid or 'none'}"
        )
