"""Promises of docs/cli.rst and docs/components.rst that no other test tried to break:
each test names the sentence it checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

Cli = Callable[..., Result]


def one_error(result: Result) -> str:
    """The one ``butler: error:`` line of a failed command (status 1, no traceback)."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("butler: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("flag", ["--run", "--collections"])
def test_run_names_hold_no_comma(cli: Cli, repo: Path, files: dict[str, Path], flag: str) -> None:
    """cli.rst, conventions: names are letters, digits and ``_.-+=``, never a comma. The doc
    said a name holding a comma could be given to ``--run``: it never could."""
    if flag == "--run":
        err = one_error(cli("put", repo, "img", files["npy"], "--id", "visit=1", "--run", "a,b"))
        assert "InvalidDataIdError: --run a,b: invalid run name 'a,b'" in err
    else:  # a comma separates the names: 'a' and 'b', both unknown, are warned about
        result = cli("ls", repo, "img", "--collections", "a,b")
        assert result.exit_code == 0 and result.stdout == "(no datasets)\n"
        assert "--collections a:" in result.stderr and "--collections b:" in result.stderr
    assert not (repo / "@runs").exists()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("durabel=1", "-O/--option: unknown option(s) ['durabel'] for the 'posix' storage"),
        ("xattrs=maybe", "-O/--option: posix option xattrs must be"),
    ],
)
def test_init_names_the_storage_option(
    cli: Cli, tmp_path: Path, option: str, expected: str
) -> None:
    """cli.rst, conventions: errors about an option name it (``-O/--option: unknown
    option(s) ['durabel'] ...``). ``init`` reported them without the flag."""
    err = one_error(cli("init", tmp_path / "repo", "-O", option))
    assert err.startswith("butler: error: StorageError: " + expected), err
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("seconds", ["-5", "-inf", "nan", "NaN"])
def test_purge_older_than_is_a_number_of_seconds(cli: Cli, repo: Path, seconds: str) -> None:
    """cli.rst, purge: debris is removed once older than ``--older-than`` seconds. 'nan'
    silently removed nothing (no age is older than NaN) and negative ages were taken;
    both are usage errors now, like a negative ``--limit``."""
    debris = repo / "..butler-tmp.0123456789ab.x.json"
    debris.write_bytes(b"{")
    result = cli("purge", repo, "--older-than", seconds)
    assert result.exit_code == 2, (result.output, result.stderr)
    assert "--older-than" in result.stderr and "Traceback" not in result.stderr
    assert debris.exists()
    result = cli("--json", "purge", repo, "--older-than", "0")
    assert result.exit_code == 0, result.stderr
    assert not debris.exists()


def test_a_file_is_named_as_a_file(cli: Cli, repo: Path, tmp_path: Path) -> None:
    """cli.rst, conventions: errors name what was asked. A file that is no dataset was
    described as one, with a Python dict for its data ID: ``dataset 'bad.json' {} at
    '/tmp/bad.json'``."""
    bad = tmp_path / "bad.json"
    bad.write_text("garbage")
    for args in (["put", repo, "cfg", bad, "--id", "visit=1", "--id", "band=r"],
                 ["convert", bad, tmp_path / "out.yaml"]):  # fmt: skip
        err = one_error(cli(*args))
        assert f"FormatError: cannot read file {str(bad)!r} as 'json'" in err, err
        assert "{}" not in err and "dataset 'bad.json'" not in err


def test_a_missing_hdu_names_hdu(cli: Cli, repo: Path, tmp_path: Path) -> None:
    """cli.rst, put/convert: ``--hdu`` (an index or an EXTNAME) reads one HDU; asking for
    one the file lacks is reported against ``--hdu``, listing the HDUs it has."""
    np = pytest.importorskip("numpy")
    fits = pytest.importorskip("astropy.io.fits")
    pytest.importorskip("butler_fits")
    multi = tmp_path / "multi.fits"
    sci = fits.ImageHDU(np.ones((2, 2)), name="SCI")
    fits.HDUList([fits.PrimaryHDU(np.zeros((2, 2))), sci]).writeto(multi)
    for hdu in ("7", "NOPE"):
        shown = hdu if hdu.isdigit() else repr(hdu)
        for args in (["put", repo, "img", multi, "--id", "visit=1"],
                     ["convert", multi, tmp_path / "x.npy"]):  # fmt: skip
            err = one_error(cli(*args, "--hdu", hdu))
            assert err == (
                f"butler: error: FormatError: --hdu {hdu}: file {str(multi)!r}: has no HDU "
                f"{shown}; its HDUs are ['0:PRIMARY', '1:SCI']"
            )


def test_an_output_without_a_format_names_its_flag(
    cli: Cli, repo: Path, files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cli.rst, get/convert: the output's format is implied by its name (or ``--format`` /
    ``--to``). A name implying none was reported as 'cannot identify the format of
    'y.xyz'', naming neither the argument nor the flag, and only after the whole dataset
    or SRC had been read."""
    import butler

    assert cli("put", repo, "img", files["npy"], "--id", "visit=1").exit_code == 0

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("read before the output was checked")

    with monkeypatch.context() as patch:
        patch.setattr(butler.Butler, "get", never)
        patch.setattr(butler._cli, "read_standalone", never)
        err = one_error(cli("get", repo, "img", "--id", "visit=1", "-o", tmp_path / "y.xyz"))
        assert f"FormatError: -o/--output {str(tmp_path / 'y.xyz')!r}: cannot identify" in err
        assert err.endswith("; or give --format FORMAT")
        err = one_error(cli("convert", files["npy"], tmp_path / "y.xyz"))
        assert f"FormatError: DST {str(tmp_path / 'y.xyz')!r}: cannot identify" in err
        assert err.endswith("; or give --to FORMAT")
    assert not (tmp_path / "y.xyz").exists()
    result = cli("get", repo, "img", "--id", "visit=1", "-o", tmp_path / "y.xyz", "--format", "npy")
    assert result.exit_code == 0, result.stderr
    result = cli("convert", files["npy"], tmp_path / "z.xyz", "--to", "npy")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "{repo}", "cfg.gain"],
        ["rm", "{repo}", "cfg.gain", "--id", "visit=1", "--id", "band=r"],
        ["put", "{repo}", "cfg.gain", "{json}", "--id", "visit=1", "--id", "band=r"],
        ["history", "{repo}", "cfg.gain", "--id", "visit=1", "--id", "band=r"],
    ],
)
def test_components_are_read_by_get_only(
    cli: Cli, repo: Path, files: dict[str, Path], args: list[str]
) -> None:
    """components.rst: ``put``, ``remove``, ``datasets`` take dataset types, not components;
    the CLI's ``butler get REPO calexp.wcs`` reads one. The refusal named Python methods
    ('only get, get_many and exists read components') on the command line."""
    args = [a.format(repo=repo, json=files["json"]) for a in args]
    err = one_error(cli(*args))
    assert "DatasetTypeError: 'cfg.gain' names component 'gain' of dataset type 'cfg'" in err
    assert "only 'butler get' reads components" in err
    assert "get_many" not in err and "exists" not in err


@pytest.mark.parametrize("template", ["@runs/{a}.json", "@parts/x/{a}.json", "@runs/x.json"])
def test_a_template_in_butlers_areas_is_refused(cli: Cli, repo: Path, template: str) -> None:
    """components.rst: the ``@parts/`` area, like the runs area ``@runs/``, can never be a
    data ID's key. ``define`` accepted a template lying there, so every put of the dataset
    type was refused afterwards; the definition is refused now, by the library too."""
    from butler import Butler, DatasetTypeError

    err = one_error(cli("define", repo, "t", "--type", "dict", "--format", "json",
                        "--template", template))  # fmt: skip
    area = template.split("/")[0] + "/"
    assert f"template {template!r} lies in {area!r}, which is reserved for butler" in err
    with pytest.raises(DatasetTypeError, match="reserved for butler itself"):
        Butler(str(repo)).register_dataset_type("t", dict, "json", template)
    assert "t" not in Butler(str(repo)).policy.dataset_types
    ok = cli("define", repo, "t", "--type", "dict", "--format", "json", "--template",
             "@runsx/{a}.json")  # fmt: skip
    assert ok.exit_code == 0, ok.stderr


@pytest.mark.parametrize("second", ["a=int", "a", "a=str"])
def test_define_refuses_a_repeated_dimension(cli: Cli, repo: Path, second: str) -> None:
    """cli.rst, define: ``-d DIM[=int|str]`` declares the data ID keys. ``-d a -d a=int``
    silently defined ``a`` as the last one said (int); a repeated key is a usage error, as
    for ``--id``."""
    result = cli("define", repo, "t", "--type", "dict", "--format", "json",
                 "-d", "a", "-d", second)  # fmt: skip
    assert result.exit_code == 2, (result.output, result.stderr)
    assert "Invalid value for --dimension: 'a' is given twice" in result.stderr
    from butler import Butler

    assert "t" not in Butler(str(repo)).policy.dataset_types


DOCS = Path(__file__).resolve().parents[2] / "docs"


def console_examples(doc: str, sections: list[str]) -> list[tuple[list[str], list[str]]]:
    """``(argv, expected output lines)`` of each ``$ butler ...`` line in the console
    blocks of ``sections`` (their titles) of ``docs/<doc>``, in order."""
    import re
    import shlex

    lines = (DOCS / doc).read_text(encoding="utf-8").splitlines()
    examples: list[tuple[list[str], list[str]]] = []
    section = None
    for i, line in enumerate(lines):
        underline = lines[i + 1] if i + 1 < len(lines) else ""
        if line and re.fullmatch(r"[-~=]+", underline) and len(underline) == len(line):
            section = line
        if section in sections and line.startswith("   $ butler "):
            expected = []
            for out in lines[i + 1 :]:
                if not out.startswith("   ") or out.startswith("   $ "):
                    break
                expected.append(out[3:])
            examples.append((shlex.split(line[len("   $ butler ") :]), expected))
    return examples


def test_cli_rst_examples_run_as_written(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cli.rst: the init, define, put, get and rm examples, run literally one after the
    other in one directory, print what the doc shows. The put and rm examples with
    ``--run u/me/test`` used a ``calexp`` of another repository (``--id visit=3`` alone)."""
    np = pytest.importorskip("numpy")
    fits = pytest.importorskip("astropy.io.fits")
    pytest.importorskip("butler_fits")
    pytest.importorskip("butler_hdf5")
    monkeypatch.chdir(tmp_path)
    np.save("image.npy", np.zeros((3, 4), "f4"))
    Path("exposure-without-extension").write_bytes(Path("image.npy").read_bytes())
    Path("isr.json").write_text('{"gain": 1.5}')
    Path("mine.json").write_text('{"gain": 1.6}')
    primary = fits.PrimaryHDU(np.ones((2, 2), "f4"))
    primary.header["OBJECT"] = "M31"
    primary.header["EXPTIME"] = 30.0
    primary.writeto("image.fits")
    sci = fits.ImageHDU(np.ones((2, 2), "f4"), name="SCI")
    fits.HDUList(
        [
            primary.copy(),
            fits.BinTableHDU.from_columns([fits.Column("a", "K", array=np.arange(3))], name="CAT"),
            sci,
        ]
    ).writeto("multi.fits")
    examples = console_examples("cli.rst", ["init", "define", "put", "get", "rm"])
    assert len(examples) > 15
    ran = 0
    for argv, expected in examples:
        if any("://" in a for a in argv) or "--collections" in argv:
            continue  # remote storages; runs that only the runs section creates
        result = cli(*argv)
        shown = (result.stderr + result.stdout).replace(str(tmp_path), "/tmp/clidoc")
        assert result.exit_code == 0, (argv, shown)
        if expected:
            assert shown.splitlines() == expected, argv
        ran += 1
    assert ran >= 14


def test_a_lost_index_is_not_an_empty_answer(cli: Cli, repo: Path, files: dict[str, Path]) -> None:
    """cli.rst, ls: answers come from the dataset index, or from listing the storage when
    it has none (slower, same answers); reindex: run it 'after an index was lost'. Deleting
    ``.butler/index.sqlite3`` made ``ls`` answer nothing and ``info`` count 0, silently:
    the index was created again empty and trusted. Now such an index is recorded as
    incomplete: queries list the storage (also after new puts), ``info`` says so, and
    ``reindex`` makes it complete again."""
    assert cli("put", repo, "img", files["npy"], "--id", "visit=1").exit_code == 0
    for path in (repo / ".butler").glob("index.sqlite3*"):
        path.unlink()
    result = cli("ls", repo, "img", "--count")
    assert result.exit_code == 0 and result.stdout == "1\n", result.stdout
    assert cli("put", repo, "img", files["npy"], "--id", "visit=2").exit_code == 0
    assert cli("ls", repo, "img", "--count").stdout == "2\n"  # not just the new row
    info = cli("info", repo)
    assert "incomplete" in info.stdout and "butler reindex" in info.stdout, info.stdout
    assert cli("verify", repo).exit_code == 1  # visit=1: stored, but not indexed
    assert cli("reindex", repo).exit_code == 0
    assert "incomplete" not in cli("info", repo).stdout
    assert cli("ls", repo, "img", "--count").stdout == "2\n"
    assert cli("verify", repo).exit_code == 0


def test_info_marks_dynamic_components(cli: Cli, repo: Path) -> None:
    """components.rst, CLI: in ``butler info``, ``*`` alone stands for dynamic components,
    ``**`` for dynamic components read directly (an HDUList's HDUs). The doc explained
    only ``*``; ``**`` was shown unexplained."""
    pytest.importorskip("butler_fits")
    from butler import Butler

    Butler(str(repo)).register_dataset_type(
        "raw", "astropy.io.fits.HDUList", "fits", dimensions={"visit": int}
    )
    result = cli("info", repo)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    for name, shown in (("cfg", "*"), ("raw", "**")):
        at = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        assert lines[at + 1] == f"    components (* read directly): {shown}"
