"""The CLI on runs, collections and provenance (issue 16): ``--run`` on the commands that
write, ``--run``/``--collections`` on those that read, ``runs``, ``history``,
``provenance``, ``chain`` and ``rm-run``, on real posix repositories (with and without their
SQLite index) and memory ones."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from butler import Butler, _cli

Cli = Callable[..., Result]
Factory = Callable[..., Butler]


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}{result.stderr}"
    assert result.stderr == ""
    return result.stdout


def fails(result: Result, code: int = 1) -> str:
    """The one-line error of a failed command (no traceback), for exit code ``code``."""
    assert result.exit_code == code, f"exit {result.exit_code}: {result.output}{result.stderr}"
    assert result.stdout == "" and "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


def define(b: Butler) -> None:
    for name in ("raw", "calexp", "catalog"):
        b.register_dataset_type(name, dict, "json", dimensions={"visit": int})


def pipeline(root: str) -> None:
    """raw -> calexp -> catalog in run A; calexp and catalog again in run B, reading
    through collections B, A (so B's calexp is made from A's raw)."""
    a = Butler(root, run="A")
    a.put({"raw": 1}, "raw", visit=1)
    with a.recording():
        a.get("raw", visit=1)
        a.put({"calexp": "A"}, "calexp", visit=1)
    with a.recording():
        a.get("calexp", visit=1)
        a.put({"catalog": "A"}, "catalog", visit=1)
    b = Butler(root, run="B", collections=["B", "A"])
    with b.recording():
        b.get("raw", visit=1)
        b.put({"calexp": "B"}, "calexp", visit=1)
    with b.recording():
        b.get("calexp", visit=1)
        b.put({"catalog": "B"}, "catalog", visit=1)
    a.close()
    b.close()


@pytest.fixture
def repo(butler_repo: Factory) -> str:
    """A posix repository (embedded index) holding `pipeline`."""
    b = butler_repo("posix", checksum=True)
    define(b)
    pipeline(b.storage.uri())
    return b.storage.uri()


@pytest.fixture(params=["posix", "posix-no-index", "memory", "sqlite"])
def any_repo(request: pytest.FixtureRequest, butler_repo: Factory) -> str:
    """`pipeline` in posix repositories with and without their index, a memory one and a
    SQLite one (butler-db)."""
    kind = "posix" if request.param.startswith("posix") else request.param
    options = {"index": "none"} if request.param == "posix-no-index" else {}
    b = butler_repo(kind, checksum=True, **options)
    define(b)
    pipeline(b.storage.uri())
    return b.storage.uri()


def ref(root: str, dataset_type: str, run: str) -> Any:
    with Butler(root) as b:
        return b.ref(dataset_type, visit=1, run=run)


# -- put --run, get/ls --run/--collections, rm --run ----------------------------------------


def test_put_run_and_get_from_it(cli: Cli, repo: str, files: dict[str, Path], tmp_path: Path):
    out = ok(cli("put", repo, "calexp", files["json"], "--id", "visit=2", "--run", "u/me/r-1"))
    assert out.startswith("stored dataset 'calexp' {'visit': 2} at ")
    assert "@runs/u~me~r-1/calexp/2.json" in out and out.endswith(" in run 'u/me/r-1'\n")
    # Only that run holds it: not the default run.
    assert ok(cli("ls", repo, "calexp")) == "(no datasets)\n"
    assert ok(cli("ls", repo, "calexp", "--run", "u/me/r-1")) == "visit=2\n"
    got = tmp_path / "o.json"
    ok(cli("get", repo, "calexp", "--id", "visit=2", "--run", "u/me/r-1", "-o", got))
    assert json.loads(got.read_text()) == {"gain": 1.5, "amps": [1, 2]}
    err = fails(cli("get", repo, "calexp", "--id", "visit=2", "-o", tmp_path / "p.json"))
    assert "DatasetNotFoundError: dataset 'calexp' {'visit': 2} at " in err
    assert not (tmp_path / "p.json").exists()
    # Create-only within a run; --overwrite replaces that run's dataset only.
    err = fails(cli("put", repo, "calexp", files["json"], "--id", "visit=2", "--run", "u/me/r-1"))
    assert "already exists; pass --overwrite to replace it" in err
    data = as_json(cli("--json", "put", repo, "calexp", files["json"], "--id", "visit=2"))
    assert data["run"] == "default" and data["data_id"] == {"visit": 2}


def test_get_run_and_collections(cli: Cli, repo: str, tmp_path: Path) -> None:
    def got(*flags: str) -> Any:
        out = tmp_path / "out.json"
        ok(cli("get", repo, "calexp", "--id", "visit=1", "-o", out, "--overwrite", *flags))
        return json.loads(out.read_text())

    assert got("--run", "A") == {"calexp": "A"}
    assert got("--run", "B") == {"calexp": "B"}
    assert got("--collections", "B,A") == {"calexp": "B"}
    assert got("--collections", "A,B") == {"calexp": "A"}
    assert got("--collections", "B", "--collections", "A") == {"calexp": "B"}
    assert got("--collections", " A , B ") == {"calexp": "A"}
    # raw is only in A: B,A falls through to A.
    out = tmp_path / "raw.json"
    ok(cli("get", repo, "raw", "--id", "visit=1", "-o", out, "--collections", "B,A"))
    assert json.loads(out.read_text()) == {"raw": 1}
    err = fails(cli("get", repo, "raw", "--id", "visit=1", "-o", out, "--overwrite", "--run", "B"))
    assert "DatasetNotFoundError: dataset 'raw' {'visit': 1} at " in err and "@runs/B/" in err
    # Nothing is in the default run: the error names the runs searched.
    err = fails(cli("get", repo, "raw", "--id", "visit=1", "-o", out, "--overwrite"))
    assert "dataset 'raw' {'visit': 1} at " in err and "does not exist" in err


def test_get_refuses_to_write_onto_the_file_it_reads(cli: Cli, repo: str) -> None:
    """The dataset's own file is found in the run it is read from (not the default run)."""
    own = Path(repo) / "@runs" / "B" / "calexp" / "1.json"
    before = own.read_bytes()
    for flags in (["--run", "B"], ["--collections", "B,A"]):
        err = fails(cli("get", repo, "calexp", "--id", "visit=1", "-o", own, "--overwrite", *flags))
        assert f"-o/--output '{own}' is the file being read" in err
    assert own.read_bytes() == before


def test_ls_collections_shows_the_run_of_each_data_id(cli: Cli, any_repo: str) -> None:
    root = any_repo
    b = Butler(root, run="C")
    b.put({"calexp": "C"}, "calexp", visit=7)
    b.close()
    out = ok(cli("ls", root, "calexp", "--collections", "C,B,A"))
    assert out.splitlines() == ["visit=1  (run B)", "visit=7  (run C)"]
    out = ok(cli("ls", root, "calexp", "--collections", "A", "--collections", "C"))
    assert out.splitlines() == ["visit=1  (run A)", "visit=7  (run C)"]
    data = as_json(cli("--json", "ls", root, "calexp", "--collections", "A,C"))
    assert data == [{"data_id": {"visit": 1}, "run": "A"}, {"data_id": {"visit": 7}, "run": "C"}]
    assert ok(cli("ls", root, "calexp", "--run", "C")) == "visit=7\n"
    assert ok(cli("ls", root, "calexp", "--collections", "A,B,C", "--count")) == "2\n"
    assert ok(cli("ls", root, "raw", "--collections", "B", "--count")) == "0\n"
    assert ok(cli("ls", root, "calexp", "--collections", "C,A", "--id", "visit=7")) == (
        "visit=7  (run C)\n"
    )


def test_read_flags_errors(cli: Cli, repo: str, tmp_path: Path) -> None:
    out = tmp_path / "o.json"
    get = ("get", repo, "calexp", "--id", "visit=1", "-o", out)
    err = fails(cli(*get, "--run", "A", "--collections", "B"), code=2)
    assert "--run reads one run and --collections searches several: give one of them" in err
    err = fails(cli(*get, "--collections", "B,,A"), code=2)
    assert "--collections" in err and "'B,,A' has an empty name" in err
    err = fails(cli(*get, "--run", "bad name"))
    assert err.startswith("butler: error: InvalidDataIdError: --run bad name: invalid run name")
    err = fails(cli(*get, "--collections", "B,@x"))
    assert err.startswith(
        "butler: error: InvalidDataIdError: --collections B,@x: invalid collection name '@x'"
    )
    err = fails(cli("ls", repo, "--run", "A"), code=2)
    assert "--run need(s) a DATASET_TYPE" in err
    # A mistyped collection is warned about (the read itself finds nothing there).
    result = cli("ls", repo, "calexp", "--collections", "Bee")
    assert result.exit_code == 0 and result.stdout == "(no datasets)\n"
    assert result.stderr == (
        f"butler: warning: --collections Bee: no run of that name holds datasets and no "
        f"chain has that name (see 'butler runs {repo}')\n"
    )


def test_write_flags_errors(cli: Cli, repo: str, files: dict[str, Path]) -> None:
    put = ("put", repo, "calexp", files["json"], "--id", "visit=3")
    err = fails(cli(*put, "--run", "a//b"))
    assert err.startswith("butler: error: InvalidDataIdError: --run a//b: invalid run name")
    err = fails(cli(*put, "--run", "@runs"))
    assert "--run @runs: invalid run name" in err
    ok(cli("chain", repo, "BA", "B", "A"))
    err = fails(cli(*put, "--run", "BA"))
    assert err == (
        "butler: error: InvalidDataIdError: --run BA: 'BA' is a collection chain (B, A), not "
        "a run; datasets are written into runs\n"
    )
    with Butler(repo) as b:
        assert b.runs() == {"A": 3, "B": 2}


def test_rm_run_flag_removes_from_that_run_only(cli: Cli, repo: str) -> None:
    out = ok(cli("rm", repo, "calexp", "--id", "visit=1", "--run", "B"))
    assert out == "removed calexp {'visit': 1} in run 'B'\n"
    assert ok(cli("ls", repo, "calexp", "--collections", "B,A")) == "visit=1  (run A)\n"
    err = fails(cli("rm", repo, "calexp", "--id", "visit=1", "--run", "B"))
    assert "DatasetNotFoundError: dataset 'calexp' {'visit': 1} at " in err and "@runs/B/" in err
    err = fails(cli("rm", repo, "calexp", "--id", "visit=1"))  # the default run has none
    assert "DatasetNotFoundError" in err
    data = as_json(cli("--json", "rm", repo, "calexp", "--id", "visit=1", "--run", "A"))
    assert data == {"removed": {"visit": 1}, "run": "A"}


def test_a_run_dimension_is_a_data_id_value(cli: Cli, repo: str, tmp_path: Path) -> None:
    """``--id run=...`` is the dimension; ``--run`` still picks the run."""
    with Butler(repo, run="A") as b:
        b.register_dataset_type("exp", dict, "json", dimensions={"run": int})
        b.put({"in": "A"}, "exp", run=5)
    with Butler(repo, run="B") as b:
        b.put({"in": "B"}, "exp", run=5)
    out = tmp_path / "exp.json"
    ok(cli("get", repo, "exp", "--id", "run=5", "--run", "B", "-o", out))
    assert json.loads(out.read_text()) == {"in": "B"}
    ok(cli("get", repo, "exp", "--id", "run=5", "--collections", "A,B", "-o", out, "--overwrite"))
    assert json.loads(out.read_text()) == {"in": "A"}
    assert ok(cli("ls", repo, "exp", "--id", "run=5", "--collections", "B")) == ("run=5  (run B)\n")
    assert ok(cli("history", repo, "exp", "--id", "run=5")).count("\n") == 2


# -- runs, history ----------------------------------------------------------------------------


def test_runs_counts_and_chains(cli: Cli, any_repo: str) -> None:
    root = any_repo
    with Butler(root) as b:
        b.put({}, "raw", visit=9)
    assert ok(cli("runs", root)).splitlines() == [
        "runs:",
        "  A              3 datasets",
        "  B              2 datasets",
        "  default        1 datasets",
    ]
    ok(cli("chain", root, "BA", "B", "A"))
    ok(cli("chain", root, "everything", "BA", "default"))
    assert ok(cli("runs", root)).splitlines() == [
        "runs:",
        "  A                 3 datasets",
        "  B                 2 datasets",
        "  default           1 datasets",
        "chains (members searched in order):",
        "  BA          B, A",
        "  everything  BA, default  (runs B, A, default)",
    ]
    assert as_json(cli("--json", "runs", root)) == {
        "runs": {"A": 3, "B": 2, "default": 1},
        "chains": {
            "BA": {"members": ["B", "A"], "runs": ["B", "A"]},
            "everything": {"members": ["BA", "default"], "runs": ["B", "A", "default"]},
        },
    }


def test_runs_of_an_empty_repository(cli: Cli, butler_repo: Factory) -> None:
    root = butler_repo("posix").storage.uri()
    assert ok(cli("runs", root)) == "runs: none holds datasets\n"


def test_history_across_three_runs(cli: Cli, any_repo: str) -> None:
    root = any_repo
    with Butler(root, run="C") as b:
        b.put({"calexp": "C, longer"}, "calexp", visit=1)
    out = ok(cli("history", root, "calexp", "--id", "visit=1"))
    with Butler(root) as b:
        versions = b.history("calexp", visit=1)
    assert [v.run for v in versions] == ["A", "B", "C"]  # oldest first
    assert out.splitlines() == [
        f"{v.run}  {v.created:<27}  {v.size:>10} bytes  sha256 {v.checksum[:12]}"  # type: ignore[index]
        for v in versions
    ]
    sizes = [len(json.dumps({"calexp": x})) for x in ("A", "B", "C, longer")]
    assert [v.size for v in versions] == sizes
    data = as_json(cli("--json", "history", root, "calexp", "--id", "visit=1"))
    assert data == [
        {"run": v.run, "created": v.created, "size": v.size, "checksum": v.checksum}
        for v in versions
    ]
    assert len({d["checksum"] for d in data}) == 3


def test_history_errors(cli: Cli, repo: str) -> None:
    err = fails(cli("history", repo, "calexp", "--id", "visit=2"))
    assert err == (
        f"butler: error: DatasetNotFoundError: dataset 'calexp' {{'visit': 2}} is stored in no "
        f"run of '{repo}'\n"
    )
    err = fails(cli("history", repo, "calexp"))
    assert "InvalidDataIdError: --id: dataset type 'calexp' also needs --id visit=..." in err
    err = fails(cli("history", repo, "nope", "--id", "visit=1"))
    assert "DatasetTypeError: unknown dataset type 'nope'" in err


# -- provenance ------------------------------------------------------------------------------


def line(dataset_type: str, r: Any, suffix: str = "") -> str:
    return f"{dataset_type} visit=1  run {r.run}  {r.created}{suffix}"


def test_provenance_tree_of_a_rerun(cli: Cli, any_repo: str) -> None:
    """B's catalog was made from B's calexp, itself made from A's raw."""
    root = any_repo
    catalog, calexp = ref(root, "catalog", "B"), ref(root, "calexp", "B")
    raw = ref(root, "raw", "A")
    out = ok(cli("provenance", root, "catalog", "--id", "visit=1", "--collections", "B,A"))
    head, tree = out.split("inputs:\n")
    assert tree.splitlines() == [
        line("catalog", catalog),
        "└── " + line("calexp", calexp),
        "    └── " + line("raw", raw, "  (raw: no recorded inputs)"),
    ]
    with Butler(root) as b:
        prov = b.provenance("catalog", visit=1, run="B")
    assert head.splitlines() == [
        "dataset:    catalog visit=1",
        "run:        B",
        f"created:    {catalog.created}",
        f"by:         {prov.user}@{prov.host}",
        f"butler:     {prov.butler_version}",
        f"serializer: butler-core {prov.serializer['version']}",
        f"python:     {prov.python}",
        f"checksum:   sha256 {catalog.checksum}",
    ]
    assert prov.user and prov.host and prov.python and prov.butler_version
    # --run A: A's own chain.
    out = ok(cli("provenance", root, "catalog", "--id", "visit=1", "--run", "A"))
    assert out.split("inputs:\n")[1].splitlines() == [
        line("catalog", ref(root, "catalog", "A")),
        "└── " + line("calexp", ref(root, "calexp", "A")),
        "    └── " + line("raw", raw, "  (raw: no recorded inputs)"),
    ]


def test_provenance_json(cli: Cli, repo: str) -> None:
    data = as_json(cli("--json", "provenance", repo, "catalog", "--id", "visit=1", "--run", "B"))
    calexp, raw = data["inputs"][0], data["inputs"][0]["inputs"][0]
    assert (data["run"], data["status"], data["dataset_type"]) == ("B", "ok", "catalog")
    assert (calexp["run"], calexp["status"], calexp["dataset_type"]) == ("B", "ok", "calexp")
    assert (raw["run"], raw["status"], raw["inputs"]) == ("A", "raw", [])
    assert raw["checksum"] == ref(repo, "raw", "A").checksum
    assert data["serializer"]["distribution"] == "butler-core" and data["user"]
    assert set(data) == {
        "dataset_type", "data_id", "run", "created", "checksum", "user", "host",
        "butler_version", "serializer", "python", "status", "inputs",
    }  # fmt: skip


def test_provenance_depth(cli: Cli, repo: str) -> None:
    args = ("provenance", repo, "catalog", "--id", "visit=1", "--run", "B")
    tree = ok(cli(*args, "--depth", "1")).split("inputs:\n")[1].splitlines()
    assert tree == [
        line("catalog", ref(repo, "catalog", "B")),
        "└── " + line("calexp", ref(repo, "calexp", "B"), "  (1 input(s) not shown: --depth 1)"),
    ]
    tree = ok(cli(*args, "--depth", "0")).split("inputs:\n")[1].splitlines()
    assert tree == [
        line("catalog", ref(repo, "catalog", "B"), "  (1 input(s) not shown: --depth 0)")
    ]
    assert len(ok(cli(*args, "--depth", "2")).split("inputs:\n")[1].splitlines()) == 3
    data = as_json(cli("--json", *args, "--depth", "1"))
    assert data["inputs"][0]["not_shown"] == 1 and data["inputs"][0]["inputs"] == []
    err = fails(cli(*args, "--depth", "-1"), code=2)
    assert "--depth" in err


def test_provenance_of_a_removed_input_shows_it_missing(cli: Cli, repo: str) -> None:
    raw = ref(repo, "raw", "A")
    ok(cli("rm", repo, "raw", "--id", "visit=1", "--run", "A"))
    result = cli("provenance", repo, "catalog", "--id", "visit=1", "--run", "B")
    tree = ok(result).split("inputs:\n")[1].splitlines()
    assert tree[2] == "    └── " + line("raw", raw, "  (missing: no longer in run 'A')")
    data = as_json(cli("--json", "provenance", repo, "catalog", "--id", "visit=1", "--run", "B"))
    missing = data["inputs"][0]["inputs"][0]
    assert missing["status"] == "missing" and "does not exist" in missing["error"]
    assert missing["created"] == raw.created and missing["checksum"] == raw.checksum


def test_provenance_of_a_replaced_input(cli: Cli, repo: str) -> None:
    """An input overwritten since is shown as replaced, and its new inputs are not
    presented as the recorded ones."""
    old = ref(repo, "calexp", "B")
    with Butler(repo, run="B") as b:
        b.put({"calexp": "B, again"}, "calexp", visit=1, overwrite=True)
    new = ref(repo, "calexp", "B")
    tree = ok(cli("provenance", repo, "catalog", "--id", "visit=1", "--run", "B"))
    assert tree.split("inputs:\n")[1].splitlines()[1:] == [
        "└── " + line("calexp", old, f"  (replaced: run 'B' now holds another version, created "
                                     f"{new.created}; its inputs are not the recorded ones)")
    ]  # fmt: skip
    data = as_json(cli("--json", "provenance", repo, "catalog", "--id", "visit=1", "--run", "B"))
    assert data["inputs"][0]["status"] == "replaced"
    assert data["inputs"][0]["now"] == {"created": new.created, "checksum": new.checksum}


def test_provenance_shared_inputs_are_shown_once(cli: Cli, repo: str) -> None:
    """A diamond (two inputs made from the same raw) is no cycle: the raw is followed
    once, and marked as shown the second time."""
    with Butler(repo, run="D", collections=["D", "A"]) as b:
        b.register_dataset_type("flat", dict, "json", dimensions={"visit": int})
        with b.recording():
            b.get("raw", visit=1)
            b.put({"flat": 1}, "flat", visit=1)
        with b.recording():
            b.get("raw", visit=1)
            b.get("flat", visit=1)
            b.put({"calexp": "D"}, "calexp", visit=1)
    raw, flat, calexp = ref(repo, "raw", "A"), ref(repo, "flat", "D"), ref(repo, "calexp", "D")
    out = ok(cli("provenance", repo, "calexp", "--id", "visit=1", "--run", "D"))
    assert out.split("inputs:\n")[1].splitlines() == [
        line("calexp", calexp),
        "├── " + line("raw", raw, "  (raw: no recorded inputs)"),
        "└── " + line("flat", flat),
        "    └── " + line("raw", raw, "  (shown above)"),
    ]


def test_provenance_of_an_unrecorded_dataset(cli: Cli, repo: str) -> None:
    """A file copied into the repository by hand has no provenance: said, not an error."""
    (Path(repo) / "raw").mkdir()
    (Path(repo) / "raw" / "4.json").write_text('{"raw": 4}')
    out = ok(cli("provenance", repo, "raw", "--id", "visit=4"))
    assert "created:    (not recorded)\n" in out and "by:         (not recorded)\n" in out
    assert out.split("inputs:\n")[1] == "raw visit=4  run default  ?  (no provenance recorded)\n"


def test_provenance_with_an_unreadable_input_record(cli: Cli, repo: str) -> None:
    """Many inputs are kept in a content-addressed record; a deleted record makes that
    dataset's provenance unreadable, which the tree shows instead of failing."""
    with Butler(repo, run="E", collections=["E", "A"]) as b:
        b.register_dataset_type("bias", dict, "json", dimensions={"detector": str})
        names = [f"detector-with-a-long-name-{i:02d}" for i in range(12)]
        for name in names:
            b.put({}, "bias", detector=name)
        with b.recording():
            for name in names:
                b.get("bias", detector=name)
            b.put({"calexp": "E"}, "calexp", visit=1)
        with b.recording():
            b.get("calexp", visit=1)
            b.put({"catalog": "E"}, "catalog", visit=1)
    records = list((Path(repo) / ".butler" / "provenance").glob("*.json"))
    assert len(records) == 1
    full = ok(cli("provenance", repo, "catalog", "--id", "visit=1", "--run", "E"))
    assert len(full.split("inputs:\n")[1].splitlines()) == 2 + len(names)
    records[0].unlink()
    out = ok(cli("provenance", repo, "catalog", "--id", "visit=1", "--run", "E"))
    tree = out.split("inputs:\n")[1].splitlines()
    assert len(tree) == 2
    assert tree[1].startswith("└── " + line("calexp", ref(repo, "calexp", "E")))
    assert "(provenance unreadable: FormatError: provenance names the input record " in tree[1]
    # The dataset asked for is no input: its unreadable provenance is the command's error.
    err = fails(cli("provenance", repo, "calexp", "--id", "visit=1", "--run", "E"))
    assert "FormatError: provenance names the input record" in err


def test_provenance_errors(cli: Cli, repo: str) -> None:
    err = fails(cli("provenance", repo, "catalog", "--id", "visit=1"))
    assert "DatasetNotFoundError: dataset 'catalog' {'visit': 1} at " in err
    err = fails(cli("provenance", repo, "raw", "--id", "visit=1", "--collections", "B,default"))
    assert "does not exist in runs ['B', 'default'] (searched in that order)" in err
    err = fails(cli("provenance", repo, "catalog", "--id", "visit=x", "--run", "B"))
    assert "InvalidDataIdError: --id visit=x: dimension 'visit'" in err


def test_rich_tree_draws_the_same_lines(cli: Cli, repo: str) -> None:
    """On a terminal the tree is rich's; the plain one (pipes, tests) draws the same."""
    rich_console = pytest.importorskip("rich.console")
    with Butler(repo, run="D", collections=["D", "A"]) as b:
        b.register_dataset_type("flat", dict, "json", dimensions={"visit": int})
        with b.recording():
            b.get("raw", visit=1)
            b.put({"flat": 1}, "flat", visit=1)
        with b.recording():
            b.get("raw", visit=1)
            b.get("flat", visit=1)
            b.get("catalog", visit=1)
            b.put({"calexp": "D"}, "calexp", visit=1)
        tree = _cli._trace(b, b.provenance("calexp", visit=1), None)
    console = rich_console.Console(
        file=io.StringIO(), width=1000, color_system=None, highlight=False
    )
    console.print(_cli._rich_tree(tree, None))
    assert console.file.getvalue().splitlines() == _cli._tree_lines(tree, None)
    assert len(_cli._tree_lines(tree, None)) == 7


# -- chain, rm-run ---------------------------------------------------------------------------


def test_chain_then_read_through_it(cli: Cli, any_repo: str, tmp_path: Path) -> None:
    root = any_repo
    out = ok(cli("chain", root, "latest", "B", "A"))
    assert out == "chain latest: B, A (searches runs B, A)\n"
    got = tmp_path / "got.json"
    ok(cli("get", root, "calexp", "--id", "visit=1", "-o", got, "--collections", "latest"))
    assert json.loads(got.read_text()) == {"calexp": "B"}
    ok(cli("get", root, "raw", "--id", "visit=1", "-o", got, "--overwrite", "--run", "latest"))
    assert json.loads(got.read_text()) == {"raw": 1}
    assert ok(cli("ls", root, "raw", "--collections", "latest")) == "visit=1  (run A)\n"
    # Redefined: the old members are said.
    data = as_json(cli("--json", "chain", root, "latest", "A", "B"))
    assert data == {"chain": "latest", "members": ["A", "B"], "runs": ["A", "B"], "was": ["B", "A"]}
    assert ok(cli("chain", root, "latest", "B", "A")).endswith("; was A, B\n")
    # A chain of chains.
    assert ok(cli("chain", root, "all", "latest", "default")) == (
        "chain all: latest, default (searches runs B, A, default)\n"
    )
    assert ok(cli("ls", root, "catalog", "--collections", "all")) == "visit=1  (run B)\n"
    with Butler(root) as b:
        assert b.chains == {"latest": ["B", "A"], "all": ["latest", "default"]}


def test_chain_errors(cli: Cli, repo: str) -> None:
    err = fails(cli("chain", repo, "bad name", "A"))
    assert err.startswith("butler: error: InvalidDataIdError: NAME bad name: invalid chain name")
    err = fails(cli("chain", repo, "x", "A", "@no"))
    assert err.startswith("butler: error: InvalidDataIdError: MEMBER @no: invalid collection")
    err = fails(cli("chain", repo, "B", "A"))
    assert err == (
        "butler: error: InvalidDataIdError: chain B: 'B' is a run holding datasets; a chain "
        "needs another name\n"
    )
    err = fails(cli("chain", repo, "default", "A"))
    assert "'default' is the default run; a chain needs another name" in err
    ok(cli("chain", repo, "one", "A"))
    ok(cli("chain", repo, "two", "one", "B"))
    err = fails(cli("chain", repo, "one", "two"))
    assert "InvalidDataIdError: chain one: collection chain cycle: one -> two -> one" in err
    err = fails(cli("chain", repo, "three"), code=2)
    assert "Missing argument 'MEMBERS...'" in err
    with Butler(repo) as b:
        assert b.chains == {"one": ["A"], "two": ["one", "B"]}
    # A member that does not exist (yet) is allowed, and warned about.
    result = cli("chain", repo, "later", "future-run", "A")
    assert result.exit_code == 0
    assert result.stdout == "chain later: future-run, A (searches runs future-run, A)\n"
    assert result.stderr == (
        "butler: warning: MEMBER future-run: no run of that name holds datasets and no chain "
        "has that name (yet); reads through 'later' skip it\n"
    )


def test_rm_run(cli: Cli, any_repo: str) -> None:
    root = any_repo
    ok(cli("chain", root, "BA", "B", "A"))
    err = fails(cli("rm-run", root, "B"), code=2)
    assert "removing run 'B' deletes its 2 dataset(s); pass --yes to confirm" in err
    with Butler(root) as b:
        assert b.runs() == {"A": 3, "B": 2}
    out = ok(cli("rm-run", root, "B", "--yes"))
    assert out == "removed run 'B': 2 dataset(s); chains still naming it: BA\n"
    with Butler(root) as b:
        assert b.runs() == {"A": 3}
        assert not b.exists("calexp", visit=1, run="B")
        assert b.get("calexp", visit=1, run="A") == {"calexp": "A"}
    assert ok(cli("ls", root, "calexp", "--collections", "BA")) == "visit=1  (run A)\n"
    data = as_json(cli("--json", "rm-run", root, "A", "--yes"))
    assert data == {"run": "A", "removed": 3, "chains": ["BA"]}
    assert ok(cli("runs", root)).splitlines()[0] == "runs: none holds datasets"


def test_rm_run_errors(cli: Cli, repo: str) -> None:
    err = fails(cli("rm-run", repo, "C", "--yes"))
    assert err == (
        f"butler: error: DatasetNotFoundError: RUN C: no run 'C' holds datasets in '{repo}'; "
        f"runs: A (3), B (2)\n"
    )
    ok(cli("chain", repo, "BA", "B", "A"))
    err = fails(cli("rm-run", repo, "BA", "--yes"))
    assert err == (
        "butler: error: InvalidDataIdError: RUN BA: 'BA' is a collection chain (B, A), not a run\n"
    )
    err = fails(cli("rm-run", repo, "../x", "--yes"))
    assert err.startswith("butler: error: InvalidDataIdError: RUN ../x: invalid run name")
    with Butler(repo) as b:
        assert b.runs() == {"A": 3, "B": 2}
