"""butler: store and load Python objects by (type, format, storage).

Formats and storages come from plugins discovered through the ``butler`` entry-point
group; ``import butler`` and discovery import none of the heavy libraries they wrap.
"""

from __future__ import annotations

from typing import Any

from ._abc import DataclassLike
from ._butler import Butler, ReindexReport, VerifyReport
from ._collections import DatasetVersion
from ._components import (
    ComponentCatalog,
    ComponentError,
    ComponentReader,
    Components,
    component_catalog,
    register_components,
)
from ._config import Config
from ._declarations import Dropped, FormatDescriptor, Serializer, StorageSpec
from ._errors import (
    BulkError,
    ButlerError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    DuplicateFormatError,
    DuplicateSerializerError,
    DuplicateStorageError,
    FormatError,
    InvalidDataIdError,
    NoSerializerError,
    ParameterError,
    PluginError,
    QueryError,
    StorageError,
    UnsafeFormatError,
)
from ._files import file_location, read_file, write_file
from ._location import ButlerLocation
from ._mapper import Mapper, TemplateMapper
from ._plugins import (
    Conflict,
    PluginInfo,
    default_registry,
    discovery,
    plugins,
    refresh_plugins,
)
from ._policy import DatasetType
from ._provenance import DatasetRef, Provenance
from ._registry import Registry
from ._storage import ProgressCallback, Storage
from ._urls import is_secret_key, mask_url
from .hookspecs import hookimpl

__all__ = [
    "BulkError",
    "Butler",
    "ButlerError",
    "ButlerLocation",
    "ComponentCatalog",
    "ComponentError",
    "ComponentReader",
    "Components",
    "Config",
    "Conflict",
    "DataclassLike",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetRef",
    "DatasetType",
    "DatasetTypeError",
    "DatasetVersion",
    "Dropped",
    "DuplicateFormatError",
    "DuplicateSerializerError",
    "DuplicateStorageError",
    "FormatDescriptor",
    "FormatError",
    "InvalidDataIdError",
    "Mapper",
    "NoSerializerError",
    "ParameterError",
    "PluginError",
    "PluginInfo",
    "ProgressCallback",
    "Provenance",
    "QueryError",
    "Registry",
    "ReindexReport",
    "Serializer",
    "Storage",
    "StorageError",
    "StorageSpec",
    "TemplateMapper",
    "UnsafeFormatError",
    "VerifyReport",
    "component_catalog",
    "default_registry",
    "discovery",
    "file_location",
    "hookimpl",
    "is_secret_key",
    "mask_url",
    "plugins",
    "read_file",
    "refresh_plugins",
    "register",
    "register_components",
    "write_file",
]


def register(
    python_type: type | str,
    storage: str,
    format: str,
    write: Any,
    read: Any,
    *,
    overwrite: bool = False,
) -> Serializer:
    """Register a serializer in the process-wide registry (see `Registry.register`)."""
    return default_registry().register(
        python_type, storage, format, write, read, overwrite=overwrite
    )


def __getattr__(name: str) -> Any:
    if name == "__version__":  # lazy: importlib.metadata costs import time
        from importlib.metadata import version

        return version("butler-core")
    raise AttributeError(f"module 'butler' has no attribute {name!r}")
