"""Issue 12's storage-independent holes, tried on every storage (posix, memory, SQLite, S3 on
moto, PostgreSQL, MariaDB): the repository's policy and layout never decide for the reader.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from butler import Butler, DatasetTypeError, FormatError, InvalidDataIdError, UnsafeFormatError
from butler._storage import POLICY_KEY

from ..reliability.helpers import Repo


def _policy(b: Butler) -> dict[str, Any]:
    policy = b.storage.read_policy()
    assert policy is not None
    return policy


def _tamper(b: Butler, change: Any) -> None:
    """Edit the stored policy behind butler's back, as a hostile repository writer can."""
    policy = _policy(b)
    change(policy)
    b.storage.write_policy(policy)


def test_no_data_id_reaches_the_policy(storage_root: Repo) -> None:
    """Hole 4: a template that can produce ``butler.yaml`` is refused at definition, and a
    mapper producing it is refused at mapping; the policy is untouched."""
    with storage_root.create() as b:
        before = _policy(b)
        with pytest.raises(DatasetTypeError, match="reserved for butler itself"):
            b.register_dataset_type("cfg", dict, "json", "{name}.yaml", dimensions=["name"])
        b.register_dataset_type("cfg", dict, "json", "{name}.json", dimensions=["name"])
        # A hostile writer edits the template in the stored policy: mapping still refuses.
        _tamper(b, lambda p: p["dataset_types"]["cfg"].update(template="{name}.yaml"))
    with storage_root.open() as reader:
        tampered = _policy(reader)
        for action in (
            lambda: reader.put({"x": 1}, "cfg", name="butler", overwrite=True),
            lambda: reader.remove("cfg", name="butler"),
            lambda: reader.get("cfg", name="butler"),
        ):
            with pytest.raises(InvalidDataIdError, match="reserved for butler itself"):
                action()
        assert _policy(reader) == tampered
        assert list(reader.datasets("cfg")) == []
    assert before["butler"] == tampered["butler"]


def test_policy_cannot_enable_unpickling(storage_root: Repo, tmp_path: Path) -> None:
    """Hole 6: ``allow_pickle: true`` written into the policy does not allow this reader."""
    with storage_root.create() as b:
        b.register_dataset_type("obj", object, "pickle", dimensions={"v": int})
        b.put({1, 2}, "obj", v=1)
        _tamper(b, lambda p: p["butler"].update(allow_pickle=True))
    with storage_root.open() as reader:
        with pytest.raises(UnsafeFormatError, match="allow_pickle=True"):
            reader.get("obj", v=1)
        assert reader.get("obj", v=1, allow_pickle=True) == {1, 2}


def test_policy_type_is_never_imported(storage_root: Repo) -> None:
    """Hole 5: a python type named only by the policy is not imported on open, list, verify,
    get or put."""
    with storage_root.create() as b:
        b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
        b.put({"a": 1}, "cfg", v=1)
        _tamper(b, lambda p: p["dataset_types"]["cfg"].update(python_type="butler_sec_never.Evil"))
    before = set(sys.modules)
    with storage_root.open() as reader:
        assert list(reader.datasets("cfg")) == [{"v": 1}]
        reader.verify()
        with pytest.raises(DatasetTypeError, match="allow_imports"):
            reader.get("cfg", v=1)
        with pytest.raises(DatasetTypeError, match="butler_sec_never"):
            reader.put({"b": 1}, "cfg", v=2)
    assert not any(m.startswith("butler_sec_never") for m in set(sys.modules) - before)


def test_policy_with_aliases_is_refused(storage_root: Repo) -> None:
    """Hole 13: a policy using YAML aliases (billion laughs) is refused, not expanded."""
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with storage_root.create() as b:
        if storage_root.is_database:
            pytest.skip("database storages keep the policy as JSON, which has no aliases")
        b.storage.write_bytes(POLICY_KEY, laughs.encode())
    with pytest.raises(FormatError, match="not allowed"):
        storage_root.open()


def test_new_format_keeps_datasets_reachable(storage_root: Repo) -> None:
    """Hole 11: redefining a dataset type's format keeps its template and its datasets."""
    with storage_root.create() as b:
        b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
        b.put({"a": 1}, "cfg", v=1)
        b.register_dataset_type("cfg", dict, "pickle", dimensions={"v": int}, overwrite=True)
    with storage_root.open() as reader:
        assert list(reader.datasets("cfg")) == [{"v": 1}]
        assert reader.get("cfg", v=1) == {"a": 1}
        assert reader.verify().healthy
        with pytest.raises(DatasetTypeError, match="would make them unreachable"):
            reader.register_dataset_type("cfg", dict, "json", "x/{v:d}.json", overwrite=True)


def _define_many(root: str, options: dict[str, Any], worker: int, barrier: Any) -> None:
    with Butler(root, **options) as b:
        barrier.wait()
        for i in range(8):
            b.register_dataset_type(f"w{worker}_{i}", dict, "json", dimensions={"v": int})


def test_concurrent_definitions_are_all_kept(shared_root: Repo) -> None:
    """Hole 8: four processes defining eight dataset types each, at once: all 32 kept."""
    shared_root.create().close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_define_many, args=(shared_root.root, shared_root.options, w, barrier))
        for w in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with shared_root.open() as b:
        names = set(b.dataset_types)
    expected = {f"w{w}_{i}" for w in range(4) for i in range(8)}
    assert expected <= names, f"lost {sorted(expected - names)}"


def test_config_dataset_with_aliases_is_refused(storage_root: Repo) -> None:
    """Hole 13 for datasets: a ``config`` dataset using YAML aliases is refused, not
    expanded, whatever the storage."""
    from butler import Config

    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"  {c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    document = "python_type: butler._config.Config\ndata:\n  " + laughs
    with storage_root.create() as b:
        b.register_dataset_type("conf", Config, "config", dimensions={"v": int})
        b.put(Config({"a": 1}), "conf", v=1)
        key = b.location("conf", v=1).key
        b.storage.write_bytes(key, document.encode(), metadata=b.storage.metadata(key))
        with pytest.raises(FormatError, match="not allowed"):
            b.get("conf", v=1)


def test_sidecar_storage_really_uses_sidecars(tmp_path: Path) -> None:
    """The ``posix-sidecar`` variant above really keeps metadata in sidecar files."""
    with Butler.create(str(tmp_path / "r"), xattrs=False) as b:
        assert b.storage.use_xattr is False
        b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
        b.put({"a": 1}, "cfg", v=1)
        names = os.listdir(os.path.join(b.storage.root, "cfg"))
        assert any("butler-meta" in n for n in names), names
