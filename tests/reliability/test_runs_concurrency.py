"""Runs under concurrency (issue 16), with real processes on shared storages.

* two processes writing the same data ID into different runs, round after round: both
  always succeed, each run holds its own value;
* four processes writing the same data ID into the same run: exactly one winner per round;
* a reader searching the chain [B, A] while run B is being written: every value it sees is
  A's or B's complete object, and once B's is seen it stays (posix and S3);
* four processes each defining a different chain at once: all four are kept.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler, DatasetExistsError

from .conftest import make_repo
from .helpers import Repo

pytestmark = pytest.mark.reliability

ROUNDS = 10
#: Fewer on S3: each round is a few moto round trips per writer.
S3_ROUNDS = 4
ELEMENTS = 64 * 1024  # int32: 256 KiB per dataset


def _define(b: Butler) -> None:
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("img", np.ndarray, "npy", dimensions={"visit": int})


def _image(run: str, visit: int) -> np.ndarray:
    """A dataset whose every element says which run and visit wrote it."""
    return np.full(ELEMENTS, (1000 if run == "B" else 2000) + visit, dtype=np.int32)


# -- worker processes (importable for spawn) -------------------------------------------------


def rounds(repo: Repo) -> int:
    return S3_ROUNDS if repo.kind == "s3" else ROUNDS


def put_rounds(repo: Repo, run: str, worker: int, barrier: Any) -> list[str]:
    """Put visit ``r`` into ``run`` in every round, all workers starting together."""
    outcomes = []
    with repo.open(run=run) as b:
        for r in range(rounds(repo)):
            barrier.wait()
            try:
                b.put({"run": run, "worker": worker, "round": r}, "cfg", visit=r)
                outcomes.append("won")
            except DatasetExistsError as exc:
                assert f"'visit': {r}" in str(exc) and "already exists" in str(exc), exc
                outcomes.append("exists")
    return outcomes


def define_chain(repo: Repo, run: str, worker: int, barrier: Any) -> list[str]:
    with repo.open() as b:
        barrier.wait()
        return b.define_collection(f"chain{worker}", [f"r{worker}", "default"])


def write_run_b(repo: Repo, visits: int, barrier: Any) -> None:
    with repo.open(run="B") as b:
        barrier.wait()
        for v in range(visits):
            b.put(_image("B", v), "img", visit=v)
            time.sleep(0.01)


def _report(target: Any, repo: Repo, run: str, worker: int, barrier: Any, results: Any) -> None:
    try:
        results.put((worker, target(repo, run, worker, barrier)))
    except BaseException as exc:
        barrier.abort()
        results.put((worker, f"failed: {exc!r}"))


def _run(target: Any, repo: Repo, runs: list[str]) -> list[Any]:
    """``target(repo, runs[w], w, barrier)`` in one spawned process per run; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(runs), timeout=120)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=_report, args=(target, repo, run, w, barrier, results))
        for w, run in enumerate(runs)
    ]
    for p in processes:
        p.start()
    found = dict(results.get(timeout=300) for _ in processes)
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0, p
    assert all(not isinstance(r, str) for r in found.values()), found
    return [found[w] for w in range(len(runs))]


@pytest.fixture(params=["posix", "s3"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    yield from make_repo(request, request.param, tmp_path)


# -- tests ------------------------------------------------------------------------------------


def test_same_data_id_into_two_runs_both_succeed(shared: Repo) -> None:
    with shared.create() as b:
        _define(b)
    n = rounds(shared)
    results = _run(put_rounds, shared, ["A", "u/me/B"])
    assert results == [["won"] * n] * 2
    with shared.open() as b:
        assert b.runs() == {"A": n, "u/me/B": n}
        for r in range(n):
            assert b.get("cfg", visit=r, run="A") == {"run": "A", "worker": 0, "round": r}
            assert b.get("cfg", visit=r, run="u/me/B") == {
                "run": "u/me/B",
                "worker": 1,
                "round": r,
            }
        assert b.verify().healthy


def test_four_writers_into_one_run_one_winner_per_round(shared: Repo) -> None:
    with shared.create() as b:
        _define(b)
    n = rounds(shared)
    results = _run(put_rounds, shared, ["A"] * 4)
    with shared.open() as b:
        for r in range(n):
            outcomes = [res[r] for res in results]
            assert outcomes.count("won") == 1, (r, outcomes)
            winner = outcomes.index("won")
            assert b.get("cfg", visit=r, run="A") == {"run": "A", "worker": winner, "round": r}
        assert b.runs() == {"A": n}
        assert b.count("cfg", run="A") == n
        assert b.verify().healthy


def test_reader_through_a_chain_never_sees_a_partial_dataset(shared: Repo) -> None:
    visits = 12
    with shared.create() as b:
        _define(b)
        a = shared.open(run="A")
        for v in range(visits):
            a.put(_image("A", v), "img", visit=v)
        a.close()
        b.define_collection("latest", ["B", "A"])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=120)
    writer = ctx.Process(target=write_run_b, args=(shared, visits, barrier))
    writer.start()
    seen_b: set[int] = set()
    reads = 0
    try:
        with shared.open(collections="latest") as reader:
            barrier.wait()
            while True:
                done = not writer.is_alive()
                for v in range(visits):
                    got = reader.get("img", visit=v)
                    reads += 1
                    assert got.shape == (ELEMENTS,) and got.dtype == np.int32
                    value = int(got[0])
                    assert value in (1000 + v, 2000 + v), (v, value)
                    assert (got == value).all(), f"visit {v}: mixed values"
                    if value == 1000 + v:
                        seen_b.add(v)
                    else:  # once B's dataset is visible it stays the first match
                        assert v not in seen_b, f"visit {v}: B's dataset seen, then A's"
                if done:
                    break
    finally:
        writer.join(timeout=120)
    assert writer.exitcode == 0
    assert seen_b == set(range(visits))
    assert reads >= 2 * visits
    with shared.open(collections="latest") as b:
        assert [loc.run for loc in b.stored_locations("img")] == ["B"] * visits
        assert b.count("img", run="A") == visits


def test_chains_defined_concurrently_are_all_kept(shared: Repo) -> None:
    with shared.create() as b:
        _define(b)
    results = _run(define_chain, shared, [""] * 4)
    assert results == [[f"r{w}", "default"] for w in range(4)]
    with shared.open() as b:
        assert b.chains == {f"chain{w}": [f"r{w}", "default"] for w in range(4)}
        assert set(b.dataset_types) == {"cfg", "img"}  # the rest of the policy is kept
