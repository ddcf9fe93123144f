"""The dataset index under concurrent writers (issue 15), on one posix repository.

* 8 threads (one shared Butler) and 4 processes (a Butler each) putting distinct data IDs:
  every dataset indexed exactly once (count, verify, and the SQLite table read directly);
* 4 processes putting the *same* data IDs create-only: one winner per data ID, whose value
  is stored, and one row each.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from butler import Butler, DatasetExistsError

pytestmark = pytest.mark.reliability

THREADS = 8
PROCESSES = 4
PER_WORKER = 12
SHARED = 16  # data IDs every process races for


def _define(b: Butler) -> None:
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})


def _rows(root: str) -> list[tuple[Any, ...]]:
    """(_id, _key, visit, band) of every index row, read with sqlite3 behind butler's back."""
    db = sqlite3.connect(os.path.join(root, ".butler", "index.sqlite3"))
    try:
        tables = db.execute(
            "SELECT table_name FROM butler_index_catalog WHERE dataset_type = 'cfg'"
        ).fetchall()
        assert len(tables) == 1, tables
        return db.execute(f'SELECT _id, _key, d_visit, d_band FROM "{tables[0][0]}"').fetchall()
    finally:
        db.close()


def _check(root: str, expected: set[tuple[int, str]]) -> None:
    """Every expected dataset has exactly one row; nothing else is indexed."""
    rows = _rows(root)
    assert len(rows) == len(expected), f"{len(rows)} rows for {len(expected)} datasets"
    assert len({r[0] for r in rows}) == len(rows), "duplicate row ids"
    assert {(r[2], r[3]) for r in rows} == expected
    with Butler(root) as b:
        assert b.index is not None
        assert b.count("cfg") == len(expected)
        assert {(d["visit"], d["band"]) for d in b.datasets("cfg")} == expected
        for _id, key, visit, band in rows:
            assert b.location("cfg", visit=visit, band=band).key == key
        report = b.verify()
        assert report.healthy, report
        assert report.checked == len(expected)
        with Butler(root, index=False) as listing:
            assert list(listing.datasets("cfg")) == list(b.datasets("cfg"))


def _band(i: int) -> str:
    return ("r", "g", "é", "z-1")[i % 4]


def test_threads_distinct(tmp_path: Path) -> None:
    root = str(tmp_path / "repo")
    with Butler.create(root) as b:
        _define(b)
    b = Butler(root)  # one Butler shared by every thread (a connection per thread)
    barrier = threading.Barrier(THREADS)

    def work(t: int) -> list[tuple[int, str]]:
        barrier.wait()
        done = []
        for i in range(PER_WORKER):
            visit = -(t * 100 + i) if t % 2 else t * 100 + i
            b.put({"t": t, "i": i}, "cfg", visit=visit, band=_band(i))
            done.append((visit, _band(i)))
            # Queries run between other threads' puts.
            assert b.count("cfg", visit=visit) == 1
        return done

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(work, range(THREADS)))
    finally:
        b.close()
    expected = {d for done in results for d in done}
    assert len(expected) == THREADS * PER_WORKER
    _check(root, expected)


def put_distinct(root: str, worker: int, barrier: Any) -> list[tuple[int, str]]:
    """Worker process: its own Butler, distinct data IDs (negative for odd workers)."""
    done = []
    with Butler(root) as b:
        barrier.wait()
        for i in range(PER_WORKER):
            visit = -(worker * 100 + i) if worker % 2 else worker * 100 + i
            b.put({"w": worker, "i": i}, "cfg", visit=visit, band=_band(i))
            done.append((visit, _band(i)))
    return done


def put_same(root: str, worker: int, barrier: Any) -> list[str]:
    """Worker process: race every other worker for the same data IDs, create-only."""
    outcomes = []
    with Butler(root) as b:
        for visit in range(SHARED):
            barrier.wait()
            try:
                b.put({"winner": worker}, "cfg", visit=visit, band="r")
                outcomes.append("won")
            except DatasetExistsError as exc:
                assert f"'visit': {visit}" in str(exc) and "already exists" in str(exc)
                outcomes.append("exists")
    return outcomes


def _report(target: Any, root: str, worker: int, barrier: Any, results: Any) -> None:
    """Run one worker in a child process; put (worker, outcome or error text) on ``results``."""
    try:
        results.put((worker, target(root, worker, barrier)))
    except BaseException as exc:
        barrier.abort()  # the others stop waiting for this one
        results.put((worker, f"failed: {exc!r}"))


def _run(target: Any, root: str) -> list[Any]:
    """``target(root, worker, barrier)`` in `PROCESSES` spawned processes; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES, timeout=120)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_report, args=(target, root, w, barrier, results))
        for w in range(PROCESSES)
    ]
    for p in processes:
        p.start()
    found = dict(results.get(timeout=300) for _ in processes)
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0, p
    assert all(not isinstance(r, str) for r in found.values()), found
    return [found[w] for w in range(PROCESSES)]


def test_processes_distinct(tmp_path: Path) -> None:
    root = str(tmp_path / "repo")
    with Butler.create(root) as b:
        _define(b)
    results = _run(put_distinct, root)
    expected = {d for done in results for d in done}
    assert len(expected) == PROCESSES * PER_WORKER
    _check(root, expected)


def test_processes_same_data_ids_create_only(tmp_path: Path) -> None:
    root = str(tmp_path / "repo")
    with Butler.create(root) as b:
        _define(b)
    results = _run(put_same, root)
    winners = {}
    for visit in range(SHARED):
        outcomes = [res[visit] for res in results]
        assert outcomes.count("won") == 1, (visit, outcomes)
        winners[visit] = outcomes.index("won")
    _check(root, {(v, "r") for v in range(SHARED)})
    with Butler(root) as b:
        for visit, worker in winners.items():
            assert b.get("cfg", visit=visit, band="r") == {"winner": worker}
