"""Red-team of the dataset index, queries and runs: defects found by attacking them, each
with its failing-first test, and behaviour that held under attack.

Real SQLite files, real repositories on disk, real processes; nothing under test is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from butler import (
    Butler,
    ButlerError,
    DatasetNotFoundError,
    FormatError,
    InvalidDataIdError,
    StorageError,
)


@pytest.fixture
def root(tmp_path: Path) -> str:
    """A posix repository with the embedded SQLite index and one int dimension."""
    path = str(tmp_path / "repo")
    b = Butler.create(path)
    b.register_dataset_type("c", dict, "json", dimensions={"visit": int})
    b.close()
    return path


def _answers(root: str, **kw: Any) -> tuple[list[Any], list[Any]]:
    """(through the index, by listing) of the same query."""
    with Butler(root) as b, Butler(root, index=False) as listed:
        return list(b.datasets("c", **kw)), list(listed.datasets("c", **kw))


# -- a file whose name parses as a data ID but is not that data ID's key -----------------


@pytest.mark.parametrize("name", ["01.json", "+1.json", "\u0661.json", "0001.json"])
def test_a_key_that_is_not_the_data_ids_key_is_not_that_dataset(root: str, name: str) -> None:
    """``c/01.json``, ``c/+1.json`` or ``c/\u0661.json`` (an Arabic-Indic one) parse as
    visit=1 with the template ``c/{visit:d}.json``, but visit=1 is stored under
    ``c/1.json``: queries (listed or reindexed) must not answer a data ID that `get` cannot
    read, and ``remove_run`` must not delete a file that is no dataset."""
    with Butler(root) as b:
        b.put({"v": 2}, "c", visit=2)
    shutil.copy(f"{root}/c/2.json", f"{root}/c/{name}")
    listed = Butler(root, index=False)
    assert list(listed.datasets("c")) == [{"visit": 2}]
    with pytest.raises(DatasetNotFoundError):
        listed.get("c", visit=1)
    with Butler(root) as b:
        b.reindex()
        assert list(b.datasets("c")) == [{"visit": 2}]
        assert b.history("c", visit=1) == []
        assert b.remove_run("default") == 1
    assert os.path.exists(f"{root}/c/{name}")  # not butler's: left alone


# -- collection chains: expansion cost ---------------------------------------------------


def _write_chains(root: str, chains: dict[str, list[str]]) -> None:
    """Chains written straight into the policy, as anyone who can write the repository can."""
    with open(f"{root}/butler.yaml") as f:
        policy = yaml.safe_load(f)
    policy["collections"] = chains
    with open(f"{root}/butler.yaml", "w") as f:
        yaml.safe_dump(policy, f)


@pytest.mark.timeout(20)
def test_chains_sharing_members_expand_in_linear_time(root: str) -> None:
    """``c0 = [c1, c1]``, ``c1 = [c2, c2]``, ...: each chain was expanded again at every
    path reaching it, 2**depth visits (here 2**40: never returns). Define them through the
    API (each definition expands its chain) and read through the top one."""
    with Butler(root, run="r") as b:
        b.put({}, "c", visit=1)
        b.define_collection("c40", ["r"])
        for i in range(39, -1, -1):
            assert b.define_collection(f"c{i}", [f"c{i + 1}", f"c{i + 1}"]) == ["r"]
        assert list(b.datasets("c", collections="c0")) == [{"visit": 1}]
    # A policy with 1,000 members per chain (the most it accepts): 10**9 paths.
    _write_chains(root, {"a": ["b"] * 1000, "b": ["c"] * 1000, "c": ["r", "d"] * 500, "d": ["r"]})
    with Butler(root, collections="a") as b:
        assert b.get("c", visit=1) == {}


def test_a_deep_chain_in_the_policy_is_no_recursion_error(root: str) -> None:
    """A policy with chains 1,500 deep: expanding them recursed once per level
    (RecursionError, no ButlerError). Deep chains are valid: they expand."""
    with Butler(root, run="r") as b:
        b.put({}, "c", visit=1)
    chains = {f"c{i}": [f"c{i + 1}"] for i in range(1500)}
    chains["c1500"] = ["r"]
    _write_chains(root, chains)
    with Butler(root, collections="c0") as b:
        assert list(b.datasets("c")) == [{"visit": 1}]
    chains["c1500"] = ["c0"]  # and a cycle that deep is the usual error
    _write_chains(root, chains)
    with Butler(root) as b, pytest.raises(ButlerError, match="cycle"):
        b.count("c", collections="c17")


# -- hostile metadata: the creation time ----------------------------------------------------


def _set_metadata(path: str, **fields: Any) -> None:
    """Rewrite fields of a posix dataset's metadata (its ``user.butler`` attribute)."""
    meta = json.loads(os.getxattr(path, "user.butler"))
    meta.update(fields)
    os.setxattr(path, "user.butler", json.dumps(meta).encode())


@pytest.mark.parametrize("created", [1e300, 1e18, 2**70, 10**400, -(10**400)])
def test_an_out_of_range_creation_time_is_no_crash(root: str, created: Any) -> None:
    """The metadata's ``created`` is a number far beyond any date (and the provenance has
    none): ``ref``, ``provenance``, ``history`` and ``reindex`` raised OverflowError or
    OSError. Such a time is unknown (``None``), as a missing one is."""
    with Butler(root) as b:
        b.put({}, "c", visit=1)
        path = f"{root}/c/1.json"
        meta = json.loads(os.getxattr(path, "user.butler"))
        del meta["provenance"]["created"]
        _set_metadata(path, created=created, provenance=meta["provenance"])
        assert b.ref("c", visit=1).created is None
        assert b.provenance("c", visit=1).ref.created is None
        with b.recording() as refs:
            assert b.get("c", visit=1) == {}
        assert refs[0].created is None
        assert b.reindex().indexed == 1
        assert [v.created for v in b.history("c", visit=1)] == [None]
    with Butler(root, index=False) as listed:
        assert [v.created for v in listed.history("c", visit=1)] == [None]


# -- a hostile index file ---------------------------------------------------------------


def _index_table(root: str) -> tuple[sqlite3.Connection, str]:
    conn = sqlite3.connect(f"{root}/.butler/index.sqlite3", isolation_level=None)
    (table,) = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'bidx_%'"
    ).fetchone()
    return conn, table


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("_size", "abc"),
        ("_size", 1.5),
        ("_created", "abc"),
        ("_created", b"\x00"),
        ("_checksum", b"\x01"),
        ("_format", b"json"),
    ],
)
def test_index_rows_with_values_of_the_wrong_type_are_format_errors(
    root: str, column: str, value: Any
) -> None:
    """A row whose size or time is text (SQLite keeps what it is given): ``history`` and
    ``verify`` raised ValueError; ``verify`` is the tool that should find it. Now the row is
    corrupt like one with a mistyped dimension: history raises `FormatError`, verify reports
    it, reindex repairs it."""
    with Butler(root) as b:
        b.put({}, "c", visit=1)
    conn, table = _index_table(root)
    conn.execute(f'UPDATE "{table}" SET "{column}" = ?', (value,))
    conn.close()
    with Butler(root) as b:
        with pytest.raises(FormatError, match=f"column '{column}'"):
            b.history("c", visit=1)
        report = b.verify()
        assert not report.healthy
        assert len(report.stale) == 1 and "unreadable" in report.stale[0]
        b.reindex()
        assert b.verify().healthy
        assert [v.size for v in b.history("c", visit=1)] == [2]


def test_a_missing_column_is_an_error_never_a_string(root: str) -> None:
    """SQLite reads a double-quoted identifier that names no column as a string literal:
    with ``d_visit`` renamed in a crafted index, ``"d_visit" = 1`` compared the text
    'd_visit' with 1, and a query answered nothing, silently. Identifiers are now quoted
    so that SQLite never takes them for strings: the query fails with a `StorageError`."""
    with Butler(root) as b:
        b.put({}, "c", visit=1)
    conn, table = _index_table(root)
    conn.execute(f'ALTER TABLE "{table}" RENAME COLUMN "d_visit" TO "x"')
    conn.close()
    with Butler(root) as b:
        with pytest.raises(StorageError, match="d_visit"):
            list(b.datasets("c", visit=1))
        with pytest.raises(StorageError, match="d_visit"):
            b.count("c", "visit > 0")


def test_tables_of_an_older_layout_are_not_counted(root: str) -> None:
    """An index written by a butler of layout 1 (no ``_run`` column) and then used by this
    one keeps the old table in its catalog: ``runs()`` answered ``{'_run': 1, 'default':
    1}`` (the missing column read as the string '_run') and ``counts()`` (``butler info``)
    2 for one dataset. Only tables of the current layout count."""
    with Butler(root) as b:
        b.put({}, "c", visit=1)
        repository = b.policy.id
    conn, _table = _index_table(root)
    old = "bidx_" + "0" * 20  # the old table: its rows, without the columns runs added
    conn.execute(f'CREATE TABLE "{old}" ("_id" TEXT PRIMARY KEY, "_key" TEXT, "d_visit" INT)')
    conn.execute(f"INSERT INTO \"{old}\" VALUES ('x', 'c/1.json', 1)")
    conn.execute(
        "INSERT INTO butler_index_catalog (repository, dataset_type, table_name, dimensions,"
        " schema_version) VALUES (?, 'c', ?, '{\"visit\": \"int\"}', 1)",
        (repository, old),
    )
    conn.close()
    with Butler(root) as b:
        assert b.runs() == {"default": 1}
        assert b.index is not None and b.index.counts() == {"c": 1}
        assert list(b.datasets("c")) == [{"visit": 1}]


# -- reindex of a hostile repository ------------------------------------------------------


def test_one_file_the_index_cannot_hold_does_not_stop_reindex(root: str) -> None:
    """A file planted as ``c/99999999999999999999.json`` (visit beyond 64 bits: a put
    with an index refuses it) made reindex raise at its batch: the batch's other rows, the
    dataset types after it and the dropping of stale rows were never done, however often
    reindex ran. Now everything else is indexed, then a `StorageError` names the file."""
    with Butler(root) as b:
        b.register_dataset_type("d", dict, "json", dimensions={"visit": int})
        b.put({}, "c", visit=1)
        b.put({}, "d", visit=1)
    os.remove(f"{root}/.butler/index.sqlite3")
    shutil.copy(f"{root}/c/1.json", f"{root}/c/99999999999999999999.json")
    with Butler(root) as b:
        with pytest.raises(StorageError, match=r"64 bits.*c/99999999999999999999\.json"):
            b.reindex()
        assert list(b.datasets("c")) == [{"visit": 1}]
        assert list(b.datasets("d")) == [{"visit": 1}]
        report = b.verify()
        assert report.unindexed == [
            f"dataset 'c' {{'visit': 99999999999999999999}} at "
            f"'{root}/c/99999999999999999999.json': stored, but not indexed"
        ]


# -- held: attacks that found nothing ---------------------------------------------------------


def test_held_wildcards_quotes_and_unicode_are_values_with_and_without_index(
    tmp_path: Path,
) -> None:
    """``%``, ``_``, ``*``, quotes, SQL text, combining accents and case are plain values:
    equal answers through the index and by listing, in the same order."""
    path = str(tmp_path / "repo")
    bands = ["%", "_", "*", "a%b", "O'B", 'x"y', "1; DROP TABLE x", "é", "e\u0301", "G", "g"]
    with Butler.create(path) as b:
        b.register_dataset_type("c", dict, "json", dimensions={"band": str, "visit": int})
        for i, band in enumerate(bands):
            b.put({}, "c", band=band, visit=i)
    queries: list[dict[str, Any]] = [
        {"where": "band = '%'"},
        {"where": "band in ('_', '*')"},
        {"where": "band = 'O''B' or band = \"x\"\"y\""},
        {"where": "band >= 'a' and not band = 'g'", "order_by": "-band"},
        {"band": "e\u0301"},
        {"band": ["G"], "limit": 1},
        {"where": "band < 'a'", "order_by": "-visit", "limit": 3},
    ]
    with Butler(path) as indexed, Butler(path, index=False) as listed:
        for q in queries:
            assert list(indexed.datasets("c", **q)) == list(listed.datasets("c", **q)), q
        assert [d["band"] for d in indexed.datasets("c", band="%")] == ["%"]
        assert [d["band"] for d in indexed.datasets("c", band="e\u0301")] == ["e\u0301"]


def test_held_several_runs_limit_and_order_agree_with_listing(root: str) -> None:
    """A data ID in several runs comes once, from the first run searched, with limit and
    descending order applied after that choice; index and listing agree."""
    for run, visits in (("A", [1, 2, 3]), ("B", [2, 3, 4]), ("default", [0, 4])):
        with Butler(root, run=run) as b:
            for v in visits:
                b.put({"run": run}, "c", visit=v)
    with Butler(root, collections=["B", "A", "default"]) as b:
        got = list(b.stored_locations("c", order_by="-visit", limit=4))
        assert [(loc.data_id["visit"], loc.run) for loc in got] == [
            (4, "B"),
            (3, "B"),
            (2, "B"),
            (1, "A"),
        ]
        assert b.count("c") == 5
    kw: dict[str, Any] = {"collections": ["A", "B"], "order_by": "-visit", "limit": 2}
    assert _answers(root, **kw) == ([{"visit": 4}, {"visit": 3}],) * 2


@pytest.mark.parametrize("text", ["\u0661", "\uff11", "1\u0660", "\u0967"])
def test_a_non_ascii_digit_is_no_integer(root: str, text: str) -> None:
    """``int()`` reads any Unicode decimal digit: ``visit="\u0661"`` (an Arabic-Indic 1)
    was taken as visit=1 by put, get and ``--id``, while the query language refuses it.
    Only ASCII digits make an integer from text."""
    with Butler(root) as b:
        b.put({}, "c", visit=1)
        with pytest.raises(InvalidDataIdError, match="must be an integer"):
            b.get("c", visit=text)
        with pytest.raises(InvalidDataIdError, match="must be an integer"):
            b.put({}, "c", visit=text)
        assert b.get("c", visit=" 1") == {}  # ASCII text around spaces still reads


def _index_file(root: str) -> Path:
    return Path(root) / ".butler" / "index.sqlite3"


def test_a_new_repositorys_index_is_trusted(root: str) -> None:
    with Butler(root) as b:
        b.put({}, "c", visit=1)
        assert b._query_index() is b.index is not None
        assert b.index.state() == "complete"


def test_an_index_from_before_states_with_tables_stays_trusted(root: str) -> None:
    """An index written before the state row existed (tables, no state): trusted as it
    always was, and recorded so."""
    with Butler(root) as b:
        b.put({}, "c", visit=1)
    conn = sqlite3.connect(_index_file(root))
    conn.execute("DELETE FROM butler_index_catalog WHERE table_name = ''")
    conn.commit()
    conn.close()
    with Butler(root) as b:
        assert b._query_index() is not None and b.count("c") == 1
        assert b.index is not None and b.index.state() == "complete"


def test_an_interrupted_reindex_leaves_queries_listing(root: str) -> None:
    """A reindex cut short leaves a partial index: recorded incomplete until a reindex
    finishes, queries list the storage meanwhile (right answers, never the partial
    ones)."""
    with Butler(root) as b:
        b.put({}, "c", visit=0)
        assert b.index is not None and b.index.state() == "complete"
    with Butler(root, index=False) as b:  # stored, not indexed: reindex has work
        for visit in range(1, 5):
            b.put({}, "c", visit=visit)

    def stop(_name: str, _done: int, _total: int) -> None:
        raise KeyboardInterrupt

    with Butler(root) as b, pytest.raises(KeyboardInterrupt):
        b.reindex(progress=stop)
    with Butler(root) as b:
        assert b._query_index() is None
        assert b.count("c") == 5 and len(list(b.datasets("c"))) == 5
        b.reindex()
        assert b._query_index() is not None and b.count("c") == 5
    with Butler(root) as b:
        assert b._query_index() is not None and b.count("c") == 5
