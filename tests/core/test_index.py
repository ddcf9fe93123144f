"""The dataset index (issue 15): same answers with and without it, consistency between
bytes and rows (crashes injected for real), reindexing (resumable), hostile indexes, policy.

Queries are checked three ways: through the index (``Butler(root)``), by listing
(``Butler(root, index=False)``) and against the answer computed here in plain Python.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from butler import (
    Butler,
    ButlerError,
    DatasetTypeError,
    FormatError,
    QueryError,
    StorageError,
)
from butler import _index as butler_index
from butler._butler import ReindexReport

DIMENSIONS = {"visit": int, "ccd": int, "band": str}
DIMS = ("visit", "ccd", "band")
VISITS = (-30, -7, -1, 0, 1, 2, 5, 17, 100, 1000)
CCDS = (-1, 0, 3, 12)
BANDS = ("r", "R", "g", "é", "z-1")
DATA_IDS = [{"visit": v, "ccd": c, "band": b} for v in VISITS for c in CCDS for b in BANDS]
#: A small subset for S3 (every band, negative values).
S3_DATA_IDS = [d for d in DATA_IDS if d["visit"] in (-7, 0, 17) and d["ccd"] in (-1, 3)]
INDEX_FILE = f".butler/{butler_index.INDEX_NAME}"


def define(b: Butler, name: str = "calexp") -> None:
    b.register_dataset_type(name, dict, "json", dimensions=DIMENSIONS)


def fill(b: Butler, data_ids: list[dict[str, Any]], name: str = "calexp") -> None:
    define(b, name)
    for d in data_ids:
        b.put({"id": [d["visit"], d["ccd"], d["band"]]}, name, d)


# -- the queries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """A query and the data IDs it selects, decided here in plain Python."""

    id: str
    match: Callable[[dict[str, Any]], bool]
    where: str | None = None
    constraints: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        return {"where": self.where, **self.constraints}


def _v(d: dict[str, Any]) -> int:
    return int(d["visit"])


QUERIES = [
    # keyword constraints
    Q("all", lambda d: True),
    Q("scalar-int", lambda d: d["visit"] == 5, constraints={"visit": 5}),
    Q("scalar-negative", lambda d: d["ccd"] == -1, constraints={"ccd": -1}),
    Q("scalar-str-unicode", lambda d: d["band"] == "é", constraints={"band": "é"}),
    Q("scalar-str-case", lambda d: d["band"] == "R", constraints={"band": "R"}),
    Q("list", lambda d: d["visit"] in (-7, 0, 1000), constraints={"visit": [-7, 0, 1000]}),
    Q("set", lambda d: d["ccd"] in (-1, 12), constraints={"ccd": {12, -1}}),
    Q("tuple-str", lambda d: d["band"] in ("r", "z-1"), constraints={"band": ("z-1", "r")}),
    Q("range", lambda d: -7 <= _v(d) < 3, constraints={"visit": range(-7, 3)}),
    Q(
        "range-step",
        lambda d: _v(d) in range(-30, 20, 2),
        constraints={"visit": range(-30, 20, 2)},
    ),
    Q(
        "range-negative-step",
        lambda d: _v(d) in range(17, -10, -6),
        constraints={"visit": range(17, -10, -6)},
    ),
    Q("slice-open-start", lambda d: _v(d) < 0, constraints={"visit": slice(None, 0)}),
    Q("slice-open-stop", lambda d: _v(d) >= 5, constraints={"visit": slice(5, None)}),
    Q("slice-closed", lambda d: -1 <= _v(d) < 5, constraints={"visit": slice(-1, 5)}),
    Q("slice-open-both", lambda d: True, constraints={"visit": slice(None, None)}),
    Q("empty-list", lambda d: False, constraints={"visit": []}),
    Q("empty-set", lambda d: False, constraints={"band": set()}),
    Q(
        "several-constraints",
        lambda d: 0 <= _v(d) < 100 and d["band"] in ("g", "z-1") and d["ccd"] == 0,
        constraints={"visit": slice(0, 100), "band": ["g", "z-1"], "ccd": 0},
    ),
    # where: every operator
    Q("eq-negative", lambda d: d["visit"] == -7, "visit = -7"),
    Q("eq-double", lambda d: d["visit"] == 17, "visit == 17"),
    Q("eq-plus-sign", lambda d: d["ccd"] == 3, "ccd = +3"),
    Q("ne", lambda d: d["visit"] != 0, "visit != 0"),
    Q("ne-angle", lambda d: d["ccd"] != 0, "ccd <> 0"),
    Q("lt", lambda d: d["ccd"] < 0, "ccd < 0"),
    Q("le", lambda d: d["ccd"] <= 0, "ccd <= 0"),
    Q("gt", lambda d: d["visit"] > 5, "visit > 5"),
    Q("ge", lambda d: d["visit"] >= 5, "visit >= 5"),
    Q("literal-first", lambda d: d["visit"] > -1, "-1 < visit"),
    Q("in-str", lambda d: d["band"] in ("r", "é"), "band in ('r', 'é')"),
    Q("not-in-str", lambda d: d["band"] not in ("r", "R", "g"), "band not in ('r', 'R', 'g')"),
    Q("in-int", lambda d: d["visit"] in (-30, 1000), "visit IN (-30, 1000,)"),
    Q("not-in-int", lambda d: d["visit"] not in (0, 1, 2), "visit not in (0, 1, 2)"),
    Q("between", lambda d: -7 <= d["visit"] <= 2, "visit between -7 and 2"),
    Q("not-between", lambda d: not -7 <= d["visit"] <= 2, "visit not between -7 and 2"),
    # precedence and parentheses
    Q(
        "and-over-or",
        lambda d: d["visit"] == 1 or (d["ccd"] == 3 and d["band"] == "g"),
        "visit = 1 or ccd = 3 and band = 'g'",
    ),
    Q(
        "parentheses",
        lambda d: (d["visit"] == 1 or d["ccd"] == 3) and d["band"] == "g",
        "(visit = 1 or ccd = 3) and band = 'g'",
    ),
    Q(
        "not-over-and",
        lambda d: d["visit"] != 1 and d["ccd"] == 3,
        "not visit = 1 and ccd = 3",
    ),
    Q(
        "not-parenthesised",
        lambda d: not (d["visit"] == 1 and d["ccd"] == 3),
        "NOT (visit = 1 AND ccd = 3)",
    ),
    Q(
        "nested",
        lambda d: not (d["band"] in ("r", "R") or (d["visit"] < 0 and d["ccd"] != 12)),
        "not (band in ('r', 'R') or (visit < 0 and not ccd = 12))",
    ),
    # strings compared by code point
    Q("str-lt", lambda d: d["band"] < "g", "band < 'g'"),
    Q("str-gt", lambda d: d["band"] > "r", "band > 'r'"),
    Q("str-ge-prefix", lambda d: d["band"] >= "z", 'band >= "z"'),
    Q("str-le", lambda d: d["band"] <= "R", "band <= 'R'"),
    Q("str-between", lambda d: "R" <= d["band"] <= "r", "band between 'R' and 'r'"),
    # where and constraints together; empty results
    Q(
        "where-and-constraint",
        lambda d: d["band"] == "r" and 0 <= _v(d) < 10,
        "band = 'r'",
        {"visit": range(0, 10)},
    ),
    Q("contradiction", lambda d: False, "visit = -30 and visit = 1000"),
    Q("beyond", lambda d: False, "visit > 1000"),
    Q("huge-int", lambda d: True, f"visit < {10**25}"),
    Q("doubled-quote", lambda d: False, "band = 'O''Brien'"),
]

#: order_by values and the (dimension, descending) pairs they mean.
ORDERS: list[tuple[Any, list[tuple[str, bool]]]] = [
    (None, []),
    ("-visit", [("visit", True)]),
    ("band,-ccd", [("band", False), ("ccd", True)]),
    (["-band", "visit"], [("band", True), ("visit", False)]),
]
LIMITS = (None, 0, 1, 7, 10_000)


def expected(
    data_ids: list[dict[str, Any]], q: Q, order: list[tuple[str, bool]], limit: int | None
) -> list[dict[str, Any]]:
    """The answer, computed here: filter, then stable sorts from the last key to the first."""
    named = {d for d, _ in order}
    spec = [*order, *((d, False) for d in DIMS if d not in named)]
    found = [dict(d) for d in data_ids if q.match(d)]
    for dimension, descending in reversed(spec):
        found.sort(key=operator.itemgetter(dimension), reverse=descending)
    return found if limit is None else found[:limit]


def check_query(
    data_ids: list[dict[str, Any]], q: Q, butlers: list[Butler], name: str = "calexp"
) -> None:
    """Every butler gives the expected answer for every order and limit."""
    for order_by, order in ORDERS:
        for limit in LIMITS:
            want: list[dict[str, Any]] = expected(data_ids, q, order, limit)
            for b in butlers:
                got = list(b.datasets(name, limit=limit, order_by=order_by, **q.kwargs()))
                assert got == want, (q.id, order_by, limit, b.index)
    count = len(expected(data_ids, q, [], None))
    for b in butlers:
        assert b.count(name, **q.kwargs()) == count, (q.id, b.index)


# -- fixtures ---------------------------------------------------------------------------------


@dataclass
class Filled:
    """One repository holding `DATA_IDS`, opened with and without its index."""

    kind: str
    root: str
    indexed: Butler
    listing: Butler


@pytest.fixture(scope="module", params=["posix", "memory"])
def filled(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Filled]:
    if request.param == "posix":
        root = str(tmp_path_factory.mktemp("filled") / "repo")
    else:
        name = f"index-{uuid.uuid4().hex}"
        root = f"memory://{name}"
    with Butler.create(root) as b:
        fill(b, DATA_IDS)
    indexed, listing = Butler(root), Butler(root, index=False)
    assert indexed.index is not None and listing.index is None
    yield Filled(request.param, root, indexed, listing)
    indexed.close()
    listing.close()
    if request.param == "memory":
        from butler.storages.memory import MemoryStorage

        MemoryStorage.clear(name)


def index_db(root: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(os.path.join(root, INDEX_FILE))


def index_table(db: sqlite3.Connection, name: str = "calexp") -> str:
    rows = db.execute(
        "SELECT table_name FROM butler_index_catalog WHERE dataset_type = ?", (name,)
    ).fetchall()
    assert len(rows) == 1, rows
    return str(rows[0][0])


def index_rows(root: str | Path, name: str = "calexp") -> list[tuple[Any, ...]]:
    """Every row of a dataset type's table, read with sqlite3 behind butler's back."""
    db = index_db(root)
    try:
        table = index_table(db, name)
        return sorted(db.execute(f'SELECT * FROM "{table}"').fetchall())
    finally:
        db.close()


def schema(root: str | Path) -> list[tuple[Any, ...]]:
    db = index_db(root)
    try:
        return sorted(db.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
    finally:
        db.close()


def policy_head(root: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(Path(root, "butler.yaml").read_text())
    return dict(data["butler"])


# -- 1. same semantics with and without the index ---------------------------------------------


@pytest.mark.parametrize("q", QUERIES, ids=[q.id for q in QUERIES])
def test_query_same_with_and_without_index(filled: Filled, q: Q) -> None:
    check_query(DATA_IDS, q, [filled.indexed, filled.listing])


def test_queries_cover_every_kind() -> None:
    """The query list has non-trivial answers (a list of empty answers tests nothing)."""
    sizes = [len(expected(DATA_IDS, q, [], None)) for q in QUERIES]
    assert sum(1 for s in sizes if 0 < s < len(DATA_IDS)) >= 35
    assert sizes.count(0) >= 5


def test_index_answers_come_from_the_index(filled: Filled) -> None:
    """The indexed Butler really queries the index: its SQL count is ours."""
    assert filled.indexed.index is not None
    assert filled.indexed.index.counts() == {"calexp": len(DATA_IDS)}
    if filled.kind == "posix":
        assert len(index_rows(filled.root)) == len(DATA_IDS)


def test_stored_locations_same(filled: Filled) -> None:
    for kwargs in ({"where": "band > 'g'", "order_by": "-visit", "limit": 9}, {"visit": -30}):
        got = [
            [(loc.data_id, loc.key) for loc in b.stored_locations("calexp", **kwargs)]
            for b in (filled.indexed, filled.listing)
        ]
        assert got[0] == got[1] and got[0]
        for data_id, key in got[0]:
            assert filled.indexed.location("calexp", data_id).key == key


def test_empty_dataset_type_same(filled: Filled) -> None:
    """A dataset type with nothing stored (no index table yet): empty answers both ways."""
    define(filled.indexed, "empty")
    for b in (filled.indexed, filled.listing):
        assert list(b.datasets("empty")) == []
        assert list(b.datasets("empty", "visit > 0", order_by="-band", limit=3)) == []
        assert b.count("empty", band="r") == 0


ERRORS: list[tuple[str, dict[str, Any], type[ButlerError], str]] = [
    (
        "unknown-dimension-where",
        {"where": "filter = 'r'"},
        QueryError,
        "unknown dimension 'filter'",
    ),
    ("unknown-dimension-kw", {"filter": "r"}, QueryError, "unknown dimension 'filter'"),
    ("unknown-dimension-order", {"order_by": "-filter"}, QueryError, "unknown dimension 'filter'"),
    ("order-twice", {"order_by": ["visit", "-visit"]}, QueryError, "given twice"),
    ("order-empty-term", {"order_by": "visit,"}, QueryError, "empty term"),
    ("order-type", {"order_by": 3}, QueryError, "order_by"),
    ("bad-token", {"where": "visit = = 1"}, QueryError, "position 8"),
    ("bad-character", {"where": "visit = 1 and ccd ~ 2"}, QueryError, "position 18"),
    ("unbalanced", {"where": "(visit = 1"}, QueryError, "position 0"),
    ("trailing", {"where": "visit = 1 band = 'r'"}, QueryError, "position 10"),
    ("str-for-int", {"where": "visit = 'a'"}, QueryError, "int dimension"),
    ("where-type", {"where": 5}, QueryError, "where must be a string"),
    ("float-kw", {"visit": 5.0}, QueryError, "must be an integer"),
    ("bool-kw", {"visit": True}, QueryError, "bool"),
    ("mixed-list", {"visit": [1, "a"]}, QueryError, "'a'"),
    ("range-on-str", {"band": range(3)}, QueryError, "needs an int dimension"),
    ("slice-step", {"visit": slice(0, 10, 2)}, QueryError, "step"),
    ("limit-negative", {"limit": -1}, QueryError, "limit"),
    ("limit-str", {"limit": "3"}, QueryError, "limit"),
    ("limit-bool", {"limit": True}, QueryError, "limit"),
    ("limit-float", {"limit": 1.5}, QueryError, "limit"),
]


@pytest.mark.parametrize(
    ("kwargs", "error", "text"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_same_with_and_without_index(
    filled: Filled, kwargs: dict[str, Any], error: type[ButlerError], text: str
) -> None:
    messages = []
    for b in (filled.indexed, filled.listing):
        with pytest.raises(error) as info:
            b.datasets("calexp", **kwargs)
        assert type(info.value) is error
        assert text in str(info.value)
        messages.append(str(info.value))
        counted = {k: v for k, v in kwargs.items() if k not in ("limit", "order_by")}
        if counted:
            with pytest.raises(error) as info:
                b.count("calexp", **counted)
            assert str(info.value) == messages[-1]
    assert messages[0] == messages[1]


def test_unknown_dataset_type_same(filled: Filled) -> None:
    for b in (filled.indexed, filled.listing):
        with pytest.raises(DatasetTypeError, match=r"unknown dataset type 'nope'.*calexp"):
            b.datasets("nope")
        with pytest.raises(DatasetTypeError, match="unknown dataset type 'nope'"):
            b.count("nope")


def test_s3_listing_answers_equal_posix_index(butler_repo: Callable[..., Butler]) -> None:
    """S3 keeps no index: its listing gives the answers the posix index gives."""
    posix, s3 = butler_repo("posix"), butler_repo("s3")
    assert posix.index is not None and s3.index is None
    assert s3.policy.index is None
    fill(posix, S3_DATA_IDS)
    fill(s3, S3_DATA_IDS)
    for i, q in enumerate(QUERIES):  # one order and limit per query: S3 listings are slow
        order_by, order = ORDERS[i % len(ORDERS)]
        limit = None if i % 3 else 4
        kwargs = {"limit": limit, "order_by": order_by, **q.kwargs()}
        got = list(s3.datasets("calexp", **kwargs))
        assert got == list(posix.datasets("calexp", **kwargs)), (q.id, order_by, limit)
        assert got == expected(S3_DATA_IDS, q, order, limit), q.id
        want = len(expected(S3_DATA_IDS, q, [], None))
        assert s3.count("calexp", **q.kwargs()) == posix.count("calexp", **q.kwargs()) == want
    for _, kwargs, error, _text in ERRORS:
        with pytest.raises(error) as on_s3:
            s3.datasets("calexp", **kwargs)
        with pytest.raises(error) as on_posix:
            posix.datasets("calexp", **kwargs)
        assert str(on_s3.value) == str(on_posix.value)
    report = s3.verify()
    assert report.healthy and report.checked == len(S3_DATA_IDS)
    with pytest.raises(StorageError, match="no embedded dataset index"):
        s3.reindex()
    s3.remove("calexp", S3_DATA_IDS[0])
    assert s3.count("calexp") == len(S3_DATA_IDS) - 1


# -- 2. consistency between bytes and rows ----------------------------------------------------

CRASHING_PUT = """
import os, sys
from butler import Butler

b = Butler(sys.argv[1])
index = b.index
assert index is not None

def crash(*args, **kwargs):
    print("add called", flush=True)
    os._exit(1)  # killed between the byte commit and the row

index.add = crash
b.put({"crashed": True}, "calexp", visit=4242, ccd=1, band="r")
print("survived", flush=True)
"""


def test_crash_between_bytes_and_row(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:5])
    root = posix_repo.storage.root
    posix_repo.close()
    done = subprocess.run(
        [sys.executable, "-c", CRASHING_PUT, root], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done
    assert done.stdout == "add called\n" and done.stderr == "", done
    crashed = {"visit": 4242, "ccd": 1, "band": "r"}
    with Butler(root) as b:
        assert b.get("calexp", crashed) == {"crashed": True}
        assert b.index is not None
        assert list(b.datasets("calexp", visit=4242)) == []
        assert b.count("calexp") == 5
        with Butler(root, index=False) as listing:
            assert list(listing.datasets("calexp", visit=4242)) == [crashed]
        report = b.verify()
        assert not report.healthy
        assert len(report.unindexed) == 1 and "4242" in report.unindexed[0], report
        assert report.stale == [] and report.checked == 6
        repaired = b.reindex()
        assert repaired.listed == 6 and repaired.dropped == 0
        assert b.verify().healthy
        assert b.count("calexp") == 6
        assert list(b.datasets("calexp", visit=4242)) == [crashed]
    assert len(index_rows(root)) == 6


def test_file_removed_behind_butlers_back(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:4])
    gone = DATA_IDS[2]
    os.remove(os.path.join(posix_repo.storage.root, posix_repo.location("calexp", gone).key))
    assert posix_repo.count("calexp") == 4  # the index does not know yet
    report = posix_repo.verify()
    assert not report.healthy
    assert len(report.stale) == 1 and str(gone["visit"]) in report.stale[0], report
    assert report.unindexed == [] and report.missing == []
    repaired = posix_repo.reindex()
    assert repaired.dropped == 1 and repaired.listed == 3
    assert posix_repo.verify().healthy
    assert posix_repo.count("calexp") == 3
    assert gone not in list(posix_repo.datasets("calexp"))
    assert len(index_rows(posix_repo.storage.root)) == 3


def test_remove_drops_the_row(repo: Butler) -> None:
    fill(repo, DATA_IDS[:6])
    assert repo.index is not None
    repo.remove("calexp", DATA_IDS[1])
    assert repo.count("calexp") == 5
    assert repo.index.counts() == {"calexp": 5}
    assert DATA_IDS[1] not in list(repo.datasets("calexp"))
    assert repo.verify().healthy


def test_failing_storage_remove_leaves_unindexed_not_stale(
    repo: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(repo, DATA_IDS[:3])
    victim = DATA_IDS[0]

    def failing_remove(key: str) -> None:
        raise StorageError(f"injected: cannot remove {key!r}")

    monkeypatch.setattr(repo.storage, "remove", failing_remove)
    with pytest.raises(StorageError, match="injected"):
        repo.remove("calexp", victim)
    monkeypatch.undo()
    assert repo.exists("calexp", victim)
    assert repo.count("calexp") == 2
    report = repo.verify()
    assert report.stale == []
    assert len(report.unindexed) == 1 and "'visit': -30" in report.unindexed[0], report
    repo.reindex()
    assert repo.verify().healthy and repo.count("calexp") == 3


def test_failing_index_add_after_commit(posix_repo: Butler) -> None:
    """A real SQLite failure (a trigger aborting inserts): the bytes stay, the error says
    they were stored and to run reindex."""
    fill(posix_repo, DATA_IDS[:2])
    root = posix_repo.storage.root
    db = index_db(root)
    table = index_table(db)
    db.execute(
        f'CREATE TRIGGER refuse BEFORE INSERT ON "{table}" '
        "BEGIN SELECT RAISE(ABORT, 'injected index failure'); END"
    )
    db.commit()
    new = {"visit": 77, "ccd": 0, "band": "g"}
    with pytest.raises(StorageError) as info:
        posix_repo.put({"x": 1}, "calexp", new)
    message = str(info.value)
    assert "was stored" in message and "reindex" in message and "injected index failure" in message
    assert "'visit': 77" in message
    assert posix_repo.get("calexp", new) == {"x": 1}
    assert posix_repo.count("calexp") == 2
    assert len(posix_repo.verify().unindexed) == 1
    db.execute("DROP TRIGGER refuse")
    db.commit()
    db.close()
    assert posix_repo.reindex().indexed == 3
    assert posix_repo.verify().healthy and posix_repo.count("calexp") == 3


def test_damaged_index_errors_are_butler_errors(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:2])
    db = index_db(posix_repo.storage.root)
    db.execute(f'DROP TABLE "{index_table(db)}"')
    db.commit()
    db.close()
    with Butler(posix_repo.storage.root) as b, pytest.raises(ButlerError):
        b.verify()


def test_reindex_repairs_a_dropped_table(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:2])
    db = index_db(posix_repo.storage.root)
    db.execute(f'DROP TABLE "{index_table(db)}"')
    db.commit()
    db.close()
    with Butler(posix_repo.storage.root) as b:
        assert b.reindex().indexed == 2
        assert b.count("calexp") == 2


# -- 3. reindexing ----------------------------------------------------------------------------


def remove_index_files(root: str) -> list[str]:
    removed = []
    for name in os.listdir(os.path.join(root, ".butler")):
        if name.startswith(butler_index.INDEX_NAME):
            os.remove(os.path.join(root, ".butler", name))
            removed.append(name)
    return removed


def test_reindex_after_deleting_the_index(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:30])
    define(posix_repo, "other")
    posix_repo.put({}, "other", visit=1, ccd=2, band="é")
    root = posix_repo.storage.root
    before = index_rows(root)
    posix_repo.close()
    assert butler_index.INDEX_NAME in remove_index_files(root)
    with Butler(root) as b:
        # A new, empty index, recorded incomplete: queries list the storage until the
        # reindex below (never an empty answer).
        assert b._query_index() is None and b.count("calexp") == 30
        report = b.reindex()
        assert (report.listed, report.indexed, report.dropped, report.resumed) == (31, 31, 0, 0)
        assert b.count("calexp") == 30 and b.count("other") == 1
        assert b.verify().healthy
    assert index_rows(root) == before  # size, created, key... all from the stored metadata


def test_reindex_resumes_after_interruption(posix_repo: Butler) -> None:
    total = butler_index.BATCH + 70
    define(posix_repo)
    for i in range(total):
        posix_repo.put({"i": i}, "calexp", visit=i - 100, ccd=i % 3, band=BANDS[i % 5])
    root = posix_repo.storage.root
    reference = index_rows(root)
    assert len(reference) == total
    posix_repo.close()
    remove_index_files(root)
    calls: list[tuple[str, int, int]] = []

    def interrupt(name: str, done: int, of: int) -> None:
        calls.append((name, done, of))
        if done >= butler_index.BATCH:
            raise KeyboardInterrupt

    with Butler(root) as b, pytest.raises(KeyboardInterrupt):
        b.reindex(progress=interrupt)
    assert calls == [("calexp", 0, total), ("calexp", butler_index.BATCH, total)]
    assert len(index_rows(root)) == butler_index.BATCH
    with Butler(root) as b:
        report = b.reindex()
        assert report.resumed == butler_index.BATCH
        assert report.indexed == total - butler_index.BATCH
        assert report.listed == total
        assert b.count("calexp") == total and b.verify().healthy
        assert b.reindex().resumed == 0  # the checkpoint was cleared at the end
    assert index_rows(root) == reference  # as a full rebuild gives


def strip_policy(root: str, *keys: str) -> None:
    path = Path(root, "butler.yaml")
    data = yaml.safe_load(path.read_text())
    for key in keys:
        data["butler"].pop(key, None)
    data["butler"]["version"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def test_old_repository_gets_an_index(tmp_path: Path) -> None:
    root = str(tmp_path / "old")
    with Butler.create(root, index="none") as b:
        fill(b, DATA_IDS[:12])
    strip_policy(root, "id", "index")
    head = policy_head(root)
    assert "id" not in head and "index" not in head and head["version"] == 1
    with Butler(root) as b:
        assert b.index is None
        assert b.count("calexp", "band = 'r'") == 3
        assert not os.path.exists(os.path.join(root, INDEX_FILE))
        report = b.reindex()
        assert report.indexed == 12
        head = policy_head(root)
        assert head["index"] == "embedded" and head["version"] == 2
        assert isinstance(head["id"], str) and len(head["id"]) >= 8
        assert b.index is not None
    assert len(index_rows(root)) == 12
    with Butler(root) as b:
        assert b.index is not None and b.policy.id == head["id"]
        # Answers now come from the index: bytes removed behind its back still show.
        os.remove(os.path.join(root, b.location("calexp", DATA_IDS[0]).key))
        assert b.count("calexp") == 12
        with Butler(root, index=False) as listing:
            assert listing.count("calexp") == 11


# -- 4. hostile indexes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "-wal"])
def test_index_symlink_outside_is_refused(posix_repo: Butler, tmp_path: Path, name: str) -> None:
    fill(posix_repo, DATA_IDS[:2])
    root = posix_repo.storage.root
    posix_repo.close()
    remove_index_files(root)
    if name:  # a real index next to a linked write-ahead log
        with Butler(root) as b:
            b.reindex()
        remove_index_files(root)
        sqlite3.connect(os.path.join(root, INDEX_FILE)).close()
    outside = tmp_path / "precious.db"
    outside.write_bytes(b"do not touch" * 100)
    before = outside.stat()
    os.symlink(outside, os.path.join(root, INDEX_FILE + name))
    with Butler(root) as b:
        with pytest.raises(StorageError, match=r"refused.*index\.sqlite3"):
            b.count("calexp")
        with pytest.raises(StorageError, match="refused"):
            b.datasets("calexp")
    assert outside.read_bytes() == b"do not touch" * 100
    assert outside.stat().st_mtime_ns == before.st_mtime_ns
    assert sorted(os.listdir(tmp_path)) == ["precious.db", "repo"]  # no -wal/-shm beside it


def corrupt(root: str, value: Any, where: str = "d_visit = -30") -> None:
    db = index_db(root)
    table = index_table(db)
    changed = db.execute(f'UPDATE "{table}" SET d_visit = ? WHERE {where}', (value,)).rowcount
    db.commit()
    db.close()
    assert changed > 0


def test_index_row_of_wrong_type(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:8])
    root = posix_repo.storage.root
    corrupt(root, "abc")
    with pytest.raises(FormatError, match=r"'abc'.*'visit'.*reindex"):
        list(posix_repo.datasets("calexp"))
    with pytest.raises(FormatError, match="reindex"):
        posix_repo.datasets("calexp", band="r")
    posix_repo.reindex()  # rewrites the rows of the stored datasets
    assert list(posix_repo.datasets("calexp")) == expected(DATA_IDS[:8], QUERIES[0], [], None)


def test_index_row_with_a_float_is_corrupt(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:3])
    corrupt(posix_repo.storage.root, -29.5)
    with pytest.raises(FormatError, match="reindex"):
        list(posix_repo.datasets("calexp"))


def test_reindex_repairs_a_foreign_corrupt_row(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:3])
    root = posix_repo.storage.root
    db = index_db(root)
    db.execute(
        f'INSERT INTO "{index_table(db)}" (_id, _key, _run, _did, d_visit, d_ccd, d_band) '
        "VALUES ('0123456789abcdef0123456789abcdef', 'planted', 'default', "
        "'0123456789abcdef0123456789abcdef', 'abc', 1, 'r')"
    )
    db.commit()
    db.close()
    with pytest.raises(FormatError, match="reindex"):
        list(posix_repo.datasets("calexp"))
    posix_repo.reindex()
    assert posix_repo.count("calexp") == 3 and posix_repo.verify().healthy


HOSTILE_WHERE = [
    "band = 'x''; DROP TABLE butler_index_catalog; --'",
    'band = "r"" OR 1=1 --"',
    "band in ('a', 'b''); DELETE FROM butler_index_catalog; --')",
    " or ".join(["visit = 1"] * 700),  # long but allowed
]
HOSTILE_REFUSED = [
    "visit = 1 or 1 = 1",
    "visit = 1; DROP TABLE butler_index_catalog",
    "visit = 1 -- comment",
    "visit = 1 /* c */",
    '"visit" = 1',
    "visit = 1 or " * 900 + "visit = 2",  # over MAX_WHERE_LENGTH
    "(" * 100 + "visit = 1" + ")" * 100,  # over MAX_DEPTH
    "visit in (" + ", ".join(str(i) for i in range(12_000)) + ")",
]


def test_hostile_queries_leave_the_index_intact(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:20])
    root = posix_repo.storage.root
    tables, rows = schema(root), index_rows(root)
    listing = Butler(root, index=False)
    try:
        for text in HOSTILE_WHERE:
            for b in (posix_repo, listing):
                got = list(b.datasets("calexp", text))
                assert got == list(listing.datasets("calexp", text))
        for text in HOSTILE_REFUSED:
            for b in (posix_repo, listing):
                with pytest.raises(QueryError):
                    b.datasets("calexp", text)
        values = ["r'; DROP TABLE butler_index_catalog; --", "'" * 199, "é" * 200]
        for b in (posix_repo, listing):
            with pytest.raises(QueryError, match="control characters"):
                b.datasets("calexp", band="r\x00; DROP TABLE butler_index_catalog")
            assert list(b.datasets("calexp", band=values)) == []
            assert b.count("calexp", band=values[0]) == 0
            with pytest.raises(QueryError):
                b.datasets("calexp", order_by="visit; DROP TABLE butler_index_catalog")
            with pytest.raises(QueryError):
                b.count("calexp", None, **{"visit) OR 1=1 --": 1})
    finally:
        listing.close()
    assert schema(root) == tables
    assert index_rows(root) == rows
    assert posix_repo.verify().healthy


# -- 5. the policy ----------------------------------------------------------------------------


def test_policy_records_the_embedded_index(posix_repo: Butler) -> None:
    head = policy_head(posix_repo.storage.root)
    assert head["index"] == "embedded" and head["version"] == 2
    assert isinstance(head["id"], str) and all(c in "0123456789abcdef" for c in head["id"])
    assert posix_repo.policy.id == head["id"] and posix_repo.policy.index == "embedded"
    assert posix_repo.index is not None


def test_policy_of_a_memory_repository(butler_repo: Callable[..., Butler]) -> None:
    b = butler_repo("memory")
    stored = b.storage.read_policy()
    assert stored is not None
    assert stored["butler"]["index"] == "embedded" and stored["butler"]["version"] == 2
    assert stored["butler"]["id"] == b.policy.id
    assert b.index is not None


def test_two_repositories_have_distinct_ids(butler_repo: Callable[..., Butler]) -> None:
    ids = {butler_repo(kind).policy.id for kind in ("posix", "posix", "memory")}
    assert len(ids) == 3 and None not in ids


def test_create_without_index(tmp_path: Path) -> None:
    root = str(tmp_path / "plain")
    with Butler.create(root, index="none") as b:
        assert b.index is None and b.policy.index is None
        fill(b, DATA_IDS[:10])
        assert b.count("calexp", "visit = -30") == 10
        assert list(b.datasets("calexp", limit=3, order_by="-band")) == [
            {"visit": -30, "ccd": -1, "band": "é"},
            {"visit": -30, "ccd": 0, "band": "é"},
            {"visit": -30, "ccd": -1, "band": "z-1"},
        ]
    head = policy_head(root)
    assert "index" not in head and head["version"] == 1 and "id" in head
    assert not os.path.exists(os.path.join(root, INDEX_FILE))
    with Butler(root) as b:
        assert b.index is None
        assert b.verify().healthy


def test_index_argument_checked(posix_repo: Butler) -> None:
    with pytest.raises(StorageError, match="index must be"):
        Butler(posix_repo.storage.root, index=True)
    with pytest.raises(StorageError, match="index must be"):
        Butler.create(posix_repo.storage.root, index=1)  # type: ignore[arg-type]


def test_reindex_report_counts(posix_repo: Butler) -> None:
    fill(posix_repo, DATA_IDS[:5])
    assert posix_repo.reindex() == ReindexReport(listed=5, indexed=5, dropped=0, resumed=0)
