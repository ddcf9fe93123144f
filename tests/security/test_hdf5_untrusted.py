"""Untrusted HDF5 files: nothing outside the file is read, nothing crashes, nothing explodes.

Issue 12, holes 1, 2 and the HDF5 half of 12. The hostile files are written with h5py as
an attacker would, and put into repositories the way a hostile writer would: the bytes go
straight to the dataset's storage key, with the metadata a real ``put`` recorded.

* An external link, a soft link through an external link, external raw storage and a
  virtual dataset (VDS) all point at a *secret* outside the repository; every reader path
  (``get`` of arrays, dicts and tables; ``read_file``; ``butler convert``) refuses them
  with `UnsafeFormatError` naming the HDF5 object and its target, on posix, memory,
  SQLite and S3.
* A VDS read through a file object (memory, SQLite, S3) crashed libhdf5 (SIGSEGV): those
  reads run in a subprocess, so a crash is a failing return code, not a dead test runner.
* A tiny file declaring a huge (sparse) dataset is refused before allocation with a
  `FormatError` naming the declared size and ``max_read_bytes``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

import butler  # noqa: E402
from butler import Butler, FormatError, UnsafeFormatError  # noqa: E402

#: What the secret files outside the repository hold: it must never come back.
SECRET = b"TOP-SECRET-" * 8


# -- hostile files -----------------------------------------------------------------------


def _secrets(outside: Path) -> tuple[str, str]:
    """An HDF5 file and a raw file outside the repository, both holding `SECRET`."""
    outside.mkdir(parents=True, exist_ok=True)
    h5 = str(outside / "secret.h5")
    raw = str(outside / "secret.bin")
    with h5py.File(h5, "w") as f:
        f["data"] = np.frombuffer(SECRET, dtype=np.uint8)
    with open(raw, "wb") as f:
        f.write(SECRET)
    return h5, raw


def _plant(f: h5py.Group, name: str, kind: str, h5: str, raw: str) -> None:
    """Make ``f[name]`` read `SECRET` from outside the file, the ``kind`` way."""
    n = len(SECRET)
    if kind == "external-link":
        f[name] = h5py.ExternalLink(h5, "/data")
    elif kind == "soft-via-external":
        # A soft link inside the file whose target path goes through an external link.
        f["elsewhere"] = h5py.ExternalLink(h5, "/")
        f[name] = h5py.SoftLink("/elsewhere/data")
    elif kind == "external-storage":
        f.create_dataset(name, shape=(n,), dtype="u1", external=[(raw, 0, n)])
    elif kind == "virtual":
        layout = h5py.VirtualLayout(shape=(n,), dtype="u1")
        layout[:] = h5py.VirtualSource(h5, "data", shape=(n,))
        f.create_virtual_dataset(name, layout)
    else:  # pragma: no cover
        raise AssertionError(kind)


def hostile_bytes(kind: str, shape: str, h5: str, raw: str) -> bytes:
    """An HDF5 file whose array (``shape="array"``), dict or table reads the secret."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        if shape == "dict":
            f["gain"] = 1.5
            _plant(f.create_group("inner"), "leak", kind, h5, raw)
        else:
            _plant(f, "data", kind, h5, raw)
    return buffer.getvalue()


KINDS = ["external-link", "soft-via-external", "external-storage", "virtual"]
#: What each kind's error names as the target.
TARGETS = {
    "external-link": "external link",
    "soft-via-external": "external link",
    "external-storage": "external raw storage",
    "virtual": "virtual dataset",
}


def _define(b: Butler) -> None:
    b.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"i": int})
    b.register_dataset_type("cfg", dict, "hdf5", dimensions={"i": int})


def plant(b: Butler, dataset_type: str, data: bytes, **data_id: Any) -> None:
    """Replace a dataset's bytes as a hostile writer would: the storage key, real metadata."""
    value = np.arange(3) if dataset_type == "arr" else {"x": 1}
    location = b.put(value, dataset_type, overwrite=True, **data_id)
    b.storage.write_bytes(location.key, data, metadata=b.storage.metadata(location.key))


# -- repositories ------------------------------------------------------------------------


@pytest.fixture(params=["posix", "memory", "sqlite", "s3"])
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    """A fresh repository on each storage an HDF5 dataset can live in."""
    b = butler_repo(request.param)
    _define(b)
    return b


def _assert_refused(exc: BaseException, kind: str, obj: str, target: str) -> None:
    text = str(exc)
    assert TARGETS[kind] in text, text
    assert repr(obj) in text, text  # the HDF5 object path
    assert target in text, text  # what it points to
    assert "h5py directly" in text, text  # what to do instead
    assert "TOP-SECRET" not in text


# -- hole 1: nothing outside the file ----------------------------------------------------


def test_get_refuses_links_out_of_the_file(repo: Butler, tmp_path: Path) -> None:
    """Every kind of outward pointer, in an array and inside a dict, on every storage."""
    h5, raw = _secrets(tmp_path / "outside")
    kinds = KINDS if repo.storage.has_local_paths else KINDS[:-1]  # VDS: see below
    for i, (kind, dataset_type) in enumerate(
        (kind, dataset_type) for kind in kinds for dataset_type in ("arr", "cfg")
    ):
        shape = "array" if dataset_type == "arr" else "dict"
        plant(repo, dataset_type, hostile_bytes(kind, shape, h5, raw), i=i)
        with pytest.raises(UnsafeFormatError) as info:
            repo.get(dataset_type, i=i)
        obj = "/data" if dataset_type == "arr" else "/inner/leak"
        if kind == "soft-via-external":
            obj = "/elsewhere" if dataset_type == "arr" else "/inner/elsewhere"
        _assert_refused(info.value, kind, obj, raw if kind == "external-storage" else h5)


@pytest.mark.parametrize("kind", KINDS)
def test_read_file_and_convert_refuse_links_out_of_the_file(tmp_path: Path, kind: str) -> None:
    from click.testing import CliRunner

    from butler._cli import main

    h5, raw = _secrets(tmp_path / "outside")
    path = tmp_path / "in.h5"
    path.write_bytes(hostile_bytes(kind, "array", h5, raw))
    with pytest.raises(UnsafeFormatError) as info:
        butler.read_file(str(path), python_type="numpy.ndarray")
    target = raw if kind == "external-storage" else h5
    obj = "/elsewhere" if kind == "soft-via-external" else "/data"
    _assert_refused(info.value, kind, obj, target)
    # Read as a dict (the format's default type for foreign files), then butler convert.
    with pytest.raises(UnsafeFormatError):
        butler.read_file(str(path))
    out = tmp_path / "out.npy"
    result = CliRunner().invoke(main, ["convert", str(path), str(out)])
    assert result.exit_code != 0
    assert not out.exists()
    assert "TOP-SECRET" not in result.output


def _table_bytes(kind: str, h5: str, raw: str, *, in_meta: bool) -> bytes:
    """An astropy table file whose table (or companion metadata dataset) is hostile."""
    from astropy.table import Table

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        Table({"a": [1, 2, 3]}).write(f, path="data", serialize_meta=True)
        name = "data.__table_column_meta__" if in_meta else "data"
        del f[name]
        _plant(f, name, kind, h5, raw)
    return buffer.getvalue()


@pytest.mark.parametrize("in_meta", [False, True], ids=["table", "meta"])
@pytest.mark.parametrize("kind", ["external-link", "external-storage", "virtual"])
def test_table_refuses_links_out_of_the_file(tmp_path: Path, kind: str, in_meta: bool) -> None:
    pytest.importorskip("astropy")
    from astropy.table import Table

    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("cat", "astropy.table.Table", "hdf5", dimensions={"i": int})
    h5, raw = _secrets(tmp_path / "outside")
    location = b.put(Table({"a": [1, 2, 3]}), "cat", i=1)
    data = _table_bytes(kind, h5, raw, in_meta=in_meta)
    b.storage.write_bytes(location.key, data, metadata=b.storage.metadata(location.key))
    with pytest.raises(UnsafeFormatError, match=TARGETS[kind]):
        b.get("cat", i=1)


def test_soft_links_inside_the_file_still_work(repo: Butler) -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["real"] = np.arange(4)
        f["group/value"] = 7
        f["alias"] = h5py.SoftLink("/real")  # absolute
        f["group/sibling"] = h5py.SoftLink("value")  # relative to its group
        f["dangling"] = h5py.SoftLink("/nowhere")
    plant(repo, "cfg", buffer.getvalue(), i=1)
    got = repo.get("cfg", i=1)
    assert list(got) == ["alias", "group", "real"]
    np.testing.assert_array_equal(got["alias"], np.arange(4))
    assert got["group"] == {"sibling": 7, "value": 7}
    repo.register_dataset_type(
        "aliased", "numpy.ndarray", "hdf5", dimensions={"i": int},
        additional_data={"path": "alias"},
    )  # fmt: skip
    location = repo.location("aliased", i=1)
    repo.storage.write_bytes(location.key, buffer.getvalue())
    np.testing.assert_array_equal(repo.get("aliased", i=1), np.arange(4))


def test_linked_groups_are_read_once(tmp_path: Path) -> None:
    """Groups hard-linked to each other: a cycle is refused, a diamond read once per object."""
    b = Butler.create(str(tmp_path / "repo"))
    _define(b)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        # 2**60 paths through 60 levels, each level linked twice: the old reader walked
        # every path and never finished.
        level = f.create_group("g0")
        level["x"] = 1
        for depth in range(1, 61):
            parent = f.create_group(f"g{depth}")
            parent["a"] = level
            parent["b"] = level
            level = parent
        f["top"] = h5py.SoftLink(f"/g{60}")
    plant(b, "cfg", buffer.getvalue(), i=1)
    got = b.get("cfg", i=1)
    assert got["top"]["a"] is got["top"]["b"]
    assert got["g1"]["a"] == {"x": 1}

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["g/h/x"] = 1
        f["g/h/back"] = f["g"]  # a hard link to its own grandparent
    plant(b, "cfg", buffer.getvalue(), i=2)
    with pytest.raises(FormatError, match=r"'/g/h/back' links back to its ancestor"):
        b.get("cfg", i=2)


# -- hole 2: no input crashes the process ------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import io, json, sys
    import h5py, numpy as np
    import butler
    from butler import Butler
    from tests.security.test_hdf5_untrusted import _define, _secrets, hostile_bytes, plant
    from pathlib import Path

    root, outside, options = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    h5, raw = _secrets(outside)
    b = Butler.create(root, **options)
    _define(b)
    results = {}
    for dataset_type, shape in (("arr", "array"), ("cfg", "dict")):
        plant(b, dataset_type, hostile_bytes("virtual", shape, h5, raw), i=1)
        try:
            results[dataset_type] = repr(b.get(dataset_type, i=1))
        except Exception as exc:
            results[dataset_type] = f"{type(exc).__name__}: {exc}"
    if root.startswith("memory://"):  # read_file through a file object too
        files = Butler.create(root + "-files")
        files.storage.write_bytes("in.h5", hostile_bytes("virtual", "array", h5, raw))
        try:
            results["read_file"] = repr(butler.read_file(root + "-files/in.h5"))
        except Exception as exc:
            results["read_file"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(results))
    """
)


@pytest.mark.parametrize("storage", ["memory", "sqlite", "s3"])
def test_virtual_dataset_never_crashes(
    storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    options: dict[str, Any] = {}
    if storage == "memory":
        root = f"memory://vds-{uuid.uuid4().hex}"
    elif storage == "sqlite":
        pytest.importorskip("butler_db", reason="butler-db is not installed")
        root = f"sqlite:///{tmp_path}/repo.db"
    else:
        bucket = request.getfixturevalue("s3_bucket")
        options = dict(request.getfixturevalue("s3_credentials"))
        root = f"s3://{bucket}/repo"
    repo_root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, root, str(tmp_path / "outside"), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=repo_root,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([os.environ.get("PYTHONPATH", ""), str(repo_root)]),
        },
    )
    assert proc.returncode == 0, f"reader died ({proc.returncode}): {proc.stderr[-2000:]}"
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) >= {"arr", "cfg"}
    for what, outcome in results.items():
        assert outcome.startswith("UnsafeFormatError: "), (what, outcome)
        assert "is a virtual dataset mapping data from" in outcome, outcome
        assert "secret.h5" in outcome
        assert "TOP-SECRET" not in outcome


# -- hole 12 (HDF5): declared sizes are checked before allocating --------------------------


def _sparse(shape: tuple[int, ...], dtype: str = "f8", name: str = "data") -> bytes:
    """A tiny HDF5 file declaring a chunked dataset of ``shape`` with no chunk written."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset(name, shape=shape, dtype=dtype, chunks=(1024,) + (1,) * (len(shape) - 1))
    return buffer.getvalue()


@pytest.fixture(params=["posix", "memory", "sqlite"])
def local_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        pytest.importorskip("butler_db", reason="butler-db is not installed")
    root = {
        "posix": str(tmp_path / "repo"),
        "memory": f"memory://hdf5-size-{uuid.uuid4().hex}",
        "sqlite": f"sqlite:///{tmp_path}/repo.db",
    }[request.param]
    Butler.create(root).close()
    yield root
    if request.param == "memory":
        from butler.storages.memory import MemoryStorage

        MemoryStorage.clear(root[len("memory://") :])


def test_huge_declared_dataset_is_refused(local_root: str) -> None:
    b = Butler(local_root)
    _define(b)
    data = _sparse((2**40,))  # 8 TiB declared
    assert len(data) < 4096
    plant(b, "arr", data, i=1)
    with pytest.raises(FormatError) as info:
        b.get("arr", i=1)
    text = str(info.value)
    assert "HDF5 dataset '/data' declares 8,796,093,022,208 bytes" in text, text
    assert "max_read_bytes" in text
    # A slice within the limit of the same huge dataset reads (sparse: the fill value).
    part = b.get("arr", i=1, parameters={"slice": (slice(2**39, 2**39 + 10),)})
    np.testing.assert_array_equal(part, np.zeros(10))


def test_read_limit_is_the_readers(local_root: str) -> None:
    small = Butler(local_root, max_read_bytes="1MiB")
    _define(small)
    plant(small, "arr", _sparse((2**18,)), i=1)  # 2 MiB declared
    with pytest.raises(FormatError, match=r"declares 2,097,152 bytes.*limit of 1,048,576"):
        small.get("arr", i=1)
    with pytest.raises(FormatError, match=r"declares 2,097,152 bytes"):
        small.get("arr", i=1, parameters={"slice": (Ellipsis,)})
    larger = Butler(local_root, max_read_bytes="4MiB")
    np.testing.assert_array_equal(larger.get("arr", i=1), np.zeros(2**18))


def test_dict_sums_its_datasets(local_root: str) -> None:
    b = Butler(local_root, max_read_bytes="3MiB")
    _define(b)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for name in ("a", "b/c"):  # 2 MiB each: each fits, both do not
            f.create_dataset(name, shape=(2**18,), dtype="f8", chunks=(1024,))
    plant(b, "cfg", buffer.getvalue(), i=1)
    with pytest.raises(
        FormatError, match=r"HDF5 group '/' \(all its datasets\) declares 4,194,304"
    ):
        b.get("cfg", i=1)
    got = Butler(local_root, max_read_bytes="5MiB").get("cfg", i=1)
    assert got["b"]["c"].shape == (2**18,)


def _reopened(tmp_path: Path, **options: Any) -> Butler:
    Butler.create(str(tmp_path / "repo")).close()
    return Butler(str(tmp_path / "repo"), **options)


def test_recorded_dtype_counts(tmp_path: Path) -> None:
    """A small stored dtype recorded as a wide one converts into the wide one: counted."""
    b = _reopened(tmp_path, max_read_bytes="1MiB")
    _define(b)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        d = f.create_dataset("data", shape=(1000,), dtype="u1")
        d.attrs["butler.numpy_dtype"] = repr("<U100000")  # 400 KB per element
    plant(b, "arr", buffer.getvalue(), i=1)
    with pytest.raises(FormatError, match=r"declares 400,000,000 bytes"):
        b.get("arr", i=1)


def test_huge_attribute_is_refused(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    _define(b)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f["data"] = np.arange(3)
        f["data"].attrs["butler.python_type"] = np.array([b"numpy.ndarray"] * 10)
    plant(b, "arr", buffer.getvalue(), i=1)
    with pytest.raises(FormatError, match=r"attribute 'butler.python_type' has shape \(10,\)"):
        b.get("arr", i=1)


def test_table_size_is_checked(tmp_path: Path) -> None:
    pytest.importorskip("astropy")
    from astropy.table import Table

    b = _reopened(tmp_path, max_read_bytes="1MiB")
    b.register_dataset_type("cat", "astropy.table.Table", "hdf5", dimensions={"i": int})
    location = b.put(Table({"a": [1.0, 2.0]}), "cat", i=1)
    data = _sparse((2**20,), dtype=np.dtype([("a", "f8"), ("b", "f8")]).str)
    b.storage.write_bytes(location.key, data, metadata=b.storage.metadata(location.key))
    with pytest.raises(FormatError, match=r"HDF5 table '/data' and its metadata declares"):
        b.get("cat", i=1)


def test_allocation_failure_is_a_format_error(tmp_path: Path) -> None:
    """Past a limit raised too far, an allocation that fails is still a FormatError."""
    b = _reopened(tmp_path, max_read_bytes=2**62)
    _define(b)
    plant(b, "arr", _sparse((2**50,), dtype="u1"), i=1)  # 1 PiB: no machine has it
    with pytest.raises(FormatError, match=r"not enough memory to read HDF5 dataset '/data'"):
        b.get("arr", i=1)


def test_compressed_chunk_counts(tmp_path: Path) -> None:
    """A one-element slice still makes libhdf5 decompress its whole (huge) chunk."""
    b = _reopened(tmp_path, max_read_bytes="1MiB")
    _define(b)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.create_dataset("data", data=np.zeros(2**21), chunks=(2**21,), compression="gzip")
    data = buffer.getvalue()
    assert len(data) < 100_000  # 16 MiB of zeros in one chunk
    plant(b, "arr", data, i=1)
    with pytest.raises(FormatError, match=r"one decompressed chunk of 16,777,216 bytes"):
        b.get("arr", i=1, parameters={"slice": (slice(0, 1),)})
    part = Butler(b.storage.root, max_read_bytes="17MiB").get(
        "arr", i=1, parameters={"slice": (slice(0, 1),)}
    )
    np.testing.assert_array_equal(part, np.zeros(1))
