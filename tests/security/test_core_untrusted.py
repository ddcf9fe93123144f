"""The core's defences against a hostile repository or a careless caller (issue 12).

Each test names the hole it closes. They run on the storages of butler-core (posix and
memory); the plugins' suites repeat the storage-specific ones on S3 and databases.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butler import (
    Butler,
    ButlerError,
    DatasetTypeError,
    FormatError,
    InvalidDataIdError,
    Mapper,
    StorageError,
    TemplateMapper,
)
from butler._storage import POLICY_KEY


@pytest.fixture(params=["posix", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "posix":
        yield str(tmp_path / "repo")
    else:
        yield f"memory://core-untrusted-{request.node.name}-{time.monotonic_ns()}"


def _policy_text(b: Butler) -> bytes:
    return b.storage.read_bytes(POLICY_KEY)


# -- hole 4: data IDs never address butler's own keys -----------------------------------


def test_template_that_can_address_the_policy_is_refused(root: str) -> None:
    b = Butler.create(root)
    for template in ("{name}.yaml", "{name}", "{a}.{b}"):
        dims = ["a", "b"] if "{a}" in template else ["name"]
        with pytest.raises(DatasetTypeError, match=r"reserved for butler itself") as info:
            b.register_dataset_type("t", dict, "json", template, dimensions=dims)
        assert template in str(info.value)
    assert "t" not in b.dataset_types


def test_mapper_that_maps_onto_the_policy_is_refused(root: str) -> None:
    class Sneaky(TemplateMapper):
        def map(self, dataset_type: Any, data_id: Any) -> tuple[str, dict[str, Any]]:
            return POLICY_KEY, dict(data_id)

    Butler.create(root).register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b = Butler(root, mapper=Sneaky())
    before = _policy_text(b)
    for action in (
        lambda: b.put({"pwned": 1}, "cfg", v=1, overwrite=True),
        lambda: b.remove("cfg", v=1),
        lambda: b.get("cfg", v=1),
    ):
        with pytest.raises(InvalidDataIdError, match="reserved for butler itself"):
            action()
    assert _policy_text(b) == before
    assert isinstance(Sneaky(), Mapper)


def test_reserved_area_is_never_listed(root: str) -> None:
    b = Butler.create(root)
    b.register_dataset_type("any", dict, "json", "{a}/{b}.json", dimensions=["a", "b"])
    b.put({"x": 1}, "any", a="x", b="y")
    b.storage.write_bytes(".butler/index.json", b"{}")
    assert list(b.datasets("any")) == [{"a": "x", "b": "y"}]


# -- hole 5: a policy never imports a module the reader did not allow --------------------


@pytest.fixture
def evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module on sys.path whose import leaves a marker file (as hostile code would)."""
    marker = tmp_path / "evil-ran"
    pkg = tmp_path / "site"
    pkg.mkdir()
    (pkg / "butler_evil_mod.py").write_text(
        textwrap.dedent(
            f"""
            open({str(marker)!r}, "w").close()

            class Payload(dict):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("butler_evil_mod", None)
    yield marker
    sys.modules.pop("butler_evil_mod", None)


def _retype_policy(root: str, name: str, python_type: str) -> None:
    """What a hostile repository writer does: edit the stored policy behind butler's back."""
    b = Butler(root)
    policy = b.storage.read_policy()
    assert policy is not None
    policy["dataset_types"][name]["python_type"] = python_type
    b.storage.write_policy(policy)


def test_policy_python_type_is_not_imported(root: str, evil_module: Path) -> None:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    _retype_policy(root, "cfg", "butler_evil_mod.Payload")
    reader = Butler(root)  # opening never imports
    assert list(reader.datasets("cfg")) == [{"v": 1}]
    assert reader.verify().healthy
    with pytest.raises(DatasetTypeError, match=r"allow_imports=\['butler_evil_mod'\]"):
        reader.get("cfg", v=1)
    with pytest.raises(DatasetTypeError, match=r"butler_evil_mod\.Payload"):
        reader.put({"b": 2}, "cfg", v=2)
    assert not evil_module.exists()
    assert "butler_evil_mod" not in sys.modules
    # The reader may choose to trust the package.
    trusting = Butler(root, allow_imports=["butler_evil_mod"])
    with pytest.raises(FormatError, match="not a subclass"):
        trusting.get("cfg", v=1)  # written as dict, which is not a Payload
    assert evil_module.exists()


def test_allow_imports_is_validated(root: str) -> None:
    Butler.create(root)
    for bad in ("pkg", ["a.b"], [5]):
        with pytest.raises(DatasetTypeError, match="allow_imports"):
            Butler(root, allow_imports=bad)  # type: ignore[arg-type]


def test_registered_types_still_resolve_in_a_fresh_process(tmp_path: Path) -> None:
    """Types an installed plugin registered (numpy.ndarray for npy) resolve without help."""
    root = tmp_path / "r"
    code = textwrap.dedent(
        f"""
        import numpy as np
        from butler import Butler
        b = Butler.create({str(root)!r})
        b.register_dataset_type("a", "numpy.ndarray", "npy", dimensions={{"v": int}})
        b.put(np.arange(3), "a", v=1)
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    reader = (
        "import sys; from butler import Butler; "
        f"print(Butler({str(root)!r}).get('a', v=1).tolist(), 'numpy' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", reader], check=True, capture_output=True)
    assert out.stdout.split() == [b"[0,", b"1,", b"2]", b"True"]


# -- hole 11: a redefinition never makes stored datasets unreachable ---------------------


def test_new_format_keeps_the_old_template(root: str) -> None:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    b.register_dataset_type("cfg", dict, "pickle", dimensions={"v": int}, overwrite=True)
    assert b.dataset_types["cfg"].template == "cfg/{v:d}.json"
    assert list(b.datasets("cfg")) == [{"v": 1}]
    assert b.get("cfg", v=1) == {"a": 1}  # still read in the format it was written in
    assert b.verify().checked == 1


def test_new_template_over_stored_datasets_is_refused(root: str) -> None:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    with pytest.raises(DatasetTypeError, match="would make them unreachable"):
        b.register_dataset_type("cfg", dict, "json", "new/{v:d}.json", overwrite=True)
    assert b.get("cfg", v=1) == {"a": 1}
    b.remove("cfg", v=1)  # with nothing stored, a new layout is fine
    b.register_dataset_type("cfg", dict, "json", "new/{v:d}.json", overwrite=True)
    assert Butler(root).dataset_types["cfg"].template == "new/{v:d}.json"


# -- hole 13: YAML aliases (billion laughs) --------------------------------------------

LAUGHS = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_policy_with_aliases_is_refused_fast(root: str) -> None:
    b = Butler.create(root)
    b.storage.write_bytes(POLICY_KEY, LAUGHS.encode())
    assert len(LAUGHS) < 2048
    start = time.perf_counter()
    with pytest.raises(FormatError, match=r"(aliases|anchors) are not allowed"):
        Butler(root)
    assert time.perf_counter() - start < 1.0


def test_config_dataset_with_aliases_is_refused(root: str) -> None:
    from butler import Config

    b = Butler.create(root)
    b.register_dataset_type("conf", Config, "config", dimensions={"v": int})
    b.put(Config({"a": 1}), "conf", v=1)
    document = "python_type: butler._config.Config\ndata:\n  " + LAUGHS.replace("\n", "\n  ")
    meta = b.storage.metadata(b.location("conf", v=1).key)
    b.storage.write_bytes(b.location("conf", v=1).key, document.encode(), metadata=meta)
    with pytest.raises(FormatError, match="not allowed"):
        b.get("conf", v=1)


def test_cli_ls_on_a_laughing_policy_terminates(tmp_path: Path) -> None:
    root = tmp_path / "r"
    Butler.create(str(root))
    (root / POLICY_KEY).write_text(LAUGHS)
    run = subprocess.run(
        [sys.executable, "-m", "butler", "ls", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "not allowed" in run.stderr
    assert "Traceback" not in run.stderr


def test_policy_written_by_butler_never_holds_anchors(root: str) -> None:
    b = Butler.create(root)
    shared = {"indent": 2}
    b.register_dataset_type("a", dict, "json", dimensions={"v": int}, serializer_args=shared)
    b.register_dataset_type("b", dict, "json", dimensions={"v": int}, serializer_args=shared)
    assert b"&" not in _policy_text(b)
    assert Butler(root).dataset_types["b"].serializer_args == shared


# -- hole 16: every public call raises a ButlerError -------------------------------------


def test_huge_integers_are_invalid_data_ids(root: str) -> None:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    huge = 10**5000
    for action in (
        lambda: b.put({}, "cfg", v=huge),
        lambda: b.get("cfg", v=huge),
        lambda: list(b.datasets("cfg", v=huge)),
        lambda: list(b.datasets("cfg", v="9" * 5000)),
    ):
        with pytest.raises(InvalidDataIdError, match="v="):
            action()


def test_mistyped_later_dimension_in_datasets(root: str) -> None:
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int, "c": int})
    b.put({}, "cfg", v=1, c=2)
    with pytest.raises(InvalidDataIdError, match=r"c='abc'.* must be an integer"):
        list(b.datasets("cfg", v=1, c="abc"))
    with pytest.raises(InvalidDataIdError, match="unknown dimension 'nope'"):
        list(b.datasets("cfg", nope=1))


@pytest.mark.parametrize(
    ("dimensions", "match"),
    [
        (5, "dimensions must be a list"),
        ("visit", "dimensions must be a list"),
        ({"visit": float}, "supported"),
        ({"dataset_type": int}, "is reserved"),
        (["obj"], "is reserved"),
        ({5: int}, "invalid dimension name"),
        (["a-b"], "invalid dimension name"),
    ],
)
def test_bad_dimensions_are_dataset_type_errors(root: str, dimensions: Any, match: str) -> None:
    b = Butler.create(root)
    with pytest.raises(DatasetTypeError, match=match):
        b.register_dataset_type("t", dict, "json", dimensions=dimensions)


def test_reserved_dimension_in_template_is_refused(root: str) -> None:
    b = Butler.create(root)
    with pytest.raises(DatasetTypeError, match="is reserved"):
        b.register_dataset_type("t", dict, "json", "{dataset_type}/{v:d}.json")


# -- hole 17 (core storages) and hole 21 ------------------------------------------------


def test_misspelt_storage_options_are_errors(root: str) -> None:
    Butler.create(root)
    with pytest.raises(StorageError, match=r"unknown option\(s\) \['durabel'\]") as info:
        Butler(root, durabel=False)
    if root.startswith("memory://"):
        assert "valid options: none" in str(info.value)
    else:
        assert "durable" in str(info.value)


@pytest.mark.parametrize("bad", [None, 5, b"repo", "", "   ", ["r"]])
def test_non_string_roots_are_refused(bad: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StorageError, match="must be a non-empty path or URI string"):
        Butler(bad)
    with pytest.raises(StorageError, match="must be a non-empty path or URI string"):
        Butler.create(bad)
    assert list(tmp_path.iterdir()) == []


def test_path_objects_are_roots(tmp_path: Path) -> None:
    b = Butler.create(tmp_path / "r")  # type: ignore[arg-type]
    assert isinstance(b, Butler)
    assert issubclass(StorageError, ButlerError)


@pytest.mark.parametrize(
    "policy",
    [
        "butler: {version: abc}\n",
        "butler: {version: 1}\ndataset_types: [1, 2]\n",
        "butler: {version: 1}\ndataset_types: {t: 5}\n",
        "butler: {version: 1}\ndataset_types: {t: {python_type: dict, format: json}}\n",
        "butler: {version: 1}\ndataset_types: {t: {python_type: dict, format: json, "
        "template: 'x/{v}', dimensions: {v: float}}}\n",
        "butler: {version: 1}\ndataset_types: {t: {python_type: dict, format: json, "
        "template: 'x/{v}', dimensions: 7}}\n",
        "- just\n- a list\n",
        "butler: !!python/object/apply:os.system ['true']\n",
    ],
)
def test_malformed_policies_are_butler_errors(tmp_path: Path, policy: str) -> None:
    root = str(tmp_path / "r")
    Butler.create(root)
    (tmp_path / "r" / POLICY_KEY).write_text(policy)
    with pytest.raises(ButlerError):
        Butler(root)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("python_type", "builtins.dict\x1b]0;pwned\x07"),
        ("python_type", 5),
        ("format", "json\x1b[2J"),
        ("template", "../../etc/{v}"),
        ("template", "/abs/{v}"),
        ("template", "{v.__class__}"),
    ],
)
def test_policy_fields_are_validated_on_load(tmp_path: Path, field: str, value: Any) -> None:
    """A hostile policy cannot smuggle escape sequences to a terminal or a template out of
    the root: every field is validated on load as on definition."""
    root = str(tmp_path / "r")
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions=["v"])
    _retype = b.storage.read_policy()
    assert _retype is not None
    _retype["dataset_types"]["cfg"][field] = value
    b.storage.write_policy(_retype)
    with pytest.raises(DatasetTypeError, match="cfg"):
        Butler(root)


@pytest.mark.parametrize(
    "metadata",
    [
        {"format": "json\x1b[2J"},
        {"format": 5},
        {"format": ["json"]},
        {"format": "json", "python_type": 7},
        {"format": "json", "python_type": ["builtins.dict"]},
    ],
)
def test_hostile_stored_metadata_is_a_format_error(root: str, metadata: dict[str, Any]) -> None:
    """Stored metadata is written by whoever can write the repository: a format or type
    that is not a name of something installed is a FormatError, not a crash."""
    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    key = b.location("cfg", v=1).key
    b.storage.write_bytes(key, b'{"a": 1}', metadata=metadata)
    with pytest.raises(FormatError):
        b.get("cfg", v=1)


def test_unknown_recorded_format_names_the_plugin(root: str) -> None:
    from butler import NoSerializerError

    b = Butler.create(root)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    b.storage.write_bytes(b.location("cfg", v=1).key, b"{}", metadata={"format": "parquet"})
    with pytest.raises(NoSerializerError, match="parquet"):
        b.get("cfg", v=1)


# -- issue 13 item 4 (core formats): unknown parameters and arguments are errors ----------


@pytest.mark.parametrize(
    ("fmt", "python_type", "obj", "parameters", "accepted"),
    [
        ("json", dict, {"a": 1}, {"bogus": 1}, "none"),
        ("npy", "numpy.ndarray", None, {"sectoin": (slice(0, 1),)}, "slice"),
        ("pickle", object, [1], {"columns": ["a"]}, "none"),
        ("config", dict, {"a": 1}, {"slice": 1}, "none"),
    ],
)
def test_unknown_parameters_are_refused_before_any_byte(
    root: str, fmt: str, python_type: Any, obj: Any, parameters: Any, accepted: str
) -> None:
    from butler import ParameterError

    if obj is None:
        np = pytest.importorskip("numpy")
        obj = np.arange(4)
    b = Butler.create(root, allow_pickle=True)
    b.register_dataset_type("t", python_type, fmt, dimensions={"v": int})
    with pytest.raises(ParameterError, match=f"accepted: {accepted}"):
        b.put(obj, "t", v=1, parameters=parameters)
    assert not b.exists("t", v=1)
    b.put(obj, "t", v=1)
    with pytest.raises(ParameterError, match=rf"unknown parameter\(s\).*{sorted(parameters)}"):
        b.get("t", v=1, parameters=parameters)


def test_unknown_serializer_args_are_refused_at_definition(root: str) -> None:
    from butler import ParameterError

    b = Butler.create(root)
    with pytest.raises(ParameterError, match=r"\['checksun'\]; accepted: indent"):
        b.register_dataset_type("t", dict, "json", serializer_args={"checksun": True})
    with pytest.raises(ParameterError, match=r"\['bogus'\]"):
        b.register_dataset_type(
            "t", dict, "json", serializer_args={"per_storage": {"s3": {"bogus": 1}}}
        )
    with pytest.raises(ParameterError, match="per_storage"):
        b.register_dataset_type("t", dict, "json", serializer_args={"per_storage": 5})
    assert "t" not in b.dataset_types
    b.register_dataset_type("t", dict, "json", serializer_args={"indent": 1})


def test_memory_error_in_a_serializer_is_a_format_error(root: str) -> None:
    registry = _copy_of_default_registry()

    def greedy(location: Any, **_: Any) -> Any:
        raise MemoryError

    registry.register(dict, "*", "json", "butler.formats.json_:write", greedy, overwrite=True)
    b = Butler.create(root, registry=registry)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    with pytest.raises(FormatError, match="not enough memory"):
        b.get("cfg", v=1)


def test_disk_full_hidden_under_a_library_error_is_a_storage_error(root: str) -> None:
    """Hole 19's mechanism: ENOSPC raised inside a library that re-raises its own error is
    still reported as the storage failure it is."""
    import errno as errno_module

    registry = _copy_of_default_registry()

    def library_write(obj: Any, location: Any, **_: Any) -> None:
        try:
            raise OSError(errno_module.ENOSPC, "No space left on device")
        except OSError:
            raise AttributeError("'_File' object has no attribute 'free_space'") from None

    registry.register(dict, "*", "json", library_write, "butler.formats.json_:read", overwrite=True)
    b = Butler.create(root, registry=registry)
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    with pytest.raises(StorageError, match="No space left on device"):
        b.put({"a": 1}, "cfg", v=1)


@pytest.mark.parametrize(
    ("root", "secret"),
    [
        ("postgresql://u:TOPSECRET@127.0.0.1:1/db", "TOPSECRET"),
        ("postgresql://u@127.0.0.1:1/db?password=TOPSECRET", "TOPSECRET"),
        ("nosuch://u:TOPSECRET@host/x", "TOPSECRET"),
        ("nosuch://host/x?sslmode=x&token=TOPSECRET", "TOPSECRET"),
    ],
)
def test_core_messages_mask_url_secrets(root: str, secret: str) -> None:
    """Hole 14 in the core: the option check and the unknown-scheme error show the root
    through the one URL masker."""
    with pytest.raises(ButlerError) as info:
        Butler(root, misspelt_option=1)
    assert secret not in str(info.value)
    assert "***" in str(info.value) or "nosuch" not in root


def _copy_of_default_registry() -> Any:
    """A private registry holding everything installed, for a test to override one entry."""
    from butler import Registry, default_registry

    registry = Registry()
    for spec in default_registry().serializers.values():
        registry.register(
            spec.python_type, spec.storage, spec.format, spec.write_ref, spec.read_ref
        )
    for descriptor in default_registry().formats.values():
        registry.register_format(descriptor)
    for storage in default_registry().storages.values():
        registry.register_storage(storage)
    return registry
