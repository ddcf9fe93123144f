"""Runs and collections (issue 16): run isolation, search order through collections (with
and without the dataset index), named chains, history, run counts and removing a run.

Every storage that keeps runs: posix (embedded SQLite index), memory, S3 (moto, listing;
and indexed in PostgreSQL), the database storage on SQLite and on PostgreSQL. The server
variants skip without ``BUTLER_TEST_POSTGRES_URL``; heavier checks run on posix only.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from butler import (
    Butler,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    InvalidDataIdError,
)
from butler._butler import CHAINS_MAX_AGE
from tests._databases import fresh_postgres_schema

#: Storages every test runs on (fast: local).
LOCAL = ["posix", "memory", "sqlite"]
#: Storages behind a server (moto, PostgreSQL): the main behaviours only, on small data.
SERVERS = ["s3", "postgresql", "s3-pg-index"]


@dataclass
class Repo:
    """A repository under test: where it is, and how to open more Butlers on it."""

    kind: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    opened: list[Butler] = field(default_factory=list)

    def open(self, **kwargs: Any) -> Butler:
        b = Butler(self.root, **self.options, **kwargs)
        self.opened.append(b)
        return b

    @property
    def indexed(self) -> bool:
        return self.kind != "s3"


@contextlib.contextmanager
def make_repo(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository of ``kind`` (created, with checksums), closed afterwards."""
    with contextlib.ExitStack() as stack:
        options: dict[str, Any] = {}
        create: dict[str, Any] = {}
        if kind == "posix":
            root = str(tmp_path / "repo")
        elif kind == "memory":
            from butler.storages.memory import MemoryStorage

            root = f"memory://runs-{tmp_path.name}"
            stack.callback(MemoryStorage.clear, f"runs-{tmp_path.name}")
        elif kind == "sqlite":
            pytest.importorskip("butler_db", reason="butler-db is not installed")
            root = f"sqlite:///{tmp_path}/repo/butler.db"
        elif kind in ("s3", "s3-pg-index"):
            pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
            if kind == "s3-pg-index":
                pytest.importorskip("butler_db", reason="butler-db is not installed")
                base = request.getfixturevalue("postgres_url")
                create["index"], _ = stack.enter_context(fresh_postgres_schema(base, "bruns"))
                # This reader trusts the index the policy names (Butlers opened later).
                monkeypatch = request.getfixturevalue("monkeypatch")
                monkeypatch.setenv("BUTLER_TRUSTED_INDEXES", create["index"])
            bucket = request.getfixturevalue("s3_bucket")
            options = dict(request.getfixturevalue("s3_credentials"))
            root = f"s3://{bucket}/repo"
        elif kind == "postgresql":
            pytest.importorskip("butler_db", reason="butler-db is not installed")
            base = request.getfixturevalue("postgres_url")
            root, _ = stack.enter_context(fresh_postgres_schema(base, "bruns"))
        else:  # pragma: no cover
            raise ValueError(kind)
        repo = Repo(kind, root, options)
        repo.opened.append(Butler.create(root, checksum=True, **create, **options))
        try:
            yield repo
        finally:
            for b in repo.opened:
                b.close()


@pytest.fixture(params=LOCAL + SERVERS)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository on every storage."""
    with make_repo(request, request.param, tmp_path) as r:
        yield r


@pytest.fixture(params=LOCAL + [pytest.param(k, marks=pytest.mark.slow) for k in SERVERS])
def every(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository on every storage; the server ones marked slow (moto and
    PostgreSQL round trips add seconds per test)."""
    with make_repo(request, request.param, tmp_path) as r:
        yield r


@pytest.fixture(params=LOCAL)
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository on the local storages."""
    with make_repo(request, request.param, tmp_path) as r:
        yield r


@pytest.fixture
def posix(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    with make_repo(request, "posix", tmp_path) as r:
        yield r


def define(b: Butler) -> None:
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})


def keys(b: Butler) -> set[str]:
    return {k for k in b.storage.list("") if not k.startswith(".butler/") and k != "butler.yaml"}


# -- run isolation -------------------------------------------------------------------------


def test_same_data_id_in_three_runs_each_read_back(repo: Repo) -> None:
    base = repo.open()
    define(base)
    a, b = repo.open(run="A"), repo.open(run="u/me/x")
    base.put({"run": "default"}, "cfg", visit=1, band="r")
    a.put({"run": "A"}, "cfg", visit=1, band="r")
    b.put({"run": "u/me/x"}, "cfg", visit=1, band="r")
    for run in ("default", "A", "u/me/x"):
        assert base.get("cfg", visit=1, band="r", run=run) == {"run": run}
        assert base.exists("cfg", visit=1, band="r", run=run)
    # A Butler's default collections are [its run, "default"]; the default Butler's only "default".
    assert base.get("cfg", visit=1, band="r") == {"run": "default"}
    assert a.get("cfg", visit=1, band="r") == {"run": "A"}
    assert repo.open(run="u/me/x").get("cfg", {"visit": 1, "band": "r"}) == {"run": "u/me/x"}
    assert a.collections == ("A", "default") and base.collections == ("default",)
    # The default run keeps the template's key; the others live under @runs/<run>/
    # ('/' in a run name is '~' in its key segment).
    assert keys(base) == {"cfg/1/r.json", "@runs/A/cfg/1/r.json", "@runs/u~me~x/cfg/1/r.json"}
    assert base.location("cfg", visit=1, band="r").key == "cfg/1/r.json"
    assert a.location("cfg", visit=1, band="r").key == "@runs/A/cfg/1/r.json"
    locs = {loc.run: loc.key for loc in base.stored_locations("cfg", run="u/me/x")}
    assert locs == {"u/me/x": "@runs/u~me~x/cfg/1/r.json"}
    # A data ID only in one run is not found in another.
    a.put({"run": "A"}, "cfg", visit=2, band="r")
    assert not base.exists("cfg", visit=2, band="r")
    with pytest.raises(DatasetNotFoundError, match=r"'visit': 2.*does not exist"):
        base.get("cfg", visit=2, band="r", run="u/me/x")
    with pytest.raises(DatasetNotFoundError, match=r"runs \['B', 'default'\]"):
        base.get("cfg", visit=2, band="r", collections=["B", "default"])


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "a b",
        "/x",
        "x/",
        "x//y",
        "../x",
        "x/../y",
        ".hidden",
        "@runs",
        "~x",
        "u~me",
        "a\\b",
        "a,b",
        "é",
        "x\n",
        "r" * 129,
        3,
        b"A",
    ],
)
def test_invalid_run_names_are_refused(posix: Repo, name: Any) -> None:
    b = posix.opened[0]
    define(b)
    b.put({"v": 1}, "cfg", visit=1, band="r")
    with pytest.raises(InvalidDataIdError, match="invalid run name"):
        posix.open(run=name)
    with pytest.raises(InvalidDataIdError, match=r"invalid (run|collection) name"):
        b.get("cfg", visit=1, band="r", run=name)
    with pytest.raises(InvalidDataIdError, match="invalid collection name"):
        posix.open(collections=[name])
    with pytest.raises(InvalidDataIdError, match="invalid run name"):
        b.remove_run(name)
    with pytest.raises(InvalidDataIdError, match="invalid collection name"):
        b.define_collection(name, ["default"])
    assert keys(b) == {"cfg/1/r.json"}


@pytest.mark.parametrize("name", [".x", "-x", "+x", "=x", "u/.hidden", "u/-x"])
def test_a_refused_run_name_is_told_the_rule_it_breaks(posix: Repo, name: str) -> None:
    """runs.rst, Other runs: names are letters, digits and ``_.-+=``, not starting with one
    of ``.-+=``; anything else is an `InvalidDataIdError` naming the rule. The message gave
    only the characters, all of which ``.x`` uses: it did not say what was wrong."""
    with pytest.raises(InvalidDataIdError) as caught:
        posix.open(run=name)
    assert f"invalid run name {name!r}" in str(caught.value)
    assert "no part starting with '.', '-', '+' or '='" in str(caught.value)


def test_remove_run_of_a_chain_is_refused(posix: Repo) -> None:
    """runs.rst: `Butler.remove_run` removes every dataset of a *run*; never wrong in
    silence. Given a chain's name it returned 0 (a chain holds nothing itself), as if the
    runs it names had nothing left to remove; ``butler rm-run`` refused it, Python did not."""
    b = posix.opened[0]
    define(b)
    posix.open(run="A").put({"v": 1}, "cfg", visit=1, band="r")
    b.define_collection("latest", ["A"])
    with pytest.raises(
        InvalidDataIdError, match=r"'latest' is a collection chain \(A\), not a run"
    ):
        b.remove_run("latest")
    assert b.runs() == {"A": 1} and b.chains == {"latest": ["A"]}


def test_valid_run_names_at_the_limits(posix: Repo) -> None:
    define(posix.opened[0])
    for name in ("r" * 128, "a.b+c=d-e_f", "0/1/2", "default/x"):
        posix.open(run=name).put({"run": name}, "cfg", visit=1, band="r")
    b = posix.open()
    for name in ("r" * 128, "a.b+c=d-e_f", "0/1/2", "default/x"):
        assert b.get("cfg", visit=1, band="r", run=name) == {"run": name}
    assert b.runs() == {"0/1/2": 1, "a.b+c=d-e_f": 1, "default/x": 1, "r" * 128: 1}


def test_create_only_within_a_run_overwrite_only_there(every: Repo) -> None:
    repo = every
    base = repo.open()
    define(base)
    a, b = repo.open(run="A"), repo.open(run="B")
    base.put({"v": "d1"}, "cfg", visit=1, band="r")
    a.put({"v": "a1"}, "cfg", visit=1, band="r")  # another run: no conflict
    b.put({"v": "b1"}, "cfg", visit=1, band="r")
    with pytest.raises(DatasetExistsError, match=r"@runs/A/cfg/1/r.json' already exists"):
        a.put({"v": "a2"}, "cfg", visit=1, band="r")
    with pytest.raises(DatasetExistsError, match="already exists"):
        base.put({"v": "d2"}, "cfg", visit=1, band="r")
    assert base.get("cfg", visit=1, band="r", run="A") == {"v": "a1"}
    a.put({"v": "a2"}, "cfg", visit=1, band="r", overwrite=True)
    assert [base.get("cfg", visit=1, band="r", run=r) for r in ("default", "A", "B")] == [
        {"v": "d1"},
        {"v": "a2"},
        {"v": "b1"},
    ]
    if repo.indexed:
        assert base.runs() == {"A": 1, "B": 1, "default": 1}
        assert base.count("cfg", collections=["A", "B", "default"]) == 1
    assert repo.open(index=False).runs() == {"A": 1, "B": 1, "default": 1}


def test_no_data_id_of_the_default_run_aliases_a_run(posix: Repo) -> None:
    b = posix.opened[0]
    b.register_dataset_type("free", dict, "json", "{top}/{name}.json")
    with pytest.raises(InvalidDataIdError, match="runs area"):
        b.put({"x": 1}, "free", top="@runs", name="x")
    with pytest.raises(InvalidDataIdError, match="runs area"):
        b.get("free", top="@runs", name="x")
    posix.open(run="A").put({"x": 2}, "free", top="t", name="x")
    # The run's dataset is not a default-run dataset named top="@runs"...
    assert list(b.datasets("free")) == []
    assert list(posix.open(index=False).datasets("free")) == []
    assert list(b.datasets("free", run="A")) == [{"top": "t", "name": "x"}]


# -- collections: search order -------------------------------------------------------------


def _fill_search(repo: Repo) -> None:
    """visit 1 in B, A and default; 2 only in A; 3 only in default; 4 only in B; 5 in A
    and default."""
    base = repo.open()
    define(base)
    a, b = repo.open(run="A"), repo.open(run="B")
    for v in (1, 3, 5):
        base.put({"run": "default", "v": v}, "cfg", visit=v, band="r")
    for v in (1, 2, 5):
        a.put({"run": "A", "v": v}, "cfg", visit=v, band="r")
    for v in (1, 4):
        b.put({"run": "B", "v": v}, "cfg", visit=v, band="r")


SEARCHES: list[tuple[list[str], dict[int, str]]] = [
    (["B", "A"], {1: "B", 2: "A", 4: "B", 5: "A"}),
    (["A", "B"], {1: "A", 2: "A", 4: "B", 5: "A"}),
    (["B", "A", "default"], {1: "B", 2: "A", 3: "default", 4: "B", 5: "A"}),
    (["default", "B"], {1: "default", 3: "default", 4: "B", 5: "default"}),
    (["A"], {1: "A", 2: "A", 5: "A"}),
    (["nothing-here", "B"], {1: "B", 4: "B"}),
    ([], {}),
]


def test_search_order_first_match_wins(repo: Repo) -> None:
    """Through the index and by listing (``index=False``): the same answers."""
    _fill_search(repo)
    searches = SEARCHES if repo.kind in LOCAL else SEARCHES[2:3]
    # S3 has no index of its own; S3 with a PostgreSQL index lists as S3 does.
    modes = {"s3": [True], "s3-pg-index": [False]}.get(repo.kind, [False, True])
    for (search, expected), listing in itertools.product(searches, modes):
        b = repo.open(collections=search, index=False) if listing else repo.open(collections=search)
        if not listing:
            assert (b.index is not None) == repo.indexed
        for v in range(1, 7):
            if v in expected:
                assert b.get("cfg", visit=v, band="r") == {"run": expected[v], "v": v}, search
                assert b.exists("cfg", visit=v, band="r")
                assert b.ref("cfg", visit=v, band="r").run == expected[v]
            else:
                assert not b.exists("cfg", visit=v, band="r")
                with pytest.raises(DatasetNotFoundError, match=f"'visit': {v}"):
                    b.get("cfg", visit=v, band="r")
        assert [d["visit"] for d in b.datasets("cfg")] == sorted(expected)
        assert b.count("cfg") == len(expected)
        assert [(loc.data_id["visit"], loc.run) for loc in b.stored_locations("cfg")] == sorted(
            expected.items()
        )
        for loc in b.stored_locations("cfg"):
            assert loc.read() == {"run": loc.run, "v": loc.data_id["visit"]}
        # Queries, ordering and limits select among the first matches.
        selected = {v: r for v, r in expected.items() if v >= 2}
        assert b.count("cfg", "visit >= 2") == len(selected)
        assert [d["visit"] for d in b.datasets("cfg", "visit >= 2", order_by="-visit")] == sorted(
            selected, reverse=True
        )
        first_two = sorted(expected.items(), reverse=True)[:2]
        found = b.stored_locations("cfg", order_by="-visit", limit=2)
        assert [(loc.data_id["visit"], loc.run) for loc in found] == first_two
        # The same search given per call, from a Butler with other collections.
        other = repo.open(run="Z", index=False) if listing else repo.open(run="Z")
        assert other.count("cfg", collections=search) == len(expected)
        assert [d["visit"] for d in other.datasets("cfg", collections=search)] == sorted(expected)
        for v, run in expected.items():
            assert other.get("cfg", visit=v, band="r", collections=search)["run"] == run


def test_run_and_collections_together_are_refused(posix: Repo) -> None:
    _fill_search(posix)
    b = posix.open()
    with pytest.raises(InvalidDataIdError, match="not both"):
        b.get("cfg", visit=1, band="r", run="A", collections=["B"])
    with pytest.raises(InvalidDataIdError, match="not both"):
        b.count("cfg", run="A", collections=["B"])


def test_a_data_id_in_several_runs_is_counted_once(local: Repo) -> None:
    _fill_search(local)
    for b in (local.open(), local.open(index=False)):
        everywhere = ["A", "B", "default"]
        assert b.count("cfg", collections=everywhere) == 5
        assert b.count("cfg", collections=everywhere, visit=1) == 1
        assert list(b.datasets("cfg", collections=everywhere, visit=1)) == [
            {"visit": 1, "band": "r"}
        ]
        # Searching the same run twice changes nothing.
        assert b.count("cfg", collections=["A", "A", "B", "A"]) == 4
        assert sum(b.count("cfg", run=r) for r in everywhere) == 8


# -- named chains ----------------------------------------------------------------------------


def test_chains_nested_searched_and_stored(every: Repo) -> None:
    repo = every
    _fill_search(repo)
    b = repo.open()
    assert b.define_collection("latest", ["B", "A"]) == ["B", "A"]
    assert b.define_collection("all", ["latest", "default"]) == ["B", "A", "default"]
    assert b.define_collection("u/me/all", ["A", "all", "B"]) == ["A", "B", "default"]
    assert b.chains == {
        "latest": ["B", "A"],
        "all": ["latest", "default"],
        "u/me/all": ["A", "all", "B"],
    }
    # Stored in the repository: a new Butler sees them, reads search them in order.
    for listing in (False, True) if repo.kind in LOCAL else (repo.kind == "s3",):
        fresh = (
            repo.open(collections="all", index=False) if listing else repo.open(collections="all")
        )
        assert fresh.chains == b.chains
        assert fresh.collections == ("all",)
        for v, run in {1: "B", 2: "A", 3: "default", 4: "B", 5: "A"}.items():
            assert fresh.get("cfg", visit=v, band="r")["run"] == run
        assert fresh.count("cfg") == 5
        assert fresh.count("cfg", collections="latest") == 4
        assert [(loc.data_id["visit"], loc.run) for loc in fresh.stored_locations("cfg")] == [
            (1, "B"),
            (2, "A"),
            (3, "default"),
            (4, "B"),
            (5, "A"),
        ]
        assert fresh.get("cfg", visit=1, band="r", collections="u/me/all")["run"] == "A"
    # Redefining a chain changes what reads find.
    assert b.define_collection("latest", ["A", "B"]) == ["A", "B"]
    assert repo.open(collections="latest").get("cfg", visit=1, band="r")["run"] == "A"
    # A chain may name a run that has no datasets yet.
    assert b.define_collection("later", ["C", "latest"]) == ["C", "A", "B"]
    repo.open(run="C").put({"run": "C", "v": 1}, "cfg", visit=1, band="r")
    assert b.get("cfg", visit=1, band="r", collections="later")["run"] == "C"


def test_chain_cycles_and_name_clashes_are_refused(local: Repo) -> None:
    repo = local
    _fill_search(repo)
    b = repo.open()
    b.define_collection("x", ["y", "A"])
    b.define_collection("y", ["B"])
    before = b.chains
    with pytest.raises(InvalidDataIdError, match="cycle: y -> x -> y"):
        b.define_collection("y", ["x"])
    with pytest.raises(InvalidDataIdError, match="cycle: z -> z"):
        b.define_collection("z", ["z"])
    assert b.chains == before == repo.open().chains  # nothing stored
    assert b.get("cfg", visit=1, band="r", collections="x")["run"] == "B"
    # A run holding datasets and the default run cannot be chain names.
    for name in ("A", "default"):
        with pytest.raises(InvalidDataIdError, match=f"'{name}' is"):
            b.define_collection(name, ["B"])
    assert "A" not in repo.open().chains
    # A chain is not a run: puts into it are refused, nothing is written.
    before_keys = keys(b)
    with pytest.raises(InvalidDataIdError, match="'x' is a collection chain"):
        repo.open(run="x").put({"run": "x"}, "cfg", visit=9, band="r")
    assert keys(b) == before_keys


def test_remove_collection_forgets_only_the_chain(local: Repo) -> None:
    _fill_search(local)
    b = local.open()
    b.define_collection("latest", ["B", "A"])
    b.define_collection("all", ["latest", "default"])
    b.remove_collection("latest")
    assert b.chains == {"all": ["latest", "default"]} == local.open().chains
    # "all" now searches "latest" as a run (holding nothing): then default.
    assert b.get("cfg", visit=1, band="r", collections="all")["run"] == "default"
    assert b.runs() == {"A": 3, "B": 2, "default": 3}
    with pytest.raises(InvalidDataIdError, match=r"no collection chain named 'latest'.*\['all'\]"):
        b.remove_collection("latest")
    with pytest.raises(InvalidDataIdError, match="no collection chain named 'A'"):
        b.remove_collection("A")


def test_chains_defined_elsewhere_are_seen_changed_ones_are_not(posix: Repo) -> None:
    """runs.rst, Named chains: an open Butler sees a chain defined elsewhere within
    `CHAINS_MAX_AGE` (a name that is not a known chain re-reads the policy), but keeps the
    members it read of a chain changed elsewhere, until a new Butler is opened. The page
    said a chain defined elsewhere was not seen either."""
    define(posix.opened[0])
    for run in ("A", "B"):
        posix.open(run=run).put({"run": run}, "cfg", visit=1, band="r")
    reader, other = posix.open(), posix.open()
    other.define_collection("latest", ["A"])
    time.sleep(CHAINS_MAX_AGE + 0.05)
    assert reader.get("cfg", visit=1, band="r", collections="latest") == {"run": "A"}
    other.define_collection("latest", ["B"])
    time.sleep(CHAINS_MAX_AGE + 0.05)
    assert reader.get("cfg", visit=1, band="r", collections="latest") == {"run": "A"}
    assert posix.open().get("cfg", visit=1, band="r", collections="latest") == {"run": "B"}


def test_a_run_defined_as_chain_by_someone_else_refuses_puts(posix: Repo) -> None:
    define(posix.opened[0])
    writer = posix.open(run="later")  # opened before "later" becomes a chain
    posix.open().define_collection("later", ["default"])
    time.sleep(CHAINS_MAX_AGE + 0.05)  # chains defined elsewhere are seen within this
    with pytest.raises(InvalidDataIdError, match="'later' is a collection chain"):
        writer.put({"run": "later"}, "cfg", visit=1, band="r")
    assert not writer.storage.exists("@runs/later/cfg/1/r.json")


# -- history, runs, remove_run -------------------------------------------------------------


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")


def test_history_oldest_first_across_runs(every: Repo) -> None:
    repo = every
    base = repo.open()
    define(base)
    order = ["z", "default", "a", "m/n"]  # not alphabetical: history is by creation
    values = {run: {"run": run, "pad": "x" * (10 * i)} for i, run in enumerate(order)}
    for run in order:
        repo.open(run=run).put(values[run], "cfg", visit=1, band="r")
    repo.open(run="other").put({"elsewhere": 1}, "cfg", visit=2, band="r")
    for b in (repo.open(), repo.open(index=False)):
        history = b.history("cfg", visit=1, band="r")
        assert [h.run for h in history] == order
        created = [str(h.created) for h in history]
        assert all(ISO.match(c) for c in created), created
        assert created == sorted(created) and len(set(created)) == len(created)
        for h in history:
            key = (
                b.location("cfg", visit=1, band="r").key
                if h.run == "default"
                else (f"@runs/{h.run.replace('/', '~')}/cfg/1/r.json")
            )
            stored = b.storage.read_bytes(key)
            assert h.size == len(stored) == b.storage.size(key)
            assert h.checksum == hashlib.sha256(stored).hexdigest()
            assert h.ref.data_id == {"visit": 1, "band": "r"}
            assert h.ref.dataset_type == "cfg"
            assert h.created == b.ref("cfg", visit=1, band="r", run=h.run).created
            assert b.get(h.ref.dataset_type, h.ref.data_id, run=h.run) == values[h.run]
        assert b.history("cfg", visit=3, band="r") == []
        assert [h.run for h in b.history("cfg", {"visit": 2}, band="r")] == ["other"]


def test_runs_counts(local: Repo) -> None:
    repo = local
    base = repo.open()
    define(base)
    base.register_dataset_type("num", dict, "json", dimensions={"i": int})
    for i in range(3):
        base.put({"i": i}, "num", i=i)
    for run, n in (("A", 2), ("u/B", 4)):
        w = repo.open(run=run)
        for v in range(n):
            w.put({"v": v}, "cfg", visit=v, band="g")
        w.put({"i": 0}, "num", i=0)
    expected = {"A": 3, "default": 3, "u/B": 5}
    assert repo.open().runs() == expected
    assert repo.open(index=False).runs() == expected


def _fill_remove(repo: Repo) -> Butler:
    base = repo.open()
    define(base)
    base.register_dataset_type("num", dict, "json", dimensions={"i": int})
    for run in ("default", "gone/1", "keep"):
        w = repo.open(run=run)
        for v in range(4):
            w.put({"run": run, "v": v}, "cfg", visit=v, band="r")
        w.put({"run": run}, "num", i=7)
    return base


def _check_removed(repo: Repo, b: Butler) -> None:
    for v in range(4):
        assert not b.exists("cfg", visit=v, band="r", run="gone/1")
        for run in ("default", "keep"):
            assert b.get("cfg", visit=v, band="r", run=run) == {"run": run, "v": v}
    assert not b.exists("num", i=7, run="gone/1")
    assert not any(k.startswith("@runs/gone~1/") for k in keys(b))
    assert b.runs() == {"default": 5, "keep": 5}
    assert repo.open(index=False).runs() == {"default": 5, "keep": 5}
    assert b.count("cfg", run="gone/1") == 0 and b.count("num", run="gone/1") == 0
    assert b.history("cfg", visit=1, band="r")[-1].run == "keep"
    assert [h.run for h in b.history("num", i=7)] == ["default", "keep"]
    if b.index is not None:
        for name in ("cfg", "num"):
            rows = list(b.index.entries(b.dataset_type(name)))
            assert {e.run for e in rows} == {"default", "keep"}, name
    report = b.verify()
    assert report.healthy, report
    assert report.checked == 10


def test_remove_run(every: Repo) -> None:
    repo = every
    b = _fill_remove(repo)
    assert b.remove_run("gone/1") == 5
    _check_removed(repo, b)
    assert b.remove_run("gone/1") == 0
    assert b.remove_run("never") == 0


class Interrupted(Exception):
    """Raised by the patched storage.remove (a crash in the middle of remove_run)."""


@pytest.mark.parametrize(
    ("kind", "after"),
    [
        ("posix", 0),
        ("posix", 2),
        ("posix", 4),
        ("sqlite", 3),
        pytest.param("s3", 2, marks=pytest.mark.slow),
    ],
)
def test_remove_run_interrupted_then_resumed(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    after: int,
) -> None:
    with make_repo(request, kind, tmp_path) as repo:
        b = _fill_remove(repo)
        real = b.storage.remove
        calls: list[str] = []

        def remove(key: str) -> None:
            if len(calls) == after:
                raise Interrupted(key)
            calls.append(key)
            real(key)

        monkeypatch.setattr(b.storage, "remove", remove)
        with pytest.raises(Interrupted):
            b.remove_run("gone/1")
        monkeypatch.undo()
        # Never half a dataset: each of the run's datasets reads back whole or is gone.
        reader = repo.open(index=False)
        left = 0
        for v in range(4):
            if reader.exists("cfg", visit=v, band="r", run="gone/1"):
                assert reader.get("cfg", visit=v, band="r", run="gone/1") == {
                    "run": "gone/1",
                    "v": v,
                }
                left += 1
        if reader.exists("num", i=7, run="gone/1"):
            assert reader.get("num", i=7, run="gone/1") == {"run": "gone/1"}
            left += 1
        assert left == 5 - after
        assert len(calls) == after
        # The rerun finishes the job.
        assert repo.open().remove_run("gone/1") == left
        _check_removed(repo, repo.open())


@pytest.mark.parametrize("value", [5, None, {"A": 1}, b"A", 1.5])
def test_collections_that_are_no_names_are_butler_errors(posix: Repo, value: Any) -> None:
    """reliability.rst: every public call raises a `ButlerError`, in the caller's terms.
    ``collections=5`` (constructor or per call) and ``define_collection("c", 5)`` raised
    Python's "'int' object is not iterable"; ``put(inputs=5)`` "Value after * must be an
    iterable"."""
    b = posix.opened[0]
    define(b)
    b.put({"v": 1}, "cfg", visit=1, band="r")
    for call in (
        lambda: posix.open(collections=value),
        lambda: b.get("cfg", visit=1, band="r", collections=value),
        lambda: list(b.datasets("cfg", collections=value)),
    ):
        if value is None:
            continue  # None is the default: [run, "default"]
        with pytest.raises(InvalidDataIdError, match="collections must be a collection name"):
            call()
    with pytest.raises(InvalidDataIdError, match="the members of chain 'c' must be"):
        b.define_collection("c", value)
    assert b.chains == {}
    if isinstance(value, int | float):
        with pytest.raises(DatasetTypeError, match="inputs must be a list of DatasetRef"):
            b.put({"v": 2}, "cfg", visit=2, band="r", inputs=value)
    assert not b.exists("cfg", visit=2, band="r")


def test_runs_keep_policy_version_1_chains_make_it_2(tmp_path: Path) -> None:
    """runs.rst, Old repositories and older butlers: without an index, puts into runs leave
    the policy at version 1 (older butlers still read and write it); defining a chain
    makes it version 2, which older butlers refuse (they would drop the chains). The page
    said chains kept version 1 and were dropped by an older butler's rewrite."""
    root = str(tmp_path / "repo")
    b = Butler.create(root, index="none")
    define(b)
    Butler(root, run="A").put({"v": 1}, "cfg", visit=1, band="r")
    policy = tmp_path / "repo" / "butler.yaml"
    assert yaml.safe_load(policy.read_text())["butler"]["version"] == 1
    b.define_collection("latest", ["A"])
    assert yaml.safe_load(policy.read_text())["butler"]["version"] == 2


def test_a_misspelt_collection_finds_nothing_and_the_error_lists_the_search(
    posix: Repo,
) -> None:
    """runs.rst, Collections: an unknown name is searched as a run that holds nothing; the
    `DatasetNotFoundError` lists the runs searched, in order (chains expanded)."""
    b = posix.opened[0]
    define(b)
    posix.open(run="A").put({"v": 1}, "cfg", visit=1, band="r")
    b.define_collection("latest", ["B", "A"])
    assert not b.exists("cfg", visit=1, band="r", collections=["Ax"])
    assert list(b.datasets("cfg", collections=["Ax"])) == []
    with pytest.raises(
        DatasetNotFoundError, match=r"in runs \['Bx', 'B', 'A', 'Ax'\] \(searched in that order\)"
    ):
        b.get("cfg", visit=2, band="r", collections=["Bx", "latest", "Ax"])
