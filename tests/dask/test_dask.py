"""butler.dask on real worker processes: one `distributed.LocalCluster` (2 processes, 1
thread each) for the module, repositories on posix, S3 (moto) and PostgreSQL.

The workers are spawned before any test sets ``AWS_*`` variables, so an S3 repository
reaches them only through the pickled Butler's explicit options.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "dask.bag", reason="dask[bag] is not installed (pip install 'butler-core[dask]')"
)
pytest.importorskip("dask.array", reason="dask[array] is not installed")
pytest.importorskip("distributed", reason="distributed is not installed")

# The workers get this module's functions by value: importing it (pytest, the fixtures)
# in every worker process would cost seconds.
import cloudpickle
import dask.bag as db
from distributed import Client, LocalCluster

import butler.dask as bd
from butler import (
    Butler,
    ComponentError,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetRef,
    FormatError,
    ParameterError,
)

from .._databases import fresh_postgres_schema
from ..conftest import S3_SECRET, have

cloudpickle.register_pickle_by_value(sys.modules[__name__])


@contextlib.contextmanager
def _two_workers() -> Iterator[Client]:
    """Two worker processes (a nanny restarts a worker that dies), one thread each."""
    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with _two_workers() as c:
        yield c


@pytest.fixture(params=["posix", "s3", "postgresql"])
def repo(
    request: pytest.FixtureRequest, butler_repo: Callable[..., Butler], client: Client
) -> Iterator[Butler]:
    """A fresh repository on each storage (PostgreSQL: its own schema, dropped after)."""
    if request.param != "postgresql":
        yield butler_repo(request.param)
        return
    pytest.importorskip("butler_db", reason="butler-db is not installed")
    base = request.getfixturevalue("postgres_url")
    with fresh_postgres_schema(base, "butler_dask") as (url, _):
        b = Butler.create(url)
        try:
            yield b
        finally:
            b.close()


def _pair(i: int) -> tuple[dict[str, Any], dict[str, int]]:
    return {"i": i, "square": i * i}, {"visit": i}


def test_write_then_read_round_trip(repo: Butler, client: Client) -> None:
    repo.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    bag = db.from_sequence(range(12), npartitions=4).map(_pair)
    refs = bd.write(repo, "cfg", bag).compute()
    assert [r.data_id for r in refs] == [{"visit": i} for i in range(12)]
    assert all(isinstance(r, DatasetRef) and r.run == "default" and r.created for r in refs)
    assert refs[3] == repo.ref("cfg", visit=3)
    # the puts happened on the workers, and the client sees every one
    assert sorted(d["visit"] for d in repo.datasets("cfg")) == list(range(12))

    lazy = bd.read(repo, "cfg", "visit >= 4 and visit < 10")
    assert lazy.npartitions == 6  # one task per dataset
    assert lazy.compute() == [_pair(i)[0] for i in range(4, 10)]
    batched = bd.read(repo, "cfg", partition_size=5)
    assert batched.npartitions == 3
    assert batched.map(lambda d: d["square"]).sum().compute() == sum(i * i for i in range(12))
    assert bd.read(repo, "cfg", npartitions=2).npartitions == 2
    assert bd.read(repo, "cfg", visit=[1, 7]).compute() == [_pair(1)[0], _pair(7)[0]]
    assert bd.read(repo, "cfg", "visit > 100").compute() == []


def test_read_runs_and_errors(butler_repo: Callable[..., Butler], client: Client) -> None:
    b = butler_repo("posix")
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"run": "default"}, "cfg", visit=1)
    in_run = Butler(b.storage.uri(), run="night1")
    in_run.put({"run": "night1"}, "cfg", visit=1)
    in_run.put({"run": "night1"}, "cfg", visit=2)
    # each data ID is read from the run it was found in (the Butler's search order)
    assert bd.read(in_run, "cfg").compute() == [{"run": "night1"}, {"run": "night1"}]
    assert bd.read(b, "cfg").compute() == [{"run": "default"}]
    with pytest.raises(ParameterError, match="partition_size or npartitions"):
        bd.read(b, "cfg", partition_size=2, npartitions=2)
    with pytest.raises(ParameterError, match="positive integer"):
        bd.read(b, "cfg", partition_size=0)
    with pytest.raises(ParameterError, match="sectoin"):
        bd.read(b, "cfg", parameters={"sectoin": 1})
    # a dataset removed after the graph was built: the task's error names it
    lazy = bd.read(in_run, "cfg")
    in_run.remove("cfg", visit=2)
    with pytest.raises(DatasetNotFoundError, match=r"'cfg' \{'visit': 2\}"):
        lazy.compute()


def test_read_components(butler_repo: Callable[..., Butler], client: Client) -> None:
    """``read(b, "cfg.square")``: the datasets of cfg, each read as that component,
    assembled or disassembled; a component the objects lack fails the task that reads it."""
    b = butler_repo("posix")
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("cfg_d", dict, "json", dimensions={"visit": int}, disassemble=True)
    for i in range(4):
        b.put(_pair(i)[0], "cfg", visit=i)
        b.put(_pair(i)[0], "cfg_d", visit=i)
    for name in ("cfg.square", "cfg_d.square"):
        assert bd.read(b, name, "visit >= 1", partition_size=2).compute() == [1, 4, 9]
    with pytest.raises(ComponentError, match=r"'builtins\.int' has no components"):
        bd.read(b, "cfg.square.x", "visit >= 1").compute()


def test_write_retry_semantics(butler_repo: Callable[..., Butler], client: Client) -> None:
    b = butler_repo("posix")
    b.register_dataset_type("img", np.ndarray, "npy", dimensions={"visit": int})
    bag = db.from_sequence(range(4), npartitions=2).map(
        lambda i: (np.full((3, 3), i, dtype="f4"), {"visit": i})
    )
    first = bd.write(b, "img", bag).compute()
    # a retried (here: repeated) create-only put of equal objects succeeds: same datasets
    assert bd.write(b, "img", bag).compute() == first
    changed = bag.map(lambda pair: (pair[0] + 1, pair[1]))
    with pytest.raises(DatasetExistsError, match="holds a different object"):
        bd.write(b, "img", changed).compute()
    assert b.get("img", visit=2)[0, 0] == 2  # nothing replaced
    refs = bd.write(b, "img", changed, overwrite=True).compute()
    assert b.get("img", visit=2)[0, 0] == 3
    assert refs[2].created != first[2].created
    with pytest.raises(Exception, match=r"\(obj, data_id\) pairs"):
        bd.write(b, "img", db.from_sequence([1, 2])).compute()


def test_retry_repairs_index_row(butler_repo: Callable[..., Butler], client: Client) -> None:
    """A first attempt that committed the bytes but died before the index row: the retry
    finds the dataset, counts it as written and adds the row."""
    b = butler_repo("posix")
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    Butler(b.storage.uri(), index=False).put(_pair(5)[0], "cfg", visit=5)
    assert list(b.datasets("cfg")) == []  # through the index: unindexed
    refs = bd.write(b, "cfg", db.from_sequence([_pair(5)])).compute()
    assert refs == [b.ref("cfg", visit=5)]
    assert list(b.datasets("cfg")) == [{"visit": 5}]
    assert b.verify().healthy


class Exploding:
    """Pickles as a string; the first time (no marker file yet) it kills the process
    that pickles it instead: in the middle of a put, after the payload's bytes went out."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(17)
        return (str, ("survived",))


def _exploding_pair(i: int, marker: str) -> tuple[list[Any], dict[str, int]]:
    payload = bytes([i]) * 300_000  # pickle flushes it to the file before Exploding
    return [payload, Exploding(marker) if i == 2 else "survived"], {"visit": i}


@pytest.fixture
def own_client() -> Iterator[Client]:
    """A cluster of its own for a test that kills a worker: the module's other tests never
    depend on a nanny having restarted it (under heavy load one did not, within 120 s)."""
    with _two_workers() as c:
        yield c


@pytest.mark.parametrize("kind", ["posix", pytest.param("s3", marks=pytest.mark.slow)])
def test_worker_killed_mid_put(
    kind: str, butler_repo: Callable[..., Butler], own_client: Client, tmp_path: Path
) -> None:
    client = own_client
    b = butler_repo(kind, allow_pickle=True)
    b.register_dataset_type("blob", object, "pickle", dimensions={"visit": int})
    marker = str(tmp_path / "killed")
    bag = db.from_sequence(range(4), partition_size=1).map(_exploding_pair, marker)
    refs = bd.write(b, "blob", bag).compute()
    assert Path(marker).exists()  # the first attempt of visit 2 died in os._exit
    died = int(Path(marker).read_text())
    assert died not in client.run(os.getpid).values()  # that worker process is gone
    assert died not in {w.get("pid") for w in client.scheduler_info()["workers"].values()}
    # The retried task ran on a live worker (the nanny's restart of the dead one is
    # distributed's business: under heavy load it once took longer than 120 s).
    assert [r.data_id["visit"] for r in refs] == [0, 1, 2, 3]
    for i in range(4):  # whole datasets, the retried one included; nothing partial
        assert b.get("blob", visit=i) == [bytes([i]) * 300_000, "survived"]
    assert sorted(d["visit"] for d in b.datasets("blob")) == [0, 1, 2, 3]
    assert b.verify().healthy


def _image(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=">f4").reshape(shape) / 7


ARRAY_FORMATS = [
    "npy",
    pytest.param(
        "fits", marks=pytest.mark.skipif(not have("butler_fits"), reason="no butler-fits")
    ),
    pytest.param(
        "hdf5", marks=pytest.mark.skipif(not have("butler_hdf5"), reason="no butler-hdf5")
    ),
]


@pytest.mark.parametrize("fmt", ARRAY_FORMATS)
def test_array_chunks_equal_numpy_slices(
    fmt: str, butler_repo: Callable[..., Butler], client: Client
) -> None:
    b = butler_repo("posix")
    b.register_dataset_type("img", np.ndarray, fmt, dimensions={"visit": int})
    whole = _image((50, 37))
    b.put(whole, "img", visit=1)
    b.put(whole[7], "img", visit=2)
    x = bd.array(b, "img", chunks=(16, 10), visit=1)
    assert x.shape == whole.shape and x.dtype.newbyteorder("=") == whole.dtype.newbyteorder("=")
    assert x.numblocks == (4, 4)
    for i in range(4):
        for j in range(4):
            block = x.blocks[i, j].compute()
            np.testing.assert_array_equal(
                block, whole[i * 16 : (i + 1) * 16, j * 10 : (j + 1) * 10]
            )
    np.testing.assert_array_equal(x.compute(), whole)
    assert float(x.mean().compute()) == pytest.approx(float(whole.mean()), rel=1e-6)
    np.testing.assert_array_equal(x[10:40:3, 5].compute(), whole[10:40:3, 5])
    line = bd.array(b, "img", chunks=8, visit=2)  # 1-d: the length found by probing
    assert line.shape == (37,) and line.numblocks == (5,)
    np.testing.assert_array_equal(line.compute(), whole[7])


def test_array_on_s3_and_three_dimensions(
    butler_repo: Callable[..., Butler], client: Client
) -> None:
    b = butler_repo("s3")
    b.register_dataset_type("cube", np.ndarray, "npy", dimensions={"visit": int})
    cube = _image((6, 20, 9))
    b.put(cube, "cube", visit=1)
    x = bd.array(b, "cube", chunks=(4, 8, 9), visit=1)
    assert x.shape == cube.shape
    np.testing.assert_array_equal(x.blocks[1, 2].compute(), cube[4:, 16:, :])
    np.testing.assert_allclose(x.sum(axis=0).compute(), cube.sum(axis=0), rtol=1e-6)


def test_array_refusals(butler_repo: Callable[..., Butler], client: Client) -> None:
    b = butler_repo("posix")
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.put({"a": 1}, "cfg", visit=1)
    with pytest.raises(ParameterError, match="format 'json', which declares no partial read"):
        bd.array(b, "cfg", chunks=4, visit=1)
    b.register_dataset_type("img", np.ndarray, "npy", dimensions={"visit": int})
    b.put(_image((10, 10)), "img", visit=1)
    with pytest.raises(ParameterError, match="'slice' itself"):
        bd.array(b, "img", chunks=4, parameters={"slice": ()}, visit=1)
    with pytest.raises(DatasetNotFoundError):
        bd.array(b, "img", chunks=4, visit=2)
    # replaced after the array was built: refused, never a mix of two versions
    x = bd.array(b, "img", chunks=5, visit=1)
    b.put(_image((10, 10)) + 1, "img", visit=1, overwrite=True)
    with pytest.raises(FormatError, match="was replaced"):
        x.compute()


def test_secrets_stay_out_of_reprs_keys_and_errors(s3_repo: Butler, client: Client) -> None:
    b = s3_repo
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    b.register_dataset_type("img", np.ndarray, "npy", dimensions={"visit": int})
    b.put(_image((8, 8)), "img", visit=1)
    written = bd.write(b, "cfg", db.from_sequence([_pair(1), _pair(2)]))
    written.compute()
    lazy = bd.read(b, "cfg")
    x = bd.array(b, "img", chunks=4, visit=1)
    shown = [repr(lazy), repr(written), repr(x), str(dict(lazy.dask)), str(dict(x.dask))]
    shown += [str(k) for k in [*lazy.__dask_keys__(), *x.__dask_keys__(), *written.dask]]
    assert not [s for s in shown if S3_SECRET in s]
    # the secret does travel (the workers have no AWS_* variables): inside the pickle
    assert S3_SECRET.encode() in pickle.dumps(b)
    b.remove("cfg", visit=2)
    with pytest.raises(DatasetNotFoundError) as failed:
        lazy.compute()
    assert "visit': 2" in str(failed.value)
    text = "".join(__import__("traceback").format_exception(failed.value))
    assert S3_SECRET not in text
