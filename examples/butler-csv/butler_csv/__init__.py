"""butler-csv: an example butler plugin storing dicts of columns as typed CSV files.

Importing this package imports nothing but butler itself: the serializer module (and the
standard library's ``csv``) is loaded the first time a CSV dataset is read or written.
"""

from __future__ import annotations

from typing import Any

__all__: list[str] = []


def __getattr__(name: str) -> Any:
    if name == "__version__":  # lazy: importlib.metadata costs import time
        from importlib.metadata import version

        return version("butler-csv")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
