"""Concurrency: 8 threads and 4 processes putting and getting on every storage.

* distinct data IDs: nothing lost, nothing corrupt (every value read back and compared);
* one data ID created concurrently without ``overwrite``: exactly one winner per round,
  `DatasetExistsError` (naming the dataset) for every other writer, and the stored value is
  the winner's;
* readers during overwrites see a complete old or new generation, never a mix (S3 readers
  may instead get a `StorageError` "changed while being read", never mixed bytes; they retry).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from butler import Butler, DatasetExistsError, StorageError

from .helpers import Repo, check_array, db_counts, make_array, process_worker, s3_objects

pytestmark = pytest.mark.reliability

THREADS = 8
PROCESSES = 4
PER_THREAD = 10
ROUNDS = 5
SMALL = 2**18  # elements of the overwrite arrays (1 MiB and up: several DB chunks)


def _define(b: Butler) -> None:
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("race", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("snap", np.ndarray, "npy", dimensions={"visit": int})


def _check_final(repo: Repo, b: Butler, distinct: list[int], rounds: int) -> None:
    assert sorted(d["visit"] for d in b.datasets("cfg")) == sorted(distinct)
    assert sorted(d["visit"] for d in b.datasets("race")) == list(range(rounds))
    report = b.verify()
    assert report.healthy, report
    expected = len(distinct) + rounds + 1
    assert report.checked == expected
    if repo.is_database:
        counts = db_counts(repo)
        assert counts["datasets"] == expected and counts["orphans"] == 0, counts
    elif repo.kind == "s3":
        assert len(s3_objects(repo)) == expected + 1  # + butler.yaml


def test_threads(storage_root: Repo) -> None:
    with storage_root.create(checksum=True) as b:
        _define(b)
    b = storage_root.open()  # one Butler shared by every thread
    barrier = threading.Barrier(THREADS)
    b.put(make_array(0, SMALL), "snap", visit=0)

    def work(t: int) -> dict[str, Any]:
        seen: dict[str, Any] = {"distinct": [], "races": [], "reads": 0, "retries": 0}
        for i in range(PER_THREAD):
            visit = t * 100 + i
            value = {"thread": t, "i": i, "pad": "x" * (t * 1000 + i)}
            b.put(value, "cfg", visit=visit)
            seen["distinct"].append(visit)
        for i in range(PER_THREAD):
            got = b.get("cfg", visit=t * 100 + i)
            assert got == {"thread": t, "i": i, "pad": "x" * (t * 1000 + i)}
        for r in range(ROUNDS):
            barrier.wait()
            try:
                b.put({"winner": t, "round": r}, "race", visit=r)
                seen["races"].append((r, t))
            except DatasetExistsError as exc:
                assert f"dataset 'race' {{'visit': {r}}}" in str(exc)
                assert "already exists" in str(exc)
        barrier.wait()
        if t == 0:  # one overwriter, seven readers
            for gen in range(1, 16):
                b.put(make_array(gen, SMALL), "snap", visit=0, overwrite=True)
        else:
            last = 0
            while last < 15:
                try:
                    gen = check_array(b.get("snap", visit=0), SMALL)
                except StorageError as exc:
                    assert storage_root.kind == "s3", exc
                    assert "changed while being read" in str(exc)
                    seen["retries"] += 1
                    continue
                assert gen >= last, f"went back from generation {last} to {gen}"
                last = gen
                seen["reads"] += 1
        return seen

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(work, range(THREADS)))

    winners = {}
    for seen in results:
        for r, t in seen["races"]:
            assert r not in winners, f"round {r} has two winners"
            winners[r] = t
    assert sorted(winners) == list(range(ROUNDS))
    for r, t in winners.items():
        assert b.get("race", visit=r) == {"winner": t, "round": r}
    distinct = [v for seen in results for v in seen["distinct"]]
    assert len(distinct) == THREADS * PER_THREAD
    assert check_array(b.get("snap", visit=0), SMALL) == 15
    _check_final(storage_root, b, distinct, ROUNDS)
    reads = sum(s["reads"] for s in results)
    retries = sum(s["retries"] for s in results)
    print(f"{storage_root.kind}: {THREADS} threads, {reads} reads, {retries} retries")
    b.close()


def test_processes(shared_root: Repo) -> None:
    with shared_root.create(checksum=True) as b:
        _define(b)
        b.put(make_array(0, SMALL), "snap", visit=0)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            results = pool.starmap(
                process_worker,
                [
                    (shared_root.kind, shared_root.root, shared_root.options, w, barrier, ROUNDS)
                    for w in range(PROCESSES)
                ],
            )
    for r in range(ROUNDS):
        outcomes = [res["races"][r] for res in results]
        assert outcomes.count("won") == 1, (r, outcomes)
        assert outcomes.count("exists") == PROCESSES - 1, (r, outcomes)
    with shared_root.open() as b:
        for r in range(ROUNDS):
            winner = next(res["worker"] for res in results if res["races"][r] == "won")
            assert b.get("race", visit=r) == {"winner": winner, "round": r}
        distinct = [v for res in results for v in res["distinct"]]
        for res in results:
            for i, visit in enumerate(res["distinct"]):
                w = res["worker"]
                assert b.get("cfg", visit=visit) == {
                    "worker": w,
                    "i": i,
                    "pad": "p" * (w * 100 + i),
                }
        assert check_array(b.get("snap", visit=0), 2**18) == 12
        _check_final(shared_root, b, distinct, ROUNDS)
    reads = sum(res["reads"] for res in results)
    print(f"{shared_root.kind}: {PROCESSES} processes, {reads} reads during overwrites")
