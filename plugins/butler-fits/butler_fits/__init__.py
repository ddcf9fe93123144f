"""butler-fits: the ``fits`` format for butler, through astropy.

Importing this package (which plugin discovery does) imports neither astropy nor numpy:
the serializers live in modules named by ``"module:function"`` strings and are imported
the first time a FITS dataset is read or written.
"""

from __future__ import annotations

from typing import Any

from ._abc import FitsReadWritable

__all__ = ["FitsReadWritable"]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # lazy: importlib.metadata costs import time
        from importlib.metadata import version

        return version("butler-fits")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
