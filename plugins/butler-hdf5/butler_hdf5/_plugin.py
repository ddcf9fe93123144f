"""Entry point of butler-hdf5: declarations only, naming callables by strings.

Nothing heavy is imported here (no h5py, numpy or astropy), so discovering the plugin is
free; each serializer module is imported the first time a dataset of its kind is touched.
"""

from __future__ import annotations

import butler

from . import FORMAT, HDF5_MAGIC

__all__ = ["butler_formats", "butler_serializers"]

#: python type (dotted name) -> module implementing ``write``/``read``/``read_posix``/
#: ``read_s3``. ``astropy.table.Table`` is matched only once astropy is imported, so the
#: serializer is active exactly where astropy is installed and in use.
_TYPES = {
    "numpy.ndarray": "butler_hdf5._arrays",
    "builtins.dict": "butler_hdf5._mapping",
    "astropy.table.Table": "butler_hdf5.astropy_",
}

#: storage type -> reader function name; ``"*"`` reads through ``location.open_read()``.
_READERS = {"*": "read", "posix": "read_posix", "s3": "read_s3"}


@butler.hookimpl
def butler_formats() -> list[butler.FormatDescriptor]:
    return [
        butler.FormatDescriptor(
            FORMAT,
            (".h5", ".hdf5", ".he5"),
            magic=HDF5_MAGIC,
            description="HDF5 via h5py (arrays, nested dicts, astropy tables)",
            url="https://docs.h5py.org",
            # Files written by other programs are trees of groups: read them as nested dicts.
            python_type="builtins.dict",
        )
    ]


@butler.hookimpl
def butler_serializers() -> list[butler.Serializer]:
    return [
        butler.Serializer(python_type, storage, FORMAT, f"{module}:write", f"{module}:{reader}")
        for python_type, module in _TYPES.items()
        for storage, reader in _READERS.items()
    ]
