"""A dataset type naming a class that can be seen not to exist is refused when it is
defined (API and CLI), naming what is missing; nothing is imported to tell."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from butler import Butler, ButlerError, DatasetTypeError
from butler.cli import main

REFUSED = {
    "dictt": "is not a builtin class; name a class by its dotted path",
    "builtins.dictt": "module 'builtins' has no class 'dictt'",
    "collections.OrderedDictt": "module 'collections' has no class 'OrderedDictt'",
    "os.path.Nope": "module 'os.path' has no class 'Nope'",
    "nosuchpkg_for_butler.Thing": "no module named 'nosuchpkg_for_butler' is installed",
}


@pytest.mark.parametrize(("name", "message"), REFUSED.items())
def test_a_type_that_names_nothing_is_refused(tmp_path: Path, name: str, message: str) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    with pytest.raises(DatasetTypeError, match=f"dataset type 'x': python type {name!r}"):
        b.register_dataset_type("x", name, "json", dimensions=["i"])
    with pytest.raises(DatasetTypeError, match=message):
        b.register_dataset_type("x", name, "json", dimensions=["i"])
    assert "x" not in b.dataset_types


@pytest.mark.parametrize(
    "name",
    [
        "dict",
        "builtins.dict",
        "collections.OrderedDict",
        pytest.param(
            "astropy.table.Table",  # registered by butler-fits: accepted without importing
            marks=pytest.mark.skipif(
                importlib.util.find_spec("butler_fits") is None, reason="needs butler-fits"
            ),
        ),
        "email.mime.text.MIMEText",  # an importable package not imported yet: first use tells
    ],
)
def test_findable_names_are_accepted_without_importing(tmp_path: Path, name: str) -> None:
    code = (
        "import sys; from butler import Butler;"
        f"b = Butler.create({str(tmp_path / 'repo')!r});"
        f"b.register_dataset_type('x', {name!r}, 'json', dimensions=['i']);"
        "print(sorted(m for m in ('astropy', 'email.mime.text') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_cli_says_which_module_lacks_the_class(tmp_path: Path) -> None:
    root = str(tmp_path / "repo")
    Butler.create(root)
    result = CliRunner().invoke(
        main, ["define", root, "cfg", "--type", "collections.Counterr", "--format", "json"]
    )
    assert result.exit_code != 0
    assert "module 'collections' has no class 'Counterr'" in result.output
    assert "cfg" not in Butler(root).dataset_types


def test_a_dataset_whose_key_is_its_type_name_is_named_a_dataset(tmp_path: Path) -> None:
    """A dataset type without dimensions whose template is its own name: messages name
    the dataset, not a "file" (only standalone files are described as files)."""
    from butler import DatasetExistsError, read_file

    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("settings", dict, "json", template="settings", dimensions=[])
    b.put({"a": 1}, "settings")
    with pytest.raises(DatasetExistsError, match=r"^dataset 'settings' \{\} at .*settings"):
        b.put({"a": 2}, "settings")
    plain = tmp_path / "plain.json"
    plain.write_text('{"x":')
    with pytest.raises(ButlerError, match=r"^cannot read file '.*plain\.json'"):
        read_file(str(plain))
