"""The CLI on the dataset index (issue 15): ``ls`` queries, ``info``'s index line and
counts, ``reindex`` and ``verify``'s index checks, on real posix (SQLite index), memory
and index-less repositories."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from butler import Butler, _cli
from butler.storages.posix import PosixStorage
from tests.conftest import repo_factory

Cli = Callable[..., Result]

VISITS = (99, 100, 150, 199, 200)
CCDS = (1, 2, 5)


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


def band(visit: int) -> str:
    return "g" if visit % 2 else "r"


def fill(b: Butler) -> Butler:
    """``obs`` (visit: int, ccd: int, band: str): every visit x ccd; ``cfg`` (visit): 2."""
    b.register_dataset_type("obs", dict, "json", dimensions={"visit": int, "ccd": int, "band": str})
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    for visit in VISITS:
        for ccd in CCDS:
            b.put({"v": visit, "c": ccd}, "obs", visit=visit, ccd=ccd, band=band(visit))
    b.put({}, "cfg", visit=1)
    b.put({}, "cfg", visit=2)
    return b


@pytest.fixture(scope="module", params=["posix", "posix-no-index", "memory"])
def root(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same datasets through the embedded SQLite index, by listing a posix directory
    (no index), and through the in-process index of a memory repository; shared by the
    tests of this module that only read."""
    kind = "posix" if request.param.startswith("posix") else request.param
    options = {"index": "none"} if request.param == "posix-no-index" else {}
    with repo_factory(request, tmp_path_factory.mktemp(request.param)) as create:
        b = fill(create(kind, **options))
        assert (b.index is None) == (request.param == "posix-no-index")
        yield b.storage.uri()


@pytest.fixture
def posix(butler_repo: Callable[..., Butler]) -> Path:
    """A filled posix repository with its embedded index (one per test: tests change it)."""
    b = fill(butler_repo("posix"))
    return Path(b.storage.root)


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Path]:
    """A filled posix repository with its embedded index, shared by tests that only read."""
    with repo_factory(request, tmp_path_factory.mktemp("indexed")) as create:
        yield Path(fill(create("posix")).storage.root)


def lines(text: str) -> list[str]:
    return text.splitlines()


def obs(visit: int, ccd: int) -> str:
    return f"visit={visit} ccd={ccd} band={band(visit)}"


# -- ls: each flag, the same answers with and without an index ---------------------------


def test_ls_range_is_inclusive(cli: Cli, root: str) -> None:
    out = ok(cli("ls", root, "obs", "--id", "visit=100..199", "--id", "ccd=1"))
    assert lines(out) == [obs(100, 1), obs(150, 1), obs(199, 1)]  # 199 in, 99 and 200 out
    out = ok(cli("ls", root, "obs", "--id", "visit=..100", "--id", "ccd=2"))
    assert lines(out) == [obs(99, 2), obs(100, 2)]
    out = ok(cli("ls", root, "obs", "--id", "visit=199..", "--id", "ccd=5"))
    assert lines(out) == [obs(199, 5), obs(200, 5)]
    out = ok(cli("ls", root, "obs", "--id", "visit = 150 .. 150 ", "--id", "ccd=5"))
    assert lines(out) == [obs(150, 5)]


def test_ls_lists(cli: Cli, root: str) -> None:
    out = ok(cli("ls", root, "obs", "--id", "visit=99, 200", "--id", "ccd=1,5"))
    assert lines(out) == [obs(99, 1), obs(99, 5), obs(200, 1), obs(200, 5)]
    out = ok(cli("ls", root, "obs", "--id", "band=r,x", "--id", "ccd=2"))
    assert lines(out) == [obs(100, 2), obs(150, 2), obs(200, 2)]
    # A range and a list together (ccd 1..2 of visits 99 and 150).
    out = ok(cli("ls", root, "obs", "--id", "visit=99,150", "--id", "ccd=1..2"))
    assert lines(out) == [obs(99, 1), obs(99, 2), obs(150, 1), obs(150, 2)]


def test_ls_where_limit_order_by(cli: Cli, cli_json: Any, root: str) -> None:
    where = "visit >= 150 and ccd in (1, 5) and band = 'r'"
    assert lines(ok(cli("ls", root, "obs", "--where", where))) == [
        obs(150, 1), obs(150, 5), obs(200, 1), obs(200, 5),
    ]  # fmt: skip
    out = ok(cli("ls", root, "obs", "--where", where, "--order-by", "-visit", "--limit", "3"))
    assert lines(out) == [obs(200, 1), obs(200, 5), obs(150, 1)]
    out = ok(cli("ls", root, "obs", "--where", where, "--order-by", "-ccd",
                 "--order-by=-visit"))  # fmt: skip
    assert lines(out) == [obs(200, 5), obs(150, 5), obs(200, 1), obs(150, 1)]
    out = ok(cli("ls", root, "obs", "--where", where, "--order-by", "ccd,-visit"))
    assert lines(out) == [obs(200, 1), obs(150, 1), obs(200, 5), obs(150, 5)]
    assert ok(cli("ls", root, "obs", "--limit", "0")) == "(no datasets)\n"
    # --where and --id together, as JSON.
    found = cli_json("ls", root, "obs", "--where", "ccd != 2", "--id", "visit=100..150")
    assert found == [{"visit": v, "ccd": c, "band": "r"} for v in (100, 150) for c in (1, 5)]


def test_ls_count(cli: Cli, cli_json: Any, root: str) -> None:
    assert ok(cli("ls", root, "obs", "--count")) == f"{len(VISITS) * len(CCDS)}\n"
    assert ok(cli("ls", root, "obs", "--id", "visit=100..199", "--count")) == "9\n"
    assert ok(cli("ls", root, "obs", "--where", "band = 'g'", "--id", "ccd=1,2", "--count")) == (
        "4\n"
    )
    assert ok(cli("ls", root, "obs", "--where", "visit > 1000", "--count")) == "0\n"
    assert cli_json("ls", root, "cfg", "--count") == 2


def test_ls_without_dataset_type_is_unchanged(cli: Cli, root: str) -> None:
    assert lines(ok(cli("ls", root))) == [
        "cfg  (builtins.dict, json, cfg/{visit:d}.json)",
        "obs  (builtins.dict, json, obs/{visit:d}/{ccd:d}/{band}.json)",
    ]


# -- ls: errors in command-line terms ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--where", "visit >= "], "QueryError: --where 'visit >= ': unexpected end of "
                                   "expression at position 9; expected a number"),
        (["--where", "visit > 1 andd ccd = 2"], "QueryError: --where 'visit > 1 andd ccd = 2': "
                                                "unexpected 'andd' at position 10"),
        (["--where", "filter = 'g'"], "QueryError: --where \"filter = 'g'\": unknown dimension "
                                      "'filter' at position 0; dataset type 'obs' has "
                                      "dimensions ['visit', 'ccd', 'band']"),
        (["--where", "visit = 'a'"], "QueryError: --where \"visit = 'a'\": dimension 'visit' "
                                     "is an int dimension"),
        (["--order-by", "-filter"], "QueryError: --order-by '-filter': unknown dimension "
                                    "'filter'; dataset type 'obs' has dimensions"),
        (["--order-by", "visit", "--order-by", "-visit"],
         "QueryError: --order-by -visit: dimension 'visit' is already ordered by --order-by "
         "visit"),
        (["--order-by", ","], "QueryError: --order-by ',': empty term"),
        (["--id", "visit=200..100"], "QueryError: --id visit=200..100: empty range: 200 is "
                                     "above 100"),
        (["--id", "visit=.."], "QueryError: --id visit=..: a range is FIRST..LAST (inclusive)"),
        (["--id", "visit=1..2..3"], "QueryError: --id visit=1..2..3: a range is FIRST..LAST"),
        (["--id", "visit=1..x"], "InvalidDataIdError: --id visit=1..x: dimension 'visit' of "
                                 "dataset type 'obs' is int: "),
        (["--id", "ccd=1,x"], "InvalidDataIdError: --id ccd=1,x: dimension 'ccd' of dataset "
                              "type 'obs' is int: "),
        (["--id", "ccd=1,,2"], "QueryError: --id ccd=1,,2: empty item in a list"),
        (["--id", "visit=1..3,5"], "QueryError: --id visit=1..3,5: a list cannot hold a range"),
        (["--id", "filter=g"], "InvalidDataIdError: --id filter=g: dataset type 'obs' has no "
                               "dimension 'filter'; its dimensions are visit (int), ccd (int), "
                               "band (str)"),
        (["--id", "band=../x"], "InvalidDataIdError: --id band=../x: dimension 'band' "),
    ],
)  # fmt: skip
def test_ls_errors_name_the_flag(cli: Cli, indexed: Path, args: list[str], expected: str) -> None:
    err = fails(cli("ls", indexed, "obs", *args))
    assert err.startswith(f"butler: error: {expected}"), err
    assert "where=" not in err and "order_by" not in err and "constraint" not in err


def test_ls_error_in_a_subprocess(indexed: Path) -> None:
    """The real entry point: exit status 1, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "butler", "ls", str(indexed), "obs", "--where", "ccd in (1,"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ, COLUMNS="100"),
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("butler: error: QueryError: --where 'ccd in (1,': ")
    assert " at position " in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["obs", "--limit", "-1"], "Invalid value for '--limit': -1 is not in the range x>=0"),
        (["obs", "--count", "--limit", "2"], "--count counts every match: --limit and "
                                             "--order-by do not apply"),
        (["obs", "--count", "--order-by", "visit"], "--limit and --order-by do not apply"),
        (["--where", "visit = 1"], "--where need(s) a DATASET_TYPE"),
        (["--count", "--id", "visit=1"], "--id, --count need(s) a DATASET_TYPE"),
    ],
)  # fmt: skip
def test_ls_usage_errors(cli: Cli, indexed: Path, args: list[str], expected: str) -> None:
    assert expected in fails(cli("ls", indexed, *args), code=2)


def test_ls_string_values_are_not_ranges(cli: Cli, posix: Path) -> None:
    """``..`` is a range only for an int dimension: for a str one it is part of the value."""
    b = Butler(str(posix))
    b.put({}, "obs", visit=7, ccd=1, band="a..b")
    assert ok(cli("ls", posix, "obs", "--id", "band=a..b")) == "visit=7 ccd=1 band=a..b\n"


# -- info --------------------------------------------------------------------------------


def test_info_with_an_index(cli: Cli, cli_json: Any, indexed: Path) -> None:
    posix = indexed
    out = ok(cli("info", posix))
    assert f"\nindex:      {posix / '.butler' / 'index.sqlite3'}\n" in out
    assert "  cfg                  json           2 datasets  builtins.dict\n" in out
    assert "  obs                  json          15 datasets  builtins.dict\n" in out
    data = cli_json("info", posix)
    assert data["index"] == str(posix / ".butler" / "index.sqlite3")
    assert {n: t["count"] for n, t in data["dataset_types"].items()} == {"cfg": 2, "obs": 15}
    assert "index_error" not in data


def test_info_on_memory(cli_json: Any, butler_repo: Callable[..., Butler]) -> None:
    b = fill(butler_repo("memory"))
    data = cli_json("info", b.storage.uri())
    assert data["index"].startswith("in-process")
    assert data["dataset_types"]["obs"]["count"] == 15


def test_info_without_an_index_lists_nothing(
    cli: Cli, cli_json: Any, butler_repo: Callable[..., Butler], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = fill(butler_repo("posix", index="none"))
    root = b.storage.root

    def refuse(*args: Any, **kwargs: Any) -> Iterator[str]:
        raise AssertionError("info listed the storage")

    monkeypatch.setattr(PosixStorage, "list", refuse)
    out = ok(cli("info", root))
    assert (
        f"\nindex:      none: queries list the storage (run `butler reindex {root}` to create "
        f"one)\n" in out
    )
    assert "  obs                  json     not indexed  builtins.dict\n" in out
    data = cli_json("info", root)
    assert data["index"] is None
    assert {n: t["count"] for n, t in data["dataset_types"].items()} == {"cfg": None, "obs": None}


# -- reindex -----------------------------------------------------------------------------


def drop_index_files(repo: Path) -> None:
    for name in ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"):
        (repo / ".butler" / name).unlink(missing_ok=True)


def test_reindex_after_deleting_the_index_restores_counts(
    cli: Cli, cli_json: Any, posix: Path
) -> None:
    drop_index_files(posix)
    info = cli_json("info", posix)
    # A new, empty index, never taken for the answer: recorded incomplete, info says so
    # (no counts from it) and ls lists the storage.
    assert info["index"] is None
    assert "incomplete" in info["index_error"] and "butler reindex" in info["index_error"]
    assert {n: t["count"] for n, t in info["dataset_types"].items()} == {"cfg": None, "obs": None}
    assert ok(cli("ls", posix, "obs", "--count")) == "15\n"
    out = ok(cli("reindex", posix))
    assert out == (
        f"index {posix / '.butler' / 'index.sqlite3'}: listed 17 datasets, indexed 17, "
        f"dropped 0 stale rows, resumed 0 (done by an interrupted run)\n"
    )
    counts = {n: t["count"] for n, t in cli_json("info", posix)["dataset_types"].items()}
    assert counts == {"cfg": 2, "obs": 15}
    assert ok(cli("ls", posix, "obs", "--id", "visit=100..199", "--count")) == "9\n"
    assert ok(cli("verify", posix)) == "checked 17 datasets: 17 ok\n"


def test_reindex_one_type_drops_stale_rows(cli: Cli, cli_json: Any, posix: Path) -> None:
    (posix / "obs" / "99" / "1" / "g.json").unlink()  # behind butler's back
    report = cli_json("reindex", posix, "--type", "obs")
    assert report == {"index": str(posix / ".butler" / "index.sqlite3"), "listed": 14,
                      "indexed": 14, "dropped": 1, "resumed": 0}  # fmt: skip
    assert ok(cli("ls", posix, "obs", "--id", "visit=99", "--count")) == "2\n"
    err = fails(cli("reindex", posix, "--type", "nope"))
    assert err.startswith("butler: error: DatasetTypeError: --type nope: unknown dataset type")


def test_reindex_creates_an_index(
    cli: Cli, cli_json: Any, butler_repo: Callable[..., Butler]
) -> None:
    plain = fill(butler_repo("posix", index="none"))
    root = Path(plain.storage.root)
    assert not (root / ".butler" / "index.sqlite3").exists()
    out = ok(cli("reindex", root))
    assert out.startswith(f"index {root / '.butler' / 'index.sqlite3'}: listed 17 datasets, "
                          f"indexed 17,")  # fmt: skip
    assert Butler(str(root)).policy.index == "embedded"
    assert cli_json("info", root)["dataset_types"]["obs"]["count"] == 15
    # --index embedded names the same place: accepted on a repository that has it.
    assert ok(cli("reindex", root, "--index", "embedded")).startswith(
        f"index {root / '.butler' / 'index.sqlite3'}: listed 17 datasets, indexed 17,"
    )
    other = fill(butler_repo("posix", index="none"))
    other_root = Path(other.storage.root)
    report = cli_json("reindex", other_root, "--index", "embedded", "--type", "cfg")
    assert report["listed"] == 2 and report["indexed"] == 2
    assert Butler(str(other_root)).policy.index == "embedded"


def test_reindex_index_errors_name_the_flag_and_hide_secrets(cli: Cli, posix: Path) -> None:
    secret = "s3cr3t-pw"
    url = f"postgresql+psycopg://user:{secret}@127.0.0.1:1/elsewhere"
    err = fails(cli("reindex", posix, "--index", url))
    assert err == (
        "butler: error: StorageError: --index postgresql+psycopg://***@127.0.0.1:1/elsewhere: "
        "the repository already has its index at 'embedded'; --index creates one only for a "
        "repository without an index\n"
    )
    err = fails(cli("reindex", posix, "--index", "none"), code=2)
    assert "Invalid value for --index: 'none' creates no index" in err
    plain = Butler.create(str(posix.parent / "plain"), index="none")
    err = fails(cli("reindex", plain.storage.root, "--index", f"gopher://u:{secret}@host/x"))
    assert err.startswith("butler: error: StorageError: --index gopher://***@host/x: ")
    assert secret not in err
    assert Butler(plain.storage.root).policy.index is None  # nothing recorded


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reindex_feeds_a_progress_bar_per_type(
    cli: Cli, posix: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []

    class Recording:
        def __enter__(self) -> Callable[[str, int, int], None]:
            return lambda name, done, total: calls.append((name, done, total))

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(_cli, "_reindex_progress", Recording)
    drop_index_files(posix)
    ok(cli("reindex", posix))
    assert calls[0] == ("cfg", 0, 2) and calls[-1] == ("obs", 15, 15)
    assert ("cfg", 2, 2) in calls and ("obs", 0, 15) in calls
    assert [c for c in calls if c[0] == "obs"] == sorted(c for c in calls if c[0] == "obs")


def test_reindex_progress_bar_draws_on_stderr_only(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich", reason="progress bars need rich (butler-core[progress])")
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with _cli._reindex_progress() as progress:
        assert progress is None  # not a terminal: nothing drawn
    tty = FakeTTY()
    monkeypatch.setattr("sys.stderr", tty)
    with _cli._reindex_progress() as progress:
        assert callable(progress)
        progress("obs", 0, 15)
        progress("obs", 15, 15)
        progress("cfg", 2, 2)
    assert sys.stdout.getvalue() == ""  # type: ignore[attr-defined]
    drawn = tty.getvalue()
    assert "obs" in drawn and "15/15" in drawn and "cfg" in drawn and "2/2" in drawn


# -- verify ------------------------------------------------------------------------------


def test_verify_reports_stale_and_unindexed(cli: Cli, cli_json: Any, posix: Path) -> None:
    (posix / "obs" / "150" / "2" / "r.json").unlink()  # deleted behind butler's back
    Butler(str(posix), index=False).put({"late": True}, "cfg", visit=3)  # stored, not indexed
    result = cli("verify", posix)
    assert result.exit_code == 1 and result.stderr == ""
    assert lines(result.stdout) == [
        "checked 17 datasets: 17 ok",
        f"unindexed: dataset 'cfg' {{'visit': 3}} at '{posix / 'cfg' / '3.json'}': stored, but "
        f"not indexed",
        "stale: dataset 'obs' {'visit': 150, 'ccd': 2, 'band': 'r'}: indexed, but not stored",
        f"the dataset index is out of step with the storage: run `butler reindex {posix}` to "
        f"repair it",
    ]
    data = json.loads(cli("--json", "verify", posix).stdout)
    assert len(data["unindexed"]) == 1 and len(data["stale"]) == 1 and data["missing"] == []
    report = cli_json("reindex", posix)
    assert (report["indexed"], report["dropped"]) == (17, 1)
    assert ok(cli("verify", posix)) == "checked 17 datasets: 17 ok\n"


def test_verify_without_an_index(cli: Cli, butler_repo: Callable[..., Butler]) -> None:
    b = fill(butler_repo("posix", index="none"))
    assert ok(cli("verify", b.storage.root)) == "checked 17 datasets: 17 ok\n"
