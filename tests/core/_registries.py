"""A private copy of the process-wide registry, for tests that register serializers or
formats without touching other tests'."""

from __future__ import annotations

import butler
from butler import Registry


def own_registry() -> Registry:
    """A new registry holding the default one's serializers, formats and storages.

    Returns
    -------
    Registry
        Independent of `butler.default_registry`: registering on it changes nothing else.
    """
    registry = Registry()
    default = butler.default_registry()
    for decl in default.serializers.values():
        registry.add(decl)
    for fmt in default.formats.values():
        registry.register_format(fmt)
    for spec in default.storages.values():
        registry.register_storage(spec)
    return registry
