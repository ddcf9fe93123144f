"""Conformance kit for plugin authors: test any serializer on every available storage.

Subclass `SerializerConformance` in your plugin's test-suite::

    from butler.testing import SerializerConformance

    class TestCsv(SerializerConformance):
        format = "csv"
        python_type = "builtins.dict"
        heavy_modules = ("butler_csv._csv",)

        def make_objects(self):
            return [{"a": [1, 2], "b": ["x", "y"]}]

(`ComponentConformance` does the same for a type's components: split/assemble round
trip, component types, component reads equal to extracted ones.)

pytest then runs round trips, subclass preservation, corrupt input, atomic writes under
injected failures and lazy discovery, on ``posix`` and ``memory`` and, when their plugins
are installed, ``s3`` (against a moto server the kit starts) and ``database`` (SQLite).

`SerializerConformance` and `ComponentConformance` need pytest, imported when first used; the other
helpers (`moto_server`, `corrupt`, ...) work without it. ``import butler`` never imports
this package.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._faults import CORRUPTIONS, InjectedFault, corrupt, failing_writes
from ._lazy import imported_after_discovery
from ._moto import moto_server, start_moto, stop_moto
from ._storages import STORAGES, RepositoryFactory, moto_endpoint, unavailable_reason
from ._subclass import derive_subclass

if TYPE_CHECKING:
    from ._components import ComponentConformance
    from ._conformance import SerializerConformance

__all__ = [
    "CORRUPTIONS",
    "STORAGES",
    "ComponentConformance",
    "InjectedFault",
    "RepositoryFactory",
    "SerializerConformance",
    "corrupt",
    "derive_subclass",
    "failing_writes",
    "imported_after_discovery",
    "moto_endpoint",
    "moto_server",
    "start_moto",
    "stop_moto",
    "unavailable_reason",
]


def __getattr__(name: str) -> Any:
    # Lazy: the conformance kit imports pytest; scripts using moto_server need not have it.
    if name == "SerializerConformance":
        from ._conformance import SerializerConformance

        return SerializerConformance
    if name == "ComponentConformance":
        from ._components import ComponentConformance

        return ComponentConformance
    raise AttributeError(f"module 'butler.testing' has no attribute {name!r}")
