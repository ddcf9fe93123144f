"""Entry-point module of butler-csv (``[project.entry-points.butler] csv = ...``).

It only returns declarations. The serializer is named by ``"module:function"`` strings, so
plugin discovery (which runs on the first `butler.default_registry()`) imports nothing else.
"""

from __future__ import annotations

from butler import ComponentReader, FormatDescriptor, Serializer, hookimpl

DISTRIBUTION = "butler-csv"


@hookimpl
def butler_formats() -> list[FormatDescriptor]:
    return [
        FormatDescriptor(
            "csv",
            (".csv",),
            description="Dict of columns as CSV with a typed header (name:int,...)",
            distribution=DISTRIBUTION,
            python_type="builtins.dict",  # what 'butler convert x.csv ...' reads a file as
        )
    ]


@hookimpl
def butler_serializers() -> list[Serializer]:
    # "*": the serializer only uses the location's file objects, so any storage works.
    return [
        Serializer(
            "builtins.dict",
            "*",
            "csv",
            "butler_csv._csv:write",
            "butler_csv._csv:read",
            distribution=DISTRIBUTION,
        )
    ]


@hookimpl
def butler_components() -> list[ComponentReader]:
    # A dict's components are its keys (butler-core declares them): read one column
    # without converting the others ("summary.seeing").
    return [
        ComponentReader(
            "builtins.dict",
            "*",
            "csv",
            "butler_csv._columns:read_column",
            distribution=DISTRIBUTION,
        )
    ]
