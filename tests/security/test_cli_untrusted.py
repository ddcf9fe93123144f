"""The command line with hostile or mistyped input (issue 12, holes 10, 16 and 20).

* ``convert``/``get -o`` never rewrite their own input and never replace a file without
  ``--overwrite`` (``butler.write_file`` likewise without ``overwrite=True``);
* ``--id`` values are typed by the dataset type's declared dimensions, never guessed:
  ``band=true`` is the string ``'true'``;
* every mistake gives one error line naming the flag or argument, a non-zero exit code and
  no traceback.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import butler
from butler import Butler, DatasetExistsError
from butler._cli import main

np = pytest.importorskip("numpy")

Cli = Callable[..., Result]


@pytest.fixture
def cli() -> Cli:
    try:  # click < 8.2 mixes stderr into output unless told not to
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()

    def run(*args: Any) -> Result:
        return runner.invoke(main, [str(a) for a in args])

    return run


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output + result.stderr
    return result.stdout


def one_line_error(result: Result, *needles: str) -> str:
    """Exit 1, one ``butler: error:`` line containing every needle, no traceback."""
    assert result.exit_code == 1, result.output + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("butler: error: "), result.stderr
    assert "Traceback" not in result.stderr and "--debug shows" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- hole 10: convert / get -o onto existing files ---------------------------------------


@pytest.fixture
def fits_file(tmp_path: Path) -> Path:
    """A FITS image with a user header card butler's ndarray reader does not keep."""
    fits = pytest.importorskip("astropy.io.fits")
    path = tmp_path / "image.fits"
    hdu = fits.PrimaryHDU(np.arange(12.0).reshape(3, 4))
    hdu.header["OBSERVER"] = ("Leavitt", "a card only the user's file has")
    hdu.writeto(path)
    return path


def _unchanged(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    assert b"OBSERVER= 'Leavitt '" in before


def test_convert_onto_itself_is_refused_even_with_overwrite(
    cli: Cli, fits_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = fits_file.read_bytes()
    link = tmp_path / "link.fits"
    link.symlink_to(fits_file)
    hard = tmp_path / "hard.fits"
    os.link(fits_file, hard)
    monkeypatch.chdir(tmp_path)
    same = [
        (fits_file, fits_file),
        ("./image.fits", "image.fits"),
        ("image.fits", f"{tmp_path}/sub/../image.fits"),
        (f"file://{fits_file}", "image.fits"),
        (link, fits_file),
        (fits_file, link),
        (hard, fits_file),
    ]
    for src, dst in same:
        for extra in ([], ["--overwrite"]):
            result = cli("convert", src, dst, *extra)
            one_line_error(result, "DatasetExistsError: DST", "is the file being read")
            assert "even with --overwrite" in result.stderr
            _unchanged(fits_file, before)
    assert link.is_symlink()


def test_convert_onto_an_existing_file_needs_overwrite(
    cli: Cli, fits_file: Path, tmp_path: Path
) -> None:
    dst = tmp_path / "other.fits"
    dst.write_bytes(b"precious")
    one_line_error(
        cli("convert", fits_file, dst), f"DST '{dst}' already exists", "pass --overwrite"
    )
    assert dst.read_bytes() == b"precious"
    ok(cli("convert", fits_file, dst, "--overwrite"))
    assert dst.read_bytes().startswith(b"SIMPLE  =")
    from astropy.io import fits

    np.testing.assert_array_equal(fits.getdata(dst), np.arange(12.0).reshape(3, 4))


def test_get_output_onto_an_existing_file_needs_overwrite(cli: Cli, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    b = Butler.create(str(root))
    b.register_dataset_type("img", "numpy.ndarray", "npy", dimensions={"visit": int})
    b.put(np.arange(3.0), "img", visit=1)
    out = tmp_path / "out.npy"
    out.write_bytes(b"precious")
    one_line_error(
        cli("get", root, "img", "--id", "visit=1", "-o", out),
        "DatasetExistsError: -o/--output",
        "already exists; pass --overwrite",
    )
    assert out.read_bytes() == b"precious"
    ok(cli("get", root, "img", "--id", "visit=1", "-o", out, "--overwrite"))
    np.testing.assert_array_equal(np.load(out), np.arange(3.0))
    # The dataset's own file is never the output, whatever the spelling.
    dataset = root / "img" / "1.npy"
    before = dataset.read_bytes()
    one_line_error(
        cli("get", root, "img", "--id", "visit=1", "-o", dataset, "--overwrite"),
        "is the file being read",
    )
    assert dataset.read_bytes() == before


def test_write_file_does_not_replace_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"keep": 1}')
    with pytest.raises(DatasetExistsError) as info:
        butler.write_file({"new": 2}, str(path))
    assert str(path) in str(info.value) and "overwrite=True" in str(info.value)
    assert json.loads(path.read_text()) == {"keep": 1}
    butler.write_file({"new": 2}, str(path), overwrite=True)
    assert butler.read_file(str(path)) == {"new": 2}


# -- hole 20: --id typed by the declared dimensions --------------------------------------


@pytest.fixture
def repo(butler_repo: Callable[..., Butler]) -> Path:
    b = butler_repo("posix")
    b.register_dataset_type(
        "cfg", dict, "json", dimensions={"visit": int, "band": str},
        template="cfg/{visit:03d}/{band}.json",
    )  # fmt: skip
    return Path(b.storage.root)


@pytest.mark.parametrize("value", ["true", "false", "null", "None", "TRUE", "1e3", "0x10"])
def test_id_strings_that_look_like_other_types(
    cli: Cli, repo: Path, tmp_path: Path, value: str
) -> None:
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"band": value}))
    ids = ["--id", "visit=007", "--id", f"band={value}"]
    ok(cli("put", repo, "cfg", source, *ids))
    assert (repo / "cfg" / "007" / f"{value}.json").exists()
    listed = json.loads(ok(cli("--json", "ls", repo, "cfg", "--id", f"band={value}")))
    assert listed == [{"visit": 7, "band": value}]
    out = tmp_path / "out.json"
    ok(cli("get", repo, "cfg", *ids, "-o", out))
    assert json.loads(out.read_text()) == {"band": value}
    ok(cli("rm", repo, "cfg", *ids))
    assert list(Butler(str(repo)).datasets("cfg")) == []


def test_id_int_dimension_needs_an_integer(cli: Cli, repo: Path, tmp_path: Path) -> None:
    source = tmp_path / "in.json"
    source.write_text("{}")
    for value in ("abc", "true", "1.5", ""):
        for args in (
            ("put", repo, "cfg", source, "--id", f"visit={value}", "--id", "band=g"),
            ("get", repo, "cfg", "--id", f"visit={value}", "--id", "band=g", "-o", "x.json"),
            ("rm", repo, "cfg", "--id", f"visit={value}", "--id", "band=g"),
            ("ls", repo, "cfg", "--id", f"visit={value}"),
        ):
            one_line_error(
                cli(*args), "InvalidDataIdError: --id visit=", "'visit'", "is int", "integer"
            )


# -- hole 16: every command, mistyped or hostile input ------------------------------------


@pytest.fixture
def setup(tmp_path: Path, repo: Path) -> dict[str, Path]:
    (tmp_path / "adir").mkdir()
    good = tmp_path / "good.json"
    good.write_text("{}")
    return {"tmp": tmp_path, "repo": repo, "good": good}


ONE_LINE = [
    # unknown dataset type
    (["ls", "{repo}", "nope"], ["DatasetTypeError", "'nope'", "'butler define'"]),
    (["put", "{repo}", "nope", "{good}", "--id", "visit=1"], ["DatasetTypeError", "'nope'"]),
    (["get", "{repo}", "nope", "--id", "visit=1", "-o", "{tmp}/o.json"], ["'nope'"]),
    (["rm", "{repo}", "nope", "--id", "visit=1"], ["DatasetTypeError", "'nope'"]),
    # data IDs that do not fit the dimensions
    (["ls", "{repo}", "cfg", "--id", "ccd=1"], ["--id ccd=1", "no dimension 'ccd'"]),
    (["rm", "{repo}", "cfg", "--id", "visit=1"], ["--id", "needs --id band=..."]),
    (["rm", "{repo}", "cfg", "--id", "visit=1", "--id", "band=../x"], ["--id band=../x"]),
    (["put", "{repo}", "cfg", "{good}", "--id", "visit=1", "--id", "band=a/b"], ["--id band="]),
    # files: missing, a directory, unknown formats and types
    (["put", "{repo}", "cfg", "{tmp}/none.json", "--id", "visit=1", "--id", "band=g"],
     ["DatasetNotFoundError: FILE", "does not exist"]),
    (["put", "{repo}", "cfg", "{tmp}/adir", "--id", "visit=1", "--id", "band=g"],
     ["StorageError: FILE", "is a directory"]),
    (["get", "{repo}", "cfg", "--id", "visit=1", "--id", "band=g", "-o", "{tmp}/adir"],
     ["StorageError: -o/--output", "is a directory"]),
    (["convert", "{tmp}/none.json", "{tmp}/x.json"], ["SRC", "does not exist"]),
    (["convert", "{tmp}/adir", "{tmp}/x.json"], ["SRC", "is a directory"]),
    (["convert", "{good}", "{tmp}/adir"], ["DST", "is a directory"]),
    (["convert", "{good}", "{tmp}/x.json", "--type", "evil.Module"],
     ["--type evil.Module", "builtins.dict"]),
    (["convert", "{good}", "{tmp}/x.json", "--from", "jsn"], ["--from jsn", "Unknown format"]),
    (["convert", "{good}", "{tmp}/x.out", "--to", "jsn"], ["--to jsn"]),
    (["put", "{repo}", "cfg", "{good}", "--id", "visit=1", "--id", "band=g", "--format", "x"],
     ["--format x"]),
    (["define", "{repo}", "t", "--type", "dict", "--format", "jsn"], ["--format jsn"]),
    (["define", "{repo}", "t", "--type", "not a type", "--format", "json"], ["--type not a"]),
    (["ls", "{repo}", "-O", "durabel=1"], ["-O/--option", "durabel", "durable"]),
    (["convert", "{good}", "{tmp}/x.json", "-O", "durabel=1"], ["-O/--option", "durabel"]),
]  # fmt: skip


@pytest.mark.parametrize(("args", "needles"), ONE_LINE)
def test_mistakes_give_one_line_naming_the_flag(
    cli: Cli, setup: dict[str, Path], args: list[str], needles: list[str]
) -> None:
    one_line_error(cli(*[a.format(**setup) for a in args]), *needles)
    assert not (setup["tmp"] / "x.json").exists()


USAGE = [
    (["ls", "{repo}", "cfg", "--id", "visit"], "--id", "'visit' is not KEY=VALUE"),
    (["ls", "{repo}", "cfg", "--id", "=1"], "--id", "'=1' is not KEY=VALUE"),
    (["ls", "{repo}", "cfg", "--id", "band=a", "--id", "band=b"], "--id", "given twice"),
    (["define", "{repo}", "t", "--type", "dict", "--format", "json", "-d", "v=float"],
     "--dimension", "'v=float'"),
    (["ls", "{repo}", "-O", "novalue"], "--option", "'novalue'"),
    (["purge", "{repo}", "--older-than", "soon"], "--older-than", "'soon'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "flag", "needle"), USAGE)
def test_syntax_errors_are_usage_errors_naming_the_flag(
    cli: Cli, setup: dict[str, Path], args: list[str], flag: str, needle: str
) -> None:
    result = cli(*[a.format(**setup) for a in args])
    assert result.exit_code == 2, result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and flag in errors[0] and needle in errors[0], result.stderr
    assert "Traceback" not in result.stderr
