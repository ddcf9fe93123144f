"""Issue 13 item 19: a failed ``butler convert`` / `butler.write_file` to a ``sqlite://`` URI
leaves no SQLite file (nor directory) behind; a successful one makes a queryable database.
Item 4: the ``sql-table`` format declares its parameters and serializer arguments.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")
pytest.importorskip("astropy")

import numpy as np
from astropy.table import Table
from click.testing import CliRunner

import butler
from butler import Butler, FormatError, ParameterError
from butler._cli import main


def _convert(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["convert", *args])
    return result.exit_code, result.output


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_convert_refused_by_sql_table_leaves_no_database(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.arange(5))
    for db in (tmp_path / "x.db", tmp_path / "sub" / "x.db"):
        code, output = _convert(
            str(tmp_path / "plain.npy"), f"sqlite:///{db}/arr", "--to", "sql-table"
        )
        assert code == 1
        assert "sql-table stores 1-d structured arrays" in output
        assert _leftovers(tmp_path) == ["plain.npy"]  # neither x.db (-wal, -shm) nor sub/


def test_convert_of_a_bad_input_leaves_no_database(tmp_path: Path) -> None:
    (tmp_path / "bad.fits").write_bytes(b"not a FITS file" * 10)
    dst = f"sqlite:///{tmp_path}/x.db/cat"
    code, output = _convert(str(tmp_path / "bad.fits"), dst, "--to", "sql-table")
    assert code == 1 and "is not a FITS file" in output
    assert _leftovers(tmp_path) == ["bad.fits"]
    # Without --to, the table's name implies no format: refused first, naming --to.
    code, output = _convert(str(tmp_path / "bad.fits"), dst)
    assert code == 1 and "or give --to FORMAT" in output
    assert _leftovers(tmp_path) == ["bad.fits"]


def test_convert_a_fits_table_into_a_new_sqlite_database(tmp_path: Path) -> None:
    t = Table({"id": [1, 2, 3], "flux": [1.5, 2.5, 3.5]})
    t["flux"].unit = "Jy"
    t.write(tmp_path / "cat.fits")
    db = tmp_path / "x.db"
    code, output = _convert(str(tmp_path / "cat.fits"), f"sqlite:///{db}/cat", "--to", "sql-table",
                            "--type", "astropy.table.Table")  # fmt: skip
    assert code == 0, output
    back = butler.read_file(f"sqlite:///{db}/cat", format="sql-table")
    assert back["id"].tolist() == [1, 2, 3] and back["flux"].unit == "Jy"
    with sqlite3.connect(db) as conn:  # the stable view: SQL users query "cat"
        assert conn.execute("SELECT id, flux FROM cat ORDER BY id").fetchall() == [
            (1, 1.5),
            (2, 2.5),
            (3, 3.5),
        ]


def test_write_file_failures_leave_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for db in (tmp_path / "w.db", tmp_path / "deep" / "er" / "w.db"):
        with pytest.raises(FormatError, match="sql-table stores 1-d structured arrays"):
            butler.write_file(np.arange(3), f"sqlite:///{db}/k", format="sql-table")
        assert _leftovers(tmp_path) == []
    # a failure after the database and its schema were created: removed again
    from butler_db._storage import DatabaseStorage

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(DatabaseStorage, "commit_dataset", boom)
    with pytest.raises(FormatError, match="disk on fire"):
        butler.write_file(Table({"a": [1]}), f"sqlite:///{db}/k", format="sql-table")
    assert _leftovers(tmp_path) == []
    with pytest.raises(FormatError, match="disk on fire"):  # a blob format too
        butler.write_file({"a": 1}, f"sqlite:///{db}/k.json", format="json")
    assert _leftovers(tmp_path) == []
    monkeypatch.undo()
    # looking never creates a file either
    location = butler.file_location(f"sqlite:///{db}/k", writing=True, format="sql-table")
    assert not location.storage.exists("k")
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_an_existing_database(tmp_path: Path) -> None:
    root = f"sqlite:///{tmp_path}/repo.db"
    with Butler.create(root) as b:
        b.register_dataset_type("cat", "astropy.table.Table", "sql-table", dimensions={"v": int})
        b.put(Table({"a": [1]}), "cat", v=1)
        with pytest.raises(FormatError, match="sql-table stores scalar columns only"):
            b.put(Table({"a": [[1, 2]]}), "cat", v=2)
    with pytest.raises(FormatError):
        butler.write_file(np.arange(3), f"{root}/other", format="sql-table")
    with Butler(root) as b:
        assert b.get("cat", v=1)["a"].tolist() == [1]


# -- item 4: declared parameters ---------------------------------------------------------


def test_parameters_and_serializer_args_are_declared(tmp_path: Path) -> None:
    b = Butler.create(f"sqlite:///{tmp_path}/repo.db")
    b.register_dataset_type("cat", "astropy.table.Table", "sql-table", dimensions={"v": int})
    t = Table({"id": [1, 2], "x": [1.0, 2.0]})
    with pytest.raises(ParameterError, match=r"unknown parameter.*\['mdoe'\]; accepted: "
                       r"columns, key, mode, round_times, where"):  # fmt: skip
        b.put(t, "cat", v=1, parameters={"mdoe": "append"})
    assert not b.exists("cat", v=1)
    b.put(t, "cat", v=1)
    with pytest.raises(ParameterError, match=r"\['colums'\]"):
        b.get("cat", v=1, parameters={"colums": ["id"]})
    with pytest.raises(ParameterError, match=r"serializer argument.*\['chunk'\]; accepted: none"):
        b.register_dataset_type("cat2", "astropy.table.Table", "sql-table",
                                serializer_args={"chunk": 5})  # fmt: skip
    # a read parameter on a write (and the reverse) would be ignored: refused
    with pytest.raises(ParameterError, match=r"\['where'\] do not apply when you write"):
        b.put(t, "cat", v=2, parameters={"where": {"id": 1}})
    with pytest.raises(ParameterError, match=r"\['mode'\] do not apply when you read"):
        b.get("cat", v=1, parameters={"mode": "append"})
    with pytest.raises(ParameterError, match=r"'round_times' must be True or False"):
        b.put(t, "cat", v=3, parameters={"round_times": "yes"})
    assert not b.exists("cat", v=2) and not b.exists("cat", v=3)
    got = b.get("cat", v=1, parameters={"columns": ["x"], "where": {"id": 2}})
    assert got["x"].tolist() == [2.0]
