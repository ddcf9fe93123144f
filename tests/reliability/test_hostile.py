"""Hostile input: corrupt files, code-executing payloads, path tricks, oversize headers.

Every case asserts the documented `ButlerError` subclass, a message naming the dataset type
(or the repository for repository-level cases), and that nothing was written: the storage
looks exactly the same afterwards (keys, policy, and the raw files / objects / rows behind
butler's back). Payloads that would execute code try to create a marker file, which must
not exist afterwards.

The cases run one test each on ``posix``, ``memory`` and ``sqlite``, and all together in
one repository per server storage (``s3``, ``postgresql``, ``mysql``).
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import sys
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import (
    Butler,
    ButlerError,
    Config,
    DatasetExistsError,
    DatasetTypeError,
    FormatError,
    InvalidDataIdError,
    NoSerializerError,
    StorageError,
    UnsafeFormatError,
)

from .conftest import make_repo
from .helpers import Repo, db_counts, s3_objects

pytestmark = pytest.mark.reliability

#: Peak Python-tracked allocation allowed while rejecting an oversize header.
MEMORY_LIMIT = 64 * 2**20

TYPES: dict[str, tuple[Any, str]] = {
    "cfg": (dict, "json"),
    "arr": (np.ndarray, "npy"),
    "obj": (object, "pickle"),
    "conf": (Config, "config"),
    "img": (np.ndarray, "fits"),
    "h5": (np.ndarray, "hdf5"),
}


@dataclass
class Ctx:
    """What a case gets: the repository, a butler on it, and a directory for markers."""

    repo: Repo
    butler: Butler
    tmp: Path

    def marker(self) -> Path:
        return self.tmp / f"marker-{uuid.uuid4().hex}"

    def reg(self, name: str) -> None:
        if name in self.butler.dataset_types:
            return
        python_type, fmt = TYPES[name]
        self.butler.register_dataset_type(name, python_type, fmt, dimensions={"visit": int})

    def plant(self, name: str, visit: int, data: bytes, python_type: str | None = None) -> None:
        """Store raw bytes as a dataset, with the metadata a real put would record."""
        self.reg(name)
        location = self.butler.location(name, visit=visit)
        meta = location.write_metadata()
        if python_type is not None:
            meta["python_type"] = python_type
        self.butler.storage.write_bytes(location.key, data, metadata=meta)


@dataclass
class Case:
    id: str
    error: type[ButlerError]
    #: Sets the stage (may write), then returns the action that must fail.
    setup: Callable[[Ctx], Callable[[], Any]]
    #: Text the error message must contain ("{dt}" -> the dataset type name).
    names: str
    needs: str | None = None
    #: Markers that must not exist afterwards are collected here by setup.
    markers: tuple[Path, ...] = ()
    bounded_memory: bool = False


CASES: list[Case] = []


def case(
    id: str,
    error: type[ButlerError],
    names: str,
    *,
    needs: str | None = None,
    bounded_memory: bool = False,
) -> Callable[[Callable[[Ctx], Callable[[], Any]]], Callable[[Ctx], Callable[[], Any]]]:
    def register(setup: Callable[[Ctx], Callable[[], Any]]) -> Callable[[Ctx], Callable[[], Any]]:
        CASES.append(Case(id, error, setup, names, needs, bounded_memory=bounded_memory))
        return setup

    return register


def _get(ctx: Ctx, name: str, visit: int, **kw: Any) -> Callable[[], Any]:
    return lambda: ctx.butler.get(name, visit=visit, **kw)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def _npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + b"\0" * 64


class Payload:
    """Unpickling this calls ``open(marker, "w")``: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


# -- corrupt or hostile files, read back with get() --------------------------------------------


@case("json-truncated", FormatError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("cfg", 1, b'{"gain": [1, 2, 3')
    return _get(ctx, "cfg", 1)


@case("json-binary-garbage", FormatError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("cfg", 2, b"\xff\xfe\xfa\x00\x81garbage")
    return _get(ctx, "cfg", 2)


@case("json-deep-nesting-5MB", FormatError, "'cfg'", bounded_memory=True)
def _(ctx: Ctx) -> Callable[[], Any]:
    depth = 2_500_000
    ctx.plant("cfg", 3, b"[" * depth + b"]" * depth)
    return _get(ctx, "cfg", 3)


@case("json-wrong-python-type", FormatError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("cfg", 4, b"[1, 2, 3]")
    return _get(ctx, "cfg", 4)


@case("npy-truncated", FormatError, "'arr'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("arr", 1, _npy(np.arange(10_000.0))[:-1000])
    return _get(ctx, "arr", 1)


@case("npy-garbage", FormatError, "'arr'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("arr", 2, b"\x93NUMPY garbage, not a header" * 10)
    return _get(ctx, "arr", 2)


@case("npy-absurd-shape-64GiB", FormatError, "'arr'", bounded_memory=True)
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("arr", 3, _npy_header((2**33,)))
    return _get(ctx, "arr", 3)


@case("npy-absurd-shape-overflow", FormatError, "'arr'", bounded_memory=True)
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("arr", 4, _npy_header((2**40, 2**40, 2**40)))
    return _get(ctx, "arr", 4, parameters={"slice": (slice(0, 2),)})


@case("npy-object-dtype-pickle-inside", FormatError, "'arr'")
def _(ctx: Ctx) -> Callable[[], Any]:
    marker = ctx.marker()
    ctx.plant("arr", 5, _npy(np.array([Payload(str(marker)), 1], dtype=object)))
    CASES_MARKERS.append(marker)
    return _get(ctx, "arr", 5)


@case("pickle-truncated", FormatError, "'obj'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("obj", 1, pickle.dumps({"a": list(range(1000))})[:-50], "builtins.dict")
    return _get(ctx, "obj", 1, allow_pickle=True)


@case("pickle-reduce-payload-without-opt-in", UnsafeFormatError, "'obj'")
def _(ctx: Ctx) -> Callable[[], Any]:
    marker = ctx.marker()
    CASES_MARKERS.append(marker)
    ctx.plant("obj", 2, pickle.dumps(Payload(str(marker))), "builtins.object")
    return _get(ctx, "obj", 2)


@case("config-python-object-apply-tag", FormatError, "'conf'")
def _(ctx: Ctx) -> Callable[[], Any]:
    marker = ctx.marker()
    CASES_MARKERS.append(marker)
    text = f'!!python/object/apply:builtins.open ["{marker}", "w"]\n'
    ctx.plant("conf", 1, text.encode(), "butler._config.Config")
    return _get(ctx, "conf", 1)


@case("config-python-name-tag", FormatError, "'conf'")
def _(ctx: Ctx) -> Callable[[], Any]:
    text = "python_type: butler._config.Config\ndata: !!python/name:os.system\n"
    ctx.plant("conf", 2, text.encode(), "butler._config.Config")
    return _get(ctx, "conf", 2)


def _evil_module(ctx: Ctx) -> str:
    """An importable module whose import creates a marker file; returns its name."""
    marker = ctx.marker()
    CASES_MARKERS.append(marker)
    name = f"butler_rel_evil_{uuid.uuid4().hex[:8]}"
    (ctx.tmp / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Payload(dict):\n    pass\n"
    )
    if str(ctx.tmp) not in sys.path:
        sys.path.insert(0, str(ctx.tmp))
    EVIL_MODULES.append(name)
    return name


@case("config-recorded-type-in-unimported-module", FormatError, "'conf'")
def _(ctx: Ctx) -> Callable[[], Any]:
    module = _evil_module(ctx)
    text = f"python_type: {module}.Payload\ndata: {{a: 1}}\n"
    ctx.plant("conf", 3, text.encode(), "butler._config.Config")
    return _get(ctx, "conf", 3)


@case("config-recorded-type-not-a-subclass", FormatError, "'conf'")
def _(ctx: Ctx) -> Callable[[], Any]:
    text = "python_type: butler.Butler\ndata: {root: x}\n"
    ctx.plant("conf", 4, text.encode(), "butler._config.Config")
    return _get(ctx, "conf", 4)


@case("config-not-a-config-document", FormatError, "'conf'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("conf", 5, b"- just\n- a list\n", "butler._config.Config")
    return _get(ctx, "conf", 5)


@case("metadata-type-in-unimported-module", FormatError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    module = _evil_module(ctx)
    ctx.plant("cfg", 5, b'{"a": 1}', f"{module}.Payload")
    return _get(ctx, "cfg", 5)


def _fits_bytes() -> bytes:
    from astropy.io import fits

    buf = io.BytesIO()
    fits.PrimaryHDU(np.arange(1000.0).reshape(10, 100)).writeto(buf)
    return buf.getvalue()


@case("fits-truncated", FormatError, "'img'", needs="butler_fits")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("img", 1, _fits_bytes()[:3000])
    return _get(ctx, "img", 1)


@case("fits-garbage-header", FormatError, "'img'", needs="butler_fits")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("img", 2, b"SIMPLE  = garbage".ljust(2880))
    return _get(ctx, "img", 2)


@case("fits-header-claims-320GB", FormatError, "'img'", needs="butler_fits", bounded_memory=True)
def _(ctx: Ctx) -> Callable[[], Any]:
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                  -64",
        "NAXIS   =                    2",
        "NAXIS1  =               200000",
        "NAXIS2  =               200000",
        "END",
    ]
    header = "".join(f"{c:<80}" for c in cards).ljust(2880).encode()
    ctx.plant("img", 3, header + b"\0" * 2880)
    return _get(ctx, "img", 3)


def _hdf5_bytes(ctx: Ctx) -> bytes:
    ctx.reg("h5")
    location = ctx.butler.put(np.arange(1000.0), "h5", visit=99)
    data = ctx.butler.storage.read_bytes(location.key)
    ctx.butler.remove("h5", visit=99)
    return data


@case("hdf5-truncated", FormatError, "'h5'", needs="butler_hdf5")
def _(ctx: Ctx) -> Callable[[], Any]:
    data = _hdf5_bytes(ctx)
    ctx.plant("h5", 1, data[: len(data) // 2])
    return _get(ctx, "h5", 1)


@case("hdf5-garbage", FormatError, "'h5'", needs="butler_hdf5")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.plant("h5", 2, b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    return _get(ctx, "h5", 2)


# -- puts and definitions that must be refused before anything is written ----------------------


@case("put-wrong-python-type", DatasetTypeError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.reg("cfg")
    return lambda: ctx.butler.put([1, 2, 3], "cfg", visit=10)


@case("put-dict-as-array", DatasetTypeError, "'arr'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.reg("arr")
    return lambda: ctx.butler.put({"a": 1}, "arr", visit=10)


@case("put-existing-without-overwrite", DatasetExistsError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.reg("cfg")
    ctx.butler.put({"v": 1}, "cfg", visit=11)
    return lambda: ctx.butler.put({"v": 2}, "cfg", visit=11)


@case("unknown-format", NoSerializerError, "'calexp'")
def _(ctx: Ctx) -> Callable[[], Any]:
    return lambda: ctx.butler.register_dataset_type("calexp", dict, "no-such-format")


@case("unknown-dataset-type", DatasetTypeError, "'never_defined'")
def _(ctx: Ctx) -> Callable[[], Any]:
    return lambda: ctx.butler.get("never_defined", visit=1)


@case("unknown-storage-scheme", StorageError, "'nosuch'")
def _(ctx: Ctx) -> Callable[[], Any]:
    return lambda: Butler.create("nosuch://bucket/repo")


_TEMPLATES = {
    "conversion": "{visit!r}.json",
    "attribute-access": "{visit.__class__}.json",
    "indexing": "{visit[0]}.json",
    "positional": "{0}.json",
    "parent-dir": "../{visit}.json",
    "absolute": "/etc/{visit}.json",
    "unbalanced": "cal/{visit.json",
    "hidden-segment": ".hidden/{visit}.json",
    "backslash": "cal\\{visit}.json",
    "nested-spec": "{visit:{width}}.json",
    "empty-segment": "cal//{visit}.json",
}

for _label, _template in _TEMPLATES.items():

    def _make(template: str) -> Callable[[Ctx], Callable[[], Any]]:
        def setup(ctx: Ctx) -> Callable[[], Any]:
            return lambda: ctx.butler.register_dataset_type("tmpl", dict, "json", template)

        return setup

    CASES.append(Case(f"template-{_label}", DatasetTypeError, _make(_template), "'tmpl'"))

_DATA_IDS: dict[str, Any] = {
    "dotdot": "..",
    "slash": "a/b",
    "parent-path": "../../etc/passwd",
    "backslash": "a\\b",
    "nul": "a\0b",
    "newline": "a\nb",
    "very-long": "x" * 100_000,
    "lone-surrogate": "abc\udcff",
    "leading-dot": ".hidden",
    "empty": "",
    "bytes": b"raw",
    "float": 1.5,
}

for _label, _value in _DATA_IDS.items():

    def _make_id(value: Any) -> Callable[[Ctx], Callable[[], Any]]:
        def setup(ctx: Ctx) -> Callable[[], Any]:
            ctx.butler.register_dataset_type("bydet", dict, "json", dimensions=["detector"])
            return lambda: ctx.butler.put({"a": 1}, "bydet", detector=value)

        return setup

    CASES.append(Case(f"data-id-{_label}", InvalidDataIdError, _make_id(_value), "'bydet'"))


@case("data-id-missing-key", InvalidDataIdError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.reg("cfg")
    return lambda: ctx.butler.put({"a": 1}, "cfg", detector=3)


@case("data-id-int-dimension-not-int", InvalidDataIdError, "'cfg'")
def _(ctx: Ctx) -> Callable[[], Any]:
    ctx.reg("cfg")
    return lambda: ctx.butler.put({"a": 1}, "cfg", visit="1; DROP TABLE butler_datasets")


_SQL_NAME = "x'; DROP TABLE butler_datasets; --"


@case("dataset-type-name-sql-injection", DatasetTypeError, _SQL_NAME)
def _(ctx: Ctx) -> Callable[[], Any]:
    return lambda: ctx.butler.register_dataset_type(_SQL_NAME, dict, "json", dimensions=["a"])


@case("dataset-type-name-sql-injection-get", DatasetTypeError, _SQL_NAME)
def _(ctx: Ctx) -> Callable[[], Any]:
    return lambda: ctx.butler.get(_SQL_NAME, a="1")


@case("policy-with-code-executing-content", FormatError, "policy")
def _(ctx: Ctx) -> Callable[[], Any]:
    marker = ctx.marker()
    CASES_MARKERS.append(marker)
    storage = ctx.butler.storage
    if ctx.repo.is_database:
        with storage.engine.begin() as conn:  # type: ignore[attr-defined]
            conn.exec_driver_sql(
                "UPDATE butler_repository SET value = ? WHERE name = 'policy'"
                if ctx.repo.kind == "sqlite"
                else "UPDATE butler_repository SET value = %s WHERE name = 'policy'",
                (f'{{"butler": !!python/object/apply:builtins.open ["{marker}", "w"]}}',),
            )
    else:
        text = f'butler: !!python/object/apply:builtins.open ["{marker}", "w"]\n'
        storage.write_bytes("butler.yaml", text.encode())
    return ctx.repo.open


# Filled by setups while they run.
CASES_MARKERS: list[Path] = []
EVIL_MODULES: list[str] = []


# -- the harness ------------------------------------------------------------------------------


def _snapshot(ctx: Ctx) -> Any:
    """Everything visible in the storage: keys, policy, and the raw state behind butler."""
    storage = ctx.butler.storage
    try:
        policy = storage.read_policy()
    except ButlerError as exc:
        policy = f"unreadable: {type(exc).__name__}"
    state: dict[str, Any] = {"keys": sorted(storage.list("")), "policy": policy}
    if ctx.repo.kind == "posix":
        state["files"] = sorted(
            (
                os.path.relpath(p, ctx.repo.root),
                os.path.getsize(p),
            )
            for p in (os.path.join(d, f) for d, _, fs in os.walk(ctx.repo.root) for f in fs)
        )
    elif ctx.repo.kind == "memory":
        state["sizes"] = {k: storage.size(k) for k in storage.list("")}
    elif ctx.repo.kind == "s3":
        state["objects"] = s3_objects(ctx.repo)
    else:
        state["rows"] = db_counts(ctx.repo)
    return state


def skip_reason(c: Case) -> str | None:
    """Why a case cannot run here (a plugin it needs is missing), or ``None``."""
    if c.needs is not None and _missing(c.needs):
        return f"{c.needs.replace('_', '-')} is not installed"
    return None


def run_case(c: Case, repo: Repo, tmp: Path, butler: Butler | None = None) -> None:
    """Run one case in a repository; raise AssertionError describing any failure.

    A case that cannot run raises `pytest.skip.Exception` (never returns as if it ran).
    """
    reason = skip_reason(c)
    if reason is not None:
        pytest.skip(reason)
    CASES_MARKERS.clear()
    with contextlib.nullcontext(butler) if butler else repo.open() as butler:
        ctx = Ctx(repo, butler, tmp)
        action = c.setup(ctx)
        before = _snapshot(ctx)
        modules_before = set(sys.modules)
        if c.bounded_memory:
            tracemalloc.start()
        try:
            with pytest.raises(c.error) as info:
                action()
        finally:
            if c.bounded_memory:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
        message = str(info.value)
        assert c.names in message, f"{c.id}: message does not name {c.names!r}: {message}"
        if c.bounded_memory:
            assert peak < MEMORY_LIMIT, f"{c.id}: peak allocation {peak} bytes"
        assert _snapshot(ctx) == before, f"{c.id}: the storage changed"
        for marker in CASES_MARKERS:
            assert not marker.exists(), f"{c.id}: the payload ran (created {marker})"
        imported = {m for m in set(sys.modules) - modules_before if m.startswith("butler_rel_")}
        assert not imported, f"{c.id}: imported {imported} named by data"


def _missing(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is None


def _fresh(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Repo]:
    gen = make_repo(request, kind, tmp_path)
    repo = next(gen)
    repo.create().close()
    try:
        yield repo
    finally:
        gen.close()


@pytest.mark.parametrize("kind", ["posix", "memory", "sqlite"])
@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_hostile(c: Case, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    reason = skip_reason(c)
    if reason is not None:
        pytest.skip(reason)
    for repo in _fresh(request, kind, tmp_path):
        run_case(c, repo, tmp_path)


@pytest.mark.parametrize("kind", ["s3", "postgresql", "mysql"])
def test_hostile_all_cases(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Every case, one after the other, in one repository per server storage."""
    failures, ran, skipped = [], 0, []
    for repo in _fresh(request, kind, tmp_path):
        butler = repo.open()
        for c in CASES:
            if c.id == "policy-with-code-executing-content":
                continue  # breaks the repository for the cases after it: run it last
            reason = skip_reason(c)
            if reason is not None:  # not run, so not counted: listed with its reason
                skipped.append(f"{c.id} ({reason})")
                continue
            try:
                run_case(c, repo, tmp_path, butler)
                ran += 1
            except AssertionError as exc:
                failures.append(f"{c.id}: {exc}")
        butler.close()
        last = next(c for c in CASES if c.id == "policy-with-code-executing-content")
        run_case(last, repo, tmp_path)
        ran += 1
    print(f"{kind}: {ran} hostile cases ran, {len(skipped)} skipped: {skipped}")
    assert ran + len(skipped) == len(CASES)
    assert not failures, "\n".join(failures)
    if skipped:
        pytest.skip(f"{ran} cases passed; not run: {', '.join(skipped)}")


def test_missing_plugin_case_is_skipped_not_counted(tmp_path: Path) -> None:
    """Hole 22: a case whose plugin is missing must be reported as skipped, never as run."""
    ghost = Case("needs-ghost", FormatError, lambda ctx: lambda: None, "x", needs="no_such_plugin_")
    with pytest.raises(pytest.skip.Exception, match="no-such-plugin- is not installed"):
        run_case(ghost, None, tmp_path)  # type: ignore[arg-type]


def test_enough_cases() -> None:
    assert len(CASES) >= 30


def test_sql_metacharacters_in_data_ids(storage_root: Repo) -> None:
    """Values full of SQL metacharacters are legal data IDs: stored, listed, read back, and
    the database is intact afterwards."""
    hostile = ["'; DROP TABLE butler_datasets; --", 'a"b', "x%_y", "1 OR 1=1", "é😀", "a;b"]
    with storage_root.create() as b:
        b.register_dataset_type("sqlish", dict, "json", dimensions=["name"])
        for i, value in enumerate(hostile):
            b.put({"i": i, "value": value}, "sqlish", name=value)
        assert sorted(d["name"] for d in b.datasets("sqlish")) == sorted(hostile)
        for i, value in enumerate(hostile):
            assert b.get("sqlish", name=value) == {"i": i, "value": value}
        assert b.verify().healthy
    with storage_root.open() as b:
        assert sorted(d["name"] for d in b.datasets("sqlish")) == sorted(hostile)
    if storage_root.is_database:
        assert db_counts(storage_root)["datasets"] == len(hostile)


def teardown_module() -> None:
    for name in EVIL_MODULES:
        sys.modules.pop(name, None)
