"""Components in butler-core: declarations, dotted reads of dataclasses and dicts, errors,
and disassembled storage (put/get/remove/verify/index/runs as one dataset)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import butler
from butler import (
    Butler,
    ComponentError,
    ComponentReader,
    Components,
    DatasetTypeError,
    ParameterError,
)
from butler._components import ComponentCatalog, catalog_for

from ._registries import own_registry


@dataclass
class Calib:
    gain: float
    noise: float
    name: str = "c"
    table: dict = field(default_factory=dict)


@dataclass
class SpecialCalib(Calib):
    extra: int = 0


@dataclass
class Arrays:
    image: np.ndarray
    weights: np.ndarray


@pytest.fixture(params=["posix", "memory", "sqlite"])
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    return butler_repo(request.param)


def test_dataclass_fields_are_components(repo: Butler) -> None:
    repo.register_dataset_type("calib", Calib, "json", dimensions={"ccd": int})
    repo.put(Calib(1.5, 3.0, table={"a": [1, 2]}), "calib", ccd=1)
    assert repo.get("calib.gain", ccd=1) == 1.5
    assert repo.get("calib.table", ccd=1) == {"a": [1, 2]}
    assert repo.get("calib.table.a", ccd=1) == [1, 2]  # a dict's key, one level down
    with pytest.raises(ComponentError) as info:
        repo.get("calib.gian", ccd=1)
    assert "has no component 'gian'; its components are ['gain', 'name', 'noise', 'table']" in (
        str(info.value)
    )


def test_the_written_subclass_decides_the_components(repo: Butler) -> None:
    repo.register_dataset_type("calib", Calib, "pickle", dimensions={"ccd": int})
    b = (
        Butler(repo.storage.uri(), allow_pickle=True)
        if repo.storage.type_name != "memory"
        else repo
    )
    b.put(SpecialCalib(1.0, 2.0, extra=5), "calib", ccd=2)
    assert b.get("calib.extra", ccd=2, allow_pickle=True) == 5
    # The dataset type's class has no 'extra': exists() refuses it before reading anything.
    with pytest.raises(ComponentError, match="has no component 'extra'"):
        b.exists("calib.extra", ccd=2)


def test_dict_keys_are_dynamic_components(repo: Butler) -> None:
    repo.register_dataset_type("cfg", dict, "json", dimensions={"ccd": int})
    repo.put({"gain": 2.0, "amps": {"A": 1, "B": 2}}, "cfg", ccd=1)
    assert repo.get("cfg.amps.B", ccd=1) == 2
    with pytest.raises(ComponentError, match=r"no component 'C'; its components are \['A', 'B'\]"):
        repo.get("cfg.amps.C", ccd=1)
    assert repo.get_many("cfg.gain", [{"ccd": 1}, {"ccd": 1}]) == [2.0, 2.0]


def test_types_without_components_say_so(repo: Butler) -> None:
    repo.register_dataset_type("n", list, "json", dimensions={"ccd": int})
    repo.put([1, 2], "n", ccd=1)
    with pytest.raises(
        ComponentError, match=r"'builtins\.list' has no components .*builtins\.dict"
    ):
        repo.get("n.first", ccd=1)


def test_unknown_dataset_type_of_a_dotted_name(repo: Butler) -> None:
    with pytest.raises(DatasetTypeError, match=r"unknown dataset type 'nope\.wcs'"):
        repo.get("nope.wcs", ccd=1)
    repo.register_dataset_type("cfg", dict, "json", dimensions={"ccd": int})
    with pytest.raises(ComponentError, match=r"malformed component in 'cfg\.\.x'"):
        repo.get("cfg..x", ccd=1)


def test_a_dataset_type_named_with_a_dot_wins_over_a_component(repo: Butler) -> None:
    repo.register_dataset_type("cfg", dict, "json", dimensions={"ccd": int})
    repo.register_dataset_type("cfg.extra", dict, "json", dimensions={"ccd": int})
    repo.put({"extra": "component"}, "cfg", ccd=1)
    repo.put({"x": "own type"}, "cfg.extra", ccd=1)
    assert repo.get("cfg.extra", ccd=1) == {"x": "own type"}
    assert repo.get("cfg.extra.x", ccd=1) == "own type"


def test_declarations_are_lazy_and_validated() -> None:
    with pytest.raises(TypeError, match=r"component names are non-empty strings without '\.'"):
        Components("x.Y", {"a.b": "builtins.int"}, "m:s", "m:a")
    with pytest.raises(TypeError, match="split must be a callable"):
        Components("x.Y", {}, 3, "m:a")
    lazy = Components("not_imported_pkg.Thing", {"a": "builtins.int"}, "nope:s", "nope:a")
    catalog = ComponentCatalog()
    catalog.add(lazy)
    assert catalog.find(dict) is None  # the unimported type matches nothing, imports nothing
    with pytest.raises(DatasetTypeError, match="already declared by 'user'"):
        catalog.add(Components("not_imported_pkg.Thing", {}, "a:b", "a:c"))


def test_a_user_declaration_and_direct_reader_in_an_own_registry(
    butler_repo: Callable[..., Butler],
) -> None:
    registry = own_registry()
    calls: list[str] = []

    def read_one(location: butler.ButlerLocation, component: str, **_: object) -> object:
        calls.append(component)
        return f"direct {component}"

    butler.register_components(
        Components(
            Arrays,
            {"image": "numpy.ndarray", "weights": "numpy.ndarray"},
            lambda o: {"image": o.image, "weights": o.weights},
            lambda cls, p: cls(**p),
        ),
        registry=registry,
    )
    butler.register_components(
        ComponentReader(Arrays, "*", "pickle", read_one, components=("weights",)),
        registry=registry,
    )
    b = butler_repo("posix", registry=registry, allow_pickle=True)
    b.register_dataset_type("arr", Arrays, "pickle", dimensions={"ccd": int})
    b.put(Arrays(np.arange(3), np.ones(3)), "arr", ccd=1)
    assert b.get("arr.weights", ccd=1) == "direct weights"  # the direct reader
    np.testing.assert_array_equal(b.get("arr.image", ccd=1), [0, 1, 2])  # extracted
    assert calls == ["weights"]
    assert catalog_for(registry) is not catalog_for(butler.default_registry())


# -- disassembled ------------------------------------------------------------------------


@pytest.fixture
def arrays(repo: Butler) -> Butler:
    repo.register_dataset_type(
        "arr",
        Arrays,
        "npy",
        dimensions={"ccd": int},
        disassemble=True,
    )
    return repo


def _parts(b: Butler) -> list[str]:
    return sorted(b.storage.list("@parts/"))


def test_disassembled_put_get_and_one_component(arrays: Butler) -> None:
    arrays.put(Arrays(np.arange(10), np.ones(10)), "arr", ccd=1)
    whole = arrays.get("arr", ccd=1)
    np.testing.assert_array_equal(whole.image, np.arange(10))
    np.testing.assert_array_equal(
        arrays.get("arr.image", ccd=1, parameters={"slice": slice(2, 5)}), [2, 3, 4]
    )
    with pytest.raises(ParameterError, match=r"stored disassembled.*'arr.<component>'"):
        arrays.get("arr", ccd=1, parameters={"slice": slice(0, 1)})
    keys = _parts(arrays)
    assert [k.rsplit("/", 1)[1] for k in keys] == ["image.npy", "weights.npy"]
    assert arrays.storage.metadata(keys[0])["dataset_type"] == "arr.image"


def test_disassembled_is_one_dataset_for_datasets_index_verify_remove(arrays: Butler) -> None:
    arrays.put(Arrays(np.arange(3), np.ones(3)), "arr", ccd=1)
    arrays.put(Arrays(np.arange(4), np.ones(4)), "arr", ccd=2)
    assert list(arrays.datasets("arr")) == [{"ccd": 1}, {"ccd": 2}]
    assert arrays.count("arr") == 2
    report = arrays.verify()
    assert report.healthy and report.checked == 2 and len(report.ok) == 2
    arrays.put(Arrays(np.arange(5), np.zeros(5)), "arr", ccd=1, overwrite=True)
    assert len(_parts(arrays)) == 4  # the old parts of ccd=1 are gone
    np.testing.assert_array_equal(arrays.get("arr.weights", ccd=1), np.zeros(5))
    arrays.remove("arr", ccd=1)
    assert len(_parts(arrays)) == 2
    assert list(arrays.datasets("arr")) == [{"ccd": 2}]


def test_a_missing_part_makes_verify_and_get_fail(arrays: Butler) -> None:
    arrays.put(Arrays(np.arange(3), np.ones(3)), "arr", ccd=1)
    weights = next(k for k in _parts(arrays) if k.endswith("weights.npy"))
    arrays.storage.remove(weights)
    report = arrays.verify()
    assert not report.healthy and len(report.missing) == 1 and "weights.npy" in report.missing[0]
    with pytest.raises(butler.DatasetNotFoundError):
        arrays.get("arr", ccd=1)


def test_disassembled_in_runs(butler_repo: Callable[..., Butler]) -> None:
    b = butler_repo("posix")
    b.register_dataset_type("arr", Arrays, "npy", dimensions={"ccd": int}, disassemble=True)
    b.put(Arrays(np.arange(3), np.ones(3)), "arr", ccd=1)
    rerun = Butler(b.storage.uri(), run="rerun")
    rerun.put(Arrays(np.arange(6), np.ones(6)), "arr", ccd=1)
    assert len(rerun.get("arr.image", ccd=1)) == 6
    assert len(b.get("arr.image", ccd=1)) == 3
    rerun.close()


def test_disassembly_settings_are_checked(repo: Butler) -> None:
    with pytest.raises(DatasetTypeError, match="only apply to a disassembled dataset type"):
        repo.register_dataset_type("x", Arrays, "npy", component_formats={"image": "json"})
    with pytest.raises(butler.NoSerializerError, match="Unknown format 'fitz'"):
        repo.register_dataset_type(
            "x", Arrays, "npy", disassemble=True, component_formats={"image": "fitz"}
        )
    dt = repo.register_dataset_type(
        "y", Arrays, "npy", disassemble=True, component_formats={"weights": "json"}
    )
    assert dt.template == "y.composite.json"
    again = Butler(repo.storage.uri()) if repo.storage.type_name != "memory" else repo
    assert again.dataset_type("y").component_formats == {"weights": "json"}
    assert again.dataset_type("y").disassemble is True
    # Dataset types that are not disassembled keep the policy as it was before composites.
    assert "disassemble" not in repo.register_dataset_type("z", dict, "json").to_dict()


def test_no_data_id_reaches_the_parts_area(repo: Butler) -> None:
    repo.register_dataset_type("free", dict, "json", template="{area}/{name}.json")
    with pytest.raises(
        butler.InvalidDataIdError, match=r"reserved for butler itself .*disassembled composites"
    ):
        repo.put({}, "free", area="@parts", name="x")


def test_a_failed_disassembled_put_leaves_no_parts_and_the_old_composite(
    repo: Butler,
) -> None:
    repo.register_dataset_type("cfgs", dict, "json", dimensions={"ccd": int}, disassemble=True)
    repo.put({"a": 1, "b": [1, 2]}, "cfgs", ccd=1)
    before = _parts(repo)
    with pytest.raises(
        butler.NoSerializerError,
        match=r"component 'c' cannot be stored disassembled in format 'json' .*'builtins\.set'",
    ):
        repo.put({"a": 2, "b": [3], "c": {1, 2}}, "cfgs", ccd=1, overwrite=True)
    assert _parts(repo) == before
    # A value the format refuses while writing: the parts written before it are removed.
    with pytest.raises(butler.FormatError, match=r"cfgs\.c"):
        repo.put({"a": 2, "c": {"x": b"raw"}}, "cfgs", ccd=1, overwrite=True)
    assert _parts(repo) == before
    assert repo.get("cfgs", ccd=1) == {"a": 1, "b": [1, 2]}
    with pytest.raises(butler.DatasetExistsError):
        repo.put({"a": 3}, "cfgs", ccd=1)
    assert _parts(repo) == before


def _overwritten_when_a_part_is_read(arrays: Butler, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Put ``arr`` ccd=1 (zeros), and make the first read of one of its parts' metadata
    overwrite it (ones) first; returns the list that then names that part."""
    arrays.put(Arrays(np.zeros(3), np.zeros(3)), "arr", ccd=1)
    real = arrays.storage.metadata
    overtaken: list[str] = []

    def racing(key: str) -> dict:
        if key.startswith("@parts/") and not overtaken:
            overtaken.append(key)
            arrays.put(Arrays(np.ones(3), np.ones(3)), "arr", ccd=1, overwrite=True)
        return real(key)

    monkeypatch.setattr(arrays.storage, "metadata", racing)
    return overtaken


def test_a_reader_overtaken_by_an_overwrite_reads_the_new_composite(
    arrays: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader has the old record; an overwrite removes the old parts before the reader
    reaches them: it reads the new record and assembles the new parts, never a mix."""
    overtaken = _overwritten_when_a_part_is_read(arrays, monkeypatch)
    got = arrays.get("arr", ccd=1)
    assert overtaken and overtaken[0].endswith("image.npy")
    np.testing.assert_array_equal(got.image, np.ones(3))
    np.testing.assert_array_equal(got.weights, np.ones(3))
    assert len(_parts(arrays)) == 2


def test_a_record_replaced_again_while_its_reader_checks_it_is_read_again(
    arrays: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overtaken by an overwrite, a reader checks the current record; when that read fails
    because the record was replaced once more (S3: "it changed while being read"), the
    reader retries with the newest record instead of raising (seen in CI, S3 crash loop)."""
    import butler._composite as composite

    overtaken = _overwritten_when_a_part_is_read(arrays, monkeypatch)
    real_record = composite._record
    refused: list[bool] = []

    def checking(location: butler.ButlerLocation, *, current: bool = False) -> dict:
        if current and overtaken and not refused:
            refused.append(True)
            raise butler.StorageError(f"cannot read {location.key!r}: it changed while being read")
        return real_record(location, current=current)

    monkeypatch.setattr(composite, "_record", checking)
    got = arrays.get("arr", ccd=1)
    assert overtaken and refused
    np.testing.assert_array_equal(got.image, np.ones(3))
    np.testing.assert_array_equal(got.weights, np.ones(3))


def test_a_composite_replaced_while_remove_reads_its_record_is_removed(
    arrays: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remove reads the record to know which parts to delete; when an overwrite replaces
    it during that read (S3: "it changed while being read"), remove reads the new record
    and removes the new version, instead of raising (seen in the S3 crash loop)."""
    import butler._composite as composite

    arrays.put(Arrays(np.zeros(3), np.zeros(3)), "arr", ccd=1)
    real_record = composite._record
    refused: list[bool] = []

    def replaced(location: butler.ButlerLocation, *, current: bool = False) -> dict:
        if not refused:
            refused.append(True)
            arrays.put(Arrays(np.ones(3), np.ones(3)), "arr", ccd=1, overwrite=True)
            raise butler.StorageError(f"cannot read {location.key!r}: it changed while being read")
        return real_record(location, current=current)

    monkeypatch.setattr(composite, "_record", replaced)
    arrays.remove("arr", ccd=1)
    assert refused
    assert not arrays.exists("arr", ccd=1)
    assert _parts(arrays) == []  # the new version's parts went with its record


def test_a_record_that_stays_unreadable_fails_the_remove(
    arrays: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that persists is not retried forever: the last attempt raises it, and
    nothing was removed (neither the bytes nor the index row)."""
    import butler._composite as composite

    arrays.put(Arrays(np.zeros(3), np.zeros(3)), "arr", ccd=1)
    calls: list[int] = []

    def broken(location: butler.ButlerLocation, *, current: bool = False) -> dict:
        calls.append(1)
        raise butler.StorageError(f"cannot read {location.key!r}: permission denied")

    monkeypatch.setattr(composite, "_record", broken)
    with pytest.raises(butler.StorageError, match="permission denied"):
        arrays.remove("arr", ccd=1)
    monkeypatch.undo()
    assert len(calls) == composite.READ_ATTEMPTS
    np.testing.assert_array_equal(arrays.get("arr", ccd=1).image, np.zeros(3))
    if arrays.index is not None:  # still indexed: the record is read before the row goes
        assert list(arrays.datasets("arr")) == [{"ccd": 1}]


def test_parts_are_kept_while_the_storage_cannot_say_whether_a_record_names_them(
    arrays: Butler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put failing between its parts checks whether its record committed; when the
    storage fails to answer, the put raises its own error and keeps the parts (removing
    them could take a committed dataset's), and purge, while the storage still fails,
    keeps them too. Once it answers, purge removes them."""
    import butler._composite as composite

    real_write, real_stored = composite._write_part, composite._stored_record
    written: list[bool] = []

    def second_fails(*args: Any, **kwargs: Any) -> None:
        if written:
            raise OSError("disk full")
        written.append(True)
        real_write(*args, **kwargs)

    def unanswered(storage: Any, key: str) -> None:
        raise butler.StorageError(f"cannot read {key!r}: it changed while being read")

    monkeypatch.setattr(composite, "_write_part", second_fails)
    monkeypatch.setattr(composite, "_stored_record", unanswered)
    with pytest.raises(butler.ButlerError, match="disk full"):
        arrays.put(Arrays(np.zeros(3), np.zeros(3)), "arr", ccd=1)
    assert len(_parts(arrays)) == 1
    assert arrays.purge_debris(older_than=0) == []
    assert len(_parts(arrays)) == 1
    monkeypatch.setattr(composite, "_stored_record", real_stored)
    assert len(arrays.purge_debris(older_than=0)) == 1
    assert _parts(arrays) == [] and not arrays.exists("arr", ccd=1)


def test_any_dict_key_is_a_safe_part(repo: Butler) -> None:
    """Dict keys with '/', a leading '.', or 300 characters become one safe key segment
    each; the composite reads back whole, and purge leaves its parts alone."""
    repo.register_dataset_type("odd", dict, "json", dimensions={"ccd": int}, disassemble=True)
    value = {"a/b": 1, ".hidden": 2, "..": 3, "x" * 300: 4, "ü ✓": 5}
    repo.put(value, "odd", ccd=1)
    assert repo.get("odd", ccd=1) == value
    assert repo.get("odd.ü ✓", ccd=1) == 5
    keys = _parts(repo)
    assert len(keys) == 5 and all(k.count("/") == keys[0].count("/") for k in keys)
    assert repo.purge_debris(older_than=0) == []
    assert repo.get("odd", ccd=1) == value
