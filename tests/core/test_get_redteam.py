"""Red-team tests of the small-get path (`Butler._resolve_read_at` and what it keeps):
whatever a get keeps between calls, a later get must return what resolving afresh
returns, even when the process or the repository changed in between."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from butler import (
    Butler,
    DatasetTypeError,
    FormatDescriptor,
    FormatError,
    InvalidDataIdError,
)
from butler._json import loads

from ._registries import own_registry


def _module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, source: str) -> ModuleType:
    """Import a module ``name`` written to ``tmp_path`` with ``source`` (and forget it
    after the test).

    Parameters
    ----------
    tmp_path
        Where the module's file goes (a folder ``mods`` in it, put on ``sys.path``).
    monkeypatch
        Undoes the ``sys.path`` and ``sys.modules`` changes after the test.
    name
        The module's name.
    source
        The module's code.

    Returns
    -------
    ModuleType
        The imported module.
    """
    folder = tmp_path / "mods"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = importlib.import_module(name)
    monkeypatch.setitem(sys.modules, name, module)
    return module


POINT = "import dataclasses\n\n@dataclasses.dataclass\nclass Point:\n    x: int\n"


def test_a_reloaded_dataset_type_class_is_the_one_returned(
    posix_repo: Butler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ``importlib.reload`` of the dataset type's module (a notebook re-running a
    cell does the same), a get rebuilds the dataset as the class the module now holds,
    as the first get of a new Butler does: not as the class the previous get resolved."""
    mod = _module(tmp_path, monkeypatch, "redteam_point_a", POINT)
    b = posix_repo
    b.register_dataset_type("p", "redteam_point_a.Point", "json", template="p/{i:d}.json")
    b.put(mod.Point(1), "p", i=1)
    first = b.get("p", i=1)
    assert type(first) is mod.Point
    old = mod.Point
    importlib.reload(mod)
    assert mod.Point is not old
    again = b.get("p", i=1)
    assert type(again) is mod.Point
    assert again == mod.Point(1)
    assert type(Butler(b.storage.uri()).get("p", i=1)) is mod.Point


def test_a_redefined_recorded_subclass_is_the_one_returned(
    posix_repo: Butler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset written as a subclass of the dataset type's class is rebuilt as the
    subclass its module holds now, after that module was reloaded between two gets."""
    base = _module(tmp_path, monkeypatch, "redteam_base_b", POINT)
    sub = _module(
        tmp_path,
        monkeypatch,
        "redteam_sub_b",
        "import dataclasses\nfrom redteam_base_b import Point\n\n"
        "@dataclasses.dataclass\nclass Point3(Point):\n    z: int = 0\n",
    )
    b = posix_repo
    b.register_dataset_type("p", "redteam_base_b.Point", "json", template="p/{i:d}.json")
    b.put(sub.Point3(1, 2), "p", i=1)
    assert type(b.get("p", i=1)) is sub.Point3
    importlib.reload(sub)
    again = b.get("p", i=1)
    assert type(again) is sub.Point3
    assert again == sub.Point3(1, 2)
    assert isinstance(again, base.Point)


def test_a_serializer_registered_by_name_serves_once_its_module_is_imported(
    posix_repo: Butler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A serializer registered by name for an ABC whose module is not imported yet applies
    from the first get after that module is imported (it makes the dataset's class a
    virtual subclass): the kept resolution does not hide the registry's change."""
    thing = _module(tmp_path, monkeypatch, "redteam_thing_c", "class Thing(dict):\n    pass\n")
    _module(
        tmp_path,
        monkeypatch,
        "redteam_reader_c",
        "def read(location, **kw):\n    return ('marker', location.key)\n\n"
        "def write(obj, location, **kw):\n    raise RuntimeError('never written')\n",
    )
    marker_source = (
        "import abc\nimport redteam_thing_c\n\nclass Marker(abc.ABC):\n    pass\n\n"
        "Marker.register(redteam_thing_c.Thing)\n"
    )
    (tmp_path / "mods" / "redteam_marker_c.py").write_text(marker_source)
    monkeypatch.delitem(sys.modules, "redteam_marker_c", raising=False)
    registry = own_registry()
    registry.register(
        "redteam_marker_c.Marker", "*", "json", "redteam_reader_c:write", "redteam_reader_c:read"
    )
    b = Butler(posix_repo.storage.uri(), registry=registry)
    b.register_dataset_type("t", "redteam_thing_c.Thing", "json", template="t/{i:d}.json")
    b.put(thing.Thing(a=1), "t", i=1)
    first = b.get("t", i=1)
    assert type(first) is thing.Thing and first == {"a": 1}
    importlib.import_module("redteam_marker_c")
    assert b.get("t", i=1) == ("marker", "t/1.json")


def test_a_format_redefined_to_read_no_other_types_refuses_the_next_get(
    posix_repo: Butler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A format that read a dataset written as an unrelated class (``reads_other_types``)
    and is then registered again without it (``overwrite=True``) refuses that dataset on
    the next get, as a new Butler does: the kept resolution is not reused."""
    _module(
        tmp_path,
        monkeypatch,
        "redteam_reader_d",
        "def read(location, **kw):\n    return {'read': location.read_bytes().decode()}\n\n"
        "def write(obj, location, **kw):\n"
        "    with location.open_write() as f:\n        f.write(obj['text'].encode())\n",
    )
    registry = own_registry()
    registry.register_format(FormatDescriptor("redteamfmt", (".rt",), reads_other_types=True))
    registry.register(dict, "*", "redteamfmt", "redteam_reader_d:write", "redteam_reader_d:read")
    b = Butler(posix_repo.storage.uri(), registry=registry)
    b.register_dataset_type("r", dict, "redteamfmt", template="r/{i:d}.rt")
    b.put({"text": "hello"}, "r", i=1)
    path = os.path.join(b.storage.root, "r/1.rt")  # type: ignore[attr-defined]
    meta = json.loads(os.getxattr(path, "user.butler"))
    meta["python_type"] = "builtins.list"  # written as a class unrelated to dict
    os.setxattr(path, "user.butler", json.dumps(meta).encode())
    assert b.get("r", i=1) == {"read": "hello"}
    registry.register_format(FormatDescriptor("redteamfmt", (".rt",)), overwrite=True)
    message = "was written as 'builtins.list', which is not a subclass of"
    with pytest.raises(FormatError, match=message):
        Butler(posix_repo.storage.uri(), registry=registry).get("r", i=1)
    with pytest.raises(FormatError, match=message):
        b.get("r", i=1)


def test_metadata_of_several_sizes_read_by_threads_at_once(posix_repo: Butler) -> None:
    """Threads reading metadata of different sizes at once (each thread reuses one
    ``fgetxattr`` buffer) each get their own dataset's metadata and bytes, never another
    thread's nor the tail of a longer value read before. (Sizes stay under the 4 KiB that
    ext4 allows a value without ``ea_inode``.)"""
    b = posix_repo
    b.register_dataset_type("m", dict, "json", template="m/{i:d}.json")
    sizes = [3900, 0, 10, 2000, 90, 3000, 400]
    expected = {}
    for i, size in enumerate(sizes):
        b.put({"i": i}, "m", i=i)
        path = os.path.join(b.storage.root, f"m/{i}.json")  # type: ignore[attr-defined]
        meta = json.loads(os.getxattr(path, "user.butler"))
        meta["pad"] = "x" * max(0, size - len(json.dumps(meta)) - 10)
        os.setxattr(path, "user.butler", json.dumps(meta).encode())
        expected[i] = meta
    errors: list[BaseException] = []

    def reader(offset: int) -> None:
        try:
            for n in range(300):
                i = (n + offset) % len(sizes)
                assert b.storage.metadata(f"m/{i}.json")["pad"] == expected[i]["pad"]
                assert b.get("m", i=i) == {"i": i}
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_a_type_redefined_by_another_butler_applies_once_the_policy_is_read_again(
    posix_repo: Butler,
) -> None:
    """Another Butler (another process) redefines the dataset type as ``list``; once this
    Butler reads the policy again (here: looking up a type it does not know), its next get
    of the dict it read before refuses it, as a new Butler does."""
    b = posix_repo
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"i": 1}, "cfg", i=1)
    assert b.get("cfg", i=1) == {"i": 1}
    other = Butler(b.storage.uri())
    other.register_dataset_type("cfg", list, "json", template="cfg/{i:d}.json", overwrite=True)
    assert b.get("cfg", i=1) == {"i": 1}  # the policy this Butler read: as before
    with pytest.raises(DatasetTypeError, match="unknown dataset type 'nope'"):
        b.get("nope", i=1)
    message = (
        "written as 'builtins.dict', which is not a subclass of the dataset type's "
        "python type 'builtins.list'"
    )
    with pytest.raises(FormatError, match=message):
        Butler(b.storage.uri()).get("cfg", i=1)
    with pytest.raises(FormatError, match=message):
        b.get("cfg", i=1)


class _ReadOnlyId(Mapping[str, Any]):
    """A data ID that is a `Mapping` but no dict."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def test_data_ids_of_any_mapping_kind_put_and_get_the_same_dataset(posix_repo: Butler) -> None:
    """``defaultdict``, ``OrderedDict`` (keys in another order) and a plain `Mapping`, alone
    or completed by keywords, address the same dataset on put and get; a missing key of a
    ``defaultdict`` is reported missing, never filled in by its default."""
    b = posix_repo
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}_{j}.json")
    ids = defaultdict(int, {"i": 1, "j": "a"})
    assert b.put({"v": 1}, "cfg", ids).key == "cfg/1_a.json"
    assert b.put({"v": 2}, "cfg", _ReadOnlyId({"j": "b", "i": 2})).key == "cfg/2_b.json"
    assert b.get("cfg", OrderedDict(j="a", i=1)) == {"v": 1}
    assert b.get("cfg", _ReadOnlyId({"i": 2}), j="b") == {"v": 2}
    assert b.get("cfg", ids) == {"v": 1}
    assert b.get("cfg", {"i": 2}, j="b") == {"v": 2}
    with pytest.raises(InvalidDataIdError, match=r"data ID keys \['j'\] given twice"):
        b.get("cfg", {"i": 1, "j": "a"}, j="b")
    with pytest.raises(InvalidDataIdError, match=r"missing \['j'\]"):
        b.get("cfg", defaultdict(str, {"i": 1}))
    with pytest.raises(InvalidDataIdError, match=r"unknown \['k'\]"):
        b.get("cfg", _ReadOnlyId({"i": 1, "j": "a", "k": 0}))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": NaN, "b": Infinity, "c": -Infinity}',
        b'{"n": ' + b"9" * 5000 + b"}",  # past int_max_str_digits: a ValueError of its own
        b'{"n": 1e999, "m": -0.0}',
        b'["\\ud800", "\\udfff\\ud800"]',  # lone surrogates, escaped
        b'{"a": "\xed\xa0\x80"}',  # a lone surrogate, encoded (surrogatepass)
        b'\xef\xbb\xbf{"a": 1}',  # UTF-8 BOM
        b'{"a": 1}\x00',  # trailing NUL
        b'{"a": 1}\x0c',  # form feed is no JSON whitespace
        b'{"a": 1}\xc2\xa0',  # nor is a no-break space
        b"[" * 50_000 + b"]" * 50_000,
    ],
)
def test_loads_on_odd_bytes_is_json_loads(raw: bytes) -> None:
    """`butler._json.loads` gives what ``json.loads`` gives (value, or error type and
    message) for the odd documents a hostile writer may store."""

    def outcome(loader: Any) -> tuple[str, str]:
        try:
            return "value", repr(loader(raw))
        except (ValueError, RecursionError) as exc:
            return type(exc).__name__, str(exc)

    assert outcome(loads) == outcome(json.loads)


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_metadata_read_by_a_signal_handler_meanwhile_leaves_the_outer_read_whole(
    posix_repo: Butler,
) -> None:
    """A signal handler that reads metadata runs between a read's ``fgetxattr`` and the
    copy of its value (the thread's reused buffer): the interrupted read still returns
    its own dataset's metadata, never ``{}`` from the handler's bytes. Signals come every
    100 microseconds for at most 1.5 s; before the buffer was taken while in use, about
    one read in twenty came back wrong."""
    b = posix_repo
    b.register_dataset_type("m", dict, "json", template="m/{i:d}.json")
    b.put({"i": 1}, "m", i=1)
    b.put({"i": 2}, "m", i=2)
    path = os.path.join(b.storage.root, "m/2.json")  # type: ignore[attr-defined]
    meta = json.loads(os.getxattr(path, "user.butler"))
    meta["pad"] = "y" * 2000  # longer than the interrupted read's value
    os.setxattr(path, "user.butler", json.dumps(meta).encode())
    storage = b.storage
    expected = storage.metadata("m/1.json")
    handled = [0]

    def handler(signum: int, frame: Any) -> None:
        handled[0] += 1
        storage.metadata("m/2.json")

    previous = signal.signal(signal.SIGALRM, handler)
    wrong: list[Any] = []
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.0001, 0.0001)
        end = time.monotonic() + 1.5
        while time.monotonic() < end and not wrong:
            got = storage.metadata("m/1.json")
            if got != expected:
                wrong.append(got)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert wrong == []
    assert handled[0] > 100  # the handler did interrupt reads
