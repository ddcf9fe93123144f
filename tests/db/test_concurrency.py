"""Several processes on one database: no lost datasets, one winner, no partial datasets."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

from butler import Butler

from ._helpers import count_rows, race_create, write_many

HERE = os.path.dirname(os.path.abspath(__file__))


def _repo(root: str) -> None:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("blob", bytes, "pickle", dimensions={"visit": int})
    b.close()


def test_four_writer_processes_lose_nothing(db_root: str) -> None:
    _repo(db_root)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(write_many, [(db_root, w, 15) for w in range(4)])
    expected = sorted(v for r in results for v in r)
    assert len(expected) == 60
    with Butler(db_root) as b:
        assert sorted(d["visit"] for d in b.datasets("cfg")) == expected
        for visit in expected:
            got = b.get("cfg", visit=visit)
            assert got["worker"] * 1000 + got["i"] == visit and len(got["pad"]) == 5000
        assert b.verify().healthy
    assert count_rows(db_root, "butler_chunks") == 60


def test_racing_creators_one_winner(db_root: str) -> None:
    _repo(db_root)
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0  # after every spawned interpreter has imported butler
    with ctx.Pool(4) as pool:
        outcomes = pool.starmap(race_create, [(db_root, w, start_at) for w in range(4)])
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1, outcomes
    losers = [o for o in outcomes if o.startswith("exists")]
    assert len(losers) == 3, outcomes
    assert all("already exists; pass overwrite=True" in o for o in losers)
    with Butler(db_root) as b:
        assert b.get("cfg", visit=1)["worker"] == int(winners[0].split()[1])
    assert count_rows(db_root, "butler_datasets") == 1
    assert count_rows(db_root, "butler_chunks") == 1


def test_killed_writer_leaves_no_partial_dataset(db_root: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _repo(db_root)
    ready = tmp_path / "ready"
    code = (
        f"import sys; sys.path.insert(0, {HERE!r}); from _helpers import slow_put; "
        f"slow_put({db_root!r}, {str(ready)!r})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, "writer died early"
            assert time.monotonic() < deadline, "writer never got going"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    # The server (or SQLite's WAL recovery) rolls the open transaction back.
    deadline = time.monotonic() + 30
    while count_rows(db_root, "butler_chunks") and time.monotonic() < deadline:
        time.sleep(0.2)  # the server may notice the dead connection a moment later
    with Butler(db_root) as b:
        assert not b.exists("blob", visit=7)
        assert list(b.datasets("blob")) == []
        b.put(b"fine", "blob", visit=7)  # the lock is gone: writers proceed
        assert b.get("blob", visit=7, allow_pickle=True) == b"fine"
    assert count_rows(db_root, "butler_chunks") == 1


def test_readers_see_old_or_new_during_overwrites(db_root: str) -> None:
    from butler_db import DatabaseStorage

    storage = DatabaseStorage(db_root, chunk_size=1000)
    storage.initialize()
    old, new = b"a" * 5500, b"b" * 4500
    storage.write_bytes("k", old)
    reader = storage.open("k")
    first = reader.read(1500)  # a snapshot is held from here on
    storage.write_bytes("k", new)  # replaces every chunk
    rest = reader.read()
    reader.close()
    assert first + rest == old
    assert storage.read_bytes("k") == new
    storage.close()
