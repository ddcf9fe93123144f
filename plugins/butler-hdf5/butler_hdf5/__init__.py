"""butler-hdf5: the ``hdf5`` format for butler, through h5py.

Importing this package imports neither h5py nor numpy: the serializers live in
``butler_hdf5._arrays``, ``butler_hdf5._mapping``, ``butler_hdf5._table`` and
``butler_hdf5._hdulist`` and are
named by ``"module:function"`` strings in ``butler_hdf5._plugin``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FORMAT", "HDF5_MAGIC"]

#: Format name used in dataset type definitions.
FORMAT = "hdf5"

#: The HDF5 superblock signature.
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def __getattr__(name: str) -> Any:
    if name == "__version__":  # lazy: importlib.metadata costs import time
        from importlib.metadata import version

        return version("butler-hdf5")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
