"""Promises of docs/runs.rst and docs/reliability.rst (and the CLI sentences they lean on)
that no other test tried to break: each test names the sentence it checks."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from butler import Butler

Cli = Callable[..., Result]


def usage_error(result: Result, hint: str) -> str:
    """A click usage error (status 2) naming ``hint``, without a traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    assert "Traceback" not in result.stderr and hint in result.stderr, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("command", "option", "advice"),
    [
        (["init", "{tmp}/new"], "checksum=true", "--checksum"),
        (["init", "{tmp}/new"], "allow_pickle=true", "--allow-pickle"),
        (["init", "{tmp}/new"], "registry=x", ""),
        (["ls", "{repo}", "img"], "run=A", "--run"),
        (["ls", "{repo}", "img"], "collections=A", "--collections"),
        (["ls", "{repo}", "img"], "mapper=1", ""),
        (["get", "{repo}", "img", "--id", "visit=1", "-o", "{tmp}/o.npy"], "allow_pickle=true", ""),
        (["put", "{repo}", "img", "{npy}", "--id", "visit=2"], "run=A", "--run"),
        (["runs", "{repo}"], "index=none", ""),
        (["convert", "{npy}", "{tmp}/c.npy"], "format=json", "--from"),
    ],
)
def test_option_takes_storage_options_only(
    cli: Cli, repo: Path, files: dict[str, Path], tmp_path: Path,
    command: list[str], option: str, advice: str,
) -> None:  # fmt: skip
    """cli.rst, conventions: ``-O KEY=VALUE`` passes a *storage* option; errors name CLI
    flags, never Python keywords. ``-O`` went to ``Butler(...)`` as keyword arguments:
    ``-O checksum=true`` was "TypeError: Butler.create() got multiple values for keyword
    argument 'checksum'", ``-O registry=x`` an AttributeError, ``-O run=A`` silently read
    run A behind ``--run``, ``-O mapper=1`` silently listed nothing and ``-O
    allow_pickle=true`` turned on unpickling for a reader."""
    np = pytest.importorskip("numpy")
    with Butler(str(repo), run="A") as b:
        b.put(np.zeros(2), "img", visit=1)
    args = [a.format(tmp=tmp_path, repo=repo, npy=files["npy"]) for a in command] + ["-O", option]
    key = option.partition("=")[0]
    err = usage_error(cli(*args), "-O/--option")
    assert f"{key!r} is not a storage option" in err, err
    assert advice in err
    assert "TypeError" not in err and "AttributeError" not in err and "keyword" not in err
    assert not (tmp_path / "new").exists() and not (tmp_path / "o.npy").exists()
    assert not (tmp_path / "c.npy").exists()
    with Butler(str(repo)) as b:
        assert b.runs() == {"A": 1}


def test_runs_rst_rerun_example_runs_as_written() -> None:
    """runs.rst, A reproducible rerun: the ``>>>`` session (run A, run B through ``[B, A]``,
    the chain ``latest``, the lineage and the checksums) prints what the page shows. No
    test ran it."""
    import doctest

    page = Path(__file__).parents[2] / "docs" / "runs.rst"
    failures, tried = doctest.testfile(str(page), module_relative=False, verbose=False)
    assert tried >= 30 and failures == 0


def test_cli_errors_give_cli_remedies_not_python_calls(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """reliability.rst: past the read limit the read is a `FormatError` naming the declared
    size and how to raise the limit; errors are in the caller's terms. On the command line
    they told to pass ``Butler(..., max_read_bytes=N)`` or ``read_file(...)`` and to create
    a repository with ``Butler.create('...')``: only ``$BUTLER_MAX_READ_BYTES`` and
    ``butler init`` are a CLI user's."""
    h5py = pytest.importorskip("h5py")
    np = pytest.importorskip("numpy")
    src = tmp_path / "a.h5"
    with h5py.File(src, "w") as f:
        f["x"] = np.zeros((100, 100))
    monkeypatch.setenv("BUTLER_MAX_READ_BYTES", "100")
    result = cli("convert", src, tmp_path / "b.npy")
    assert result.exit_code == 1 and "declares 80,000 bytes" in result.stderr, result.stderr
    assert "raise it with $BUTLER_MAX_READ_BYTES if you trust" in result.stderr
    assert "max_read_bytes=" not in result.stderr and "read_file(" not in result.stderr
    result = cli("ls", tmp_path / "nothing")
    assert result.exit_code == 1 and "create one with 'butler init'" in result.stderr
    assert "Butler.create" not in result.stderr


def test_a_cli_reader_opts_in_to_unpickling_itself(cli: Cli, tmp_path: Path) -> None:
    """reliability.rst, No code runs: unpickling needs the *reader's* opt-in, the policy's
    flag is only a suggestion (hole 6). cli.rst said ``init --allow-pickle`` let every
    reader unpickle without opting in, which it never did; the CLI reader had no way to opt
    in and was told to "pass allow_pickle=True to get() or Butler()"."""
    root = tmp_path / "repo"
    assert cli("init", root, "--allow-pickle").exit_code == 0
    assert cli("define", root, "obj", "--type", "dict", "--format", "pickle", "-d", "v=int")
    (tmp_path / "in.json").write_text('{"a": 1}')
    assert cli("put", root, "obj", tmp_path / "in.json", "--id", "v=1").exit_code == 0
    refused = cli("get", root, "obj", "--id", "v=1", "-o", tmp_path / "o.json")
    assert refused.exit_code == 1 and "UnsafeFormatError" in refused.stderr
    assert "pass --allow-pickle if you trust" in refused.stderr, refused.stderr
    assert "allow_pickle=True" not in refused.stderr and not (tmp_path / "o.json").exists()
    got = cli("get", root, "obj", "--id", "v=1", "-o", tmp_path / "o.json", "--allow-pickle")
    assert got.exit_code == 0 and (tmp_path / "o.json").read_text().startswith('{"a": 1')
    pickled = next((root / "obj").iterdir())
    refused = cli("convert", pickled, tmp_path / "c.json")
    assert refused.exit_code == 1 and "pass --allow-pickle if you trust" in refused.stderr
    assert cli("convert", pickled, tmp_path / "c.json", "--allow-pickle").exit_code == 0


def test_a_cli_reader_opts_in_to_imports_itself(tmp_path: Path) -> None:
    """A dataset whose class lives in a package no plugin registered is read only when
    the reader allows that package: the error told CLI users to pass
    ``allow_imports=[...]`` to ``Butler``; ``butler get --allow-import PKG`` does it."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from butler._cli import main

    (tmp_path / "cli_import_probe_pkg.py").write_text("class Thing(dict):\n    pass\n")
    repo = tmp_path / "repo"
    script = (
        "import sys; from butler import Butler; import cli_import_probe_pkg as m\n"
        f"b = Butler.create({str(repo)!r})\n"
        "b.register_dataset_type('t', 'cli_import_probe_pkg.Thing', 'json', dimensions=['v'])\n"
        "b.put(m.Thing(a=1), 't', v=1)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    subprocess.run([sys.executable, "-c", script], check=True, env=env)
    assert "cli_import_probe_pkg" not in sys.modules
    sys.path.insert(0, str(tmp_path))
    try:
        out = tmp_path / "t.json"
        runner = CliRunner()
        refused = runner.invoke(main, ["get", str(repo), "t", "--id", "v=1", "-o", str(out)])
        assert refused.exit_code == 1
        assert "pass --allow-import cli_import_probe_pkg (butler get)" in refused.output
        assert "allow_imports=" not in refused.output and not out.exists()
        bad = runner.invoke(main, ["get", str(repo), "t", "--id", "v=1", "-o", str(out),
                                   "--allow-import", "a.b"])  # fmt: skip
        assert bad.exit_code == 2 and "--allow-import" in bad.output
        done = runner.invoke(main, ["get", str(repo), "t", "--id", "v=1", "-o", str(out),
                                    "--allow-import", "cli_import_probe_pkg"])  # fmt: skip
        assert done.exit_code == 0, done.output
        assert json.loads(out.read_text()) == {"a": 1}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cli_import_probe_pkg", None)
