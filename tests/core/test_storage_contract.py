"""The Storage contract (issue 14 items 3, 4, 6): one base, primitives in the storages.

* every installed storage accepts the read hints (`butler.storage.READ_HINTS`) and ignores
  what it cannot use;
* the base's key validation refuses the same hostile keys on every storage (posix, memory,
  S3 on moto, SQLite), before any I/O;
* no storage re-implements what the base provides (`open`, `check_key`, `full_metadata`);
* a storage's identity (type name, schemes, description) is the one its `StorageSpec`
  declares;
* no first-party plugin or example imports a private ``butler._`` module.
"""

from __future__ import annotations

import ast
import inspect
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import butler
from butler import InvalidDataIdError, StorageError
from butler.storage import READ_HINTS, ReadHints, Storage

ROOT = Path(__file__).resolve().parents[2]

#: Keys that could reach outside a repository or into butler's own files.
HOSTILE_KEYS = (
    "",
    "/etc/passwd",
    "../outside",
    "a/../../etc/passwd",
    "a/../b",
    "a/./b",
    "a//b",
    "a/",
    ".",
    "..",
    ".hidden",
    "a/.hidden",
    "a/..butler-tmp.x",
    "a\\b",
    "a\0b",
)


def _installed_storages() -> list[Any]:
    """The `StorageSpec` of every installed storage whose class imports here."""
    specs = []
    for spec in butler.default_registry().storages.values():
        try:
            spec.load()
        except ImportError:
            continue
        specs.append(spec)
    return specs


@pytest.fixture(params=["posix", "memory", "s3", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """A fresh storage of each kind, holding ``a/1.bin`` (10 bytes)."""
    kind = request.param
    if kind == "posix":
        from butler.storages.posix import PosixStorage

        made: Storage = PosixStorage(str(tmp_path / "repo"))
    elif kind == "memory":
        from butler.storages.memory import MemoryStorage

        made = MemoryStorage(f"memory://contract-{tmp_path.name}")
    elif kind == "s3":
        pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
        bucket = request.getfixturevalue("s3_bucket")
        options = request.getfixturevalue("s3_credentials")
        from butler_s3 import S3Storage

        made = S3Storage(f"s3://{bucket}/repo", **options)
    else:
        pytest.importorskip("butler_db", reason="butler-db is not installed")
        from butler_db._storage import DatabaseStorage

        made = DatabaseStorage(f"sqlite:///{tmp_path / 'repo.db'}")
    made.initialize()
    made.write_bytes("a/1.bin", b"0123456789")
    try:
        yield made
    finally:
        if kind == "memory":
            from butler.storages.memory import MemoryStorage

            MemoryStorage.clear(f"contract-{tmp_path.name}")
        made.close()


# -- read hints -------------------------------------------------------------------------


def test_every_installed_storage_declares_the_read_hints() -> None:
    specs = _installed_storages()
    assert {"posix", "memory"} <= {s.type_name for s in specs}
    for spec in specs:
        cls = spec.load()
        params = inspect.signature(cls.open).parameters
        for name in ("mode", "progress", *READ_HINTS):
            assert name in params, f"{cls.__name__}.open() does not take {name!r}"
            if name != "mode":
                assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize(
    "hints",
    [
        {},
        {"access": "random"},
        {"access": "sequential", "block_size": 4096},
        {"access": "random", "block_size": 3, "cache_blocks": 2},
        {"cache_type": "readahead", "block_size": 65536},
    ],
)
def test_every_storage_accepts_the_read_hints(storage: Storage, hints: dict[str, Any]) -> None:
    seen: list[tuple[int, int | None]] = []
    with storage.open(
        "a/1.bin", progress=lambda done, total: seen.append((done, total)), **hints
    ) as f:
        assert f.read(3) == b"012"
        f.seek(7)
        assert f.read() == b"789"
    assert seen and {total for _, total in seen} == {10}  # progress is reported as ever


@pytest.mark.parametrize(
    ("hints", "message"),
    [
        ({"access": "backwards"}, "access='backwards'"),
        ({"block_size": 0}, "block_size=0"),
        ({"block_size": "big"}, "block_size='big'"),
        ({"cache_blocks": True}, "cache_blocks=True"),
        ({"cache_type": 3}, "cache_type=3"),
    ],
)
def test_bad_read_hints_are_refused_by_name_on_every_storage(
    storage: Storage, hints: dict[str, Any], message: str
) -> None:
    with pytest.raises(StorageError, match=message):
        storage.open("a/1.bin", **hints)


def test_every_storage_refuses_to_open_for_writing(storage: Storage) -> None:
    with pytest.raises(StorageError, match=r"only reads \(mode 'rb', not 'wb'\)"):
        storage.open("a/1.bin", "wb")


def test_read_hints_are_a_value() -> None:
    assert ReadHints() == ReadHints("sequential", None, None, None)
    assert ReadHints(access="random", block_size=1).block_size == 1


# -- keys -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_the_same_hostile_keys_are_refused_on_every_storage(storage: Storage, key: str) -> None:
    calls: list[Callable[[str], Any]] = [
        storage.exists,
        storage.open,
        storage.metadata,
        storage.size,
        storage.remove,
        lambda k: storage.write_bytes(k, b"x"),
    ]
    for call in calls:
        with pytest.raises(InvalidDataIdError, match="storage key"):
            call(key)
    for context in (storage.local_path, storage.atomic_local_path):
        with pytest.raises(InvalidDataIdError, match="storage key"), context(key):
            pass
    assert sorted(storage.list()) == ["a/1.bin"]  # nothing was written anywhere


def test_the_reserved_area_and_ordinary_keys_pass_the_base_check() -> None:
    from butler.storage import POLICY_KEY, RESERVED_PREFIX

    check = Storage.check_key
    assert check(None, "a/b.fits") == ("a", "b.fits")  # type: ignore[arg-type]
    assert check(None, POLICY_KEY) == (POLICY_KEY,)  # type: ignore[arg-type]
    assert check(None, RESERVED_PREFIX + "policy.lock")[0] == ".butler"  # type: ignore[arg-type]


# -- what the base provides -------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["open", "check_key", "full_metadata", "read_bytes", "write_bytes"]
)
def test_no_storage_overrides_what_the_base_provides(name: str) -> None:
    for spec in _installed_storages():
        cls = spec.load()
        owner = next(k for k in cls.__mro__ if name in vars(k))
        assert owner is Storage, f"{cls.__name__}.{name} is redefined in {owner.__name__}"


def test_generic_local_paths_come_from_the_base() -> None:
    """Storages without real local files use the base's `local_path` (one copy, in
    ``tmpdir``, keeping the key's extension)."""
    for spec in _installed_storages():
        cls = spec.load()
        if not cls.has_local_paths:
            owner = next(k for k in cls.__mro__ if "local_path" in vars(k))
            assert owner is Storage, f"{cls.__name__}.local_path is redefined"


def test_full_metadata_on_every_storage(storage: Storage) -> None:
    storage.write_bytes("b/2.bin", b"abc", metadata={"format": "x"}, checksum=True)
    meta = storage.metadata("b/2.bin")
    assert meta["format"] == "x" and meta["size"] == 3
    assert meta["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    # What the commit recorded is reported to the writing thread (the index uses it
    # instead of reading the metadata back), and only to it.
    receipt = storage.last_committed_metadata(clear=True)
    assert receipt is not None and {k: receipt[k] for k in meta} == meta
    assert storage.last_committed_metadata() is None
    seen: list[object] = []
    thread = threading.Thread(target=lambda: seen.append(storage.last_committed_metadata()))
    storage.write_bytes("b/3.bin", b"abcd")
    thread.start()
    thread.join()
    assert seen == [None] and storage.last_committed_metadata()["size"] == 4
    assert storage.full_metadata({"k": 1}, 5, None) == {"k": 1, "size": 5}


def test_storage_identity_is_the_spec_s() -> None:
    """type_name, schemes and description are declared once (the spec, read by discovery
    and ``butler plugins`` without importing the storage) and the class reads them."""
    specs = _installed_storages()
    for spec in specs:
        cls = spec.load()
        assert (cls.type_name, tuple(cls.schemes), cls.description) == (
            spec.type_name,
            tuple(spec.schemes),
            spec.description,
        ), cls


def test_a_class_without_its_spec_is_refused() -> None:
    from butler import StorageSpec

    with pytest.raises(TypeError, match="expected exactly one StorageSpec naming it"):

        class Orphan(Storage, declared_by=lambda: [StorageSpec("x", ("x",), "elsewhere:Other")]):
            pass


# -- reading through the contract -------------------------------------------------------


def test_serializers_pass_read_hints_to_any_storage(tmp_path: Path) -> None:
    """FITS and HDF5 readers give every storage the same hints; memory ignores them."""
    np = pytest.importorskip("numpy")
    repo = butler.Butler.create(f"memory://hints-{tmp_path.name}")
    opened: list[dict[str, Any]] = []
    real = repo.storage.open

    def spy(*args: Any, **kwargs: Any) -> Any:
        opened.append(kwargs)
        return real(*args, **kwargs)

    repo.storage.open = spy  # type: ignore[method-assign]
    values = np.arange(100.0).reshape(10, 10)
    formats = [f for f in ("fits", "hdf5") if f in repo.registry.formats]
    if not formats:
        pytest.skip("neither butler-fits nor butler-hdf5 is installed")
    for fmt in formats:
        repo.register_dataset_type(f"img_{fmt}", "numpy.ndarray", fmt, dimensions={"i": int})
        repo.put(values, f"img_{fmt}", i=1)
        opened.clear()
        part = {
            "fits": {"section": (slice(2, 4), slice(0, 3))},
            "hdf5": {"slice": (slice(2, 4), slice(0, 3))},
        }
        got = repo.get(f"img_{fmt}", i=1, parameters=part[fmt])
        np.testing.assert_array_equal(got, values[2:4, 0:3])
        assert opened[-1]["access"] == "random" and opened[-1]["block_size"] == 256 * 1024, fmt
    from butler.storages.memory import MemoryStorage

    MemoryStorage.clear(f"hints-{tmp_path.name}")


# -- the public plugin API ----------------------------------------------------------------


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if node.module == "butler":
                names = [f"butler.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "butler" and len(parts) > 1 and parts[1].startswith("_"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
                break
    return found


def _plugin_and_example_modules() -> list[Path]:
    files = sorted(ROOT.glob("plugins/*/butler_*/**/*.py"))
    files += sorted((ROOT / "examples").rglob("*.py"))
    return files


def test_the_scan_sees_private_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    module = tmp_path / "m.py"
    module.write_text(
        "import butler\nfrom butler import storage\nfrom butler import _storage\n"
        "from butler._types import type_name\nimport butler._yaml\n"
    )
    assert [line.split(": ")[1] for line in _private_imports(module)] == [
        "butler._storage",
        "butler._types",
        "butler._yaml",
    ]


def test_no_plugin_or_example_imports_a_private_butler_module() -> None:
    modules = _plugin_and_example_modules()
    assert len(modules) > 20
    offenders = [hit for path in modules for hit in _private_imports(path)]
    assert offenders == [], "\n".join(offenders)
