"""Bulk calls (issue 17): `Butler.get_many` and `Butler.put_many` on posix (embedded SQLite
index), memory, S3 (moto server, no index) and the database storage on SQLite.

Order, equality with single gets, 200 puts then gets, mixed failures collected into one
`BulkError` with nothing partial, progress, ``max_workers=1``, empty input, index rows,
`recording` across the worker threads, and the kept thread pool.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from butler import (
    BulkError,
    Butler,
    ButlerError,
    DatasetExistsError,
    DatasetTypeError,
    InvalidDataIdError,
)
from butler._bulk import default_workers
from butler.storage import is_reserved_key

KINDS = ["posix", "memory", "s3", "sqlite"]


#: The rest (S3 repositories cost a bucket and a few policy round trips each).
LOCAL = ["posix", "memory", "sqlite"]


def _cfg_repo(butler_repo: Callable[..., Butler], kind: str) -> Butler:
    b = butler_repo(kind)
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})
    return b


@pytest.fixture(params=KINDS)
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    """A repository with dataset type ``cfg`` on every storage."""
    return _cfg_repo(butler_repo, request.param)


@pytest.fixture(params=LOCAL)
def local_repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    """A repository with dataset type ``cfg`` on the local storages."""
    return _cfg_repo(butler_repo, request.param)


def ids(n: int, band: str = "r") -> list[dict[str, Any]]:
    return [{"visit": i, "band": band} for i in range(n)]


def stored_keys(b: Butler) -> list[str]:
    """Every dataset key in the storage (listing, not the index)."""
    return sorted(k for k in b.storage.list("") if not is_reserved_key(k))


def test_order_and_equal_to_single_gets(repo: Butler) -> None:
    for i in range(12):
        repo.put({"i": i, "sq": i * i}, "cfg", visit=i, band="g")
    wanted = [{"visit": v, "band": "g"} for v in (7, 0, 11, 3, 3, 5)]  # shuffled, a repeat
    got = repo.get_many("cfg", wanted, max_workers=4)
    assert got == [repo.get("cfg", d) for d in wanted]
    assert [g["i"] for g in got] == [7, 0, 11, 3, 3, 5]
    assert got[3] is not got[4]  # each item is its own read


def test_put_many_200_then_get_many(repo: Butler) -> None:
    """200 puts then gets, with progress, and an index row for every put."""
    calls: list[tuple[int, int, str]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, threading.current_thread().name))

    objs = [{"value": i, "text": "x" * (i % 7)} for i in range(200)]
    data_ids = ids(200)
    locations = repo.put_many("cfg", list(zip(objs, data_ids, strict=True)), progress=progress)
    assert [loc.data_id for loc in locations] == data_ids
    assert all(loc.run == "default" for loc in locations)
    assert [c[:2] for c in calls] == [(n, 200) for n in range(1, 201)]
    assert {c[2] for c in calls} == {threading.current_thread().name}  # the caller's thread
    assert len(stored_keys(repo)) == 200
    calls.clear()
    assert repo.get_many("cfg", data_ids, progress=progress) == objs
    assert [c[:2] for c in calls] == [(n, 200) for n in range(1, 201)]
    index = repo.index
    if repo.storage.type_name == "s3":
        assert index is None  # S3 has no embedded index; queries list the bucket
    else:
        assert index is not None
        rows = list(index.entries(repo.dataset_type("cfg")))
        assert sorted(e.data_id["visit"] for e in rows) == list(range(200))
        report = repo.verify("cfg")  # the index matches the storage both ways
        assert report.checked == 200 and report.healthy, report
    assert repo.count("cfg") == 200


def test_mixed_failures_collected_nothing_partial(repo: Butler) -> None:
    repo.put({"old": True}, "cfg", visit=2, band="r")
    good = [({"v": i}, {"visit": i, "band": "r"}) for i in (0, 1, 3, 4, 5)]
    items: list[tuple[Any, dict[str, Any]]] = [
        good[0],
        ({"v": "bad"}, {"visit": "not-a-number", "band": "r"}),  # invalid data ID
        good[1],
        ({"new": True}, {"visit": 2, "band": "r"}),  # exists, overwrite=False
        good[2],
        (["a list"], {"visit": 6, "band": "r"}),  # wrong python type
        good[3],
        good[4],
    ]
    with pytest.raises(BulkError) as caught:
        repo.put_many("cfg", items, max_workers=4)
    err = caught.value
    assert isinstance(err, ButlerError)
    assert sorted(err.errors) == [1, 3, 5]
    assert isinstance(err.errors[1], InvalidDataIdError)
    assert isinstance(err.errors[3], DatasetExistsError)
    assert isinstance(err.errors[5], DatasetTypeError)
    assert err.data_ids == {1: items[1][1], 3: items[3][1], 5: items[5][1]}
    assert sorted(err.results) == [0, 2, 4, 6, 7]
    assert all(err.results[i].data_id == items[i][1] for i in err.results)
    message = str(err)
    assert "put_many of dataset type 'cfg'" in message and "3 of 8 items failed" in message
    for i in (1, 3, 5):
        assert f"[{i}] data ID {items[i][1]}" in message
    assert "DatasetExistsError" in message and "DatasetTypeError" in message
    for i in (0, 2, 4, 6, 7):  # listed nowhere as failures
        assert f"[{i}]" not in message
    # The rest stored; the existing dataset unchanged; nothing for the failed data IDs.
    assert repo.get("cfg", visit=2, band="r") == {"old": True}
    assert not repo.exists("cfg", visit=6, band="r")
    assert len(stored_keys(repo)) == 6  # 5 good + the old one: no partial or temporary file
    assert repo.get_many("cfg", [d for _, d in good]) == [o for o, _ in good]
    if repo.index is not None:
        assert repo.count("cfg") == 6
    assert repo.verify("cfg").healthy


def test_get_many_failures(repo: Butler) -> None:
    repo.put_many("cfg", [({"v": i}, d) for i, d in enumerate(ids(4))])
    wanted: list[dict[str, Any]] = [
        {"visit": 0, "band": "r"},
        {"visit": 99, "band": "r"},  # not stored
        {"visit": 2, "band": "r"},
        {"visit": 1},  # incomplete
        {"visit": 3, "band": "r"},
    ]
    seen: list[tuple[int, int]] = []
    with pytest.raises(BulkError) as caught:
        repo.get_many("cfg", wanted, progress=lambda d, t: seen.append((d, t)))
    err = caught.value
    assert sorted(err.errors) == [1, 3]
    assert "does not exist" in str(err.errors[1])
    assert isinstance(err.errors[3], InvalidDataIdError)
    assert err.results == {0: {"v": 0}, 2: {"v": 2}, 4: {"v": 3}}
    assert "get_many of dataset type 'cfg'" in str(err) and "2 of 5 items failed" in str(err)
    assert [d for d, _ in seen] == [1, 2, 3, 4, 5] and {t for _, t in seen} == {5}


@pytest.mark.parametrize("workers", [1, 3])
def test_progress_monotonic_to_total(local_repo: Butler, workers: int) -> None:
    repo = local_repo
    calls: list[tuple[int, int, str]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, threading.current_thread().name))

    items = [({"v": i}, d) for i, d in enumerate(ids(17))]
    repo.put_many("cfg", items, max_workers=workers, progress=progress)
    assert [c[:2] for c in calls] == [(n, 17) for n in range(1, 18)]
    assert {c[2] for c in calls} == {threading.current_thread().name}  # the caller's thread
    calls.clear()
    repo.get_many("cfg", ids(17), max_workers=workers, progress=progress)
    assert [c[:2] for c in calls] == [(n, 17) for n in range(1, 18)]


def test_max_workers_one_and_empty(repo: Butler) -> None:
    locations = repo.put_many("cfg", [({"v": i}, d) for i, d in enumerate(ids(5))], max_workers=1)
    assert [loc.data_id["visit"] for loc in locations] == [0, 1, 2, 3, 4]
    assert repo.get_many("cfg", ids(5)[::-1], max_workers=1) == [{"v": i} for i in range(4, -1, -1)]
    calls: list[tuple[int, int]] = []
    assert repo.get_many("cfg", [], progress=lambda d, t: calls.append((d, t))) == []
    assert repo.put_many("cfg", [], progress=lambda d, t: calls.append((d, t))) == []
    assert repo.get_many("cfg", iter([])) == []
    assert calls == []


def test_overwrite_and_runs(local_repo: Butler) -> None:
    repo = local_repo
    repo.put_many("cfg", [({"v": i}, d) for i, d in enumerate(ids(3))])
    repo.put_many("cfg", [({"v": -i}, d) for i, d in enumerate(ids(3))], overwrite=True)
    assert repo.get_many("cfg", ids(3)) == [{"v": 0}, {"v": -1}, {"v": -2}]
    other = Butler(repo.storage.uri(), run="nightly", **repo._reopen_args["storage_options"])
    try:
        other.put_many("cfg", [({"night": i}, d) for i, d in enumerate(ids(2))])
        # The run's datasets first, then default's; per item run= picks one run.
        assert other.get_many("cfg", ids(3)) == [{"night": 0}, {"night": 1}, {"v": -2}]
        assert repo.get_many("cfg", ids(2), collections=["nightly"]) == [
            {"night": 0},
            {"night": 1},
        ]
        assert repo.get_many("cfg", [{**ids(1)[0], "run": "nightly"}, ids(1)[0]]) == [
            {"night": 0},
            {"v": 0},
        ]
    finally:
        other.close()


def test_duplicate_data_id_stored_once(local_repo: Butler) -> None:
    repo = local_repo
    items = [({"first": 1}, {"visit": 1, "band": "r"}), ({"second": 1}, {"band": "r", "visit": 1})]
    with pytest.raises(BulkError) as caught:
        repo.put_many("cfg", items, overwrite=True)
    assert list(caught.value.errors) == [1]
    assert "is item 0 too" in str(caught.value.errors[1])
    assert repo.get("cfg", visit=1, band="r") == {"first": 1}


def test_recording_across_threads(local_repo: Butler) -> None:
    repo = local_repo
    repo.register_dataset_type("sum", dict, "json", dimensions={"visit": int})
    repo.put_many("cfg", [({"v": i}, d) for i, d in enumerate(ids(6))])
    with repo.recording() as refs:
        repo.get_many("cfg", [ids(6)[i] for i in (4, 1, 5)], max_workers=3)
        assert [r.data_id["visit"] for r in refs] == [4, 1, 5]
        assert all(r.dataset_type == "cfg" and r.run == "default" for r in refs)
        repo.put_many("sum", [({"s": 10}, {"visit": 0}), ({"s": 11}, {"visit": 1})])
    for visit in (0, 1):
        inputs = repo.provenance("sum", visit=visit).inputs
        assert sorted(r.data_id["visit"] for r in inputs) == [1, 4, 5]
    # Outside a block nothing is recorded (and workers never record on their own).
    assert getattr(repo._recording, "refs", None) is None


def test_arguments_checked_before_anything_runs(local_repo: Butler) -> None:
    repo = local_repo
    with pytest.raises(DatasetTypeError, match="unknown dataset type 'nope'"):
        repo.put_many("nope", [({}, {"visit": 1, "band": "r"})])
    with pytest.raises(InvalidDataIdError, match=r"items\[1\] is a dict"):
        repo.put_many("cfg", [({}, {"visit": 1, "band": "r"}), {"visit": 2}])  # type: ignore[list-item]
    with pytest.raises(InvalidDataIdError, match=r"data_ids\[0\] is 3"):
        repo.get_many("cfg", [3])  # type: ignore[list-item]
    with pytest.raises(InvalidDataIdError, match="not dict"):
        repo.get_many("cfg", {"visit": 1, "band": "r"})  # type: ignore[dict-item]
    with pytest.raises(ButlerError, match="max_workers must be a positive integer"):
        repo.put_many("cfg", [({}, {"visit": 1, "band": "r"})], max_workers=0)
    with pytest.raises(ButlerError, match="progress must be a callable"):
        repo.put_many("cfg", [({}, {"visit": 1, "band": "r"})], progress="yes")  # type: ignore[arg-type]
    assert stored_keys(repo) == []


def test_bulk_error_pickles(local_repo: Butler) -> None:
    repo = local_repo
    repo.put({"v": 0}, "cfg", visit=0, band="r")
    with pytest.raises(BulkError) as caught:
        repo.put_many("cfg", [({"v": 1}, {"visit": 0, "band": "r"}), ({"v": 2}, ids(2)[1])])
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value)
    assert list(copy.errors) == [0] and isinstance(copy.errors[0], DatasetExistsError)
    assert copy.data_ids == {0: {"visit": 0, "band": "r"}}
    assert copy.results == {}  # locations hold their open storage: left out
    with pytest.raises(BulkError) as read:
        repo.get_many("cfg", [{"visit": 0, "band": "r"}, {"visit": 5, "band": "r"}])
    copy = pickle.loads(pickle.dumps(read.value))
    assert copy.results == {0: {"v": 0}} and list(copy.errors) == [1]


def test_default_workers(local_repo: Butler) -> None:
    cpus = os.cpu_count() or 1
    storage = local_repo.storage
    workers = default_workers(storage)
    if storage.type_name in ("posix", "memory"):
        assert workers == min(8, cpus + 2)
    else:  # SQLAlchemy's pool: no more threads than connections
        pool = storage.engine.pool  # type: ignore[attr-defined]
        assert workers == min(32, pool.size() + pool._max_overflow)
    s3 = pytest.importorskip("butler_s3")
    remote = s3.S3Storage("s3://bucket/repo", endpoint_url="http://127.0.0.1:9")  # no request
    assert default_workers(remote) == 32  # round trips overlap whatever the cores


def test_pool_kept_between_calls(butler_repo: Callable[..., Butler]) -> None:
    """Threads are reused: the index's per-thread SQLite connections do not pile up."""
    b = butler_repo("posix")
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    index = b.index
    assert index is not None
    for round_ in range(6):
        items = [({"r": round_}, {"visit": round_ * 10 + i}) for i in range(10)]
        b.put_many("cfg", items, max_workers=4)
        b.get_many("cfg", [d for _, d in items], max_workers=4)
    # The caller's connection plus at most one per pool thread (4), not one per call.
    assert len(index._connections) <= 1 + 4  # type: ignore[attr-defined]
    assert b.count("cfg") == 60
    pool = b.__dict__["_bulk_executor"]
    b._close_bulk_pool()  # the threads exit; a later call starts new ones
    assert pool._shutdown and "_bulk_executor" not in b.__dict__
    assert b.get_many("cfg", [{"visit": 1}, {"visit": 2}], max_workers=2) == [{"r": 0}] * 2


def test_progress_bar(local_repo: Butler, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = local_repo
    pytest.importorskip("rich", reason="progress bars need rich (butler-core[progress])")
    locations = repo.put_many("cfg", [({"v": i}, d) for i, d in enumerate(ids(5))], progress=True)
    assert len(locations) == 5
    assert repo.get_many("cfg", ids(5), progress=True) == [{"v": i} for i in range(5)]
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    with pytest.raises(ButlerError, match=r"butler-core\[progress\]"):
        repo.get_many("cfg", ids(5), progress=True)


def _reading_threads(b: Butler, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Names of the threads that look datasets up to read them (each get_many item does,
    through the small-get shortcut or the general path)."""
    names: set[str] = set()

    def spying(real: Any) -> Any:
        def spy(*args: Any, **kwargs: Any) -> Any:
            names.add(threading.current_thread().name)
            return real(*args, **kwargs)

        return spy

    monkeypatch.setattr(b, "_find", spying(b._find))
    monkeypatch.setattr(b, "_get_small", spying(b._get_small))
    return names


@pytest.mark.parametrize("serial_below", [1.0, 0.0], ids=["fast-items", "slow-items"])
def test_local_get_many_reads_short_items_in_the_calling_thread(
    local_repo: Butler, monkeypatch: pytest.MonkeyPatch, serial_below: float
) -> None:
    """With the default ``max_workers`` on a local storage, get_many times its first items
    in the calling thread: reads shorter than ``SERIAL_BELOW`` (Python work under the GIL,
    which threads only slow down) all stay there; longer ones go to the pool. Results,
    order and progress are the same either way."""
    import butler._bulk as bulk

    monkeypatch.setattr(bulk, "SERIAL_BELOW", serial_below)
    data_ids = ids(40)
    local_repo.put_many("cfg", [({"v": d["visit"]}, d) for d in data_ids])
    threads = _reading_threads(local_repo, monkeypatch)
    seen: list[int] = []
    got = local_repo.get_many("cfg", data_ids, progress=lambda done, total: seen.append(done))
    assert got == [{"v": i} for i in range(40)]
    assert seen == list(range(1, 41))
    here = threading.current_thread().name
    storage = local_repo.storage
    if storage.has_local_paths or storage.type_name == "memory":
        if serial_below:
            assert threads == {here}
        else:
            assert here in threads and any(t.startswith("butler-bulk") for t in threads)
    else:  # a database: round trips overlap on the pool, no probing
        assert all(t.startswith("butler-bulk") for t in threads)


def test_explicit_max_workers_is_honoured_on_local_storage(
    local_repo: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_ids = ids(40)
    local_repo.put_many("cfg", [({"v": d["visit"]}, d) for d in data_ids])
    threads = _reading_threads(local_repo, monkeypatch)
    assert local_repo.get_many("cfg", data_ids, max_workers=4) == [{"v": i} for i in range(40)]
    assert threading.current_thread().name not in threads
    assert all(t.startswith("butler-bulk") for t in threads)
