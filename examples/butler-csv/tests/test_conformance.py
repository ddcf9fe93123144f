"""butler-csv passes butler's conformance kit on every storage available here."""

from __future__ import annotations

from typing import Any

from butler.testing import ComponentConformance, SerializerConformance


class TestCsv(SerializerConformance):
    format = "csv"
    python_type = dict
    # Modules plugin discovery must not import (the kit adds the modules named by our
    # "module:function" strings by itself).
    heavy_modules = ("butler_csv._csv",)
    # CSV has no footer: a file cut exactly at a line end is a valid, shorter table, so
    # truncation cannot always be detected ('butler verify' catches it from the size
    # recorded at write time). Cuts inside a line are detected: see test_csv.py.
    corruptions = ("garbage", "empty")

    def make_objects(self) -> list[Any]:
        return [
            {"visit": [1, 2, 3], "seeing": [0.7, 1.25, 1e-9], "ok": [True, False, True]},
            {"name": ["a,b", 'say "hi"', "line\nbreak", "", "ünï ✓"], "n": [0, -1, 2**40, 3, 4]},
            {},
            {"x": []},
        ]

    def make_invalid_objects(self) -> list[Any]:
        return [
            {"a": [1, 2], "b": [1]},  # ragged
            {"a": [1, "x"]},  # mixed types
            {"a": [None]},  # unsupported value
            {"a": 5},  # not a column
        ]


class TestCsvColumns(ComponentConformance):
    """Each column is a component; read directly, it equals the column of the whole read."""

    format = "csv"
    python_type = dict
    heavy_modules = ("butler_csv._csv", "butler_csv._columns")
    # Disassembled: each column its own JSON dataset (a lone list is no CSV table).
    component_formats = {"visit": "json", "seeing": "json", "ok": "json"}

    def make_objects(self) -> list[Any]:
        return [{"visit": [1, 2, 3], "seeing": [0.7, 1.25, 1e-9], "ok": [True, False, True]}]
