"""Reading one column of a CSV dataset: ``get("summary.seeing", ...)``.

butler-core declares a dict's components (its keys); this module is butler-csv's
`~butler.ComponentReader` for them: the column is read with the ``columns`` parameter, so
only that column's values are parsed (CSV has no index: the rows are still scanned).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from butler import ButlerLocation, ComponentError, FormatError

from ._csv import read

__all__ = ["read_column"]


def read_column(location: ButlerLocation, component: str, *, delimiter: str = ",") -> Any:
    """The values of column ``component``, typed as the whole read types them."""
    one = replace(location, parameters={**location.parameters, "columns": [component]})
    try:
        return read(one, delimiter=delimiter)[component]
    except FormatError as exc:
        if "no columns" not in str(exc):
            raise
        names = str(exc).rpartition("the file has ")[2]
        raise ComponentError(
            f"{location.describe()}: 'builtins.dict' has no component {component!r}; its "
            f"components are {names}"
        ) from None
