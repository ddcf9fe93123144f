"""Standalone files are read from the shell as the type butler recorded (issue 13, item 11).

A table written with `butler.write_file` records ``astropy.table.table.Table``; its plugin
registers ``astropy.table.Table``. A fresh ``butler convert`` process (astropy not imported)
must still read it as a Table, without ``--type``: installed serializers vouch for the types
of their own package. Each step runs in its own interpreter, and the result is compared
with astropy reading the files directly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("butler_fits")
pytest.importorskip("butler_hdf5")
np = pytest.importorskip("numpy")
from astropy.table import Table  # noqa: E402

WRITE = textwrap.dedent(
    """
    import sys
    import butler
    from astropy.table import Table

    t = Table({"id": [1, 2, 3], "flux": [1.5, 2.5, float("nan")], "name": ["a", "bb", "ccc"]})
    t["flux"].unit = "Jy"
    t["flux"].description = "total flux"
    t.meta["ORIGIN"] = "test"
    for path in sys.argv[1:]:
        butler.write_file(t, path)
    """
)


def run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, timeout=120
    )


def convert(src: Path, dst: Path) -> subprocess.CompletedProcess[str]:
    """``butler convert SRC DST`` in a fresh interpreter that has imported only butler."""
    return run("-m", "butler", "convert", src, dst)


def assert_same_table(got: Table, expected: Table) -> None:
    assert got.colnames == expected.colnames
    for name in expected.colnames:
        assert got[name].unit == expected[name].unit, name
        assert got[name].description == expected[name].description, name
        assert got[name].dtype.kind == expected[name].dtype.kind, name
        np.testing.assert_array_equal(got[name], expected[name])
        assert np.ma.getmaskarray(got[name]).tolist() == np.ma.getmaskarray(expected[name]).tolist()
    assert got.meta.get("ORIGIN") == expected.meta.get("ORIGIN") == "test"


@pytest.fixture
def written(tmp_path: Path) -> dict[str, Path]:
    files = {"h5": tmp_path / "cat.h5", "fits": tmp_path / "cat.fits"}
    proc = run("-c", WRITE, files["h5"], files["fits"])
    assert proc.returncode == 0, proc.stderr
    return files


def original() -> Table:
    """The table WRITE writes (built again here, in this process)."""
    t = Table({"id": [1, 2, 3], "flux": [1.5, 2.5, float("nan")], "name": ["a", "bb", "ccc"]})
    t["flux"].unit = "Jy"
    t["flux"].description = "total flux"
    t.meta["ORIGIN"] = "test"
    return t


@pytest.mark.parametrize(("src", "dst"), [("h5", "fits"), ("fits", "h5"), ("fits", "fits")])
def test_convert_reads_the_recorded_table_without_type(
    written: dict[str, Path], tmp_path: Path, src: str, dst: str
) -> None:
    import butler

    out = tmp_path / f"back.{dst}"
    proc = convert(written[src], out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing dropped: the whole table was read and written
    # Read back as the python type it was written as: the table itself, value by value.
    assert_same_table(butler.read_file(str(out), python_type=Table), original())
    if dst == "fits":
        # And what astropy reads of it is what astropy reads of write_file's own FITS file.
        assert_same_table(Table.read(out), Table.read(written["fits"]))


def test_read_file_in_a_fresh_process_returns_the_recorded_table(
    written: dict[str, Path],
) -> None:
    """The library side: `read_file` with no python_type, astropy not imported beforehand."""
    code = textwrap.dedent(
        """
        import sys
        import butler
        assert "astropy" not in sys.modules
        for path in sys.argv[1:]:
            obj = butler.read_file(path)
            print(type(obj).__module__, type(obj).__name__, len(obj), obj["flux"].unit)
        """
    )
    proc = run("-c", code, written["h5"], written["fits"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["astropy.table.table Table 3 Jy"] * 2


def test_a_recorded_type_no_plugin_vouches_for_is_not_imported(tmp_path: Path) -> None:
    """A file recording a type of a package no serializer registers is read as the
    format's default type: the recorded name never makes butler import that package."""
    code = textwrap.dedent(
        """
        import sys
        import butler
        from butler._files import vouched_type

        reg = butler.default_registry()
        for name, fmt in [
            ("astropy.table.table.Table", "hdf5"),
            ("astropy.table.table.QTable", "fits"),  # a subclass, in the vouched package
            ("numpy.ndarray", "npy"),
        ]:
            assert vouched_type(name, fmt, reg) == name, name
        assert vouched_type("http.server.HTTPServer", "json", reg) is None
        assert vouched_type("pandas.DataFrame", "fits", reg) is None
        assert vouched_type(42, "fits", reg) is None
        assert "http.server" not in sys.modules and "pandas" not in sys.modules
        print("ok")
        """
    )
    proc = run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ok\n"
