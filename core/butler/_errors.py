"""The exception hierarchy: every error butler raises on purpose is a `ButlerError`."""

from __future__ import annotations

__all__ = [
    "ButlerError",
    "DatasetExistsError",
    "DatasetNotFoundError",
    "DatasetTypeError",
    "DuplicateFormatError",
    "DuplicateSerializerError",
    "DuplicateStorageError",
    "FormatError",
    "InvalidDataIdError",
    "NoSerializerError",
    "ParameterError",
    "PluginError",
    "QueryError",
    "StorageError",
    "UnsafeFormatError",
]


class ButlerError(Exception):
    """Base class of every error raised by butler and its plugins."""


class NoSerializerError(ButlerError, LookupError):
    """No serializer is registered for a (type, format, storage) combination."""


class DuplicateSerializerError(ButlerError, ValueError):
    """A serializer is already registered for this (type, storage, format) key."""


class DuplicateStorageError(ButlerError, ValueError):
    """Another storage type of this name is already registered (``overwrite=True`` replaces it).

    .. versionadded:: 0.2
    """


class DuplicateFormatError(ButlerError, ValueError):
    """Another format descriptor of this name is already registered (``overwrite=True``
    replaces it).

    .. versionadded:: 0.2
    """


class DatasetNotFoundError(ButlerError, KeyError):
    """The requested dataset does not exist in the repository."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DatasetExistsError(ButlerError, FileExistsError):
    """A dataset already exists and ``overwrite`` was not requested."""


class DatasetTypeError(ButlerError, KeyError):
    """A dataset type is unknown, or conflicts with its definition (e.g. wrong python type)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidDataIdError(ButlerError, ValueError):
    """A data ID is incomplete, has unknown keys, or a value that could leave the repository."""


class QueryError(InvalidDataIdError):
    """A data-ID query (``where`` expression, constraints or ``order_by``) is invalid.

    The message names the bad token and its position in the ``where`` text.

    .. versionadded:: 0.2
    """


class ParameterError(ButlerError, TypeError):
    """A read/write parameter or serializer argument the format does not accept."""


class UnsafeFormatError(ButlerError):
    """Reading this format could execute code (pickle) and was not explicitly allowed."""


class FormatError(ButlerError, ValueError):
    """Data is corrupt, truncated, or not in the expected format."""


class StorageError(ButlerError, OSError):
    """The storage failed: unreachable, permission denied, out of space, unknown scheme..."""


class PluginError(ButlerError, RuntimeError):
    """A plugin could not be loaded or returned invalid declarations."""
