"""butler-csv: an example butler plugin storing dicts of columns as typed CSV files.

Importing this package imports nothing but butler itself: the serializer module (and the
standard library's ``csv``) is loaded the first time a CSV dataset is read or written.
"""

from __future__ import annotations

__all__: list[str] = []
