"""The layout rules of CONTRIBUTING.md, checked on every first-party distribution.

* ``__version__`` is the installed distribution's version, read lazily from its metadata;
* entry-point (hook) modules import one way: ``from butler import ...``;
* a trailing ``_`` in a module name means one thing: the module is named after the one
  library it wraps (``json_``, ``pickle_``, ``h5py_``, ``s3fs_``).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: distribution -> (import name, package folder)
DISTRIBUTIONS = {
    "butler-core": ("butler", ROOT / "core" / "butler"),
    "butler-fits": ("butler_fits", ROOT / "plugins" / "butler-fits" / "butler_fits"),
    "butler-hdf5": ("butler_hdf5", ROOT / "plugins" / "butler-hdf5" / "butler_hdf5"),
    "butler-s3": ("butler_s3", ROOT / "plugins" / "butler-s3" / "butler_s3"),
    "butler-db": ("butler_db", ROOT / "plugins" / "butler-db" / "butler_db"),
    "butler-csv": ("butler_csv", ROOT / "examples" / "butler-csv" / "butler_csv"),
}
PLUGINS = [d for d in DISTRIBUTIONS if d != "butler-core"]


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        pytest.skip(f"{distribution} is not installed")


@pytest.mark.parametrize("distribution", list(DISTRIBUTIONS))
def test_version_comes_from_the_installed_metadata(distribution: str) -> None:
    expected = _installed(distribution)
    module = importlib.import_module(DISTRIBUTIONS[distribution][0])
    # Lazy (a module __getattr__, as pluggy does): importing the package costs nothing,
    # and no second copy of the version can drift from pyproject.toml.
    assert "__version__" not in vars(module), f"{distribution}: __version__ is hard-coded"
    assert module.__version__ == expected


@pytest.mark.parametrize("distribution", PLUGINS)
def test_hook_modules_import_names_from_butler(distribution: str) -> None:
    _installed(distribution)
    hook_module = DISTRIBUTIONS[distribution][1] / "_plugin.py"
    tree = ast.parse(hook_module.read_text(), str(hook_module))
    plain = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.split(".")[0] == "butler"
    ]
    assert not plain, f"{hook_module}: 'import {plain[0]}'; use 'from butler import hookimpl, ...'"
    names = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "butler"
        for alias in node.names
    }
    assert "hookimpl" in names, f"{hook_module}: hookimpl is not imported from butler"


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if p.stem not in {"__init__", "__main__"})


@pytest.mark.parametrize("distribution", list(DISTRIBUTIONS))
def test_a_trailing_underscore_names_the_library_wrapped(distribution: str) -> None:
    folder = DISTRIBUTIONS[distribution][1]
    for path in _modules(folder):
        if not path.stem.endswith("_"):
            continue
        library = path.stem.strip("_")
        assert not path.stem.startswith("_"), f"{path}: private or wrapper, not both"
        # The library is the standard library's or a declared dependency of the
        # distribution (it need not be installed where this test runs).
        pyproject = folder.parent / "pyproject.toml"
        if not pyproject.exists():  # butler-core: pyproject.toml at the root
            pyproject = ROOT / "pyproject.toml"
        declared = tomllib.loads(pyproject.read_text())
        dependencies = " ".join(declared.get("project", {}).get("dependencies", [])).lower()
        assert library in sys.stdlib_module_names or library in dependencies, (
            f"{path.relative_to(ROOT)}: a trailing '_' means 'named after the library it "
            f"wraps', and {library!r} is neither the standard library's nor a dependency of "
            f"{distribution}; name the module for what it holds"
        )
        source = path.read_text()
        assert f"import {library}" in source or f"from {library}" in source, (
            f"{path.relative_to(ROOT)} is named after {library!r} but never imports it"
        )


@pytest.mark.parametrize("distribution", PLUGINS)
def test_plugin_modules_are_private_or_library_wrappers(distribution: str) -> None:
    folder = DISTRIBUTIONS[distribution][1]
    public = [
        str(p.relative_to(ROOT))
        for p in _modules(folder)
        if not p.stem.startswith("_") and not p.stem.endswith("_")
    ]
    assert not public, f"modules neither private ('_x.py') nor library wrappers: {public}"
