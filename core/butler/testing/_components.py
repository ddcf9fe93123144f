"""`ComponentConformance`: the test class authors of component declarations subclass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from .._butler import Butler
from .._component_read import declaration
from .._components import ComponentError, Components, catalog_for
from .._errors import NoSerializerError
from .._registry import Registry
from .._types import import_type, type_name
from ._lazy import imported_after_discovery
from ._storages import STORAGES, RepositoryFactory, unavailable_reason

__all__ = ["ComponentConformance"]


class ComponentConformance:
    """Base class of a conformance suite for one type's components in one format.

    Subclass it in a module pytest collects (``Test...``), set the class attributes and
    implement `make_objects`. The suite checks the declaration (`butler.Components`):
    split then assemble gives the object back, as its own class; every component has its
    declared type; and, on each available storage, every component read with
    ``get("<type>.<component>")`` (directly, when the format declares a
    `butler.ComponentReader`) equals the same component of the whole read. With
    ``component_formats`` set, the same holds for the type stored disassembled.

    Attributes
    ----------
    format : str
        Format the whole object is stored in (required).
    python_type : type or str
        The class whose components are declared (required).
    heavy_modules : tuple of str
        Modules ``import butler`` plus discovery must not import.
    storages : tuple of str
        Storages to test on (default: all of `butler.testing.STORAGES`).
    component_formats : dict or None
        Formats of the components when stored disassembled (``{}``: each in `format`);
        ``None`` skips the disassembled tests.

    Examples
    --------
    ::

        class TestExposureComponents(ComponentConformance):
            format = "fits"
            python_type = "astropy.nddata.CCDData"
            component_formats = {"meta": "json", "unit": "json"}

            def make_objects(self):
                return [CCDData(np.ones((4, 4)), unit="adu")]
    """

    format: ClassVar[str] = ""
    python_type: ClassVar[type | str] = ""
    heavy_modules: ClassVar[tuple[str, ...]] = ()
    storages: ClassVar[tuple[str, ...]] = STORAGES
    component_formats: ClassVar[dict[str, str] | None] = None
    dataset_type: ClassVar[str] = "conformance"

    # -- what authors provide ---------------------------------------------------------

    def make_objects(self) -> list[Any]:
        """Objects to split, store and read by component (at least one)."""
        raise NotImplementedError(f"{type(self).__name__} must implement make_objects()")

    def assert_equal(self, actual: Any, expected: Any) -> None:
        """Assert that two whole objects are equal (default: ``==``)."""
        assert actual == expected, f"got {actual!r}, expected {expected!r}"

    def assert_component_equal(self, name: str, actual: Any, expected: Any) -> None:
        """Assert that two values of component ``name`` are equal. Default: numpy's array
        comparison for arrays, else ``==``."""
        assert type(actual) is type(expected), (
            f"component {name!r}: got a {type_name(type(actual))}, "
            f"expected a {type_name(type(expected))}"
        )
        if hasattr(expected, "shape") and hasattr(expected, "dtype"):
            import numpy as np

            np.testing.assert_array_equal(actual, expected, err_msg=f"component {name!r}")
        else:
            assert actual == expected, f"component {name!r}: got {actual!r}, not {expected!r}"

    def registry(self) -> Registry | None:
        """Registry to test with (default ``None``: the process-wide one)."""
        return None

    # -- fixtures ---------------------------------------------------------------------

    def _registry(self) -> Registry:
        from .._plugins import default_registry

        return self.registry() or default_registry()

    def _type(self) -> type:
        given = self.python_type
        return given if isinstance(given, type) else import_type(given)

    def _declaration(self) -> Components:
        return declaration(self._registry(), self._type(), type(self).__name__)

    def _objects(self) -> list[Any]:
        objects = list(self.make_objects())
        assert objects, f"{type(self).__name__}.make_objects() returned nothing"
        return objects

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize over `storages` (pytest calls this per test)."""
        if "component_storage" in metafunc.fixturenames:
            metafunc.parametrize("component_storage", list(self.storages), indirect=True)

    @pytest.fixture
    def component_storage(self, request: pytest.FixtureRequest) -> str:
        """Storage type name of the current test (skipped when unavailable)."""
        storage: str = request.param
        reason = unavailable_reason(storage)
        if reason:
            pytest.skip(f"{storage}: {reason}")
        try:
            self._registry().find(self._type(), storage, self.format)
        except NoSerializerError:
            pytest.skip(f"no {self.format!r} serializer for {type_name(self._type())} on {storage}")
        return storage

    @pytest.fixture
    def component_repo(self, component_storage: str, tmp_path: Path) -> Iterator[Butler]:
        """A new repository defining the dataset type (and its disassembled twin)."""
        b = RepositoryFactory(component_storage, tmp_path, self.registry()).create()
        b.register_dataset_type(
            self.dataset_type, self.python_type, self.format, dimensions={"n": int}
        )
        if self.component_formats is not None:
            b.register_dataset_type(f"{self.dataset_type}_parts", self.python_type, self.format,
                                    dimensions={"n": int}, disassemble=True,
                                    component_formats=self.component_formats)  # fmt: skip
        try:
            yield b
        finally:
            b.close()
            if b.storage.type_name == "memory":
                from ..storages.memory import MemoryStorage

                MemoryStorage.clear(b.storage.root[len("memory://") :])

    # -- the suite --------------------------------------------------------------------

    def test_declared_lazily(self) -> None:
        """A declaration exists, and discovering it imports nothing heavy."""
        found = self._declaration()
        assert found.distribution, found
        modules = [*self.heavy_modules]
        for ref in (found.split, found.assemble, found.extract):
            if isinstance(ref, str):
                modules.append(ref.partition(":")[0])
        if modules and self.registry() is None:
            outcome = imported_after_discovery(modules)
            assert not outcome["imported"], (
                f"discovery imported {outcome['imported']}: declare components with "
                f"'module:function' strings and dotted type names"
            )

    def test_split_assemble_round_trip(self) -> None:
        """``assemble(type(obj), split(obj))`` gives the object back, as its own class."""
        found = self._declaration()
        for n, obj in enumerate(self._objects()):
            parts = found.split_object(obj)
            assert parts, f"object {n}: split() returned no components"
            back = found.assemble_parts(type(obj), parts)
            assert type(back) is type(obj), f"object {n}: assembled a {type_name(type(back))}"
            self.assert_equal(back, obj)

    def test_component_types(self) -> None:
        """Every component is ``None`` or an instance of its declared type, and (unless
        dynamic) every split name is declared."""
        found = self._declaration()
        for n, obj in enumerate(self._objects()):
            declared = found.names(type(obj))
            for name, value in found.split_object(obj).items():
                assert found.dynamic or name in declared, (
                    f"object {n}: split() gave {name!r}, which is not declared ({sorted(declared)})"
                )
                if value is None:
                    continue
                expected = import_type(found.type_of(type(obj), name))
                assert isinstance(value, expected), (
                    f"object {n}: component {name!r} is a {type_name(type(value))}, "
                    f"declared as {type_name(expected)}"
                )

    def _names(self, found: Components, obj: Any) -> list[str]:
        return sorted({*found.split_object(obj), *found.names(type(obj))})

    def test_component_reads_equal_extracted(self, component_repo: Butler) -> None:
        """Each component read by name equals the same component of the whole read."""
        found = self._declaration()
        for n, obj in enumerate(self._objects()):
            component_repo.put(obj, self.dataset_type, n=n)
            whole = component_repo.get(self.dataset_type, n=n)
            for name in self._names(found, obj):
                got = component_repo.get(f"{self.dataset_type}.{name}", n=n)
                self.assert_component_equal(name, got, found.extract_one(whole, name))

    def test_unknown_component_names_the_known(self, component_repo: Butler) -> None:
        """A component the type lacks is a `ComponentError` naming one it has."""
        found = self._declaration()
        obj = self._objects()[0]
        component_repo.put(obj, self.dataset_type, n=0, overwrite=True)
        with pytest.raises(ComponentError) as info:
            component_repo.get(f"{self.dataset_type}.no_such_component_", n=0)
        assert "no_such_component_" in str(info.value)
        assert any(repr(name) in str(info.value) for name in self._names(found, obj))

    def test_disassembled(self, component_repo: Butler) -> None:
        """Stored disassembled: the whole and each component come back equal; the index
        and verify see one dataset."""
        if self.component_formats is None:
            pytest.skip(f"{type(self).__name__}.component_formats is None")
        found = self._declaration()
        name = f"{self.dataset_type}_parts"
        objects = self._objects()
        for n, obj in enumerate(objects):
            component_repo.put(obj, name, n=n)
            whole = component_repo.get(name, n=n)
            assert type(whole) is type(obj)
            self.assert_equal(whole, obj)
            for part in found.split_object(obj):
                got = component_repo.get(f"{name}.{part}", n=n)
                self.assert_component_equal(part, got, found.extract_one(whole, part))
        assert component_repo.count(name) == len(objects)
        report = component_repo.verify(name)
        assert report.healthy and len(report.ok) == len(objects), report

    @classmethod
    def catalog(cls, registry: Registry) -> Any:
        """The component catalog of ``registry`` (for authors' own checks)."""
        return catalog_for(registry)
