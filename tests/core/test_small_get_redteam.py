"""Red-team of `Butler._get_small`: cases where the shortcut answered differently from
the general path (or the commit that added it changed behaviour elsewhere)."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest

from butler import Butler, ButlerError, InvalidDataIdError, Mapper
from butler._limits import LimitError
from butler._small_get import _GENERAL
from butler.formats import json_ as json_format

from ._outcomes import typed_outcome
from ._registries import own_registry

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="the posix shortcut needs openat2 (Linux)")


def _repo(tmp_path: Path, python_type: Any = dict, **options: Any) -> Butler:
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), **options)
    b.register_dataset_type("cfg", python_type, "json", template="cfg/{i:d}.json")
    return b


def _general(b: Butler, **data_id: Any) -> Any:
    """The general path's answer (``collections`` given: the shortcut is not tried)."""
    return b.get("cfg", collections=b.collections, **data_id)


class NaiveMapper(Mapper):
    """A user mapper that formats the data ID into the key without validating it (the
    storage's key check is what refuses ``..`` and hidden names on the general path)."""

    def key_for(self, dataset_type: Any, data_id: Any) -> str:
        return f"{dataset_type.name}/{data_id['name']}.json"

    def data_id_for(self, dataset_type: Any, key: str) -> dict[str, Any] | None:
        return None


@needs_linux
@pytest.mark.parametrize(
    "name", ["../other/secret", "./secret", "sub//secret", "sub/../secret", ".secret"]
)
def test_a_key_the_storage_refuses_is_refused_by_the_shortcut_too(
    tmp_path: Path, name: str
) -> None:
    """A mapper's key with ``..``, ``.``, empty or hidden segments: the general path's
    storage refuses it (InvalidDataIdError); the shortcut must not open it beneath the
    root (openat2 allows ``..`` that stays inside) and return another dataset's bytes."""
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), registry=own_registry(), mapper=NaiveMapper())
    for dt in ("cfg", "other"):
        b.register_dataset_type(dt, dict, "json", template=dt + "/{name}.json")
    b.put({"secret": 1}, "other", name="secret")
    b.put({"a": 1}, "cfg", name="plain")
    root = tmp_path / "repo"
    target = root / "cfg" / "secret.json"
    os.makedirs(root / "cfg" / "sub", exist_ok=True)
    for place in (target, root / "cfg" / ".secret.json"):
        if not place.exists():
            os.link(root / "other" / "secret.json", place)
    _general(b, name="plain")  # the resolution the shortcut needs is kept
    general = typed_outcome(lambda: _general(b, name=name))
    assert general[0] == "error" and general[1][0] is InvalidDataIdError
    assert b._get_small("cfg", {"name": name}) is _GENERAL
    assert typed_outcome(lambda: b.get("cfg", name=name)) == general


def test_reregistering_the_builtin_json_functions_is_harmless(tmp_path: Path) -> None:
    """Registering json's own write/read again (as code that registers at import does)
    returned the existing entry before ``decode`` existed; a missing ``decode`` is only a
    missing shortcut, not different code."""
    registry = own_registry()
    old = registry.find(dict, "posix", "json")
    assert registry.register(dict, "*", "json", json_format.write, json_format.read) is old
    assert (
        registry.register(
            "builtins.dict", "*", "json", "butler.formats.json_:write", "butler.formats.json_:read"
        )
        is old
    )


@needs_linux
def test_max_read_bytes_set_on_the_butler_is_not_a_type_error(tmp_path: Path) -> None:
    """``max_read_bytes`` is a public attribute; one set to a size string (as the
    constructor takes) made the shortcut raise a TypeError (``min(limit, 64 KiB)``)
    where the general path answered. It is parsed as the constructor parses it, and a
    pickled copy reopens with it."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    _general(b, i=0)
    b.max_read_bytes = "1KiB"
    assert b.max_read_bytes == 1024
    assert typed_outcome(lambda: b.get("cfg", i=0)) == typed_outcome(lambda: _general(b, i=0))
    assert b._get_small("cfg", {"i": 0}) == {"a": 1}
    b.max_read_bytes = 4  # smaller than the dataset: the general path
    assert b._get_small("cfg", {"i": 0}) is _GENERAL
    assert b.get("cfg", i=0) == {"a": 1}
    assert pickle.loads(pickle.dumps(b)).max_read_bytes == 4
    for bad in (1024.0, -1, "lots", True):
        with pytest.raises(LimitError):
            b.max_read_bytes = bad
    b.max_read_bytes = None
    _general(b, i=0)  # another limit, another location base: resolved again
    assert b._get_small("cfg", {"i": 0}) == {"a": 1}


@needs_linux
@pytest.mark.parametrize(
    "key", ["a/../a/c.json", "a/./c.json", "a//c.json", "./a/c.json", "a/.c.json"]
)
def test_read_small_applies_the_key_rule(tmp_path: Path, key: str) -> None:
    """`PosixStorage.read_small` refuses what `split_key` refuses (``metadata`` raises
    InvalidDataIdError for these), even where openat2 would find a dataset."""
    from butler.storages.posix import PosixStorage

    storage = PosixStorage(str(tmp_path))
    try:
        storage.write_bytes("a/c.json", b"{}", metadata={"format": "json"})
        os.link(tmp_path / "a" / "c.json", tmp_path / "a" / ".c.json")
        assert storage.read_small("a/c.json", 100) is not None
        assert storage.read_small(key, 100) is None
        with pytest.raises(InvalidDataIdError):
            storage.metadata(key)
    finally:
        storage.close()


def test_a_storage_without_the_shortcut_maps_a_get_once(tmp_path: Path) -> None:
    """A get from a storage without `read_small` (memory, S3, databases) took the
    shortcut's first steps and then the general path's: every data ID mapped twice (a
    third slower on the memory storage)."""
    from butler._storage import Storage
    from butler.storages.memory import MemoryStorage
    from butler.storages.posix import PosixStorage

    assert PosixStorage.small_reads and not MemoryStorage.small_reads
    assert not Storage.small_reads
    b = Butler.create("memory://small-get-redteam-once")
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"a": 1}, "cfg", i=0)
    calls = []
    mapped = b.mapper.map

    def counting(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        return mapped(*args, **kw)

    b.mapper.map = counting  # type: ignore[method-assign]
    assert b.get("cfg", i=0) == {"a": 1}
    assert len(calls) == 1


@needs_linux
def test_a_storage_subclass_changing_reads_is_not_bypassed(tmp_path: Path) -> None:
    """A `PosixStorage` subclass that changes what reads return (``read_bytes``: say, it
    decrypts; ``metadata``: it adds defaults) inherits posix ``read_small``, which reads
    the file and its xattr itself: the shortcut answered the file's raw bytes where the
    general path answers what the subclass reads. Only a class whose ``read_small`` is
    as derived as its read methods takes the shortcut."""
    from butler.storages.posix import PosixStorage

    class Rewriting(PosixStorage):
        def read_bytes(self, key: str) -> bytes:
            return b'{"via": "read_bytes"}'

    class Described(PosixStorage):
        def metadata(self, key: str) -> dict[str, Any]:
            return {**super().metadata(key), "python_type": "collections.OrderedDict"}

    class Both(Rewriting):
        def read_small(self, key: str, max_bytes: int) -> Any:
            return None

    assert PosixStorage.small_reads and Both.small_reads
    assert not Rewriting.small_reads and not Described.small_reads
    b = _repo(tmp_path, object)
    b.put({"a": 1}, "cfg", i=0)
    b.storage = Rewriting(b.storage.root)  # type: ignore[attr-defined]
    _general(b, i=0)
    assert b.get("cfg", i=0) == _general(b, i=0) == {"via": "read_bytes"}
    b.storage = Described(b.storage.root)  # type: ignore[attr-defined]
    _general(b, i=0)
    got = b.get("cfg", i=0)
    assert type(got) is type(_general(b, i=0))


@needs_linux
@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1, "a": [2]}',  # duplicate keys: the last wins
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM
        '{"a": 1}'.encode("utf-16"),  # UTF-16 with BOM
        '{"a": 1}'.encode("utf-16-le"),
        b'{"a": NaN, "b": -Infinity, "c": 1e999}',
        b'  {"a": "\\ud800"}  ',
    ],
    ids=repr,
)
def test_json_edge_cases_the_shortcut_answers_as_the_general_path(
    tmp_path: Path, data: bytes
) -> None:
    """Held: bytes rewritten (metadata's size kept right) that the shortcut does decode
    give the general path's value, class and (for NaN) the same kind of float."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    b.put({"a": 2}, "cfg", i=1)
    _general(b, i=0)
    path = os.path.join(b.storage.root, "cfg/1.json")  # type: ignore[attr-defined]
    meta = json.loads(os.getxattr(path, "user.butler"))
    with open(path, "wb") as f:
        f.write(data)
    os.setxattr(path, "user.butler", json.dumps({**meta, "size": len(data)}).encode())
    fast = b._get_small("cfg", {"i": 1})
    assert fast is not _GENERAL
    assert repr(fast) == repr(_general(b, i=1)) and type(fast) is dict


def test_allow_imports_set_after_construction_travels_in_a_pickle(tmp_path: Path) -> None:
    """A pickled Butler (a Dask worker's) reopens with the imports its reader allows now."""
    b = Butler.create(str(tmp_path / "repo"))
    b.allow_imports = ("email",)
    assert pickle.loads(pickle.dumps(b)).allow_imports == ("email",)
    b.allow_imports = "email"  # type: ignore[assignment]  # not a list: refused on reopening
    with pytest.raises(ButlerError, match="allow_imports must be a list"):
        pickle.loads(pickle.dumps(b))
