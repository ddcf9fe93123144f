"""The exception hierarchy: every error butler raises on purpose is a `ButlerError`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "BulkError",
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


class BulkError(ButlerError):
    """Some items of a bulk call (`Butler.get_many`, `Butler.put_many`) failed; raised once
    every item has finished. Each item is atomic on its own: a failed put left nothing for
    its data ID, and the items not listed here succeeded.

    The message lists each failed item (its position, data ID and error).

    Attributes
    ----------
    errors
        Position of each failed item in the call's input -> its exception.
    data_ids
        Position of each failed item -> its data ID, as given.
    results
        Position of each successful item -> its result (the object read, or the
        `ButlerLocation` written).

    .. versionadded:: 0.2
    """

    #: Failed items listed in the message at most (all of them are in ``errors``).
    MAX_LISTED = 100

    def __init__(
        self,
        what: str,
        total: int,
        errors: Mapping[int, BaseException],
        data_ids: Mapping[int, Any],
        results: Mapping[int, Any],
    ) -> None:
        self.errors = dict(sorted(errors.items()))
        self.data_ids = {i: data_ids.get(i) for i in self.errors}
        self.results = dict(sorted(results.items()))
        lines = [f"{what}: {len(self.errors)} of {total} items failed"]
        for n, (i, exc) in enumerate(self.errors.items()):
            if n == self.MAX_LISTED:
                lines.append(f"  ... and {len(self.errors) - n} more (see BulkError.errors)")
                break
            lines.append(f"  [{i}] data ID {self.data_ids[i]}: {type(exc).__name__}: {exc}")
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (a Dask worker's error) with its message, errors and data IDs; results
        that cannot be pickled (a `ButlerLocation` holds its open storage) are left out."""
        import pickle

        results = {}
        for i, result in self.results.items():
            try:
                pickle.dumps(result)
            except Exception:
                continue
            results[i] = result
        return (_bulk_error, (str(self), self.errors, self.data_ids, results))


def _bulk_error(
    message: str,
    errors: Mapping[int, BaseException],
    data_ids: Mapping[int, Any],
    results: Mapping[int, Any],
) -> BulkError:
    error = BulkError.__new__(BulkError)
    ButlerError.__init__(error, message)
    error.errors, error.data_ids, error.results = dict(errors), dict(data_ids), dict(results)
    return error


def check_overwrite(overwrite: object, action: str, dataset_type: str) -> bool:
    """``overwrite`` itself, refused unless it is True or False: a truthy string such as
    ``"no"`` or ``"false"`` would otherwise replace existing datasets."""
    if overwrite is True or overwrite is False:
        return overwrite
    raise ParameterError(
        f"{action} of dataset type {dataset_type!r}: overwrite must be True or False, not "
        f"{overwrite!r}"
    )
