"""The Butler: dataset types, policy persistence, data IDs, listing, verification, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from butler import (
    Butler,
    DatasetExistsError,
    DatasetNotFoundError,
    DatasetTypeError,
    InvalidDataIdError,
    NoSerializerError,
    ParameterError,
    StorageError,
)


def test_put_get_exists_remove(repo: Butler) -> None:
    repo.register_dataset_type("cfg", dict, "json", template="cfg/{visit:06d}/{ccd}.json")
    assert not repo.exists("cfg", visit=1, ccd=2)
    repo.put({"a": 1}, "cfg", visit=1, ccd=2)
    assert repo.exists("cfg", {"visit": 1}, ccd=2)
    assert repo.get("cfg", visit=1, ccd="2") == {"a": 1}
    repo.remove("cfg", visit=1, ccd=2)
    assert not repo.exists("cfg", visit=1, ccd=2)
    with pytest.raises(DatasetNotFoundError, match=r"dataset 'cfg' \{'visit': 1, 'ccd': '2'\}"):
        repo.get("cfg", visit=1, ccd=2)
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        repo.remove("cfg", visit=1, ccd=2)


def test_template_layout_on_disk(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("cfg", dict, "json", template="cfg/{visit:06d}/{ccd}.json")
    posix_repo.put({}, "cfg", visit=12, ccd="R22")
    root = Path(posix_repo.storage.root)
    assert (root / "cfg" / "000012" / "R22.json").is_file()
    assert (root / "butler.yaml").is_file()


def test_default_template_from_dimensions(posix_repo: Butler) -> None:
    dt = posix_repo.register_dataset_type("x", dict, "json", dimensions={"visit": int, "band": str})
    assert dt.template == "x/{visit:d}/{band}.json"
    posix_repo.put({}, "x", visit=3, band="r")
    assert list(posix_repo.datasets("x")) == [{"visit": 3, "band": "r"}]


def test_exists_error_and_overwrite(repo: Butler) -> None:
    repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    repo.put({"v": 1}, "j", n="a")
    with pytest.raises(DatasetExistsError, match=r"dataset 'j' \{'n': 'a'\}.*overwrite=True"):
        repo.put({"v": 2}, "j", n="a")
    assert repo.get("j", n="a") == {"v": 1}
    repo.put({"v": 2}, "j", n="a", overwrite=True)
    assert repo.get("j", n="a") == {"v": 2}


def test_concurrent_creators_one_winner(repo: Butler) -> None:
    repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def put(i: int) -> None:
        barrier.wait()
        try:
            repo.put({"writer": i}, "j", n="same")
            outcomes.append("won")
        except DatasetExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("won") == 1 and outcomes.count("exists") == 7
    assert list(repo.datasets("j")) == [{"n": "same"}]


def test_datasets_with_partial_data_id(repo: Butler) -> None:
    repo.register_dataset_type("c", dict, "json", template="c/{visit:04d}/{ccd:d}.json")
    for visit in (1, 2):
        for ccd in (10, 11, 12):
            repo.put({}, "c", visit=visit, ccd=ccd)
    assert len(list(repo.datasets("c"))) == 6
    assert sorted(d["ccd"] for d in repo.datasets("c", visit=2)) == [10, 11, 12]
    assert list(repo.datasets("c", visit=1, ccd=11)) == [{"visit": 1, "ccd": 11}]
    with pytest.raises(InvalidDataIdError, match=r"unknown dimension 'filter'"):
        list(repo.datasets("c", filter="r"))


def test_datasets_ignores_foreign_and_temporary_files(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("c", dict, "json", template="c/{visit:d}.json")
    posix_repo.put({}, "c", visit=1)
    root = Path(posix_repo.storage.root)
    (root / "c" / ".1.json.abc.butler-tmp").write_bytes(b"partial")
    (root / "c" / "notes.txt").write_text("foreign")
    assert list(posix_repo.datasets("c")) == [{"visit": 1}]


HOSTILE = [
    "..",
    ".",
    "../../etc/passwd",
    "a/b",
    "a\\b",
    "nul\0byte",
    "x" * 300,
    "\udcff",
    ".hidden",
    "line\nbreak",
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_data_ids_rejected_before_writing(posix_repo: Butler, value: str) -> None:
    posix_repo.register_dataset_type("j", dict, "json", dimensions=["n"])
    before = sorted(os.listdir(posix_repo.storage.root))
    with pytest.raises(InvalidDataIdError, match=r"'j'"):
        posix_repo.put({}, "j", n=value)
    assert sorted(os.listdir(posix_repo.storage.root)) == before


def test_data_id_keys_checked(repo: Butler) -> None:
    repo.register_dataset_type("j", dict, "json", template="j/{visit:d}/{ccd}.json")
    with pytest.raises(InvalidDataIdError, match=r"missing \['ccd'\]"):
        repo.put({}, "j", visit=1)
    with pytest.raises(InvalidDataIdError, match=r"unknown \['band'\]"):
        repo.put({}, "j", visit=1, ccd=1, band="r")
    with pytest.raises(InvalidDataIdError, match="must be an integer"):
        repo.put({}, "j", visit="one", ccd=1)
    with pytest.raises(InvalidDataIdError, match="given twice"):
        repo.put({}, "j", {"visit": 1, "ccd": 1}, visit=2)


def test_ambiguous_template_values_rejected(repo: Butler) -> None:
    repo.register_dataset_type("j", dict, "json", template="j/{a}_{b}.json")
    repo.put({}, "j", a="x", b="y")
    with pytest.raises(InvalidDataIdError, match="reads back as a different data ID"):
        repo.put({}, "j", a="x_y", b="z")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("j/{a.__class__}.json", "plain identifier"),
        ("j/{a[0]}.json", "plain identifier"),
        ("j/{0}.json", "plain identifier"),
        ("j/{a!r}.json", "conversions"),
        ("../j/{a}.json", r"'\.\.' path segment"),
        ("/abs/{a}.json", "relative"),
        ("j/{a", "malformed"),
        ("j/.{a}", "may not start with '.'"),
    ],
)
def test_malformed_templates_rejected(repo: Butler, template: str, message: str) -> None:
    with pytest.raises(DatasetTypeError, match=message):
        repo.register_dataset_type("j", dict, "json", template=template)
    assert "j" not in repo.dataset_types


@pytest.mark.parametrize("name", ['x"; DROP TABLE datasets; --', "a b", "", "1abc", "é"])
def test_bad_dataset_type_names(repo: Butler, name: str) -> None:
    with pytest.raises(DatasetTypeError, match="invalid dataset type name"):
        repo.register_dataset_type(name, dict, "json")


def test_unknown_format_names_distribution(tmp_path: Path) -> None:
    from butler._plugins import discover

    registry = discover().registry
    registry._formats.pop("fits", None)  # as if butler-fits were not installed
    b = Butler.create(str(tmp_path / "r"), registry=registry)
    with pytest.raises(NoSerializerError, match=r"Unknown format 'fits'.*Install 'butler-fits'"):
        b.register_dataset_type("img", "numpy.ndarray", "fits")
    with pytest.raises(NoSerializerError, match=r"'fitz' \(known formats: .*json"):
        b.register_dataset_type("img", "numpy.ndarray", "fitz")


def test_unknown_dataset_type_lists_defined(repo: Butler) -> None:
    repo.register_dataset_type("alpha", dict, "json")
    with pytest.raises(DatasetTypeError, match=r"unknown dataset type 'beta'.*\['alpha'\]"):
        repo.get("beta")


def test_redefinition_needs_overwrite_and_old_data_keeps_its_format(repo: Butler) -> None:
    repo.register_dataset_type("d", dict, "json", dimensions=["n"])
    repo.register_dataset_type("d", dict, "json", dimensions=["n"])  # identical: fine
    repo.put({"old": True}, "d", n="1")
    with pytest.raises(DatasetTypeError, match="already defined"):
        repo.register_dataset_type("d", dict, "config", template="d/{n}.json")
    repo.register_dataset_type("d", dict, "config", template="d/{n}.json", overwrite=True)
    assert repo.get("d", n="1") == {"old": True}  # still read as json
    repo.put({"new": True}, "d", n="2")
    assert repo.get("d", n="2") == {"new": True}
    assert repo.storage.metadata(repo.location("d", n="2").key)["format"] == "config"


def test_policy_persisted_and_seen_by_another_process(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("cfg", dict, "json", template="cfg/{visit:d}.json")
    posix_repo.put({"gain": 2}, "cfg", visit=5)
    code = textwrap.dedent(
        f"""
        from butler import Butler
        b = Butler({posix_repo.storage.root!r})
        print(b.get("cfg", visit=5)["gain"], b.dataset_types["cfg"].template)
        b.register_dataset_type("other", list, "json", dimensions=["n"])
        b.put([1], "other", n="z")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "cfg/{visit:d}.json"]
    # our instance learns the other process's dataset type on first use
    assert posix_repo.get("other", n="z") == [1]
    policy = yaml.safe_load((Path(posix_repo.storage.root) / "butler.yaml").read_text())
    assert set(policy["dataset_types"]) == {"cfg", "other"}


def test_memory_repositories_are_shared_by_name() -> None:
    a = Butler.create("memory://shared-test")
    a.register_dataset_type("j", dict, "json", dimensions=["n"])
    a.put({"x": 1}, "j", n="a")
    b = Butler("memory://shared-test")
    assert b.get("j", n="a") == {"x": 1}


def test_missing_repository_is_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no butler repository at .*Butler.create"):
        Butler(str(tmp_path / "nothing"))


def test_file_uri_root(tmp_path: Path) -> None:
    b = Butler.create(f"file://{tmp_path}/r")
    b.register_dataset_type("j", dict, "json")
    b.put({"k": 1}, "j")
    assert (tmp_path / "r" / "j.json").is_file()


def test_verify_finds_truncation_and_corruption(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "r"), checksum=True)
    b.register_dataset_type("j", dict, "json", dimensions=["n"])
    for n in "abc":
        b.put({"payload": n * 100}, "j", n=n)
    assert b.verify().healthy and len(b.verify().ok) == 3
    path_a = b.location("j", n="a").uri
    os.truncate(path_a, 10)
    path_b = Path(b.location("j", n="b").uri)
    data = bytearray(path_b.read_bytes())
    data[20] ^= 0xFF
    with open(path_b, "r+b") as f:  # in place: keeps the metadata xattr
        f.write(data)
    report = b.verify()
    assert not report.healthy
    assert len(report.truncated) == 1 and "'a'" in report.truncated[0]
    assert len(report.corrupted) == 1 and "'b'" in report.corrupted[0]
    assert len(report.ok) == 1


def test_progress_callback_sees_all_bytes(repo: Butler) -> None:
    repo.register_dataset_type("j", list, "json", dimensions=["n"])
    seen: list[int] = []
    repo.put(list(range(1000)), "j", n="a", progress=lambda done, total: seen.append(done))
    size = repo.storage.size(repo.location("j", n="a").key)
    assert seen and seen[-1] == size
    seen.clear()
    repo.get("j", n="a", progress=lambda done, total: seen.append(done))
    assert seen[-1] == size


def test_location_carries_contract_fields(repo: Butler) -> None:
    repo.register_dataset_type(
        "j", dict, "json", dimensions={"visit": int},
        serializer_args={"indent": 2, "per_storage": {"nowhere": {"indent": 9}}},
        additional_data={"hdu": 1},
    )  # fmt: skip
    loc = repo.location("j", visit=3, parameters={"columns": ["a"]})
    assert loc.locations == ["j/3.json"]
    assert loc.storage is repo.storage and loc.format == "json"
    assert loc.python_type == "builtins.dict" and loc.dataset_type == "j"
    assert loc.data_id == {"visit": 3}
    assert loc.additional_data == {"hdu": 1} and loc.parameters == {"columns": ["a"]}
    assert loc.serializer_args == {"indent": 2}
    with pytest.raises(ParameterError, match=r"\['columns'\]; accepted: none"):
        loc.write({"x": 1})  # json has no read/write parameters: refused, not ignored
    loc = repo.location("j", visit=3)
    loc.write({"x": 1})
    assert loc.read() == {"x": 1}


def test_replaceable_mapper(tmp_path: Path) -> None:
    """A user mapper decides the layout; the Butler still validates and lists through it."""
    from butler import Mapper

    class FlatMapper(Mapper):
        """Every dataset as <type>--<k>-<v>... in the root directory."""

        def key_for(self, dataset_type, data_id):  # type: ignore[no-untyped-def]
            values = validator.normalise(dataset_type, data_id)
            parts = "--".join(f"{k}-{v}" for k, v in values.items())
            return f"{dataset_type.name}--{parts}.json"

        def data_id_for(self, dataset_type, key):  # type: ignore[no-untyped-def]
            if not key.startswith(f"{dataset_type.name}--") or "/" in key:
                return None
            items = key[len(dataset_type.name) + 2 : -len(".json")].split("--")
            found = dict(item.split("-", 1) for item in items)
            return {k: int(found[k]) if t == "int" else found[k]
                    for k, t in dataset_type.dimensions.items()}  # fmt: skip

    from butler import TemplateMapper

    validator = TemplateMapper()  # reuse its data ID validation
    b = Butler.create(str(tmp_path / "r"), mapper=FlatMapper())
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})
    b.put({"a": 1}, "cfg", visit=3, band="r")
    assert (tmp_path / "r" / "cfg--visit-3--band-r.json").is_file()
    assert b.get("cfg", visit=3, band="r") == {"a": 1}
    assert list(b.datasets("cfg")) == [{"visit": 3, "band": "r"}]
    with pytest.raises(InvalidDataIdError):
        b.put({}, "cfg", visit=3, band="../x")
    with pytest.raises(TypeError, match="abstract"):
        Mapper()  # type: ignore[abstract]


@pytest.mark.parametrize("given", [[1], "section", 5, [], ("a", 1)])
def test_parameters_that_are_not_a_mapping_are_a_parameter_error(repo: Butler, given: Any) -> None:
    """``parameters=[1]`` raised a bare TypeError (``"abc"`` a ValueError) from ``dict()``,
    and an empty list was silently no parameters: anything but a mapping (or None) is a
    `ParameterError` naming the dataset type, for get, put and location alike."""
    repo.register_dataset_type("p", dict, "json", dimensions={"visit": int})
    repo.put({"x": 1}, "p", visit=1)
    for call in (
        lambda: repo.get("p", visit=1, parameters=given),
        lambda: repo.put({"x": 2}, "p", visit=1, parameters=given, overwrite=True),
        lambda: repo.location("p", visit=1, parameters=given),
    ):
        with pytest.raises(ParameterError, match="parameters of dataset type 'p' must be a"):
            call()
    assert repo.get("p", visit=1, parameters={}) == {"x": 1}
