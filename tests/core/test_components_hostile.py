"""Components attacked from outside: odd names, hand-written (hostile) composite records,
parameters and pickles through components, puts that must not change their argument.

A repository is untrusted input: a composite record may name any key, format or class;
every such record is refused with a `ButlerError` naming the dataset, before a byte of a
part it names is read, and never assembles parts from elsewhere or from two puts.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import butler
from butler import Butler, ComponentError, FormatError, ParameterError


@dataclass
class Arrays:
    image: np.ndarray
    weights: np.ndarray


#: Field types as classes (this module's own annotations are strings, never evaluated).
Typed = dataclasses.make_dataclass("Typed", [("image", np.ndarray), ("meta", dict)])
Typed.__module__ = __name__


@pytest.fixture(params=["posix", "memory", "sqlite"])
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    return _filled(butler_repo(request.param))


@pytest.fixture
def s3_filled(butler_repo: Callable[..., Butler]) -> Butler:
    return _filled(butler_repo("s3"))


def _filled(b: Butler) -> Butler:
    b.register_dataset_type("arr", Arrays, "npy", dimensions={"ccd": int}, disassemble=True)
    b.register_dataset_type("cfg", dict, "json", dimensions={"ccd": int}, disassemble=True)
    b.put(Arrays(np.arange(3), np.ones(3)), "arr", ccd=1)
    b.put(Arrays(np.arange(4) + 10, np.full(4, 2.0)), "arr", ccd=2)
    return b


def _key(b: Butler, dataset_type: str, ccd: int) -> str:
    key = f"{dataset_type}/{ccd}.composite.json"  # the default template of a composite
    assert b.storage.exists(key)
    return key


def _record(b: Butler, key: str) -> dict[str, Any]:
    with b.storage.open(key) as f:
        return dict(json.loads(f.read()))


def _plant(b: Butler, key: str, content: Any) -> None:
    """Replace the record at ``key`` behind butler's back, its metadata (and so its
    recorded size) kept consistent: only the content is hostile."""
    meta = {k: v for k, v in b.storage.metadata(key).items() if k not in ("size", "sha256")}
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    with b.storage.atomic_write(key, metadata=meta, overwrite=True) as f:
        f.write(data)


def _parts(b: Butler) -> list[str]:
    return sorted(b.storage.list("@parts/"))


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("arr..image", ComponentError, "malformed component in 'arr..image'"),
        ("arr.", ComponentError, "malformed component in 'arr.'"),
        (".image", butler.DatasetTypeError, "unknown dataset type '.image'"),
        ("arr.__class__", ComponentError, "has no component '__class__'"),
        ("arr._data", ComponentError, "has no component '_data'"),
        ("arr.ü", ComponentError, "has no component 'ü'"),
        ("arr.image.x", ComponentError, "'numpy.ndarray' has no components"),
        ("arr.image.__len__", ComponentError, "'numpy.ndarray' has no components"),
    ],
)
def test_odd_component_names_are_refused(
    repo: Butler, name: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message.replace(".", r"\.").replace("(", r"\(")):
        repo.get(name, ccd=1)


def test_put_remove_datasets_of_a_component_say_it_is_one(repo: Butler) -> None:
    message = r"'arr\.image' names component 'image' of dataset type 'arr'"
    with pytest.raises(butler.DatasetTypeError, match=message):
        repo.put(np.arange(3), "arr.image", ccd=3)
    with pytest.raises(butler.DatasetTypeError, match=message):
        repo.remove("arr.image", ccd=1)
    with pytest.raises(butler.DatasetTypeError, match=message):
        list(repo.datasets("arr.image"))
    assert repo.exists("arr", ccd=1)


def test_exists_checks_the_whole_component_path(repo: Butler) -> None:
    """``exists("typed.image.x")``: an ndarray has no components, whatever is stored."""
    typed = Typed
    repo.register_dataset_type(
        "typed",
        typed,
        "npy",
        dimensions={"ccd": int},
        disassemble=True,
        component_formats={"meta": "json"},
    )
    repo.put(typed(np.arange(3), {"a": 1}), "typed", ccd=1)
    assert repo.exists("typed.image", ccd=1) and repo.exists("typed.meta.anything", ccd=1)
    with pytest.raises(ComponentError, match=r"'numpy\.ndarray' has no components"):
        repo.exists("typed.image.x", ccd=1)
    with pytest.raises(ComponentError, match="has no component 'nope'"):
        repo.exists("typed.nope", ccd=1)


def test_a_key_a_disassembled_dict_does_not_hold_is_a_component_error(repo: Butler) -> None:
    repo.put({"a": 1, "a.b": 2}, "cfg", ccd=1)
    with pytest.raises(
        ComponentError, match=r"no component 'nope'; its components are \['a', 'a.b'\]"
    ):
        repo.get("cfg.nope", ccd=1)
    # A key holding the separator cannot be named by a dotted name: 'a' is read, then 'b'.
    with pytest.raises(ComponentError, match=r"'builtins\.int' has no components"):
        repo.get("cfg.a.b", ccd=1)
    assert repo.get("cfg", ccd=1) == {"a": 1, "a.b": 2}


def test_a_dict_with_keys_no_component_can_name_is_refused_not_truncated(repo: Butler) -> None:
    with pytest.raises(ComponentError, match=r"key 1 .*not a string"):
        repo.put({1: "one", "a": 2}, "cfg", ccd=5)
    assert not repo.exists("cfg", ccd=5)
    assert _parts(repo) == [p for p in _parts(repo) if "/cfg/" not in p]


# -- hostile records ---------------------------------------------------------------------


def _hostile(repo: Butler, edit: Callable[[dict[str, Any], dict[str, Any]], Any]) -> str:
    key1, key2 = _key(repo, "arr", 1), _key(repo, "arr", 2)
    record = copy.deepcopy(_record(repo, key1))
    planted = edit(record, _record(repo, key2))
    _plant(repo, key1, record if planted is None else planted)
    return key1


def _other_dataset(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["weights"] = other["parts"]["weights"]


def _other_put(r: dict[str, Any], other: dict[str, Any]) -> None:
    # a part of this dataset's key, under another put's token: mixing two puts
    r["parts"]["weights"]["key"] = r["parts"]["weights"]["key"].replace(r["token"], "0" * 16)


def _swapped(r: dict[str, Any], other: dict[str, Any]) -> None:
    p = r["parts"]
    p["image"]["key"], p["weights"]["key"] = p["weights"]["key"], p["image"]["key"]


def _dotdot(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["weights"]["key"] = r["parts"]["weights"]["key"].replace(
        "weights.npy", "../../2.composite.json/" + other["token"] + "/weights.npy"
    )


def _nested(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["weights"]["key"] += "/deeper"


def _absolute(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["weights"]["key"] = "/etc/passwd"


def _token(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["token"] = 5


def _format(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["weights"]["format"] = "json"


def _python_type(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["weights"]["python_type"] = "builtins.dict"


def _extra(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["parts"]["psf"] = copy.deepcopy(r["parts"]["weights"])


def _version(r: dict[str, Any], other: dict[str, Any]) -> None:
    r["version"] = 99


def _deep(r: dict[str, Any], other: dict[str, Any]) -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


def _huge(r: dict[str, Any], other: dict[str, Any]) -> bytes:
    return b" " * (5 * 2**20) + json.dumps(r).encode()


#: Records wrong in themselves: every reader of the record refuses them.
WHOLE_RECORD = [
    (_other_dataset, "outside this put's parts"),
    (_other_put, "outside this put's parts"),
    (_dotdot, "outside this put's parts"),
    (_nested, "outside this put's parts"),
    (_absolute, "outside this put's parts"),
    (_token, "token 5 is not"),
    (_version, "version 99"),
    (_deep, "nested too deeply"),
    (_huge, "exceeds 4194304 bytes"),
]
#: Records wrong about one part: refused wherever that part is read, and by verify.
ONE_PART = [
    (_swapped, "part '(image|weights)' is stored at .*, not where this put writes it"),
    (_format, "part 'weights' is stored at .*weights.npy', not where this put writes it"),
    (_python_type, "records python type 'builtins.dict', but the part is stored as 'numpy"),
]


@pytest.mark.parametrize(("edit", "message"), WHOLE_RECORD + ONE_PART)
def test_a_hostile_record_is_refused_everywhere(
    repo: Butler,
    edit: Callable[[dict[str, Any], dict[str, Any]], Any],
    message: str,
) -> None:
    key = _hostile(repo, edit)
    before = _parts(repo)
    with pytest.raises(FormatError, match=message):
        repo.get("arr", ccd=1)
    if (edit, message) in WHOLE_RECORD:
        with pytest.raises(FormatError, match=message):
            repo.get("arr.image", ccd=1)
    with pytest.raises(FormatError, match=message):
        repo.get("arr.weights", ccd=1)
    # verify names the record as corrupt (it does not call it healthy, nor crash)...
    report = repo.verify()
    assert not report.healthy
    assert [line for line in report.corrupted if key in line and "composite record" in line]
    # ...and purge never deletes parts a record it cannot read may name.
    assert repo.purge_debris(older_than=0) == []
    assert _parts(repo) == before
    np.testing.assert_array_equal(repo.get("arr.image", ccd=2), np.arange(4) + 10)


def test_a_record_naming_components_its_class_lacks_is_refused(repo: Butler) -> None:
    _hostile(repo, _extra)
    for name in ("arr", "arr.image"):
        with pytest.raises(
            FormatError, match=r"component\(s\) \['psf'\], which '.*Arrays' does not have"
        ):
            repo.get(name, ccd=1)


@pytest.mark.parametrize(("edit", "message"), [WHOLE_RECORD[1], WHOLE_RECORD[2], ONE_PART[0]])
def test_a_hostile_record_on_s3(
    s3_filled: Butler, edit: Callable[[dict[str, Any], dict[str, Any]], Any], message: str
) -> None:
    """The same checks on S3, where keys are object names (no directory to escape)."""
    test_a_hostile_record_is_refused_everywhere(s3_filled, edit, message)


@dataclass
class Labelled:
    image: np.ndarray
    label: str = "default"


def test_a_record_lacking_a_component_is_refused_not_filled_in(repo: Butler) -> None:
    """Assembling without 'label' would give the class's default, silently."""
    repo.register_dataset_type(
        "lab",
        Labelled,
        "npy",
        dimensions={"ccd": int},
        disassemble=True,
        component_formats={"label": "json"},
    )
    repo.put(Labelled(np.arange(2), "mine"), "lab", ccd=1)
    key = _key(repo, "lab", 1)
    record = _record(repo, key)
    del record["parts"]["label"]
    _plant(repo, key, record)
    with pytest.raises(FormatError, match=r"lacks component\(s\) \['label'\]"):
        repo.get("lab", ccd=1)
    np.testing.assert_array_equal(repo.get("lab.image", ccd=1), [0, 1])  # that part is fine


def test_removing_a_dataset_with_a_hostile_record_touches_no_other_dataset(
    repo: Butler,
) -> None:
    _hostile(repo, _other_dataset)
    repo.remove("arr", ccd=1)
    whole = repo.get("arr", ccd=2)
    np.testing.assert_array_equal(whole.weights, np.full(4, 2.0))


# -- writing -----------------------------------------------------------------------------


def test_a_record_too_large_to_read_back_is_never_written(
    repo: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A composite with so many components that its record would exceed what a reader
    accepts is refused before any part is written (else: unreadable, and its parts purged)."""
    import butler._composite as composite

    monkeypatch.setattr(composite, "MAX_RECORD_BYTES", 2_000)
    before = _parts(repo)
    with pytest.raises(FormatError, match=r"record of \d+ bytes, more than the 2000 bytes"):
        repo.put({f"k{i}": i for i in range(40)}, "cfg", ccd=1)
    assert _parts(repo) == before and not repo.exists("cfg", ccd=1)


def test_every_component_name_has_its_own_part(repo: Butler) -> None:
    """Names whose naive key segments would be equal: the empty name and NUL (both once
    '%00'), a long name and a short one spelling its shortened form."""
    from butler._composite import MAX_SEGMENT, part_segment

    long = "x" * 300
    short = part_segment(long)
    assert len(short) <= MAX_SEGMENT
    value = {"": 1, "\x00": 2, long: 3, short: 4, ".a": 5, "%2Ea": 6}
    assert len({part_segment(k) for k in value}) == len(value)
    repo.put(value, "cfg", ccd=9)
    assert repo.get("cfg", ccd=9) == value
    assert repo.verify().healthy and repo.purge_debris(older_than=0) == []


def test_two_components_at_one_key_are_refused_before_writing(
    repo: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever maps names to keys, a put never lets one part replace another."""
    import butler._composite as composite

    monkeypatch.setattr(composite, "part_segment", lambda name: "same")
    before = _parts(repo)
    with pytest.raises(FormatError, match="components 'a' and 'b' would be stored at the same"):
        repo.put({"a": 1, "b": 2}, "cfg", ccd=9)
    assert _parts(repo) == before and not repo.exists("cfg", ccd=9)


def test_a_disassembled_put_never_changes_its_argument(repo: Butler) -> None:
    value = {"a": np.arange(3), "b": {"c": [1, 2]}, "d": "x"}
    repo.register_dataset_type(
        "mixed",
        dict,
        "json",
        dimensions={"ccd": int},
        disassemble=True,
        component_formats={"a": "npy"},
    )
    kept = copy.deepcopy(value)
    repo.put(value, "mixed", ccd=1)
    assert value.keys() == kept.keys() and value["b"] == kept["b"] and value["d"] == "x"
    np.testing.assert_array_equal(value["a"], kept["a"])
    item = Arrays(np.arange(3), np.ones(3))
    repo.put(item, "arr", ccd=3)
    np.testing.assert_array_equal(item.image, np.arange(3))
    np.testing.assert_array_equal(item.weights, np.ones(3))


# -- parameters and pickles --------------------------------------------------------------


def test_parameters_on_parts(repo: Butler) -> None:
    with pytest.raises(
        ParameterError, match=r"unknown parameter\(s\) .*\['sectoin'\]; accepted: slice"
    ):
        repo.get("arr.image", ccd=1, parameters={"sectoin": 1})
    np.testing.assert_array_equal(
        repo.get("arr.image", ccd=2, parameters={"slice": slice(1, 3)}), [11, 12]
    )


def test_allow_pickle_cannot_be_bypassed_through_a_component(repo: Butler) -> None:
    repo.register_dataset_type(
        "pk",
        dict,
        "json",
        dimensions={"ccd": int},
        disassemble=True,
        component_formats={"s": "pickle"},
    )
    repo.put({"a": 1, "s": {1, 2}}, "pk", ccd=1)
    reader = Butler(repo.storage.uri()) if repo.storage.type_name != "memory" else repo
    for name in ("pk", "pk.s"):
        with pytest.raises(butler.UnsafeFormatError, match="pass allow_pickle=True"):
            reader.get(name, ccd=1)
    with pytest.raises(butler.BulkError, match="UnsafeFormatError"):
        reader.get_many("pk.s", [{"ccd": 1}])
    assert reader.get("pk.a", ccd=1) == 1  # the other parts stay readable
    assert reader.get("pk.s", ccd=1, allow_pickle=True) == {1, 2}
    # A hostile record turning an npy part into a pickle one: refused, never unpickled.
    _hostile(repo, lambda r, o: r["parts"]["image"].update(format="pickle"))
    with pytest.raises(FormatError, match=r"part 'image' is stored at .*image\.npy', not where"):
        reader.get("arr", ccd=1, allow_pickle=True)


def test_a_stored_dict_with_other_keys_still_names_its_string_ones(repo: Butler) -> None:
    b = repo if repo.storage.type_name == "memory" else Butler(repo.storage.uri())
    b.register_dataset_type("pk", dict, "pickle", dimensions={"ccd": int})
    b.put({1: "one", "a": 2}, "pk", ccd=1)
    assert b.get("pk.a", ccd=1, allow_pickle=True) == 2
    with pytest.raises(ComponentError, match=r"no component 'b'; its components are \['a'\]"):
        b.get("pk.b", ccd=1, allow_pickle=True)


# -- a disassembled composite is one dataset everywhere ---------------------------------------


def test_disassembled_through_runs_collections_get_many_and_exists(repo: Butler) -> None:
    rerun = Butler(repo.storage.uri(), run="rerun")  # memory: shared in the process
    rerun.put(Arrays(np.arange(5) + 100, np.zeros(5)), "arr", ccd=1)
    both = ["rerun", "default"]
    np.testing.assert_array_equal(
        repo.get("arr.image", ccd=1, collections=both), np.arange(5) + 100
    )
    np.testing.assert_array_equal(repo.get("arr.image", ccd=2, collections=both), np.arange(4) + 10)
    got = repo.get_many("arr.weights", [{"ccd": 1}, {"ccd": 2}], collections=both)
    np.testing.assert_array_equal(got[0], np.zeros(5))
    np.testing.assert_array_equal(got[1], np.full(4, 2.0))
    assert repo.count("arr", collections=both) == 2  # ccd=1 of the rerun hides the default's
    assert repo.exists("arr.image", ccd=1) and not repo.exists("arr.image", ccd=9)
    with pytest.raises(ComponentError, match="has no component 'nope'"):
        repo.exists("arr.nope", ccd=1)
    rerun.remove("arr", ccd=1)
    np.testing.assert_array_equal(repo.get("arr.image", ccd=1, collections=both), np.arange(3))
    assert [p for p in _parts(repo) if "@runs" in p] == []  # the rerun's parts went with it
    assert repo.verify().healthy
    rerun.close()


def test_a_remove_killed_after_the_record_leaves_only_unreferenced_parts(
    repo: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remove: index row, record, then parts. A crash before the parts go leaves parts no
    record names (verify lists them, purge removes them), never a half dataset."""
    import butler._composite as composite

    def crash(*args: object) -> None:
        raise KeyboardInterrupt  # the process dies between the record and its parts

    monkeypatch.setattr(composite, "remove_parts", crash)
    with pytest.raises(KeyboardInterrupt):
        repo.remove("arr", ccd=1)
    monkeypatch.undo()
    assert not repo.exists("arr", ccd=1)
    report = repo.verify()
    assert report.healthy and len(report.unreferenced) == 2
    assert len(repo.purge_debris(older_than=0)) == 2
    assert len(_parts(repo)) == 2 and repo.verify().unreferenced == []


def test_verify_checks_each_part_of_a_disassembled_dataset(repo: Butler) -> None:
    if repo.storage.type_name != "posix":
        pytest.skip("a part is altered behind butler's back through the file system")
    weights = next(k for k in _parts(repo) if "/arr/1." in k and k.endswith("weights.npy"))
    with open(f"{repo.storage.root}/{weights}", "ab") as f:
        f.write(b"\0")
    report = repo.verify()
    assert not report.healthy and len(report.truncated) == 1
    assert "weights.npy" in report.truncated[0]
    assert [line for line in report.ok if "/arr/2." in line]  # the other one is fine


def test_concurrent_disassembled_puts_and_gets_never_mix(repo: Butler) -> None:
    """Two threads overwrite one data ID while two read it: every composite read is one
    put's (both parts of one generation); what the races leave is only unreferenced parts."""
    import threading
    import time

    stop = threading.Event()
    errors: list[BaseException] = []
    seen: set[int] = set()

    def write(base: int) -> None:
        gen = base
        while not stop.is_set():
            value = np.full(1000, gen)
            try:
                repo.put(Arrays(value, value.copy()), "arr", ccd=7, overwrite=True)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            gen += 1

    def read() -> None:
        while not stop.is_set():
            try:
                if not repo.exists("arr", ccd=7):
                    continue
                got = repo.get("arr", ccd=7)
                assert got.image[0] == got.weights[0] == got.image[-1] == got.weights[-1]
                seen.add(int(got.image[0]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(b,)) for b in (0, 1_000_000)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(seen) > 2, seen
    repo.purge_debris(older_than=0)
    assert repo.verify().healthy and repo.verify().unreferenced == []
    assert len([p for p in _parts(repo) if "/arr/7." in p]) == 2
