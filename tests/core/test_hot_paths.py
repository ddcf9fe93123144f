"""The fast paths of a small get and put answer exactly what the full paths answer.

Each shortcut (one ``openat2`` instead of a walk, ``fgetxattr`` into a buffer, a
template whose keys need not be read back, plain data ID values checked by one regex,
`ButlerLocation.evolve`) is compared here with the path it shortcuts, on the cases the
full path exists for: links, special files, absent keys, ambiguous templates, bad values.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from butler import Butler, DatasetTypeError, InvalidDataIdError
from butler._location import ButlerLocation
from butler._mapper import (
    TemplateMapper,
    _coerce,
    _coerce_checked,
    template_is_unambiguous,
)
from butler._policy import DatasetType
from butler.storages import _linux
from butler.storages.posix import PosixStorage

from ._outcomes import outcome

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[PosixStorage]:
    """A posix storage holding ``a/b/c.json`` (with metadata) and hostile neighbours."""
    root = tmp_path / "repo"
    root.mkdir()
    storage = PosixStorage(str(root))
    storage.write_bytes("a/b/c.json", b'{"x": 1}', metadata={"format": "json"})
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.json").write_bytes(b"secret")
    (root / "a" / "link.json").symlink_to(outside / "c.json")
    (root / "a" / "dirlink").symlink_to(outside)
    os.mkfifo(root / "a" / "fifo.json")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "a" / "sock.json"))
    (root / "a" / "dir.json").mkdir()
    yield storage
    sock.close()
    storage.close()


KEYS = [
    "a/b/c.json",
    "a/link.json",
    "a/dirlink/c.json",
    "a/fifo.json",
    "a/sock.json",
    "a/dir.json",
    "a/missing.json",
    "a/b/c.json/below",
    "nowhere/c.json",
]


@pytest.mark.parametrize("key", KEYS)
def test_openat2_and_walk_give_the_same_answers(
    storage: PosixStorage, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answers() -> list[tuple[str, str]]:
        return [
            outcome(lambda: storage.metadata(key)),
            outcome(lambda: storage.read_bytes(key)),
            outcome(lambda: storage.exists(key)),
        ]

    fast = answers()
    monkeypatch.setattr(_linux, "enabled", False)
    walked = answers()
    assert fast == walked
    if key == "a/b/c.json":
        assert fast[0][0] == "ok" and "'format': 'json'" in fast[0][1]
        assert fast[1] == ("ok", repr(b'{"x": 1}'))
    else:  # never the outside file's bytes
        assert all("secret" not in text for _, text in fast)


@pytest.mark.skipif(not LINUX, reason="openat2 and fgetxattr are Linux system calls")
def test_a_get_takes_the_fast_path_on_linux(
    storage: PosixStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux the metadata and the bytes come from one openat2 and one fgetxattr, and
    the portable walk is not used (so the comparison above compares two paths)."""
    opened: list[int | None] = []
    real_open = _linux.openat2_beneath

    def counting(*args: Any) -> int | None:
        fd = real_open(*args)
        opened.append(fd)
        return fd

    def no_walk(*args: Any) -> None:
        raise AssertionError("the portable walk was used")

    monkeypatch.setattr("butler.storages._resolve.openat2_beneath", counting)
    monkeypatch.setattr(storage, "_open_file", no_walk)
    assert storage.metadata("a/b/c.json")["format"] == "json"
    with storage.open("a/b/c.json") as f:
        assert f.read() == b'{"x": 1}'
    assert len(opened) == 1 and opened[0] is not None  # the read took metadata's descriptor


def test_metadata_larger_than_the_buffer_is_read_whole(
    storage: PosixStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ext4 caps an attribute at one block, so the buffer is made smaller than the value
    here: ERANGE must send the read to os.getxattr, not lose or cut the metadata."""
    path = Path(storage.root) / "a" / "b" / "c.json"
    big = {"format": "json", "note": "x" * 1000}
    os.setxattr(path, "user.butler", json.dumps(big).encode())
    monkeypatch.setattr(_linux, "XATTR_BUFFER", 64)
    assert _linux.fgetxattr(os.open(path, os.O_RDONLY), b"user.butler") is None
    assert storage.metadata("a/b/c.json") == big


def test_evolve_is_dataclasses_replace(tmp_path: Path) -> None:
    from dataclasses import replace

    location = ButlerLocation(
        locations=["k"], storage=PosixStorage(str(tmp_path)), format="json", python_type="dict"
    )
    changed = location.evolve(format="pickle", data_id={"a": 1}, run="r")
    assert changed == replace(location, format="pickle", data_id={"a": 1}, run="r")
    assert location.format == "json" and changed is not location
    with pytest.raises(TypeError, match=r"no field\(s\) \['colour'\]"):
        location.evolve(colour="red")


# -- the mapper ------------------------------------------------------------------------


class _AlwaysChecked(TemplateMapper):
    """The mapper with every key read back, as before the shortcut."""

    def _is_unambiguous(self, dataset_type: DatasetType) -> bool:
        return False


TEMPLATES = [
    ("cfg/{bucket:d}/{i:d}.json", {"bucket": "int", "i": "int"}, True),
    ("calexp/{visit:06d}/{ccd}.fits", {"visit": "int", "ccd": "str"}, True),
    ("raw/{band}/{visit:d}_{det:03d}.fits", {"band": "str", "visit": "int", "det": "int"}, True),
    ("{name}", {"name": "str"}, True),
    ("x/{a:d}-{b:d}.txt", {"a": "int", "b": "int"}, True),
    ("{a}_{b}.json", {"a": "str", "b": "str"}, False),
    ("{a:d}{b:d}.json", {"a": "int", "b": "int"}, False),
    ("v/{a:5d}.json", {"a": "int"}, False),
    ("v/{a:>8}/x.json", {"a": "str"}, False),
    ("v/{a:x}.json", {"a": "int"}, False),
    ("v/{a:d}/{a:d}.json", {"a": "int"}, False),
    ("v/{a:d}1.json", {"a": "int"}, True),  # the last field: the suffix is fixed
    ("v/{a:d}1/{b}.json", {"a": "int", "b": "str"}, False),
]

VALUES: list[Any] = [
    0,
    7,
    -3,
    123456,
    10**29,
    "r",
    "x_y",
    "12",
    "-5",
    " 4",
    "a-b",
    "é✓",
    "ab.fits",
    ".hidden",
    "a/b",
    "a\\b",
    "",
    "x" * 201,
    "tab\there",
    "\ud800",
    True,
    2.5,
    None,
    10**30,
]


@pytest.mark.parametrize(("template", "dims", "unambiguous"), TEMPLATES)
def test_template_shortcut_maps_like_the_full_check(
    template: str, dims: dict[str, str], unambiguous: bool
) -> None:
    assert template_is_unambiguous(template, dims) is unambiguous
    dt = DatasetType("t", "builtins.dict", "json", template, dims)
    fast, full = TemplateMapper(), _AlwaysChecked()
    names = list(dims)
    compared = 0
    for first in VALUES:
        for second in VALUES[::3]:
            data_id = dict(zip(names, [first, second, 5][: len(names)], strict=True))
            got = outcome(lambda data_id=data_id: fast.map(dt, data_id))
            assert got == outcome(lambda data_id=data_id: full.map(dt, data_id)), data_id
            compared += 1
    assert compared >= len(VALUES)


def test_ambiguous_template_still_refuses_aliasing_values() -> None:
    dt = DatasetType("t", "builtins.dict", "json", "{a}_{b}.json", {"a": "str", "b": "str"})
    with pytest.raises(InvalidDataIdError, match="reads back as a different data ID"):
        TemplateMapper().map(dt, {"a": "x_y", "b": "z"})


@pytest.mark.parametrize("kind", ["int", "str"])
@pytest.mark.parametrize("value", [*VALUES, b"x", 3.0, "123", "+7", "0x10", "a" * 200])
def test_value_shortcut_coerces_like_the_full_check(kind: str, value: Any) -> None:
    def coerced(fn: Callable[..., Any]) -> tuple[str, str]:
        try:
            result = fn("t", "d", value, kind)
        except InvalidDataIdError as exc:
            return "error", str(exc)
        return type(result).__name__, repr(result)

    assert coerced(_coerce) == coerced(_coerce_checked)


def test_invalid_template_is_not_a_shortcut() -> None:
    assert template_is_unambiguous("../{a}", {"a": "str"}) is False
    assert template_is_unambiguous("{a}/x", {"a": "str", "b": "str"}) is False
    with pytest.raises(DatasetTypeError):
        from butler._mapper import validate_template

        validate_template("../{a}")


def test_butler_get_and_put_round_trip_through_the_fast_paths(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("cfg", dict, "json", template="cfg/{bucket:d}/{i:d}.json")
    for i in range(20):
        posix_repo.put({"i": i, "v": [i, str(i)]}, "cfg", bucket=i % 3, i=i)
    assert [posix_repo.get("cfg", bucket=i % 3, i=i) for i in range(20)] == [
        {"i": i, "v": [i, str(i)]} for i in range(20)
    ]
    assert posix_repo.get("cfg", bucket="1", i="4") == {"i": 4, "v": [4, "4"]}


@pytest.mark.parametrize("size", [0, 1, 70, 9 * 2**20])
def test_read_bytes_returns_the_whole_file(storage: PosixStorage, size: int) -> None:
    data = os.urandom(size)
    storage.write_bytes("a/b/sized.bin", data)
    assert storage.read_bytes("a/b/sized.bin") == data
    storage.metadata("a/b/sized.bin")  # the kept descriptor is the one read next
    assert storage.read_bytes("a/b/sized.bin") == data


def test_json_get_with_progress_reports_the_bytes(posix_repo: Butler) -> None:
    """With a progress callback the JSON reader goes through a file object that reports;
    without one it reads the bytes directly. Both give the same object."""
    posix_repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    value = {"k": list(range(50))}
    posix_repo.put(value, "j", n="x")
    seen: list[tuple[int, int | None]] = []
    assert posix_repo.get("j", n="x", progress=lambda d, t: seen.append((d, t))) == value
    size = len(json.dumps(value, ensure_ascii=False).encode())
    assert seen and seen[-1] == (size, size)
    assert posix_repo.get("j", n="x") == value


@pytest.mark.parametrize("commit", ["renameat2", "link"])
def test_create_only_commit_refuses_an_existing_dataset(
    tmp_path: Path, commit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create-only write commits with renameat2(RENAME_NOREPLACE) on Linux, else with
    link: either way an existing dataset is kept and refused, no temporary file is left."""
    from butler import DatasetExistsError

    if commit == "link":
        monkeypatch.setattr(_linux, "enabled", False)
    storage = PosixStorage(str(tmp_path / "repo"))
    used: list[bool] = []
    real = _linux.rename_noreplace

    def counting(*args: Any) -> bool:
        used.append(real(*args))
        return used[-1]

    monkeypatch.setattr("butler.storages.posix.rename_noreplace", counting)
    storage.write_bytes("a/x.json", b"first", overwrite=False)
    with pytest.raises(DatasetExistsError, match="already exists"):
        storage.write_bytes("a/x.json", b"second", overwrite=False)
    assert storage.read_bytes("a/x.json") == b"first"
    assert sorted(os.listdir(tmp_path / "repo" / "a")) == ["x.json"]
    expected = LINUX and commit == "renameat2"
    assert used and used[0] is expected  # which way the first commit went
    storage.close()


@pytest.mark.skipif(not LINUX, reason="openat2 is a Linux system call")
@pytest.mark.parametrize("key", ["a/b/c.json", "a/missing.json", "nowhere/c.json", "a/dir.json"])
def test_exists_takes_the_fast_path_on_linux(
    storage: PosixStorage, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file, nothing, or a directory is answered by one openat2(O_PATH), without the
    walk (so the comparison above compares two paths for `exists` too)."""

    def no_walk(*args: Any) -> None:
        raise AssertionError("the portable walk was used")

    monkeypatch.setattr(storage, "_lstat_once", no_walk)
    assert storage.exists(key) is (key == "a/b/c.json")


@pytest.mark.parametrize("name", ["dir.json", "link.json", "dirlink", "fifo.json", "sock.json"])
def test_create_only_write_over_a_non_file_is_refused_alike_both_ways(
    storage: PosixStorage, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create-only commit does not look before renaming: when the rename finds the
    name taken, what is there decides the error, the same as with the look-first link
    path. Nothing there is changed and no temporary file is left."""
    root = Path(storage.root) / "a"
    before = sorted(os.listdir(root))

    def attempt() -> tuple[str, str]:
        answer = outcome(lambda: storage.write_bytes(f"a/{name}", b"new", overwrite=False))
        assert sorted(os.listdir(root)) == before
        return answer

    fast = attempt()
    monkeypatch.setattr(_linux, "enabled", False)
    assert attempt() == fast
    kind = {"dir.json": "a directory", "fifo.json": "a FIFO", "sock.json": "a socket"}
    assert fast[0] == "StorageError" and fast[1].startswith("refused"), fast
    assert f"is {kind.get(name, 'a symbolic link')};" in fast[1], fast
    assert (Path(storage.root) / "../outside/c.json").read_bytes() == b"secret"


def test_rename_noreplace_unsupported_falls_back_to_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system without RENAME_NOREPLACE (EINVAL) is committed by link instead."""
    monkeypatch.setattr("butler.storages.posix.rename_noreplace", lambda *args: False)
    storage = PosixStorage(str(tmp_path / "repo"))
    storage.write_bytes("a/x.json", b"first", overwrite=False)
    assert storage.read_bytes("a/x.json") == b"first"
    assert sorted(os.listdir(tmp_path / "repo" / "a")) == ["x.json"]
    storage.close()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1}',
        b'{"a":"\xc3\xa9"}',
        '{"a":1}'.encode("utf-16-le"),
        '{"a":1}'.encode("utf-16"),
        '{"a":1}'.encode("utf-32"),
        b'\xef\xbb\xbf{"a":1}',
        b'{"a":"\xff"}',
        b'{"a":"\xed\xa0\x80"}',
        b"{",
        b"{\x00",
        b"[1]",
        b"",
        b"[" * 100_000,
    ],
)
def test_metadata_decoding_is_json_loads_of_the_bytes(raw: bytes) -> None:
    """read_json decodes UTF-8 itself when that is what json.loads would detect."""
    from butler.storages._resolve import read_json

    try:
        expected = json.loads(raw)
    except (ValueError, RecursionError):
        expected = {}
    assert read_json(raw) == (expected if isinstance(expected, dict) else {})


def test_finalizers_survive_interpreter_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At interpreter exit a storage may be collected after the modules it uses were torn
    down (``contextlib``/``os`` set to None): its finalizer must not raise ("Exception
    ignored in PosixStorage.__del__" at the end of test runs)."""
    import butler.storages.posix as posix_module

    storage = PosixStorage(str(tmp_path))
    storage.write_bytes("a/x.json", b"{}")
    storage.metadata("a/x.json")  # a kept descriptor too
    kept = storage._kept.slot
    monkeypatch.setattr(posix_module, "contextlib", None)
    monkeypatch.setattr(posix_module, "os", None)
    storage.__del__()
    kept.__del__()
    monkeypatch.undo()
    storage.close()
