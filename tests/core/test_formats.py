"""Core formats (json, pickle, npy, config) through the Butler, on posix and memory."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import os
import pickle
from pathlib import Path

import pytest
import yaml

from butler import (
    Butler,
    Config,
    DatasetTypeError,
    FormatError,
    NoSerializerError,
    UnsafeFormatError,
)


@dataclasses.dataclass
class Inner:
    x: int
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class Outer:
    name: str
    inner: Inner
    values: list[float] = dataclasses.field(default_factory=list)


class IsrConfig(Config):
    defaults = {"gain": 1.0, "overscan": True}


class FancyIsrConfig(IsrConfig):
    defaults = {**IsrConfig.defaults, "fancy": "yes"}


class Unrelated(Config):
    pass


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1, "b": [1.5, None, True], "c": {"d": "é"}},
        [1, 2, 3],
        "text ✓",
        42,
        2.5,
        True,
        None,
    ],
)
def test_json_round_trip(repo: Butler, value: object) -> None:
    python_type = "object" if value is None else type(value)
    repo.register_dataset_type("j", python_type, "json", dimensions=["n"])
    repo.put(value, "j", n="x")
    got = repo.get("j", n="x")
    assert got == value and type(got) is type(value)


def test_json_dataclass_round_trip(repo: Butler) -> None:
    repo.register_dataset_type("dc", Outer, "json", dimensions=["n"])
    value = Outer("a", Inner(3, ("p", "q")), [1.0, 2.5])
    repo.put(value, "dc", n="x")
    got = repo.get("dc", n="x")
    assert got == value and isinstance(got.inner, Inner) and got.inner.tags == ("p", "q")


def test_json_file_is_plain_json(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("j", dict, "json", template="j/{visit:04d}.json")
    posix_repo.put({"k": [1, 2]}, "j", visit=7)
    path = Path(posix_repo.location("j", visit=7).uri)
    assert path.name == "0007.json" and json.loads(path.read_text()) == {"k": [1, 2]}


def test_json_unserializable_value_is_format_error(repo: Butler) -> None:
    repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    with pytest.raises(FormatError, match=r"'j'.*not plain data"):
        repo.put({"a": object()}, "j", n="x")
    assert not repo.exists("j", n="x")


def test_corrupt_json_is_format_error_naming_dataset(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    posix_repo.put({"a": 1}, "j", n="x")
    path = posix_repo.location("j", n="x").uri
    with open(path, "r+b") as f:
        f.truncate(3)
    with pytest.raises(FormatError, match=r"dataset 'j' \{'n': 'x'\}"):
        posix_repo.get("j", n="x")


def test_no_serializer_for_type_in_format(repo: Butler) -> None:
    repo.register_dataset_type("s", object, "json", dimensions=["n"])
    with pytest.raises(NoSerializerError, match=r"'builtins.set'.*'json'"):
        repo.put({1, 2}, "s", n="x")


class Payload:
    """Unpickling this would create a file: proof of code execution."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_needs_opt_in_and_never_runs_payload(repo: Butler, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    repo.register_dataset_type("p", object, "pickle", dimensions=["n"])
    repo.put(Payload(str(marker)), "p", n="evil")
    with pytest.raises(UnsafeFormatError, match=r"'p'.*allow_pickle=True"):
        repo.get("p", n="evil")
    assert not marker.exists()


def test_pickle_round_trip_with_opt_in(repo: Butler) -> None:
    repo.register_dataset_type("p", object, "pickle", dimensions=["n"])
    value = {"set": {1, 2}, "tuple": (1, "a")}
    repo.put(value, "p", n="ok")
    assert repo.get("p", n="ok", allow_pickle=True) == value


def test_repository_pickle_flag_only_suggests(tmp_path: Path) -> None:
    """Hole 6: the policy's allow_pickle cannot enable unpickling for another reader."""
    b = Butler.create(str(tmp_path / "r"), allow_pickle=True)
    b.register_dataset_type("p", object, "pickle", dimensions=["n"])
    b.put({1, 2}, "p", n="a")
    assert b.get("p", n="a") == {1, 2}  # the creator asked for it
    with pytest.raises(UnsafeFormatError, match="its policy cannot allow it for you"):
        Butler(str(tmp_path / "r")).get("p", n="a")
    assert Butler(str(tmp_path / "r"), allow_pickle=True).get("p", n="a") == {1, 2}
    assert Butler(str(tmp_path / "r")).get("p", n="a", allow_pickle=True) == {1, 2}


def test_policy_allow_pickle_written_by_attacker_is_ignored(tmp_path: Path) -> None:
    """A hand-edited butler.yaml saying allow_pickle: true runs nothing."""
    import pickle as pickle_module

    b = Butler.create(str(tmp_path / "r"))
    b.register_dataset_type("p", object, "pickle", dimensions=["n"])
    b.put([1], "p", n="a", overwrite=True)
    policy = tmp_path / "r" / "butler.yaml"
    policy.write_text(policy.read_text().replace("allow_pickle: false", "allow_pickle: true"))
    marker = tmp_path / "ran"
    (tmp_path / "r" / "p" / "a.pickle").write_bytes(
        pickle_module.dumps(_Evil(str(marker)), protocol=2)
    )
    with pytest.raises(UnsafeFormatError):
        Butler(str(tmp_path / "r")).get("p", n="a")
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_pickle_file_is_a_real_pickle(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("p", object, "pickle", dimensions=["n"])
    posix_repo.put([1, 2], "p", n="a")
    with open(posix_repo.location("p", n="a").uri, "rb") as f:
        assert pickle.load(f) == [1, 2]


np = pytest.importorskip("numpy")


class Tagged(np.ndarray):
    pass


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=">f8").reshape(2, 3, 4),
        np.array([1.0, np.nan, -np.inf], dtype="<f4"),
        np.array([], dtype=np.int16),
        np.array([True, False]),
        np.array([1 + 2j]),
        np.zeros(3, dtype=[("a", "<i4"), ("b", "S3")]),
        np.asfortranarray(np.arange(24, dtype="u2").reshape(2, 3, 4)),  # fortran_order
        np.array(2.5),  # 0-d
        np.zeros((0, 4)),
        np.array(["ab", "c"]),
        np.zeros(2, dtype=[("\u03b1", "<i4")]),  # a UTF-8 field name: header version 3.0
    ],
)
@pytest.mark.filterwarnings("ignore:Stored array in format 3.0")
def test_npy_round_trip(repo: Butler, array) -> None:
    """Every shape, order, byte order and dtype kind comes back equal, laid out as written
    (butler reads the header once and the data into the array, as numpy's own reader
    would produce it)."""
    repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    repo.put(array, "a", n="x")
    got = repo.get("a", n="x")
    assert got.dtype == array.dtype and got.shape == array.shape
    assert got.flags["F_CONTIGUOUS"] == array.flags["F_CONTIGUOUS"]
    assert got.flags["C_CONTIGUOUS"] == array.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, array)


def test_npy_file_is_readable_by_numpy(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    posix_repo.put(np.arange(5), "a", n="x")
    np.testing.assert_array_equal(np.load(posix_repo.location("a", n="x").uri), np.arange(5))


def test_npy_slice_equals_slice_of_full_read(repo: Butler) -> None:
    repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    array = np.arange(10000, dtype=np.float32).reshape(100, 100)
    repo.put(array, "a", n="x")
    cut = (slice(10, 20), slice(5, 50, 5))
    np.testing.assert_array_equal(repo.get("a", n="x", parameters={"slice": cut}), array[cut])


def test_npy_subclass_comes_back_as_itself(repo: Butler) -> None:
    repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    repo.put(np.arange(3).view(Tagged), "a", n="x")
    got = repo.get("a", n="x")
    assert type(got) is Tagged and got.tolist() == [0, 1, 2]


def test_npy_refuses_object_and_masked_arrays(repo: Butler) -> None:
    repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    with pytest.raises(FormatError, match="'a'"):
        repo.put(np.array([object()]), "a", n="x")
    with pytest.raises(FormatError, match="mask"):
        repo.put(np.ma.masked_array([1, 2], mask=[0, 1]), "a", n="x")
    assert not repo.exists("a", n="x")


def test_npy_of_objects_written_elsewhere_is_refused_unread(posix_repo: Butler) -> None:
    """An object array (numpy pickles its items) planted by another tool is refused: the
    npy format never unpickles, whatever the reader allows."""
    posix_repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    posix_repo.put(np.arange(3), "a", n="x")
    path = posix_repo.location("a", n="x").uri
    with open(path, "wb") as f:
        np.save(f, np.array([{"k": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match=r"Python objects.*never does"):
        posix_repo.get("a", n="x", allow_pickle=True)


def test_truncated_npy_is_format_error(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("a", "numpy.ndarray", "npy", dimensions=["n"])
    posix_repo.put(np.arange(1000), "a", n="x")
    path = posix_repo.location("a", n="x").uri
    os.truncate(path, 200)
    with pytest.raises(FormatError, match=r"dataset 'a'"):
        posix_repo.get("a", n="x")


def test_config_subclass_round_trip(repo: Butler) -> None:
    repo.register_dataset_type("c", IsrConfig, "config", dimensions=["n"])
    repo.put(FancyIsrConfig(gain=2.0), "c", n="x")
    got = repo.get("c", n="x")
    assert type(got) is FancyIsrConfig
    assert got == {"gain": 2.0, "overscan": True, "fancy": "yes"} and got.gain == 2.0


def test_config_dataclass_round_trip(repo: Butler) -> None:
    repo.register_dataset_type("c", Outer, "config", dimensions=["n"])
    value = Outer("cfg", Inner(1), [0.5])
    repo.put(value, "c", n="x")
    assert repo.get("c", n="x") == value


def _write_config(b: Butler, name: str, document: object) -> None:
    location = b.location(name, n="x")
    with b.storage.atomic_write(location.key, metadata={"format": "config"}) as f:
        f.write(yaml.safe_dump(document).encode())


def test_config_non_subclass_is_refused(repo: Butler) -> None:
    repo.register_dataset_type("c", IsrConfig, "config", dimensions=["n"])
    doc = {"python_type": f"{Unrelated.__module__}.Unrelated", "data": {}}
    _write_config(repo, "c", doc)
    with pytest.raises(FormatError, match=r"not a subclass of the dataset type's python type"):
        repo.get("c", n="x")


def test_config_never_executes_or_imports(repo: Butler, tmp_path: Path) -> None:
    repo.register_dataset_type("c", dict, "config", dimensions=["n"])
    location = repo.location("c", n="x")
    marker = tmp_path / "executed"
    evil = f"!!python/object/apply:os.system ['touch {marker}']\n"
    with repo.storage.atomic_write(location.key, metadata={"format": "config"}) as f:
        f.write(evil.encode())
    with pytest.raises(FormatError, match="'c'"):
        repo.get("c", n="x")
    assert not marker.exists()
    # a recorded type in a module nobody imported is not imported by butler
    _write_config(repo, "c", {"python_type": "antigravity.Thing", "data": {}})
    with pytest.raises(FormatError, match="never imports modules named by data"):
        repo.get("c", n="x")
    import sys

    assert "antigravity" not in sys.modules


def test_wrong_python_type_for_dataset_type(repo: Butler) -> None:
    repo.register_dataset_type("c", IsrConfig, "config", dimensions=["n"])
    with pytest.raises(DatasetTypeError, match=r"'builtins.dict'.*'c'.*IsrConfig"):
        repo.put({"a": 1}, "c", n="x")


def test_read_file_uses_recorded_type_and_default(tmp_path: Path) -> None:
    import butler

    butler.write_file([1, 2], str(tmp_path / "x.json"))
    assert butler.read_file(str(tmp_path / "x.json")) == [1, 2]  # recorded builtins.list
    (tmp_path / "foreign.json").write_text('{"a": 1}')
    assert butler.read_file(str(tmp_path / "foreign.json")) == {"a": 1}  # format default
    butler.write_file(np.arange(3), str(tmp_path / "a.npy"))
    np.testing.assert_array_equal(butler.read_file(str(tmp_path / "a.npy")), np.arange(3))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {"b": {2: "x"}}]}, r"value\['a'\]\[1\]\['b'\] has a non-string key 2"),
        ({"a": [1, 2, {3.5}]}, r"value\['a'\]\[2\] is a 'set', which is not plain data"),
        ([{"k": (1, object())}], r"value\[0\]\['k'\]\[1\] is a 'object', which is not plain"),
        ({"outer": Outer("n", Inner(1), [1.0, b"x"])}, r"value\['outer'\]\.values\[1\] is a"),
    ],
)
def test_json_writer_names_the_path_of_what_is_not_plain(
    posix_repo: Butler, value: object, message: str
) -> None:
    """The fast path (no per-element path while everything is plain) must still report
    where the offending element is."""
    posix_repo.register_dataset_type("j", object, "json", dimensions=["n"])
    with pytest.raises(FormatError, match=message):
        posix_repo.put(value, "j", n="x")
    assert not posix_repo.exists("j", n="x")


@pytest.mark.parametrize(
    ("value", "plain"),
    [
        ({"a": 1, "b": [1.5, None, True, "é"], "c": {"d": (1, 2, [3, {"e": None}])}}, True),
        ({f"k{i}": i * 0.5 for i in range(2000)}, True),
        ([[[[[]]]], {}, (), "", 0, -1.0, float("inf")], True),
        (collections.OrderedDict([("z", 1), ("a", collections.OrderedDict(b=[1]))]), False),
        ({"inner": Inner(2, ("t",)), "n": [Inner(3)]}, False),
        ({"s": type("S", (str,), {})("sub"), "i": True}, False),
    ],
)
def test_json_writer_output_equals_to_plain_then_dumps(value: object, plain: bool) -> None:
    """Whichever path the writer takes, the bytes are those of ``json.dumps(to_plain(v))``."""
    from butler.formats._plain import is_plain, to_plain
    from butler.formats.json_ import write

    class Sink:
        """A stand-in for ButlerLocation: only ``open_write`` is used by the writer."""

        def __init__(self) -> None:
            self.buffer = io.BytesIO()

        def open_write(self) -> contextlib.nullcontext[io.BytesIO]:
            return contextlib.nullcontext(self.buffer)

    sink = Sink()
    write(value, sink)  # type: ignore[arg-type]
    assert sink.buffer.getvalue() == json.dumps(to_plain(value), ensure_ascii=False).encode()
    assert is_plain(value) is plain  # which path was taken


def test_is_plain_refuses_what_to_plain_would_convert_or_reject() -> None:
    from butler.formats._plain import is_plain

    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    assert is_plain({"a": [1, 2.5, None, "x", (True,)]})
    assert not is_plain({1: "a"})
    assert not is_plain({"a": {"b": [1, {2: 3}]}})
    assert not is_plain({"a": Inner(1)})
    assert not is_plain(collections.OrderedDict(a=1))
    assert not is_plain({"a": object()})
    assert not is_plain(deep)  # too deep: to_plain reports the RecursionError
