"""`Butler._get_small`, the common get in fewer steps, answers exactly what the general
path answers, and hands everything else to it.

The shortcut reads the metadata and the bytes in one step (`Storage.read_small`), looks
the recorded (format, class) up among the resolutions the general path kept, and calls
the serializer's ``decode``. Each test here either proves the shortcut answered (so the
comparison compares two paths) or proves that what it must not answer (tampered
metadata, a changed file, links, large files, a reload...) gets the general path's
answer or error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butler import (
    BulkError,
    Butler,
    DatasetNotFoundError,
    FormatError,
    InvalidDataIdError,
    UnsafeFormatError,
)
from butler._small_get import _GENERAL, _SMALL_GET, _SMALL_MISSES, _SMALL_SKIP
from butler._storage import Storage
from butler.formats import json_ as json_format
from butler.storages.posix import PosixStorage

from ._outcomes import typed_outcome
from ._registries import own_registry

LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not LINUX, reason="the posix shortcut needs openat2 (Linux)")


class Sub(dict):  # type: ignore[type-arg]
    """A dict subclass: read rebuilds it; decode must leave it to read."""


@dataclasses.dataclass
class Point:
    x: int
    y: int


def _repo(tmp_path: Path, python_type: Any = dict) -> Butler:
    """A repository whose Butler has a registry of its own (tests register on it)."""
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), registry=own_registry())
    b.register_dataset_type("cfg", python_type, "json", template="cfg/{i:d}.json")
    return b


def _general(b: Butler, **data_id: Any) -> Any:
    """The general path's answer (``collections`` given: the shortcut is not tried)."""
    return b.get("cfg", collections=b.collections, **data_id)


def _path(b: Butler, i: int) -> str:
    return os.path.join(b.storage.root, f"cfg/{i}.json")  # type: ignore[attr-defined]


def _warm(b: Butler, i: int = 0) -> None:
    """One get through the general path: the resolution the shortcut needs is kept."""
    _general(b, i=i)


@needs_linux
@pytest.mark.parametrize(
    "value",
    [{"a": 1}, {}, [1, "x", None], "text", 3, 2.5, True, None, {"nested": {"x": [1.5]}}],
    ids=repr,
)
def test_the_shortcut_answers_plain_values_as_the_general_path(tmp_path: Path, value: Any) -> None:
    b = _repo(tmp_path, object)
    b.put(value, "cfg", i=0)
    _warm(b)
    fast = b._get_small("cfg", {"i": 0})
    assert fast is not _GENERAL, "the shortcut did not answer"
    general = _general(b, i=0)
    assert type(fast) is type(general) and fast == general == value


@needs_linux
@pytest.mark.parametrize(
    "value", [Sub(a=1), OrderedDict(b=2), Point(1, 2)], ids=lambda v: type(v).__name__
)
def test_recorded_subclasses_and_dataclasses_are_rebuilt_alike(tmp_path: Path, value: Any) -> None:
    """A recorded subclass or dataclass: decode rebuilds it as read does."""
    b = _repo(tmp_path, object)
    b.registry.register(type(value), "*", "json", json_format.write, json_format.read)
    b.registry.register(
        type(value), "posix", "json", json_format.write, json_format.read,
        decode=json_format.decode,
    )  # fmt: skip
    b.put(value, "cfg", i=0)
    _warm(b)
    fast = b._get_small("cfg", {"i": 0})
    assert type(fast) is type(value) and fast == value
    general = _general(b, i=0)
    assert type(general) is type(value) and general == value


@needs_linux
def test_a_dataclass_the_bytes_do_not_fit_is_the_general_error(tmp_path: Path) -> None:
    b = _repo(tmp_path, Point)
    b.registry.register(
        Point, "*", "json", json_format.write, json_format.read, decode=json_format.decode
    )
    b.put(Point(1, 2), "cfg", i=0)
    b.put(Point(3, 4), "cfg", i=1)
    _warm(b)
    with open(_path(b, 1), "r+b") as f:  # same size, a field the class does not have
        f.write(json.dumps({"x": 3, "z": 4}).encode())
    general = typed_outcome(lambda: _general(b, i=1))
    assert general[0] == "error" and general[1][0] is FormatError
    assert typed_outcome(lambda: b.get("cfg", i=1)) == general


@needs_linux
def test_a_get_takes_the_shortcut_after_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first get of a (format, class) resolves it; later ones never build a location."""
    b = _repo(tmp_path)
    for i in range(3):
        b.put({"i": i}, "cfg", i=i)
    assert b.get("cfg", i=0) == {"i": 0}

    def no_general(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(b, "_find", no_general)
    assert [b.get("cfg", i=i) for i in range(3)] == [{"i": i} for i in range(3)]


@needs_linux
@pytest.mark.parametrize(
    "change",
    [
        {"format": "pickle"},
        {"format": ["json"]},
        {"python_type": "os.system"},
        {"python_type": "builtins.list"},
        {"python_type": 3},
        {"size": 10**12},
        {"size": -1},
        {"size": "11"},
        {"size": True},
        {"size": 1},
    ],
    ids=repr,
)
def test_tampered_metadata_gets_the_general_answer(tmp_path: Path, change: dict[str, Any]) -> None:
    """A writer of the repository rewrites the metadata: the get answers (or refuses)
    exactly as the general path does."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    b.put({"a": 2}, "cfg", i=1)
    _warm(b)
    meta = json.loads(os.getxattr(_path(b, 1), "user.butler"))
    os.setxattr(_path(b, 1), "user.butler", json.dumps({**meta, **change}).encode())
    fast = b._get_small("cfg", {"i": 1})
    general = typed_outcome(lambda: _general(b, i=1))
    if fast is not _GENERAL:  # only a shortcut that the general path agrees with
        assert general == ("value", (type(fast), fast))
    assert typed_outcome(lambda: b.get("cfg", i=1)) == general


@needs_linux
def test_pickle_recorded_is_refused_even_when_warm(tmp_path: Path) -> None:
    """The resolution kept for json is not used for a dataset recorded as pickle."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    b.put({"a": 2}, "cfg", i=1)
    _warm(b)
    meta = json.loads(os.getxattr(_path(b, 1), "user.butler"))
    os.setxattr(_path(b, 1), "user.butler", json.dumps({**meta, "format": "pickle"}).encode())
    with pytest.raises(UnsafeFormatError):
        b.get("cfg", i=1)


@needs_linux
@pytest.mark.parametrize("data", [b'{"a": 22}', b'{"a":', b"{}", b'{"a": 1}   '])
def test_bytes_changed_after_the_put(tmp_path: Path, data: bytes) -> None:
    """Bytes rewritten in place (the metadata kept): the get answers as the general path
    does: the new value, or its FormatError for broken JSON."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    _warm(b)
    with open(_path(b, 0), "r+b") as f:
        f.write(data)
        f.truncate()
    general = typed_outcome(lambda: _general(b, i=0))
    assert typed_outcome(lambda: b.get("cfg", i=0)) == general
    if data == b'{"a":':
        assert general[0] == "error" and general[1][0] is FormatError


@needs_linux
def test_a_link_in_place_of_the_dataset_is_refused(tmp_path: Path) -> None:
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    b.put({"secret": 1}, "cfg", i=1)
    _warm(b)
    os.unlink(_path(b, 0))
    os.symlink(_path(b, 1), _path(b, 0))
    assert b.storage.read_small("cfg/0.json", _SMALL_GET) is None
    general = typed_outcome(lambda: _general(b, i=0))
    assert general[0] == "error"
    assert typed_outcome(lambda: b.get("cfg", i=0)) == general


@needs_linux
def test_large_datasets_and_the_read_limit_take_the_general_path(tmp_path: Path) -> None:
    b = _repo(tmp_path)
    big = {"x": "y" * _SMALL_GET}
    b.put(big, "cfg", i=0)
    b.put({"a": 1}, "cfg", i=1)
    _warm(b, 1)
    assert b._get_small("cfg", {"i": 0}) is _GENERAL
    assert b.get("cfg", i=0) == big
    limited = Butler(b.storage.uri(), max_read_bytes=4)
    _warm(limited, 1)
    assert limited._get_small("cfg", {"i": 1}) is _GENERAL  # 8 bytes > 4: not shortcut
    assert limited.get("cfg", i=1) == {"a": 1}  # what the general path gives


@needs_linux
def test_missing_datasets_and_chains_get_the_general_answer(tmp_path: Path) -> None:
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    _warm(b)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        b.get("cfg", i=5)
    later = Butler(b.storage.uri(), run="later")
    later.put({"a": 2}, "cfg", i=1)
    chain = Butler(b.storage.uri(), collections=["later", "default"])
    _warm(chain, 0)
    assert chain.get("cfg", i=0) == {"a": 1}  # in the second run: the general path
    assert chain.get("cfg", i=1) == {"a": 2}
    assert chain._get_small("cfg", {"i": 1}) == {"a": 2}  # the first run: the shortcut


@needs_linux
def test_a_bad_data_id_raises_what_the_general_path_raises(tmp_path: Path) -> None:
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    _warm(b)
    for bad in ({"i": "x"}, {"j": 1}, {}):
        assert typed_outcome(lambda bad=bad: b.get("cfg", **bad)) == typed_outcome(
            lambda bad=bad: _general(b, **bad)
        )


@needs_linux
def test_recorded_inputs_still_recorded(tmp_path: Path) -> None:
    """Gets inside `Butler.recording` go the general path, which records each input."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    _warm(b)
    with b.recording() as refs:
        b.get("cfg", i=0)
    assert [r.dataset_type for r in refs] == ["cfg"]


@needs_linux
def test_a_serializer_registered_later_or_a_redefinition_is_seen(tmp_path: Path) -> None:
    """The shortcut keys on the registry's generation and the dataset type: after either
    changes, the first get resolves again."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    _warm(b)
    assert b._get_small("cfg", {"i": 0}) == {"a": 1}

    def read_tagged(location: Any, **_: Any) -> Any:
        return {"tagged": json_format.read(location)}

    b.registry.register(dict, "posix", "json", json_format.write, read_tagged)
    assert b._get_small("cfg", {"i": 0}) is _GENERAL
    assert b.get("cfg", i=0) == {"tagged": {"a": 1}}
    assert b._get_small("cfg", {"i": 0}) is _GENERAL  # that serializer declares no decode
    b.register_dataset_type("cfg", object, "json", template="cfg/{i:d}.json", overwrite=True)
    assert b._get_small("cfg", {"i": 0}) is _GENERAL


def test_a_storage_without_the_shortcut_answers_none(tmp_path: Path) -> None:
    """The base `Storage.read_small` and the memory storage: always the general path."""
    b = Butler.create("memory://small-get-test")
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"a": 1}, "cfg", i=0)
    assert b.storage.read_small("cfg/0.json", _SMALL_GET) is None
    assert b.get("cfg", i=0) == {"a": 1}
    assert Storage.read_small(b.storage, "cfg/0.json", _SMALL_GET) is None


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[PosixStorage]:
    """A posix storage holding ``a/c.json`` (with metadata) and hostile neighbours."""
    root = tmp_path / "repo"
    root.mkdir()
    storage = PosixStorage(str(root))
    storage.write_bytes("a/c.json", b'{"x": 1}', metadata={"format": "json"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.json").write_bytes(b"secret")
    os.setxattr(outside / "c.json", "user.butler", b'{"format": "json", "size": 6}')
    (root / "a" / "link.json").symlink_to(outside / "c.json")
    (root / "a" / "dirlink").symlink_to(outside)
    os.mkfifo(root / "a" / "fifo.json")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "a" / "sock.json"))
    (root / "a" / "dir.json").mkdir()
    os.setxattr(root / "a" / "dir.json", "user.butler", b'{"format": "json", "size": 0}')
    (root / "a" / "plain.json").write_bytes(b"{}")  # no metadata: a foreign file
    yield storage
    sock.close()
    storage.close()


@needs_linux
def test_read_small_of_the_dataset(storage: PosixStorage) -> None:
    meta, data = storage.read_small("a/c.json", 100) or ({}, b"")
    assert data == b'{"x": 1}' and meta["format"] == "json" and meta["size"] == 8
    assert meta == storage.metadata("a/c.json")
    assert storage.read_small("a/c.json", 7) is None  # larger than asked for


@needs_linux
@pytest.mark.parametrize(
    "key",
    [
        "a/link.json",
        "a/dirlink/c.json",
        "a/fifo.json",
        "a/sock.json",
        "a/dir.json",
        "a/plain.json",
        "a/missing.json",
        "a/c.json/below",
        "../outside/c.json",
        "/etc/passwd",
    ],
)
def test_read_small_refuses_everything_unusual(storage: PosixStorage, key: str) -> None:
    """Links, escapes, special files, directories, foreign and absent files: ``None``,
    never an error and never another file's bytes."""
    assert storage.read_small(key, 1 << 20) is None


def _count_read_small(b: Butler, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = b.storage.read_small

    def counting(key: str, max_bytes: int) -> Any:
        calls.append(key)
        return real(key, max_bytes)

    monkeypatch.setattr(b.storage, "read_small", counting)
    return calls


def test_a_serializer_without_decode_costs_no_extra_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """npy declares no decode: its gets never try the shortcut (no second read)."""
    np = pytest.importorskip("numpy")
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), registry=own_registry())
    b.register_dataset_type("arr", "numpy.ndarray", "npy", template="arr/{i:d}.npy")
    b.put(np.arange(3), "arr", i=0)
    calls = _count_read_small(b, monkeypatch)
    for _ in range(5):
        assert b.get("arr", i=0).tolist() == [0, 1, 2]
    assert calls == []


@needs_linux
def test_a_type_whose_datasets_never_fit_is_skipped_then_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large JSON datasets: `_SMALL_MISSES` reads in a row that cannot answer, then the
    next `_SMALL_SKIP` gets go straight to the general path, then the shortcut is tried."""
    b = _repo(tmp_path)
    big = {"x": "y" * _SMALL_GET}
    b.put(big, "cfg", i=0)
    b.put({"a": 1}, "cfg", i=1)
    _warm(b, 1)
    calls = _count_read_small(b, monkeypatch)
    for _ in range(_SMALL_MISSES + _SMALL_SKIP):
        assert b.get("cfg", i=0) == big
    assert len(calls) == _SMALL_MISSES
    assert b.get("cfg", i=1) == {"a": 1}  # tried again, and answered
    assert len(calls) == _SMALL_MISSES + 1
    assert b._get_small("cfg", {"i": 1}) == {"a": 1}


@needs_linux
def test_a_data_id_dict_takes_the_shortcut_and_a_run_key_in_it_is_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``get("cfg", {"i": 0})`` is as short as ``get("cfg", i=0)``; a dataset type with a
    ``run`` dimension reads it from the dict (``run=`` as a keyword picks a run)."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=0)
    b.register_dataset_type("r", dict, "json", template="r/{run}.json")
    b.put({"r": 1}, "r", run="x")
    assert b.get("cfg", {"i": 0}) == {"a": 1} and b.get("r", {"run": "x"}) == {"r": 1}

    def no_general(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the general path was taken")

    monkeypatch.setattr(b, "_find", no_general)
    assert b.get("cfg", {"i": 0}) == {"a": 1}
    assert b.get("r", {"run": "x"}) == {"r": 1}
    assert b.get("r", run="x") == {"r": 1}  # a dimension: a data ID value here too
    monkeypatch.undo()
    with pytest.raises(InvalidDataIdError, match="missing"):
        b.get("cfg", {"j": 0})


@needs_linux
def test_kept_keys_answer_as_the_mapper(tmp_path: Path) -> None:
    """`Butler._small_key` keeps int and str data IDs' keys per dataset type: a bool where
    an int was kept is still refused, a redefinition maps again, and a refused value is
    refused every time."""
    b = _repo(tmp_path)
    b.put({"a": 1}, "cfg", i=1)
    _warm(b, 1)
    assert b.get("cfg", i=1) == {"a": 1} and b.get("cfg", i=1) == {"a": 1}
    assert typed_outcome(lambda: b.get("cfg", i=True)) == typed_outcome(lambda: _general(b, i=True))
    assert typed_outcome(lambda: b.get("cfg", i=True))[0] == "error"
    assert typed_outcome(lambda: b.get("cfg", i=1.0)) == typed_outcome(lambda: _general(b, i=1.0))
    for _ in range(2):
        assert typed_outcome(lambda: b.get("cfg", i="1/../2")) == typed_outcome(
            lambda: _general(b, i="1/../2")
        )
    b.remove("cfg", i=1)
    b.register_dataset_type("cfg", dict, "json", template="other/{i:d}.json", overwrite=True)
    b.put({"b": 2}, "cfg", i=1)
    assert b.get("cfg", i=1) == {"b": 2}  # the new template's key, not the kept one
    assert b._small_key(b.dataset_type("cfg"), {"i": 1}) == "other/1.json"


@needs_linux
def test_get_many_takes_the_shortcut_for_plain_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`get_many` tries the shortcut where `get` would, with the same answers and errors;
    parameters, components, recording and other runs go the general way."""
    b = _repo(tmp_path)
    for i in range(20):
        b.put({"i": i}, "cfg", i=i)
    _warm(b)
    general = b.get_many("cfg", [{"i": i} for i in range(20)], collections=b.collections)
    real_find = b._find
    found: list[Any] = []

    def counting_find(*args: Any, **kw: Any) -> Any:
        found.append(args[1])
        return real_find(*args, **kw)

    monkeypatch.setattr(b, "_find", counting_find)
    assert b.get_many("cfg", [{"i": i} for i in range(20)]) == general
    assert found == []  # every item from the shortcut
    with b.recording() as refs:
        assert b.get_many("cfg", [{"i": 1}, {"i": 2}]) == [{"i": 1}, {"i": 2}]
    assert len(refs) == 2 and len(found) == 2  # recorded: the general path, which records
    with pytest.raises(BulkError) as caught:
        b.get_many("cfg", [{"i": 1}, {"i": 99}, {"i": "x"}])
    assert sorted(caught.value.errors) == [1, 2]
    assert type(caught.value.errors[1]) is DatasetNotFoundError


@needs_linux
def test_a_type_with_datasets_in_two_formats_keeps_the_shortcut_for_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old datasets in pickle, new ones in JSON: reading an old one (no decode) does not
    cost the new ones the shortcut for good."""
    Butler.create(str(tmp_path / "repo"))
    b = Butler(str(tmp_path / "repo"), registry=own_registry(), allow_pickle=True)
    b.register_dataset_type("cfg", dict, "pickle", template="cfg/{i:d}")
    b.put({"old": 1}, "cfg", i=1)
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}", overwrite=True)
    b.put({"new": 2}, "cfg", i=2)
    assert b.get("cfg", i=2) == {"new": 2}  # resolves json
    assert b.get("cfg", i=1) == {"old": 1}  # resolves pickle: no decode
    assert b.get("cfg", i=2) == {"new": 2}  # the kept json resolution
    assert b._get_small("cfg", {"i": 2}) == {"new": 2}
