"""`SerializerConformance`: the test class plugin authors subclass."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .._butler import Butler
from .._errors import ButlerError, FormatError, NoSerializerError
from .._files import read_file, write_file
from .._registry import Registry
from .._types import import_type, type_name
from ._faults import CORRUPTIONS, corrupt, failing_writes
from ._lazy import imported_after_discovery
from ._storages import STORAGES, RepositoryFactory, unavailable_reason
from ._subclass import derive_subclass

__all__ = ["SerializerConformance"]


class SerializerConformance:
    """Base class of a conformance suite for one (python type, format) serializer.

    Subclass it in a module pytest collects (name the subclass ``Test...``), set the class
    attributes and implement `make_objects`; override `assert_equal` unless ``==``
    compares your objects. Every test runs on each storage in `storages` that is
    available here and has a serializer for the type and format; the others are skipped
    with the reason.

    Attributes
    ----------
    format : str
        Format name under test (required).
    python_type : type or str
        Class or dotted name the serializer is registered for (required).
    heavy_modules : tuple of str
        Modules that ``import butler`` plus plugin discovery must not import (the library
        your serializer wraps). The modules named by your ``"module:function"`` strings
        are checked too.
    storages : tuple of str
        Storages to test on (default: all of `butler.testing.STORAGES`).
    corruptions : tuple of str
        Damage that reading must report as `FormatError`: ``"truncated"`` (first half of
        the bytes), ``"garbage"``, ``"empty"``. Drop ``"truncated"`` for formats that
        cannot tell (line-oriented text without a footer) and say so in a comment.
    preserves_subclasses : bool
        Whether the serializer rebuilds the recorded subclass (see
        `ButlerLocation.read_type`); the design requires it when the type can be
        subclassed.
    serializer_args : dict
        Policy serializer arguments of the dataset type under test.

    Examples
    --------
    ::

        class TestCsvTable(SerializerConformance):
            format = "csv"
            python_type = "builtins.dict"
            heavy_modules = ("butler_csv._csv",)

            def make_objects(self):
                return [{"a": [1, 2], "b": ["x", "y"]}]
    """

    format: ClassVar[str] = ""
    python_type: ClassVar[type | str] = ""
    heavy_modules: ClassVar[tuple[str, ...]] = ()
    storages: ClassVar[tuple[str, ...]] = STORAGES
    corruptions: ClassVar[tuple[str, ...]] = tuple(CORRUPTIONS)
    preserves_subclasses: ClassVar[bool] = True
    serializer_args: ClassVar[dict[str, Any]] = {}
    #: Name of the dataset type the kit defines in each repository.
    dataset_type: ClassVar[str] = "conformance"

    # -- what authors provide ---------------------------------------------------------

    def make_objects(self) -> list[Any]:
        """Objects to round-trip (instances of `python_type`; at least one, ideally a few
        covering edge cases: empty, unicode, large values)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_objects()")

    def make_subclass_objects(self) -> list[Any]:
        """Instances of subclasses of `python_type`; default: `make_objects` converted to a
        derived subclass (`butler.testing.derive_subclass`) where possible."""
        derived = [derive_subclass(obj) for obj in self.make_objects()]
        return [obj for obj in derived if obj is not None]

    def make_invalid_objects(self) -> list[Any]:
        """Instances of `python_type` that the format cannot store (writing must raise
        `FormatError` and leave the previous dataset intact). Default: none."""
        return []

    def assert_equal(self, actual: Any, expected: Any) -> None:
        """Assert that a read object equals the written one (default: ``==``)."""
        assert actual == expected, f"read back {actual!r}, wrote {expected!r}"

    def registry(self) -> Registry | None:
        """Registry to test with; ``None`` (default) means the process-wide one, filled by
        the installed plugins' entry points."""
        return None

    # -- fixtures ---------------------------------------------------------------------

    def _registry(self) -> Registry:
        from .._plugins import default_registry

        return self.registry() or default_registry()

    def _type(self) -> type:
        return (
            self.python_type
            if isinstance(self.python_type, type)
            else import_type(self.python_type)
        )

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize over `storages` and `corruptions` (pytest calls this per test)."""
        if "conformance_storage" in metafunc.fixturenames:
            unknown = [s for s in self.storages if s not in STORAGES]
            assert not unknown, f"unknown storages {unknown}; the kit knows {list(STORAGES)}"
            metafunc.parametrize("conformance_storage", list(self.storages), indirect=True)
        if "corruption" in metafunc.fixturenames:
            unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
            assert not unknown, f"unknown corruptions {unknown}; known: {list(CORRUPTIONS)}"
            metafunc.parametrize("corruption", list(self.corruptions))

    @pytest.fixture
    def conformance_storage(self, request: pytest.FixtureRequest) -> str:
        """Storage type name of the current test (skipped when unavailable)."""
        storage: str = request.param
        reason = unavailable_reason(storage)
        if reason:
            pytest.skip(f"{storage}: {reason}")
        assert self.format, f"{type(self).__name__}.format is not set"
        try:
            self._registry().find(self._type(), storage, self.format)
        except NoSerializerError:
            pytest.skip(f"no {self.format!r} serializer for {type_name(self._type())} on {storage}")
        return storage

    @pytest.fixture
    def conformance_factory(self, conformance_storage: str, tmp_path: Path) -> RepositoryFactory:
        """Creates repositories on the current storage."""
        return RepositoryFactory(conformance_storage, tmp_path, self.registry())

    @pytest.fixture
    def conformance_repo(self, conformance_factory: RepositoryFactory) -> Iterator[Butler]:
        """A new repository with the dataset type under test (dimension ``n``)."""
        b = self.new_repository(conformance_factory)
        try:
            yield b
        finally:
            self.discard_repository(b)

    def new_repository(self, factory: RepositoryFactory) -> Butler:
        """A new repository from ``factory`` defining the dataset type under test."""
        b = factory.create()
        b.register_dataset_type(
            self.dataset_type,
            self.python_type,
            self.format,
            dimensions={"n": int},
            serializer_args=self.serializer_args or None,
        )
        return b

    @staticmethod
    def discard_repository(b: Butler) -> None:
        """Close a repository (and free a memory one)."""
        b.close()
        if b.storage.type_name == "memory":
            from ..storages.memory import MemoryStorage

            MemoryStorage.clear(b.storage.root[len("memory://") :])

    # -- helpers ----------------------------------------------------------------------

    def _objects(self) -> list[Any]:
        objects = list(self.make_objects())
        assert objects, f"{type(self).__name__}.make_objects() returned nothing"
        return objects

    def _check_read(self, actual: Any, expected: Any, what: str) -> None:
        assert type(actual) is type(expected), (
            f"{what}: read back a {type_name(type(actual))}, wrote a {type_name(type(expected))}"
        )
        self.assert_equal(actual, expected)

    # -- the suite --------------------------------------------------------------------

    def test_declared(self) -> None:
        """The format has a descriptor and the type a serializer in this format."""
        registry = self._registry()
        descriptor = registry.format(self.format)
        name = type_name(self.python_type)
        found = [s for s in registry.serializers.values() if s.format == self.format]
        assert any(s.python_type == name for s in found) or any(
            self._lookup(registry, storage) for storage in (*STORAGES, "*")
        ), f"no serializer for {name} in format {self.format!r}; registered: {found}"
        assert descriptor.name == self.format

    def _lookup(self, registry: Registry, storage: str) -> bool:
        try:
            registry.find(self._type(), storage, self.format)
        except NoSerializerError:
            return False
        return True

    def test_round_trip(self, conformance_repo: Butler) -> None:
        """Every object comes back equal, as the same type."""
        for n, obj in enumerate(self._objects()):
            conformance_repo.put(obj, self.dataset_type, n=n)
            back = conformance_repo.get(self.dataset_type, n=n)
            self._check_read(back, obj, f"object {n} on {conformance_repo.storage.type_name}")

    def test_overwrite(self, conformance_repo: Butler) -> None:
        """``overwrite=True`` replaces a dataset completely (no stale bytes left over)."""
        objects = self._objects()
        first, last = objects[-1], objects[0]
        conformance_repo.put(first, self.dataset_type, n=0)
        conformance_repo.put(last, self.dataset_type, n=0, overwrite=True)
        self._check_read(conformance_repo.get(self.dataset_type, n=0), last, "overwritten")

    def test_subclass_round_trip(self, conformance_repo: Butler) -> None:
        """A subclass instance comes back as that subclass (``location.read_type()``)."""
        if not self.preserves_subclasses:
            pytest.skip(f"{type(self).__name__}.preserves_subclasses is False")
        objects = self.make_subclass_objects()
        if not objects:
            pytest.skip(f"{type_name(self._type())} cannot be subclassed or converted; "
                        "implement make_subclass_objects()")  # fmt: skip
        for n, obj in enumerate(objects):
            assert isinstance(obj, self._type()) and type(obj) is not self._type()
            conformance_repo.put(obj, self.dataset_type, n=n)
            back = conformance_repo.get(self.dataset_type, n=n)
            self._check_read(back, obj, f"subclass object {n}")

    def test_corrupt_input(self, conformance_repo: Butler, corruption: str) -> None:
        """Damaged bytes raise `FormatError` naming the dataset, never return an object."""
        for n, obj in enumerate(self._objects()):
            location = conformance_repo.put(obj, self.dataset_type, n=n)
            damaged = corrupt(conformance_repo.storage, location.key, corruption)
            try:
                back = conformance_repo.get(self.dataset_type, n=n)
            except FormatError as exc:
                assert self.dataset_type in str(exc), (
                    f"the FormatError does not name the dataset (use location.format_error() "
                    f"or let the exception propagate): {exc}"
                )
                continue
            except ButlerError as exc:
                raise AssertionError(
                    f"{corruption} object {n}: expected FormatError, got "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            hint = (" If the format cannot detect truncation, remove 'truncated' from "
                    "corruptions ('butler verify' still catches it).")  # fmt: skip
            raise AssertionError(
                f"{corruption} object {n} ({len(damaged)} bytes) was read without error as "
                f"{back!r}.{hint if corruption == 'truncated' else ''}"
            )

    def test_decode_agrees_with_read(self, conformance_repo: Butler, corruption: str) -> None:
        """A serializer declaring ``decode`` (the small-get shortcut): for every object,
        ``decode(bytes, class)`` returns what the general read returns; on damaged bytes
        it raises wherever that read raises (a lenient decode would return a wrong object
        in silence)."""
        b = conformance_repo
        for n, obj in enumerate(self._objects()):
            serializer = b.registry.find(type(obj), b.storage.type_name, self.format)
            decode = serializer.decode
            if decode is None:
                pytest.skip(f"{serializer!r} declares no decode")
            location = b.put(obj, self.dataset_type, n=n)
            general = b.get(self.dataset_type, n=n, collections=b.collections)
            self._check_read(decode(b.storage.read_bytes(location.key), type(obj)), general,
                             f"decode of object {n}")  # fmt: skip
            corrupt(b.storage, location.key, corruption)
            try:
                b.get(self.dataset_type, n=n, collections=b.collections)
            except FormatError:
                damaged = b.storage.read_bytes(location.key)
                try:
                    back = decode(damaged, type(obj))
                except Exception:  # any exception: butler then reads, which reports
                    continue
                raise AssertionError(
                    f"{corruption} object {n}: read raises FormatError, decode returned "
                    f"{back!r:.200}"
                ) from None

    def _snapshot(self, b: Butler, factory: RepositoryFactory, key: str) -> dict[str, Any]:
        exists = b.storage.exists(key)
        return {
            "keys": sorted(b.storage.list()),
            "files": factory.files(b),
            "bytes": b.storage.read_bytes(key) if exists else None,
            "metadata": b.storage.metadata(key) if exists else None,
        }

    def _assert_unchanged(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        assert after["keys"] == before["keys"], "the failed write changed the dataset list"
        extra = sorted(os.path.basename(p) for p in after["files"] - before["files"])
        assert not extra, f"the failed write left files behind: {extra}"
        assert after["bytes"] == before["bytes"], "the failed write changed the stored bytes"
        assert after["metadata"] == before["metadata"], "the failed write changed the metadata"

    def _put_failing(self, b: Butler, obj: Any, limit: int, *, overwrite: bool) -> None:
        error: ButlerError | None = None
        with failing_writes(b.storage, limit=limit) as faults:
            try:
                b.put(obj, self.dataset_type, n=0, overwrite=overwrite)
            except ButlerError as exc:
                error = exc
        assert faults.fired, (
            "the serializer did not write through location.open_write() or "
            "location.local_path_for_write(), so its writes are not atomic"
        )
        assert error is not None, (
            "a storage write failed (injected ENOSPC) but put() succeeded: the serializer "
            "swallowed the error"
        )

    def test_failed_overwrite_keeps_old(
        self, conformance_repo: Butler, conformance_factory: RepositoryFactory
    ) -> None:
        """A write failing half way leaves the previous dataset intact and nothing partial."""
        objects = self._objects()
        old, new = objects[0], objects[-1]
        b = conformance_repo
        key = b.put(old, self.dataset_type, n=0).key
        before = self._snapshot(b, conformance_factory, key)
        limit = max(1, len(before["bytes"]) // 2)
        self._put_failing(b, new, limit, overwrite=True)
        self._assert_unchanged(before, self._snapshot(b, conformance_factory, key))
        self._check_read(b.get(self.dataset_type, n=0), old, "after a failed overwrite")

    def test_failed_create_leaves_nothing(
        self, conformance_repo: Butler, conformance_factory: RepositoryFactory
    ) -> None:
        """A first write failing half way leaves no dataset behind."""
        b = conformance_repo
        key = b.location(self.dataset_type, n=0).key
        before = self._snapshot(b, conformance_factory, key)
        self._put_failing(b, self._objects()[0], 16, overwrite=False)
        self._assert_unchanged(before, self._snapshot(b, conformance_factory, key))
        assert not b.exists(self.dataset_type, n=0)

    def test_invalid_object_rejected(
        self, conformance_repo: Butler, conformance_factory: RepositoryFactory
    ) -> None:
        """Objects the format cannot store raise `FormatError`; the old dataset stays."""
        invalid = self.make_invalid_objects()
        if not invalid:
            pytest.skip(f"{type(self).__name__}.make_invalid_objects() returned nothing")
        b = conformance_repo
        old = self._objects()[0]
        key = b.put(old, self.dataset_type, n=0).key
        before = self._snapshot(b, conformance_factory, key)
        for obj in invalid:
            with pytest.raises(FormatError, match=self.dataset_type):
                b.put(obj, self.dataset_type, n=0, overwrite=True)
            self._assert_unchanged(before, self._snapshot(b, conformance_factory, key))
        self._check_read(b.get(self.dataset_type, n=0), old, "after a rejected write")

    def test_file_round_trip(self, tmp_path: Path) -> None:
        """`butler.write_file`/`read_file` (``butler put``/``get``) identify the format from
        the file name, and from the first bytes when the format declares a signature."""
        registry = self._registry()
        descriptor = registry.format(self.format)
        if not descriptor.extensions:
            pytest.skip(f"format {self.format!r} declares no file extension")
        try:
            registry.find(self._type(), "posix", self.format)
        except NoSerializerError:
            pytest.skip(f"no {self.format!r} serializer for local files")
        for n, obj in enumerate(self._objects()):
            path = str(tmp_path / f"object{n}{descriptor.extension}")
            write_file(obj, path, registry=registry)
            back = read_file(path, python_type=self.python_type, registry=registry)
            self._check_read(back, obj, f"file {os.path.basename(path)}")
            if descriptor.magic is not None or descriptor.identify is not None:
                with open(path, "rb") as f:
                    first = f.read(64)
                assert registry.identify_format("no-extension", first) == self.format

    def test_discovery_is_lazy(self) -> None:
        """``import butler`` + discovery registers the format and imports nothing heavy."""
        registry = self._registry()
        name = type_name(self.python_type)
        watched = set(self.heavy_modules)
        for s in registry.serializers.values():
            if s.format == self.format and s.python_type == name:
                for ref in (s.write_ref, s.read_ref):
                    if isinstance(ref, str):
                        watched.add(ref.partition(":")[0])
        result = imported_after_discovery(sorted(watched))
        assert self.format in result["formats"], (
            f"format {self.format!r} was not registered by plugin discovery in a fresh "
            f"interpreter (is the package installed, with a 'butler' entry point?); "
            f"failed plugins: {result['failed']}"
        )
        assert not result["imported"], (
            f"'import butler' + plugin discovery imported {result['imported']}: declare "
            f"serializers as 'module:function' strings and import heavy libraries inside "
            f"the functions"
        )
