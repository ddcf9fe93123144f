"""Provenance (issue 16): what every put records with its bytes, references and inputs,
`recording`, long input lists in content-addressed records (S3's 2 KiB metadata cap),
provenance through a lost index, tampered provenance, and the reproducibility scenario
(raw -> calibrated -> catalog rerun in a second run, read through a chain).

Local storages always (posix, memory, the database storage on SQLite); S3 (moto), the
database storage on PostgreSQL and S3 indexed in PostgreSQL for the main round trips (server
variants marked slow where they repeat a local test).
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import itertools
import json
import os
import platform
import re
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler, DatasetNotFoundError, DatasetTypeError, FormatError
from butler._provenance import RECORD_PREFIX, DatasetRef, new_created
from tests.core.test_runs import LOCAL, SERVERS, Repo, make_repo

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
VERSION = importlib.metadata.version("butler-core")


@pytest.fixture(
    params=[
        *LOCAL,
        "s3-pg-index",  # S3 metadata and a PostgreSQL index in one
        pytest.param("s3", marks=pytest.mark.slow),
        pytest.param("postgresql", marks=pytest.mark.slow),
    ]
)
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    with make_repo(request, request.param, tmp_path) as r:
        yield r


@pytest.fixture(params=LOCAL + [pytest.param(k, marks=pytest.mark.slow) for k in SERVERS])
def every(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    with make_repo(request, request.param, tmp_path) as r:
        yield r


@pytest.fixture(params=["posix", "memory", pytest.param("s3", marks=pytest.mark.slow)])
def tamper_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    with make_repo(request, request.param, tmp_path) as r:
        yield r


def define(b: Butler) -> None:
    b.register_dataset_type("raw", np.ndarray, "npy", dimensions={"visit": int})
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})


def sha256(b: Butler, key: str) -> str:
    return hashlib.sha256(b.storage.read_bytes(key)).hexdigest()


# -- what every put records ------------------------------------------------------------------


def test_provenance_round_trip(repo: Repo) -> None:
    define(repo.opened[0])
    w = repo.open(run="u/me/run-1")
    w.put(np.arange(6), "raw", visit=1)
    w.put({"a": 1}, "cfg", visit=1)
    r = repo.open(index=False)
    for name, distribution in (("raw", "butler-core"), ("cfg", "butler-core")):
        p = r.provenance(name, visit=1, run="u/me/run-1")
        assert p.ref.run == "u/me/run-1"
        assert p.ref.dataset_type == name and p.ref.data_id == {"visit": 1}
        assert p.ref.created is not None and ISO.match(p.ref.created)
        assert p.user == getpass.getuser()
        assert p.host == socket.gethostname()
        assert p.python == platform.python_version()
        assert p.butler_version == VERSION
        assert p.serializer == {
            "distribution": distribution,
            "version": importlib.metadata.version(distribution),
        }
        assert p.inputs == ()
        key = w.location(name, visit=1).key
        assert p.ref.checksum == sha256(r, key)  # the repository keeps checksums
        assert p.ref == r.ref(name, visit=1, collections=["nope", "u/me/run-1"])
        # Committed with the bytes: the metadata itself holds it.
        recorded = r.storage.metadata(key)["provenance"]
        assert recorded["run"] == "u/me/run-1" and recorded["created"] == p.ref.created
    if repo.indexed:  # and the index holds the same record
        b = repo.open()
        assert b.index is not None
        (entry,) = [e for e in b.index.entries(b.dataset_type("cfg")) if e.run == "u/me/run-1"]
        assert entry.provenance == r.storage.metadata(w.location("cfg", visit=1).key)["provenance"]


def test_plugin_serializer_version_is_recorded(butler_repo: Callable[..., Butler]) -> None:
    pytest.importorskip("butler_fits", reason="butler-fits is not installed")
    b = butler_repo("posix")
    b.register_dataset_type("image", np.ndarray, "fits", dimensions={"visit": int})
    b.put(np.ones((3, 4), dtype=np.float32), "image", visit=1)
    p = b.provenance("image", visit=1)
    assert p.serializer == {
        "distribution": "butler-fits",
        "version": importlib.metadata.version("butler-fits"),
    }
    assert p.butler_version == VERSION and p.ref.run == "default"


def test_created_strictly_increasing_in_a_tight_loop(local: Repo) -> None:
    stamps = [new_created() for _ in range(20000)]
    assert all(a[0] < b[0] and a[1] < b[1] for a, b in itertools.pairwise(stamps))
    b = local.opened[0]
    define(b)
    for v in range(40):
        b.put({"v": v}, "cfg", visit=v)
    created = [b.ref("cfg", visit=v).created for v in range(40)]
    assert all(c is not None and ISO.match(c) for c in created)
    assert created == sorted(created) and len(set(created)) == 40  # type: ignore[type-var]
    # Threads share the clock too.
    out: list[str] = []
    lock = threading.Lock()

    def stamp() -> None:
        mine = [new_created()[1] for _ in range(2000)]
        with lock:
            out.extend(mine)

    threads = [threading.Thread(target=stamp) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(out)) == len(out) == 8000


@pytest.fixture(params=LOCAL)
def local(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    with make_repo(request, request.param, tmp_path) as r:
        yield r


# -- inputs ----------------------------------------------------------------------------------


def test_inputs_resolve_to_their_datasets(every: Repo) -> None:
    define(every.opened[0])
    a = every.open(run="A")
    for v in (1, 2):
        a.put(np.arange(4) * v, "raw", visit=v)
    a.put(np.arange(4) * 100, "raw", visit=3)
    every.open().put(np.zeros(4, dtype=np.int64), "raw", visit=3)  # default run, same ID
    b = every.open(run="B", collections=["B", "A"])
    refs = [b.ref("raw", visit=v) for v in (1, 2)]
    refs.append(b.ref("raw", visit=3, run="default"))
    assert [r.run for r in refs] == ["A", "A", "default"]
    b.put({"sum": 1}, "cfg", visit=1, inputs=refs)
    p = every.open().provenance("cfg", visit=1, run="B")
    assert list(p.inputs) == refs
    for ref in p.inputs:
        value = b.get(ref.dataset_type, ref.data_id, run=ref.run)
        expected = np.zeros(4) if ref.run == "default" else np.arange(4) * ref.data_id["visit"]
        if ref.data_id["visit"] == 3 and ref.run == "A":
            expected = np.arange(4) * 100
        np.testing.assert_array_equal(value, expected)
        key = b._map(b.dataset_type("raw"), ref.data_id)[0]
        key = key if ref.run == "default" else f"@runs/{ref.run}/{key}"
        assert ref.checksum == sha256(b, key)
        assert ref == b.ref(ref.dataset_type, ref.data_id, run=ref.run)
    # Duplicates are recorded once; anything but a DatasetRef is refused before writing.
    b.put({"sum": 2}, "cfg", visit=2, inputs=[refs[0], refs[0], refs[1]])
    assert list(b.provenance("cfg", visit=2).inputs) == refs[:2]
    for bad in ({"dataset_type": "raw"}, "raw", refs[0].to_dict()):
        with pytest.raises(DatasetTypeError, match="inputs must be DatasetRef"):
            b.put({"sum": 3}, "cfg", visit=3, inputs=[bad])  # type: ignore[list-item]
    assert not b.exists("cfg", visit=3)


def test_ref_to_dict_round_trip() -> None:
    ref = DatasetRef(
        "raw", {"visit": 1, "band": "r"}, "u/me/x", "0" * 64, "2024-01-02T03:04:05.123456Z"
    )
    assert DatasetRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref
    assert str(ref) == "raw(visit=1, band='r') in run 'u/me/x'"


# -- recording ----------------------------------------------------------------------------------


def test_recording_every_get_is_an_input_of_every_later_put(local: Repo) -> None:
    """The rule: within a block, a put's inputs are every get made in the block before it
    (in this thread), plus its own ``inputs``."""
    b = local.opened[0]
    define(b)
    for v in range(1, 4):
        b.put(np.arange(3) + v, "raw", visit=v)
    ref = {v: b.ref("raw", visit=v) for v in range(1, 4)}
    with b.recording() as recorded:
        b.put({"n": 10}, "cfg", visit=10)  # nothing read yet: no inputs
        b.get("raw", visit=1)
        b.put({"n": 11}, "cfg", visit=11)
        b.get("raw", visit=2)
        b.get("raw", visit=1)  # read twice: recorded once per put
        b.put({"n": 12}, "cfg", visit=12, inputs=[ref[3]])
        with b.recording() as inner:  # nested: shares the outer block's list
            assert inner is recorded
            b.get("raw", visit=3)
            b.put({"n": 13}, "cfg", visit=13)
        b.put({"n": 14}, "cfg", visit=14)  # the outer block still records
    assert recorded == [ref[1], ref[2], ref[1], ref[3]]
    inputs = {v: list(b.provenance("cfg", visit=v).inputs) for v in range(10, 15)}
    assert inputs == {
        10: [],
        11: [ref[1]],
        12: [ref[3], ref[1], ref[2]],
        13: [ref[1], ref[2], ref[3]],
        14: [ref[1], ref[2], ref[3]],
    }


def test_puts_after_a_recording_block_have_no_recorded_inputs(local: Repo) -> None:
    b = local.opened[0]
    define(b)
    b.put(np.arange(3), "raw", visit=1)
    with b.recording():
        b.get("raw", visit=1)
    b.get("raw", visit=1)
    b.put({"after": True}, "cfg", visit=1)
    assert b.provenance("cfg", visit=1).inputs == ()


def test_recording_threads_are_not_mixed(local: Repo) -> None:
    b = local.opened[0]
    define(b)
    for v in range(4):
        b.put(np.arange(3) + v, "raw", visit=v)
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def record(v: int) -> None:
        try:
            with b.recording():
                barrier.wait()
                b.get("raw", visit=v)
                barrier.wait()  # every thread has read before any writes
                b.put({"v": v}, "cfg", visit=v)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    def plain() -> None:  # no block in this thread: its gets record nothing
        try:
            barrier.wait()
            b.get("raw", visit=3)
            barrier.wait()
            b.put({"v": 3}, "cfg", visit=3)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=record, args=(v,)) for v in (0, 1)]
    threads.append(threading.Thread(target=plain))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for v in (0, 1):
        assert list(b.provenance("cfg", visit=v).inputs) == [b.ref("raw", visit=v)]
    assert b.provenance("cfg", visit=3).inputs == ()


# -- long inputs: a content-addressed record --------------------------------------------------


def _fake_refs(n: int) -> list[DatasetRef]:
    return [
        DatasetRef(
            "raw",
            {"visit": i},
            "u/someone/a-rather-long-run-name-" + str(i % 3),
            hashlib.sha256(str(i).encode()).hexdigest(),
            f"2024-01-01T00:00:{i % 60:02d}.{i:06d}Z",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "kind",
    ["posix", "memory", "sqlite"],
)
def test_two_hundred_inputs_go_to_a_record(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    with make_repo(request, kind, tmp_path) as local:
        _two_hundred_inputs(local)


def _two_hundred_inputs(local: Repo) -> None:
    b = local.opened[0]
    define(b)
    w = local.open(run="A")
    for v in range(200):
        w.put(np.array([v]), "raw", visit=v)
    refs = [w.ref("raw", visit=v) for v in range(200)]
    w.put({"all": 200}, "cfg", visit=0, inputs=refs)
    w.put({"again": 200}, "cfg", visit=1, inputs=refs)  # same inputs: the same record
    key = w.location("cfg", visit=0).key
    record = w.storage.metadata(key)["provenance"]
    assert "inputs" not in record and record["n_inputs"] == 200
    digest = record["inputs_record"]
    stored = w.storage.read_bytes(f"{RECORD_PREFIX}{digest}.json")
    assert hashlib.sha256(stored).hexdigest() == digest
    assert (
        w.storage.metadata(w.location("cfg", visit=1).key)["provenance"]["inputs_record"] == digest
    )
    p = local.open().provenance("cfg", visit=0, run="A")
    assert list(p.inputs) == refs
    for ref in p.inputs[::50]:
        assert b.get(ref.dataset_type, ref.data_id, run=ref.run)[0] == ref.data_id["visit"]
    # The record is butler's own: never a dataset, never listed as one.
    assert list(b.datasets("cfg", run="A")) == [{"visit": 0}, {"visit": 1}]
    assert b.verify().healthy


def test_long_inputs_fit_s3_metadata(
    request: pytest.FixtureRequest, tmp_path: Path, boto_client: Any
) -> None:
    with make_repo(request, "s3", tmp_path) as repo:
        b = repo.opened[0]
        define(b)
        refs = _fake_refs(200)
        b.put({"all": 200}, "cfg", visit=1, inputs=refs)
        assert list(repo.open().provenance("cfg", visit=1).inputs) == refs
        bucket = repo.root.removeprefix("s3://").split("/")[0]
        head = boto_client.head_object(Bucket=bucket, Key="repo/cfg/1.json")
        assert sum(len(k) + len(v) for k, v in head["Metadata"].items()) <= 2048
        record = json.loads(head["Metadata"]["butler"])["provenance"]["inputs_record"]
        assert boto_client.head_object(Bucket=bucket, Key=f"repo/{RECORD_PREFIX}{record}.json")


def test_inline_inputs_with_long_names_fit_s3_metadata(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Inputs short enough to stay inline, with the longest run name and a long data ID
    value: the metadata must still fit S3's 2 KiB (the record exists for exactly this)."""
    with make_repo(request, "s3", tmp_path) as repo:
        repo.opened[0].register_dataset_type(
            "cat", dict, "json", dimensions={"visit": int, "field": str}
        )
        run = "r" * 128
        ref = DatasetRef(
            "cat", {"visit": 1, "field": "f" * 150}, run, "a" * 64, "2024-01-01T00:00:00.000000Z"
        )
        w = repo.open(run=run)
        data_id = {"visit": 2, "field": "g" * 150}
        w.put({"x": 1}, "cat", data_id, inputs=[ref])
        assert list(repo.open().provenance("cat", data_id, run=run).inputs) == [ref]


# -- provenance through a lost index -------------------------------------------------------------


def _drop_index(repo: Repo, b: Butler) -> None:
    """Delete the repository's index behind butler's back."""
    if repo.kind == "posix":
        for name in os.listdir(os.path.join(repo.root, ".butler")):
            if name.startswith("index.sqlite3"):
                os.remove(os.path.join(repo.root, ".butler", name))
        return
    import sqlalchemy as sa

    from butler_db._engine import normalise_url

    url = repo.root if repo.kind in ("sqlite", "postgresql") else str(b.policy.index)
    engine = sa.create_engine(normalise_url(url), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            for table in sa.inspect(conn).get_table_names():
                if table.startswith("bidx_") or table == "butler_index_catalog":
                    conn.execute(sa.text(f'DROP TABLE "{table}"'))
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "kind",
    ["posix", "sqlite", pytest.param("postgresql", marks=pytest.mark.slow), "s3-pg-index"],
)
def test_provenance_survives_reindex_of_a_deleted_index(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    with make_repo(request, kind, tmp_path) as repo:
        define(repo.opened[0])
        a = repo.open(run="A")
        a.put(np.arange(3), "raw", visit=1)
        b = repo.open(run="B", collections=["B", "A"])
        # 60 refs: too long to keep inline, so in a content-addressed record.
        fake = _fake_refs(60)
        with b.recording():
            b.get("raw", visit=1)
            b.put({"made": "from raw"}, "cfg", visit=1, inputs=fake)
        before = [
            (e.run, e.provenance, e.created)
            for e in b.index.entries(b.dataset_type("cfg"))  # type: ignore[union-attr]
        ]
        history = b.history("cfg", visit=1)
        assert before and before[0][1] is not None
        for other in repo.opened:
            other.close()
        _drop_index(repo, b)
        fresh = repo.open()
        # The index is empty now, and recorded incomplete: counts list the storage.
        assert fresh._query_index() is None and fresh.count("cfg", run="B") == 1
        report = fresh.reindex()
        assert report.indexed == 2
        after = [
            (e.run, e.provenance, e.created)
            for e in fresh.index.entries(fresh.dataset_type("cfg"))  # type: ignore[union-attr]
        ]
        assert after == before
        assert fresh.history("cfg", visit=1) == history
        p = fresh.provenance("cfg", visit=1, run="B")
        assert list(p.inputs) == [*fake, a.ref("raw", visit=1)]
        assert fresh.verify().healthy


# -- tampered provenance ----------------------------------------------------------------------


def _rewrite_metadata(b: Butler, key: str, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite a dataset's stored metadata (same bytes) as another tool could."""
    meta = json.loads(json.dumps(b.storage.metadata(key)))
    meta.pop("size", None)
    meta.pop("sha256", None)
    change(meta)
    b.storage.write_bytes(
        key, b.storage.read_bytes(key), metadata=meta, overwrite=True, checksum=True
    )


def _set_inputs(value: Any) -> Callable[[dict[str, Any]], None]:
    def change(meta: dict[str, Any]) -> None:
        meta["provenance"].pop("inputs_record", None)
        meta["provenance"]["inputs"] = value

    return change


GOOD = {"dataset_type": "raw", "data_id": {"visit": 1}, "run": "A"}
MALFORMED = [
    "not a list",
    {"dataset_type": "raw"},
    [5],
    [{"data_id": {"visit": 1}}],
    [{**GOOD, "dataset_type": 5}],
    [{**GOOD, "dataset_type": ""}],
    [{**GOOD, "data_id": {"visit": [1]}}],
    [{**GOOD, "data_id": {"visit": True}}],
    [{**GOOD, "data_id": {"visit": 1.5}}],
    [{**GOOD, "data_id": "visit=1"}],
    [{**GOOD, "data_id": {"visit": "x" * 201}}],
    [{**GOOD, "run": "bad run"}],
    [{**GOOD, "run": "../x"}],
    [{**GOOD, "checksum": "zz"}],
    [{**GOOD, "checksum": "A" * 64}],
    [{**GOOD, "created": "yesterday"}],
    [{**GOOD, "created": 1700000000}],
]


def test_malformed_inline_refs_are_format_errors(tamper_repo: Repo) -> None:
    b = tamper_repo.opened[0]
    define(b)
    b.put(np.arange(3), "raw", visit=1)
    b.put({"v": 1}, "cfg", visit=1, inputs=[b.ref("raw", visit=1)])
    key = b.location("cfg", visit=1).key
    _rewrite_metadata(b, key, _set_inputs([GOOD]))
    assert [r.to_dict() for r in b.provenance("cfg", visit=1).inputs] == [GOOD]
    cases = MALFORMED if tamper_repo.kind != "s3" else MALFORMED[::4]  # fewer round trips
    for bad in cases:
        _rewrite_metadata(b, key, _set_inputs(bad))
        with pytest.raises(FormatError, match="provenance"):
            b.provenance("cfg", visit=1)
        # The dataset itself still reads; its ref and history do not depend on the inputs.
        assert b.get("cfg", visit=1) == {"v": 1}
        assert b.ref("cfg", visit=1).checksum == sha256(b, key)
        assert [h.run for h in tamper_repo.open(index=False).history("cfg", visit=1)] == ["default"]


def test_tampered_input_records_are_format_errors(tamper_repo: Repo) -> None:
    b = tamper_repo.opened[0]
    define(b)
    refs = _fake_refs(100)
    b.put({"v": 1}, "cfg", visit=1, inputs=refs)
    key = b.location("cfg", visit=1).key
    digest = b.storage.metadata(key)["provenance"]["inputs_record"]
    record_key = f"{RECORD_PREFIX}{digest}.json"
    original = b.storage.read_bytes(record_key)
    assert list(b.provenance("cfg", visit=1).inputs) == refs

    # A record whose bytes do not match its digest.
    changed = original.replace(b'"visit":7', b'"visit":8', 1)
    assert changed != original
    b.storage.write_bytes(record_key, changed, overwrite=True)
    with pytest.raises(FormatError, match="does not match its digest"):
        b.provenance("cfg", visit=1)
    # Metadata naming a record that does not exist.
    b.storage.remove(record_key)
    with pytest.raises(FormatError, match="does not exist"):
        b.provenance("cfg", visit=1)
    assert b.get("cfg", visit=1) == {"v": 1}
    # Metadata naming something that is not a digest (never a path to follow).
    for bad in ("../../butler.yaml", "0" * 63, "G" * 64, 5, ["x"]):

        def name(meta: dict[str, Any], bad: Any = bad) -> None:
            meta["provenance"]["inputs_record"] = bad

        _rewrite_metadata(b, key, name)
        with pytest.raises(FormatError, match="not a digest"):
            b.provenance("cfg", visit=1)
    # A record matching its digest that is not a list of refs.
    for text in (b'{"a": 1}', b"[1, 2]", b"not json", b"[" * 100000):
        digest = hashlib.sha256(text).hexdigest()
        b.storage.write_bytes(f"{RECORD_PREFIX}{digest}.json", text, overwrite=True)

        def point(meta: dict[str, Any], digest: str = digest) -> None:
            meta["provenance"]["inputs_record"] = digest

        _rewrite_metadata(b, key, point)
        with pytest.raises(FormatError):
            b.provenance("cfg", visit=1)
    # Restored, it reads again.
    b.storage.write_bytes(record_key, original, overwrite=True)
    _rewrite_metadata(
        b,
        key,
        lambda meta: meta["provenance"].update(
            inputs_record=record_key.removeprefix(RECORD_PREFIX).removesuffix(".json")
        ),
    )
    assert list(b.provenance("cfg", visit=1).inputs) == refs


def test_unreadable_provenance_in_the_index_is_a_format_error(posix: Repo) -> None:
    b = posix.opened[0]
    define(b)
    b.put({"v": 1}, "cfg", visit=1)
    db = sqlite3.connect(os.path.join(posix.root, ".butler", "index.sqlite3"))
    try:
        (table,) = db.execute(
            "SELECT table_name FROM butler_index_catalog WHERE dataset_type = 'cfg'"
        ).fetchone()
        db.execute(f'UPDATE "{table}" SET _provenance = ?', ("{not json",))
        db.commit()
    finally:
        db.close()
    with pytest.raises(FormatError, match="unreadable provenance"):
        b.history("cfg", visit=1)
    report = b.verify()
    assert not report.healthy and len(report.stale) == 1
    assert b.reindex().indexed == 1
    assert [h.run for h in b.history("cfg", visit=1)] == ["default"]


@pytest.fixture
def posix(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    with make_repo(request, "posix", tmp_path) as r:
        yield r


# -- the reproducibility scenario ---------------------------------------------------------------


def calibrate(raw: np.ndarray, gain: float) -> np.ndarray:
    return raw.astype(np.float64) * gain


def catalog(image: np.ndarray, threshold: float) -> dict[str, Any]:
    return {"n": int((image > threshold).sum()), "threshold": threshold}


def test_rerun_with_changed_config_read_through_a_chain(repo: Repo) -> None:
    setup = repo.opened[0]
    setup.register_dataset_type("raw", np.ndarray, "npy", dimensions={"visit": int})
    setup.register_dataset_type("calibrated", np.ndarray, "npy", dimensions={"visit": int})
    setup.register_dataset_type("catalog", dict, "json", dimensions={"visit": int})
    visits = (1, 2)

    def pipeline(b: Butler, gain: float) -> None:
        for v in visits:
            with b.recording():
                b.put(calibrate(b.get("raw", visit=v), gain), "calibrated", visit=v)
                b.put(catalog(b.get("calibrated", visit=v), 10.0), "catalog", visit=v)

    a = repo.open(run="A")
    for v in visits:
        a.put(np.arange(10) * v, "raw", visit=v)
    pipeline(a, gain=1.0)
    b = repo.open(run="B", collections=["B", "A"])  # changed config, reading A's raws
    pipeline(b, gain=2.0)
    assert b.define_collection("latest", ["B", "A"]) == ["B", "A"]

    latest = repo.open(collections="latest")
    for v in visits:
        raw_ref = latest.ref("raw", visit=v)
        cal_ref = latest.ref("calibrated", visit=v)
        assert (raw_ref.run, cal_ref.run) == ("A", "B")
        assert latest.get("catalog", visit=v) == catalog(np.arange(10) * v * 2.0, 10.0)
        np.testing.assert_array_equal(latest.get("raw", visit=v), np.arange(10) * v)
        p = latest.provenance("catalog", visit=v)
        assert p.ref.run == "B"
        assert list(p.inputs) == [raw_ref, cal_ref]  # A's raw, B's calibrated image
        assert p.butler_version == VERSION and p.serializer["distribution"] == "butler-core"
        assert p.serializer["version"] == VERSION
        cal_p = latest.provenance("calibrated", visit=v)
        assert list(cal_p.inputs) == [raw_ref]
        # Run A is untouched and still reads as it was.
        old = latest.provenance("catalog", visit=v, run="A")
        assert list(old.inputs) == [raw_ref, latest.ref("calibrated", visit=v, run="A")]
        assert latest.get("catalog", visit=v, run="A") == catalog(np.arange(10) * v * 1.0, 10.0)
        # Each input resolves to the dataset it names, with its checksum.
        for ref in (*p.inputs, *cal_p.inputs):
            got = latest.get(ref.dataset_type, ref.data_id, run=ref.run)
            expected = np.arange(10) * v * (2.0 if ref.dataset_type == "calibrated" else 1)
            np.testing.assert_array_equal(got, expected)
            assert latest.ref(ref.dataset_type, ref.data_id, run=ref.run) == ref
        assert [h.run for h in latest.history("catalog", visit=v)] == ["A", "B"]
    assert latest.count("catalog") == 2 and latest.count("raw") == 2
    assert latest.runs() == {"A": 6, "B": 4}


def test_recording_records_only_successful_gets_of_this_butler(local: Repo) -> None:
    """runs.rst, Recording inputs: a get that fails appends nothing; `Butler.exists`,
    `Butler.ref`, `Butler.provenance` and the queries are not recorded, nor gets through
    another `Butler` object on the same repository."""
    b = local.opened[0]
    define(b)
    b.put(np.arange(3), "raw", visit=1)
    b.put({"n": 0}, "cfg", visit=0)
    other = local.open()
    with b.recording() as recorded:
        with pytest.raises(DatasetNotFoundError):
            b.get("raw", visit=99)
        assert b.exists("raw", visit=1) and b.ref("raw", visit=1).run == "default"
        b.provenance("raw", visit=1)
        assert list(b.datasets("raw")) == [{"visit": 1}] and b.count("raw") == 1
        assert list(b.stored_locations("raw"))
        other.get("cfg", visit=0)
        assert recorded == []
        b.put({"n": 1}, "cfg", visit=1)
    assert b.provenance("cfg", visit=1).inputs == ()


def test_input_records_are_kept_by_remove_and_remove_run(local: Repo) -> None:
    """runs.rst, Long input lists: records are never removed, not by `Butler.remove` nor
    `Butler.remove_run` (other datasets may share them); the dataset still sharing one
    keeps its inputs."""
    b = local.opened[0]
    define(b)
    refs = _fake_refs(100)
    a, keep = local.open(run="A"), local.open(run="B")
    a.put({"v": 1}, "cfg", visit=1, inputs=refs)
    a.put({"v": 2}, "cfg", visit=2, inputs=refs)
    keep.put({"v": 3}, "cfg", visit=3, inputs=refs)
    digest = a.storage.metadata(a.location("cfg", visit=1).key)["provenance"]["inputs_record"]
    a.remove("cfg", visit=1)
    assert a.remove_run("A") == 1
    assert b.storage.exists(f"{RECORD_PREFIX}{digest}.json")
    assert list(keep.provenance("cfg", visit=3).inputs) == refs


def test_an_input_record_over_the_limit_is_a_format_error(
    tamper_repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runs.rst, Reading provenance: a record must be at most 16 MiB, anything else is a
    `FormatError` (the limit is lowered here so that a real record exceeds it). It said
    "does not match its digest", which the record does."""
    import butler._provenance as provenance

    b = tamper_repo.opened[0]
    define(b)
    b.put({"v": 1}, "cfg", visit=1, inputs=_fake_refs(100))
    assert provenance.MAX_RECORD_BYTES == 16 * 2**20
    monkeypatch.setattr(provenance, "MAX_RECORD_BYTES", 1000)
    with pytest.raises(FormatError, match=r"input record .* is larger than 1,000 bytes"):
        b.provenance("cfg", visit=1)
    assert b.get("cfg", visit=1) == {"v": 1}


def test_no_login_name_is_recorded_as_none(local: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """runs.rst, What is recorded: ``user`` is the login name, ``None`` where there is none
    (a container without one: `getpass.getuser` raises); the put still succeeds."""
    import getpass

    import butler._provenance as provenance

    def no_user() -> str:
        raise OSError("No username set in the environment")

    monkeypatch.setattr(getpass, "getuser", no_user)
    provenance._where.cache_clear()
    try:
        b = local.opened[0]
        define(b)
        b.put({"v": 1}, "cfg", visit=1)
        p = b.provenance("cfg", visit=1)
        assert p.user is None and p.host == socket.gethostname()
    finally:
        provenance._where.cache_clear()
