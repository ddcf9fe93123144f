"""The components kit fails declarations that break the rules, saying what is wrong.

Each case declares components for a small dataclass in a private registry (a fresh
discovery) and calls the kit's test methods directly on a memory repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from butler import Butler, ButlerLocation, ComponentReader, Components, Registry
from butler._plugins import discover
from butler.testing import ComponentConformance, RepositoryFactory


@dataclass
class Point:
    x: float
    y: float


def split(p: Point) -> dict[str, Any]:
    return {"x": p.x, "y": p.y}


def assemble(cls: type, parts: dict[str, Any]) -> Point:
    return cls(parts["x"], parts["y"])  # type: ignore[no-any-return]


class Kit(ComponentConformance):
    format = "json"
    python_type = Point
    storages = ("memory",)

    def __init__(self, registry: Registry) -> None:
        self._private = registry

    def registry(self) -> Registry:
        return self._private

    def make_objects(self) -> list[Any]:
        return [Point(1.0, 2.0)]


def _kit(*declarations: Any) -> Kit:
    registry = discover().registry
    from butler import register_components

    for declaration in declarations:
        register_components(declaration, registry=registry, overwrite=True)
    return Kit(registry)


def _repo(kit: Kit, tmp_path: Path) -> Butler:
    b = RepositoryFactory("memory", tmp_path, kit.registry()).create()
    b.register_dataset_type(kit.dataset_type, Point, "json", dimensions={"n": int})
    return b


def test_a_good_declaration_passes(tmp_path: Path) -> None:
    kit = _kit(Components(Point, {"x": "builtins.float", "y": "builtins.float"}, split, assemble))
    kit.test_split_assemble_round_trip()
    kit.test_component_types()
    repo = _repo(kit, tmp_path)
    kit.test_component_reads_equal_extracted(repo)
    kit.test_unknown_component_names_the_known(repo)


def test_an_assemble_that_loses_a_part_is_caught() -> None:
    def lossy(cls: type, parts: dict[str, Any]) -> Point:
        return cls(parts["x"], 0.0)  # type: ignore[no-any-return]

    kit = _kit(Components(Point, {"x": "builtins.float", "y": "builtins.float"}, split, lossy))
    with pytest.raises(AssertionError, match=r"got Point\(x=1.0, y=0.0\), expected Point"):
        kit.test_split_assemble_round_trip()


def test_a_wrongly_typed_or_undeclared_component_is_caught() -> None:
    kit = _kit(Components(Point, {"x": "builtins.int", "y": "builtins.float"}, split, assemble))
    with pytest.raises(
        AssertionError, match=r"component 'x' is a builtins\.float, declared as builtins\.int"
    ):
        kit.test_component_types()
    kit = _kit(Components(Point, {"x": "builtins.float"}, split, assemble))
    with pytest.raises(
        AssertionError, match=r"split\(\) gave 'y', which is not declared \(\['x'\]\)"
    ):
        kit.test_component_types()


def test_a_direct_reader_disagreeing_with_the_whole_read_is_caught(tmp_path: Path) -> None:
    def wrong(location: ButlerLocation, component: str, **_: Any) -> float:
        return -1.0

    kit = _kit(
        Components(Point, {"x": "builtins.float", "y": "builtins.float"}, split, assemble),
        ComponentReader(Point, "*", "json", wrong, components=("y",)),
    )
    repo = _repo(kit, tmp_path)
    with pytest.raises(AssertionError, match=r"component 'y': got -1\.0, not 2\.0"):
        kit.test_component_reads_equal_extracted(repo)
