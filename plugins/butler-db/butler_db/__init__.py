"""butler-db: the ``database`` storage and the ``sql-table`` format, via SQLAlchemy.

Importing this package is cheap: SQLAlchemy, numpy and the database drivers are imported
only when a database repository is opened or a table is read or written.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DatabaseStorage"]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # lazy: importlib.metadata costs import time
        from importlib.metadata import version

        return version("butler-db")
    if name == "DatabaseStorage":
        from ._storage import DatabaseStorage

        return DatabaseStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
