"""The kit fails serializers that break the rules, with messages that say what to fix.

Each case registers a small ``blob`` serializer in a private registry and calls the kit's
test methods directly on a memory or posix repository.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butler import ButlerLocation, FormatDescriptor, Registry
from butler._plugins import discover
from butler.testing import (
    RepositoryFactory,
    SerializerConformance,
    corrupt,
    derive_subclass,
    failing_writes,
    imported_after_discovery,
)

MAGIC = b"BLOB"


class Blob:
    """Some bytes with a name."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Blob) and (self.name, self.data) == (other.name, other.data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self.data)} bytes)"


def _encode(blob: Blob) -> bytes:
    name = blob.name.encode()
    return MAGIC + struct.pack("<II", len(name), len(blob.data)) + name + blob.data


def good_write(obj: Blob, location: ButlerLocation) -> None:
    with location.open_write() as f:
        f.write(_encode(obj))


def good_read(location: ButlerLocation) -> Blob:
    with location.open_read() as f:
        raw = f.read()
    if raw[:4] != MAGIC or len(raw) < 12:
        raise location.format_error("not a blob")
    n_name, n_data = struct.unpack("<II", raw[4:12])
    if len(raw) != 12 + n_name + n_data:
        raise location.format_error(f"{len(raw)} bytes, expected {12 + n_name + n_data}")
    cls = location.read_type()
    obj: Blob = object.__new__(cls)
    Blob.__init__(obj, raw[12 : 12 + n_name].decode(), raw[12 + n_name :])
    return obj


def careless_read(location: ButlerLocation) -> Blob:
    """Returns whatever is there: no check, no subclass."""
    with location.open_read() as f:
        raw = f.read()
    return Blob("?", raw[12:])


def bypassing_write(obj: Blob, location: ButlerLocation) -> None:
    """Writes straight into the final file: a crash leaves half a dataset."""
    path = location.storage.path(location.key)  # type: ignore[attr-defined]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(_encode(obj))


def good_decode(data: bytes, cls: type) -> Blob:
    """`good_read` from the bytes (the small-get shortcut)."""
    if data[:4] != MAGIC or len(data) < 12:
        raise ValueError("not a blob")
    n_name, n_data = struct.unpack("<II", data[4:12])
    if len(data) != 12 + n_name + n_data:
        raise ValueError("wrong size")
    obj: Blob = object.__new__(cls)
    Blob.__init__(obj, data[12 : 12 + n_name].decode(), data[12 + n_name :])
    return obj


def lenient_decode(data: bytes, cls: type) -> Blob:
    """Checks the magic only: truncated bytes come back as a shorter blob."""
    if data[:4] != MAGIC:
        raise ValueError("not a blob")
    n_name = struct.unpack("<I", data[4:8])[0] if len(data) >= 8 else 0
    return Blob(data[12 : 12 + n_name].decode(errors="replace"), data[12 + n_name :])


def _registry(write: Any = good_write, read: Any = careless_read, decode: Any = None) -> Registry:
    registry = discover().registry  # a private copy: the default registry stays clean
    registry.register_format(FormatDescriptor("blob", (".blob",), magic=MAGIC))
    registry.register(Blob, "*", "blob", write, read, decode=decode)
    return registry


class BlobSuite(SerializerConformance):
    format = "blob"
    python_type = Blob
    _registry_obj: Registry | None = None

    def registry(self) -> Registry | None:
        return self._registry_obj

    def make_objects(self) -> list[Any]:
        return [Blob("a", b"\x00" * 100), Blob("ü", b"")]


def _suite(write: Any, read: Any, decode: Any = None) -> BlobSuite:
    suite = BlobSuite()
    suite._registry_obj = _registry(write, read, decode)
    return suite


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Any]:
    def make(suite: BlobSuite, storage: str = "memory") -> Any:
        return RepositoryFactory(storage, tmp_path, suite.registry())

    yield make


def test_good_serializer_passes(factory: Any, tmp_path: Path) -> None:
    suite = _suite(good_write, good_read)
    for storage in ("memory", "posix"):
        f = factory(suite, storage)
        suite.test_round_trip(suite.new_repository(f))
        suite.test_subclass_round_trip(suite.new_repository(f))
        for how in ("truncated", "garbage", "empty"):
            suite.test_corrupt_input(suite.new_repository(f), how)
        suite.test_failed_overwrite_keeps_old(suite.new_repository(f), f)
        suite.test_failed_create_leaves_nothing(suite.new_repository(f), f)
    suite.test_file_round_trip(tmp_path)


def test_a_decode_agreeing_with_read_passes_and_a_lenient_one_is_caught(factory: Any) -> None:
    good = _suite(good_write, good_read, good_decode)
    lenient = _suite(good_write, good_read, lenient_decode)
    for storage in ("memory", "posix"):
        for how in ("truncated", "garbage", "empty"):
            good.test_decode_agrees_with_read(good.new_repository(factory(good, storage)), how)
        b = lenient.new_repository(factory(lenient, storage))
        with pytest.raises(AssertionError, match="read raises FormatError, decode returned"):
            lenient.test_decode_agrees_with_read(b, "truncated")


def test_silent_corruption_is_caught(factory: Any) -> None:
    suite = _suite(good_write, careless_read)
    b = suite.new_repository(factory(suite))
    with pytest.raises(AssertionError, match="was read without error"):
        suite.test_corrupt_input(b, "garbage")
    with pytest.raises(AssertionError, match="remove 'truncated' from corruptions"):
        suite.test_corrupt_input(suite.new_repository(factory(suite)), "truncated")


def test_lost_subclass_is_caught(factory: Any) -> None:
    suite = _suite(good_write, careless_read)
    with pytest.raises(AssertionError, match=r"read back a .*\.Blob, wrote a .*DerivedBlob"):
        suite.test_subclass_round_trip(suite.new_repository(factory(suite)))


def test_non_atomic_write_is_caught(factory: Any) -> None:
    suite = _suite(bypassing_write, good_read)
    f = factory(suite, "posix")
    with pytest.raises(AssertionError, match=r"did not write through location\.open_write"):
        suite.test_failed_overwrite_keeps_old(suite.new_repository(f), f)


def test_unregistered_format_fails_discovery_check() -> None:
    suite = _suite(good_write, good_read)  # registered only in a private registry
    with pytest.raises(AssertionError, match="'blob' was not registered by plugin discovery"):
        suite.test_discovery_is_lazy()


def test_imported_after_discovery_reports_modules() -> None:
    result = imported_after_discovery(["butler._butler", "butler.testing", "numpy", "h5py"])
    assert result["imported"] == ["butler._butler"]
    assert {"json", "npy", "pickle", "config"} <= set(result["formats"])


def test_failing_writes_leave_old_bytes(tmp_path: Path) -> None:
    suite = _suite(good_write, good_read)
    b = suite.new_repository(RepositoryFactory("posix", tmp_path, suite.registry()))
    key = b.put(Blob("x", b"1" * 1000), "conformance", n=0).key
    with (
        failing_writes(b.storage, limit=100) as faults,
        pytest.raises(OSError, match=r"injected by butler\.testing after 100 bytes"),
        b.storage.atomic_write(key) as f,
    ):
        f.write(b"2" * 1000)
    assert faults.fired == 1 and faults.bytes_before_failure == [100]
    assert b.storage.read_bytes(key) == _encode(Blob("x", b"1" * 1000))
    assert "atomic_write" not in vars(b.storage)  # restored


def test_corrupt_keeps_recorded_type(tmp_path: Path) -> None:
    suite = _suite(good_write, good_read)
    b = suite.new_repository(RepositoryFactory("memory", tmp_path, suite.registry()))
    sub = derive_subclass(Blob("s", b"abc"))
    key = b.put(sub, "conformance", n=0).key
    assert corrupt(b.storage, key, lambda data: data + b"!") == _encode(sub) + b"!"
    assert b.storage.metadata(key)["python_type"].endswith(type(sub).__qualname__)


def test_derive_subclass_kinds() -> None:
    np = pytest.importorskip("numpy")
    arr = derive_subclass(np.arange(3))
    assert type(arr).__mro__[1] is np.ndarray and list(arr) == [0, 1, 2]
    d = derive_subclass({"a": 1})
    assert type(d).__mro__[1] is dict and d == {"a": 1}
    assert derive_subclass(True) is None  # bool is final
    blob = derive_subclass(Blob("n", b"d"))
    assert type(blob) is not Blob and blob == Blob("n", b"d")
