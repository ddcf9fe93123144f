"""Reading and writing standalone files (outside any repository) with butler's serializers.

This is what ``butler put``/``get``/``convert`` use: a path or URI is split into a storage
root and a key, the format comes from the name or the first bytes, and the same serializers
as for datasets do the work (``butler convert s3://bkt/img.fits ./img.h5``).
"""

from __future__ import annotations

from typing import Any

from ._declarations import parameters_dict
from ._errors import ButlerError
from ._location import ButlerLocation
from ._open import open_storage
from ._registry import Registry
from ._storage import ProgressCallback, Storage
from ._types import import_type, loaded_type, type_name
from ._urls import split_file_uri

__all__ = [
    "file_location",
    "read_file",
    "vouched_type",
    "write_file",
]

#: Bytes read to identify a file's format: enough for a gzip stream to inflate to a
#: format's signature (64 bytes of deflate rarely inflate to 9).
IDENTIFY_BYTES = 512


def _registry(registry: Registry | None) -> Registry:
    if registry is None:
        from ._plugins import default_registry

        registry = default_registry()
    return registry


def file_location(
    uri: str,
    *,
    format: str | None = None,
    python_type: type | str | None = None,
    writing: bool = False,
    registry: Registry | None = None,
    parameters: dict[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    allow_pickle: bool = False,
    max_read_bytes: int | str | None = None,
    overwrite: bool = False,
    **storage_options: Any,
) -> ButlerLocation:
    """A `ButlerLocation` for one standalone file.

    Parameters
    ----------
    uri
        Local path or URI (``s3://bucket/key.fits``).
    format
        Format name; identified from the file's first bytes (reading) or name otherwise.
    python_type
        Type to read the file as; defaults to the format's declared ``python_type``.
    writing
        Build a location to write.
    overwrite
        With ``writing``: replace an existing file (otherwise the commit refuses to).
    max_read_bytes
        Most bytes the read may allocate for what the file declares (see `Butler`).
    """
    from ._limits import parse_size

    reg = _registry(registry)
    root, key = split_file_uri(uri)
    if not key:
        from ._errors import StorageError

        raise StorageError(f"{uri!r} names a directory, not a file")
    storage: Storage = open_storage(root, reg, **storage_options)
    if format is None:
        first = b""
        if not writing:
            with storage.open(key) as f:
                first = f.read(IDENTIFY_BYTES)
        format = reg.identify_format(key, first)
    from ._composite import COMPOSITE_FORMAT

    if format == COMPOSITE_FORMAT:  # only a repository can read or write one
        from ._errors import FormatError

        raise FormatError(
            f"{storage.uri(key)!r} is (or would be) the record of a disassembled composite, "
            f"not a file of its own: its parts live in its repository. Export the dataset "
            f"assembled with `butler get REPO DATASET_TYPE --id ... -o FILE` (or "
            f"Butler(repo).get) and convert that file"
        )
    descriptor = reg.format(format)
    stored: dict[str, Any] = {}
    if not writing:
        stored = storage.metadata(key)  # butler-written files carry their type; others: {}
    if python_type is None:
        # A recorded type is used only if an installed serializer of this format vouches for
        # it: data never chooses what gets imported.
        python_type = vouched_type(stored.get("python_type"), format, reg)
    return ButlerLocation(
        locations=[key],
        storage=storage,
        format=format,
        python_type=type_name(python_type or descriptor.python_type),
        dataset_type=key,
        standalone=True,
        additional_data={},
        parameters=parameters_dict(parameters, repr(key)),
        registry=reg,
        overwrite=overwrite,
        allow_pickle=allow_pickle,
        progress=progress,
        stored=stored,
        max_read_bytes=None if max_read_bytes is None else parse_size(max_read_bytes),
    )


def vouched_type(recorded: object, format: str, registry: Registry) -> str | None:
    """The type recorded with a file, when an installed serializer of ``format`` vouches for it.

    Butler records the concrete class it wrote (``astropy.table.table.Table``), plugins
    register the public name (``astropy.table.Table``): the recorded name is accepted when it
    is a registered one, or names a registered class (or a subclass of one) once the
    registered types of the *same top-level package* are imported. Installing the plugin
    vouches for those; nothing else is ever imported because a file says so.

    Parameters
    ----------
    recorded
        The ``python_type`` recorded in the file's metadata (anything: it is data).
    format
        The file's format.
    registry
        Where the serializers are registered.

    Returns
    -------
    str or None
        ``recorded``, or ``None`` when no installed serializer of ``format`` vouches for it.
    """
    if not isinstance(recorded, str) or not recorded:
        return None
    registered = sorted(
        {s.python_type for s in registry.serializers.values() if s.format == format}
    )
    if recorded in registered:
        return recorded
    cls = loaded_type(recorded)
    if cls is None:
        top = recorded.split(".", 1)[0]
        for name in registered:
            if name.split(".", 1)[0] == top:
                try:
                    import_type(name)
                except ButlerError:
                    continue  # its plugin's library is missing: it vouches for nothing
        cls = loaded_type(recorded)
    if cls is None:
        return None
    for name in registered:
        base = loaded_type(name)
        if base is not None and issubclass(cls, base):
            return recorded
    return None


def read_file(uri: str, **kwargs: Any) -> Any:
    """Read a standalone file with the serializer of its format (see `file_location`).

    Examples
    --------
    >>> import butler, json, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.json")
    >>> butler.write_file({"a": 1}, path)
    >>> butler.read_file(path)
    {'a': 1}
    """
    return file_location(uri, **kwargs).read()


def write_file(obj: Any, uri: str, *, overwrite: bool = False, **kwargs: Any) -> None:
    """Write ``obj`` to a standalone file (atomically) in the format its name implies.

    Parameters
    ----------
    obj
        The object to write.
    uri
        Local path or URI of the file.
    overwrite
        Replace the file if it exists.
    **kwargs
        As for `file_location` (``format``, ``registry``, storage options...).

    Raises
    ------
    DatasetExistsError
        If the file exists and ``overwrite`` is false.
    """
    from ._errors import DatasetExistsError

    kwargs.setdefault("python_type", type(obj))
    location = file_location(uri, writing=True, overwrite=overwrite, **kwargs)
    exists = DatasetExistsError(
        f"{location.uri!r} already exists; pass overwrite=True to replace it"
    )
    # Checked first so a big object is not serialized for nothing; the storage's
    # create-if-absent commit still refuses a file that appears meanwhile.
    if not overwrite and location.storage.exists(location.key):
        raise exists
    try:
        location.write(obj)
    except DatasetExistsError:
        raise exists from None
