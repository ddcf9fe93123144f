"""butler-db: the ``database`` storage and the ``sql-table`` format, via SQLAlchemy.

Importing this package is cheap: SQLAlchemy, numpy and the database drivers are imported
only when a database repository is opened or a table is read or written.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DatabaseStorage", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "DatabaseStorage":
        from ._storage import DatabaseStorage

        return DatabaseStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
