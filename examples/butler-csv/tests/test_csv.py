"""Format-specific tests of butler-csv: the bytes on disk, foreign files, options, errors."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest

import butler
from butler import Butler, FormatError


@pytest.fixture
def repo(tmp_path: Path) -> Butler:
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("table", dict, "csv", dimensions={"n": int})
    return b


def test_file_is_plain_csv_with_typed_header(repo: Butler) -> None:
    loc = repo.put({"visit": [1, 2], "filter": ["g", "r"], "ok": [True, False]}, "table", n=1)
    path = repo.storage.path(loc.key)  # type: ignore[attr-defined]
    assert path.endswith("table/1.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows == [["visit:int", "filter:str", "ok:bool"], ["1", "g", "True"], ["2", "r", "False"]]


def test_foreign_csv_types_are_inferred(tmp_path: Path) -> None:
    path = tmp_path / "foreign.csv"
    path.write_text("id,flux,label\n1,2.5,a\n2,3,b\n", encoding="utf-8")
    assert butler.read_file(str(path)) == {"id": [1, 2], "flux": [2.5, 3.0], "label": ["a", "b"]}


def test_columns_parameter(repo: Butler) -> None:
    repo.put({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]}, "table", n=1)
    assert repo.get("table", n=1, parameters={"columns": ["c", "a"]}) == {
        "a": [1, 2],
        "c": [0.5, 1.5],
    }
    with pytest.raises(FormatError, match=r"no columns \['z'\]; the file has \['a', 'b', 'c'\]"):
        repo.get("table", n=1, parameters={"columns": ["z"]})


def test_delimiter_serializer_arg(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type(
        "tsv", dict, "csv", dimensions={"n": int}, serializer_args={"delimiter": "\t"}
    )
    loc = b.put({"a": [1], "b": ["x,y"]}, "tsv", n=1)
    assert b.storage.read_bytes(loc.key) == b"a:int\tb:str\n1\tx,y\n"
    assert b.get("tsv", n=1) == {"a": [1], "b": ["x,y"]}


def test_write_errors_name_dataset_and_problem(repo: Butler) -> None:
    with pytest.raises(FormatError, match=r"dataset 'table' \{'n': 1\}.*different lengths"):
        repo.put({"a": [1, 2], "b": [1]}, "table", n=1)
    with pytest.raises(FormatError, match=r"column 'a' holds \['NoneType'\]"):
        repo.put({"a": [None]}, "table", n=1)
    assert not repo.exists("table", n=1)


def test_cut_inside_a_line_is_detected(repo: Butler) -> None:
    loc = repo.put({"a": [10, 20, 30], "b": ["xx", "yy", "zz"]}, "table", n=1)
    data = repo.storage.read_bytes(loc.key)
    cut = data.index(b"20") + 2  # inside the third line, before its second field
    repo.storage.write_bytes(loc.key, data[:cut], metadata=repo.storage.metadata(loc.key))
    with pytest.raises(FormatError, match="line 3 has 1 fields, the header 2"):
        repo.get("table", n=1)


def test_bad_typed_value(repo: Butler) -> None:
    loc = repo.put({"a": [1]}, "table", n=1)
    repo.storage.write_bytes(loc.key, b"a:int\nx\n", metadata=repo.storage.metadata(loc.key))
    with pytest.raises(FormatError, match="column 'a' is typed 'int': bad value"):
        repo.get("table", n=1)


def test_discovery_does_not_import_the_serializer() -> None:
    import subprocess

    code = (
        "import sys, butler; butler.default_registry(); "
        "print('butler_csv._csv' in sys.modules, 'butler_csv._plugin' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_cli_converts_csv_to_json(tmp_path: Path) -> None:
    import json

    from click.testing import CliRunner

    from butler.cli import main

    source = tmp_path / "t.csv"
    source.write_text("a:int,b:str\n1,x\n2,y\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["convert", str(source), str(tmp_path / "t.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "t.json").read_text()) == {"a": [1, 2], "b": ["x", "y"]}


def test_a_column_is_a_component_read_by_butler_csv(tmp_path: Path) -> None:
    from butler import ComponentError, component_catalog

    reader = component_catalog().reader(dict, "posix", "csv", "seeing")
    assert reader is not None and reader.distribution == "butler-csv"
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("summary", dict, "csv", dimensions={"night": int})
    b.put({"visit": [1, 2], "seeing": [0.7, 0.9]}, "summary", night=1)
    assert b.get("summary.seeing", night=1) == [0.7, 0.9]
    with pytest.raises(ComponentError, match=r"no component 'seing'; .* \['visit', 'seeing'\]"):
        b.get("summary.seing", night=1)
