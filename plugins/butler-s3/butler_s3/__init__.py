"""butler-s3: the ``s3`` storage (``s3://bucket/prefix``) for butler, through s3fs.

Importing this package imports nothing heavy; `S3Storage` (and s3fs with it) is loaded on
first attribute access.
"""

from __future__ import annotations

from typing import Any

__all__ = ["S3Storage"]


def __getattr__(name: str) -> Any:
    if name == "S3Storage":
        from ._storage import S3Storage

        return S3Storage
    if name == "__version__":  # lazy: importlib.metadata costs import time
        from importlib.metadata import version

        return version("butler-s3")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
