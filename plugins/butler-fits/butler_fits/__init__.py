"""butler-fits: the ``fits`` format for butler, through astropy.

Importing this package (which plugin discovery does) imports neither astropy nor numpy:
the serializers live in modules named by ``"module:function"`` strings and are imported
the first time a FITS dataset is read or written.
"""

from __future__ import annotations

from ._abc import FitsReadWritable

__all__ = ["FitsReadWritable"]
