"""Red-team of the bulk calls (`Butler.put_many` / `Butler.get_many`): attacks that broke a
promise (each with its fix) and attacks that did not (documenting what holds).

Real storages only (posix with its SQLite index, memory, S3 on the moto server).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from butler import Butler


@pytest.fixture(params=["posix", "memory"])
def cfg_repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    b = butler_repo(request.param)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    return b


def test_threads_sharing_a_butler_with_different_max_workers(cfg_repo: Butler) -> None:
    """One Butler shared by threads whose bulk calls ask for different numbers of threads.

    A call asking for more threads than the kept pool has replaces the pool (shutting the
    old one down). That used to happen between another call taking the pool and submitting
    to it: that call raised a raw ``RuntimeError: cannot schedule new futures after
    shutdown`` with part of its batch run and nothing said about which items were stored
    (93 of 180 calls in one run of 6 threads).
    """
    b = cfg_repo
    failures: list[BaseException] = []
    rounds = 12

    def worker(k: int) -> None:
        for r in range(rounds):
            base = (k * rounds + r) * 10
            items = [({"v": base + i}, {"visit": base + i}) for i in range(10)]
            try:
                b.put_many("cfg", items, max_workers=2 + (k * rounds + r) % 40)
                got = b.get_many("cfg", [d for _, d in items], max_workers=3 + r + k)
                assert got == [o for o, _ in items]
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert b.count("cfg") == 6 * rounds * 10
