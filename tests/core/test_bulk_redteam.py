"""Red-team of the bulk calls (`Butler.put_many` / `Butler.get_many`): attacks that broke a
promise (each with its fix) and attacks that did not (documenting what holds).

Real storages only (posix with its SQLite index, memory, S3 on the moto server).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from butler import Butler, DatasetTypeError, InvalidDataIdError, ParameterError


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


@pytest.mark.parametrize("flag", ["no", "false", "False", 1, 0, None, [], "yes"])
def test_overwrite_that_is_not_a_bool_is_refused(cfg_repo: Butler, flag: Any) -> None:
    """``overwrite="no"`` (or ``"false"``, as read from a config file or a command line)
    was truthy: put, put_many and butler.dask.write replaced the existing dataset. Only
    True and False are accepted now; anything else is refused before anything is written."""
    b = cfg_repo
    b.put({"old": 1}, "cfg", visit=1)
    with pytest.raises(ParameterError, match=r"overwrite must be True or False, not"):
        b.put({"new": 1}, "cfg", visit=1, overwrite=flag)
    with pytest.raises(ParameterError, match=r"put_many of dataset type 'cfg': overwrite"):
        b.put_many("cfg", [({"new": 1}, {"visit": 1}), ({"new": 2}, {"visit": 2})], overwrite=flag)
    assert b.get("cfg", visit=1) == {"old": 1}
    assert not b.exists("cfg", visit=2)
    if flag == "no":
        dask_bag = pytest.importorskip("dask.bag")
        bd = pytest.importorskip("butler.dask")
        pytest.importorskip("distributed")
        bag = dask_bag.from_sequence([({"new": 1}, {"visit": 1})])
        with pytest.raises(ParameterError, match=r"butler\.dask\.write of dataset type 'cfg'"):
            bd.write(b, "cfg", bag, overwrite=flag)
    b.put({"new": 1}, "cfg", visit=1, overwrite=True)  # the booleans still work
    assert b.put_many("cfg", [({"n": 2}, {"visit": 2})], overwrite=False)[0].overwrite is False


@pytest.mark.parametrize("given", [None, 3, object()])
def test_a_non_iterable_batch_is_a_butler_error(cfg_repo: Butler, given: Any) -> None:
    """``put_many("cfg", None)`` and ``get_many("cfg", None)`` raised a bare TypeError
    ("'NoneType' object is not iterable"): not a ButlerError, naming nothing."""
    with pytest.raises(InvalidDataIdError, match=r"items must be an iterable of \(obj, data_id\)"):
        cfg_repo.put_many("cfg", given)
    with pytest.raises(InvalidDataIdError, match="data_ids must be an iterable of data IDs"):
        cfg_repo.get_many("cfg", given)


@pytest.mark.parametrize(
    "chunks",
    [0, -5, (0, 5), (3,), (3, 3, 3), "bogus", 2.5, None, ((3, 3), (5, 5)), True, (True, 5)],
)
def test_array_chunks_that_do_not_fit_are_a_parameter_error(
    butler_repo: Callable[..., Butler], chunks: Any
) -> None:
    """butler.dask.array passed ``chunks`` to Dask unchecked: 0 was a ZeroDivisionError,
    a wrong axis count or a unit Dask cannot read a bare ValueError, and ``chunks=True``
    was silently 1 (one task per element: 16 million tasks for a 4096 x 4096 image)."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("dask.array")
    pytest.importorskip("distributed")
    import butler.dask as bd

    b = butler_repo("posix")
    b.register_dataset_type("img", np.ndarray, "npy", dimensions={"visit": int})
    b.put(np.arange(100.0).reshape(10, 10), "img", visit=1)
    with pytest.raises(ParameterError, match=r"chunks=.* do not fit dataset 'img' .* \(10, 10\)"):
        bd.array(b, "img", chunks=chunks, visit=1)
    for good in (4, (3, -1), {0: 3}, "auto", ((3, 7), (5, 5))):  # still accepted
        x = bd.array(b, "img", chunks=good, visit=1)
        np.testing.assert_array_equal(x.compute(scheduler="sync"), np.arange(100.0).reshape(10, 10))


@pytest.mark.parametrize("workers", [1, 3])
def test_ctrl_c_mid_batch_leaves_whole_indexed_datasets(
    butler_repo: Callable[..., Butler], workers: int
) -> None:
    """KeyboardInterrupt in the calling thread (here from the progress callback) stops a
    put_many part way; it propagates as is and nothing more starts.

    The items running on the pool's threads at that moment went on after put_many had
    raised: closing the Butler right away (what a script does on Ctrl-C) closed the index
    under them, and their datasets stayed stored but not indexed, invisible to queries
    (``verify``: "stored, but not indexed"). put_many now lets them finish before it
    raises, so every dataset there is whole and indexed when it returns."""
    b = butler_repo("posix")
    root = b.storage.uri()
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    items = [({"v": i, "pad": "x" * 1000}, {"visit": i}) for i in range(40)]

    def progress(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.put_many("cfg", items, max_workers=workers, progress=progress)
    b.close()
    with Butler(root) as again:
        stored = sorted(d["visit"] for d in again.datasets("cfg"))
        assert 3 <= len(stored) < 40
        got = again.get_many("cfg", [{"visit": v} for v in stored])
        assert got == [items[v][0] for v in stored]
        report = again.verify("cfg")
        assert report.healthy and report.checked == len(stored), report
        again.put_many("cfg", [({"after": 1}, {"visit": 1000})], max_workers=workers)


@pytest.mark.parametrize("given", ["raw", b"raw", {"run": "r"}])
def test_inputs_given_as_one_thing_are_refused_at_once(cfg_repo: Butler, given: Any) -> None:
    """``inputs="raw"`` was iterated letter by letter, every item refused as "not 'r'";
    a single ref, a string or a mapping is now refused as a whole, before any write."""
    b = cfg_repo
    b.put({"v": 0}, "cfg", visit=0)
    ref = b.ref("cfg", visit=0)
    for one in (given, ref):
        with pytest.raises(DatasetTypeError, match="a list of DatasetRef"):
            b.put({"v": 1}, "cfg", visit=1, inputs=one)
        with pytest.raises(DatasetTypeError, match="a list of DatasetRef"):
            b.put_many("cfg", [({"v": 2}, {"visit": 2})], inputs=one)
    assert not b.exists("cfg", visit=1) and not b.exists("cfg", visit=2)
    b.put({"v": 1}, "cfg", visit=1, inputs=[ref])  # a list of refs is what it takes
