"""Issue 19 item 3: entry points read from the file system, without importlib.metadata.

The scan must see exactly what ``importlib.metadata.entry_points(group=...)`` sees, be
fresh after every install or removal (nothing cached), and hand over to importlib.metadata
where the file system alone does not describe the installed distributions.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butler import PluginError
from butler._entry_points import (
    EntryPoint,
    Installed,
    _needs_importlib_metadata,
    distribution_version,
    entry_points,
)


def _scanned(group: str) -> list[EntryPoint]:
    installed = Installed()
    assert not installed.via_importlib_metadata
    return installed.entry_points(group)


def _as_metadata_sees(group: str) -> list[tuple[str, str, str, str]]:
    """What the standard library's importlib.metadata sees on this ``sys.path``, asked in a
    fresh process: once the importlib_metadata backport is imported (dask imports it), it
    replaces the stdlib's path finder in this process, and it raises on a metadata
    directory without METADATA where the stdlib skips it."""
    code = (
        "import importlib.metadata as m, json, sys\n"
        "sys.path[:] = json.loads(sys.argv[1])\n"
        "print(json.dumps([(ep.name, ep.value, ep.dist.metadata['Name'], ep.dist.version)"
        " for ep in m.entry_points(group=sys.argv[2]) if ep.dist is not None]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(sys.path), group],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [tuple(item) for item in json.loads(out.stdout)]  # type: ignore[misc]


def _as_scan_sees(group: str) -> list[tuple[str, str, str, str]]:
    return [(ep.name, ep.value, ep.distribution, ep.version) for ep in _scanned(group)]


def dist_info(
    site: Path,
    dirname: str,
    entry_points_txt: str,
    metadata: str | None = "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    *,
    name: str = "",
    version: str = "",
) -> Path:
    """A metadata directory ``dirname`` (``*.dist-info`` or ``*.egg-info``) under ``site``."""
    info = site / dirname
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points_txt))
    if metadata is not None:
        meta_file = "PKG-INFO" if dirname.endswith(".egg-info") else "METADATA"
        (info / meta_file).write_text(metadata.format(name=name, version=version))
    return info


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two site directories put first on sys.path (``first`` shadows ``second``)."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    sys.path[:0] = [str(first), str(second)]
    try:
        yield first, second
    finally:
        sys.path.remove(str(first))
        sys.path.remove(str(second))
        importlib.invalidate_caches()


def test_this_environment_matches_importlib_metadata() -> None:
    assert not _needs_importlib_metadata()  # a plain venv: the scan is what runs here
    for group in ("butler", "console_scripts", "pytest11"):
        scanned = _as_scan_sees(group)
        assert scanned == _as_metadata_sees(group), group
    names = {ep[2] for ep in _as_scan_sees("butler")}
    # The plugins this environment installs (tox's matrix says; all four by default).
    expected = os.environ.get(
        "BUTLER_EXPECTED_PLUGINS", "butler-fits,butler-hdf5,butler-s3,butler-db"
    )
    assert {name for name in expected.split(",") if name} <= names
    assert distribution_version("butler-core") == importlib.metadata.version("butler-core")
    assert distribution_version("Butler_Core") == importlib.metadata.version("butler-core")
    assert distribution_version("butler-no-such-distribution") is None


def test_edge_cases_match_importlib_metadata(sites: tuple[Path, Path]) -> None:
    first, second = sites
    # A distribution on both path entries: the first one on sys.path wins, the other is
    # not seen at all (importlib.metadata's ``_unique``), whatever its entry points.
    dist_info(
        first,
        "butler_shadow-2.0.dist-info",
        "[butler]\nnew = shadow_new\n",
        name="butler-shadow",
        version="2.0",
    )
    dist_info(
        second,
        "butler_shadow-1.0.dist-info",
        "[butler]\nold = shadow_old\n",
        name="butler-shadow",
        version="1.0",
    )
    # Comments, blank lines, other groups, spaces, attributes and extras.
    dist_info(
        second,
        "Mixed.Case_Name-0.5.dist-info",
        """
        # a comment
        [console_scripts]
        tool = mixed:main

        [butler]
          spaced   =   mixed.sub : plugin.hooks  [extra]
        plain=mixed
        [other]
        x = y
        """,
        "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nVersion: 9.9 (the body)\n",
        name="Mixed.Case_Name",
        version="0.5",
    )
    # A legacy egg-info directory (PKG-INFO), and one without any metadata file.
    dist_info(
        second,
        "legacy_egg.egg-info",
        "[butler]\negg = legacy_egg_mod\n",
        name="legacy-egg",
        version="0.1",
    )
    dist_info(second, "nameless-3.0.dist-info", "[butler]\nnameless = nameless_mod\n", None)
    # Windows line endings; the group named only in a comment is no section.
    dist_info(second, "crlf_eps-1.0.dist-info", "[butler]\r\ncrlf = crlf_mod\r\n",
              name="crlf-eps", version="1.0")  # fmt: skip
    dist_info(second, "commented-1.0.dist-info", "# [butler]\n[other]\nnot_ours = x\n",
              name="commented", version="1.0")  # fmt: skip
    # A file-form egg-info (PKG-INFO only) and an unrelated file are ignored.
    (second / "single_file-1.0.egg-info").write_text("Name: single-file\nVersion: 1.0\n")
    (second / "README.txt").write_text("not a distribution")

    scanned = _as_scan_sees("butler")
    expected = {
        ("new", "shadow_new", "butler-shadow", "2.0"),
        ("spaced", "mixed.sub : plugin.hooks  [extra]", "Mixed.Case_Name", "0.5"),
        ("plain", "mixed", "Mixed.Case_Name", "0.5"),
        ("egg", "legacy_egg_mod", "legacy-egg", "0.1"),
        ("crlf", "crlf_mod", "crlf-eps", "1.0"),
    }
    assert expected <= set(scanned)
    assert not any(ep[0] == "old" for ep in scanned)  # shadowed by the first site
    made_here = {"new", "spaced", "plain", "egg", "crlf", "not_ours"}
    ours = [ep for ep in scanned if ep[0] in made_here]
    theirs = [ep for ep in _as_metadata_sees("butler") if ep[0] in made_here]
    assert ours == theirs  # same entry points, distributions, versions and order
    # Without METADATA importlib.metadata has no name (None); the scan names it by its
    # directory, so the plugin still gets a row, and the version is unknown.
    nameless = [ep for ep in _scanned("butler") if ep.name == "nameless"]
    assert [(ep.distribution, ep.version) for ep in nameless] == [("nameless", "?")]
    assert [ep.value for ep in importlib.metadata.entry_points(group="butler", name="nameless")]
    assert distribution_version("butler_shadow") == "2.0"
    assert distribution_version("mixed-case-name") == "0.5"


def test_a_malformed_line_does_not_hide_other_plugins(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    dist_info(
        first,
        "broken_eps-1.0.dist-info",
        "[butler]\nno equals sign here\nok = ok_mod\n",
        name="broken-eps",
        version="1.0",
    )
    dist_info(
        first,
        "fine_eps-1.0.dist-info",
        "[butler]\nfine = fine_mod\n",
        name="fine-eps",
        version="1.0",
    )
    found = {(ep.name, ep.distribution) for ep in entry_points("butler")}
    assert {("ok", "broken-eps"), ("fine", "fine-eps")} <= found
    with pytest.raises((TypeError, ValueError)):  # importlib.metadata fails on these files
        importlib.metadata.entry_points(group="butler")


def test_load_follows_importlib_metadata(sites: tuple[Path, Path]) -> None:
    first, _ = sites
    (first / "ep_target_mod.py").write_text("class Outer:\n    class Inner:\n        x = 42\n")
    try:
        ep = EntryPoint("t", "ep_target_mod : Outer.Inner [extra]", "butler", "d", "1")
        loaded = ep.load()
        reference = importlib.metadata.EntryPoint("t", ep.value, "butler").load()
        assert loaded is reference and loaded.x == 42
        assert EntryPoint("m", "ep_target_mod", "butler", "d", "1").load().__name__ == (
            "ep_target_mod"
        )
        with pytest.raises(AttributeError, match="Missing"):
            EntryPoint("t", "ep_target_mod:Missing", "butler", "d", "1").load()
        with pytest.raises(PluginError, match=r"'bad' of 'dist-x'.*'not a value!'"):
            EntryPoint("bad", "not a value!", "butler", "dist-x", "1").load()
    finally:
        sys.modules.pop("ep_target_mod", None)


# -- where the file system alone is not the whole picture: importlib.metadata decides ----


class _OwnDistributions:
    """A meta-path finder that provides distributions from outside sys.path."""

    def __init__(self, info: Path) -> None:
        self.info = info

    def find_spec(self, *args: Any) -> None:
        return None

    def find_distributions(self, context: Any = None) -> list[importlib.metadata.Distribution]:
        name = getattr(context, "name", None)
        if name is not None and name.replace("-", "_") != "hidden_dist":
            return []  # asked for another distribution by name
        return [importlib.metadata.PathDistribution(self.info)]


def test_a_finder_with_its_own_distributions_hands_over(tmp_path: Path) -> None:
    info = dist_info(
        tmp_path / "elsewhere",
        "hidden_dist-4.2.dist-info",
        "[butler]\nhidden = hidden_mod\n",
        name="hidden-dist",
        version="4.2",
    )
    finder = _OwnDistributions(info)
    assert ("hidden", "hidden-dist") not in {(e.name, e.distribution) for e in _scanned("butler")}
    sys.meta_path.append(finder)
    try:
        assert _needs_importlib_metadata()
        found = {(e.name, e.value, e.distribution, e.version) for e in entry_points("butler")}
        assert ("hidden", "hidden_mod", "hidden-dist", "4.2") in found
        assert distribution_version("hidden-dist") == "4.2"
        assert distribution_version("no-such-dist-anywhere") is None
    finally:
        sys.meta_path.remove(finder)
    assert not _needs_importlib_metadata()


def test_a_zip_on_sys_path_hands_over(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped_dist-1.5.dist-info/METADATA", "Name: zipped-dist\nVersion: 1.5\n")
        z.writestr("zipped_dist-1.5.dist-info/entry_points.txt", "[butler]\nzipped = zmod\n")
    sys.path.insert(0, str(archive))
    try:
        assert _needs_importlib_metadata()
        found = {(e.name, e.distribution, e.version) for e in entry_points("butler")}
        assert ("zipped", "zipped-dist", "1.5") in found
    finally:
        sys.path.remove(str(archive))
        importlib.invalidate_caches()


def test_an_unzipped_egg_on_sys_path_hands_over(tmp_path: Path) -> None:
    egg = tmp_path / "old_dist-0.9-py3.11.egg"
    (egg / "EGG-INFO").mkdir(parents=True)
    (egg / "EGG-INFO" / "PKG-INFO").write_text("Name: old-dist\nVersion: 0.9\n")
    (egg / "EGG-INFO" / "entry_points.txt").write_text("[butler]\nold_egg = old_egg_mod\n")
    sys.path.insert(0, str(egg))
    try:
        assert _needs_importlib_metadata()
        found = {(e.name, e.distribution, e.version) for e in entry_points("butler")}
        assert ("old_egg", "old-dist", "0.9") in found
    finally:
        sys.path.remove(str(egg))
        importlib.invalidate_caches()


# -- install and remove, in a fresh process ---------------------------------------------

LIFECYCLE = """
import json, shutil, sys
from pathlib import Path

site = Path(sys.argv[1])
sys.path.insert(0, str(site))
metadata_before = "importlib.metadata" in sys.modules  # e.g. a .pth file may import it
import butler

def install(dist, module):
    (site / f"{module}.py").write_text(
        "import butler\\n"
        "@butler.hookimpl\\n"
        "def butler_formats():\\n"
        f"    return [butler.FormatDescriptor({module!r}, ('.{module}',))]\\n"
    )
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Name: {dist}\\nVersion: 1.0\\n")
    (info / "entry_points.txt").write_text(f"[butler]\\n{module} = {module}\\n")
    return info

def seen():
    registry = butler.refresh_plugins()
    return {
        "plugins": sorted(p.distribution for p in butler.plugins() if p.status == "loaded"),
        "formats": sorted(registry.formats),
    }

steps = {"before": seen()}
first = install("butler-throwaway", "throwaway_fmt")
steps["installed"] = seen()
shutil.rmtree(first)
(site / "throwaway_fmt.py").unlink()
del sys.modules["throwaway_fmt"]
steps["removed"] = seen()
install("butler-another", "another_fmt")
steps["added"] = seen()
steps["imported"] = sorted(m for m in ("throwaway_fmt", "importlib.metadata") if m in sys.modules)
steps["metadata_before"] = metadata_before
print(json.dumps(steps))
"""


def test_install_and_remove_are_seen_at_once(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", LIFECYCLE, str(site)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    steps = json.loads(done.stdout)
    assert "butler-throwaway" not in steps["before"]["plugins"]
    assert "butler-throwaway" in steps["installed"]["plugins"]
    assert "throwaway_fmt" in steps["installed"]["formats"]
    # Removed within the same second it was installed: gone, and never imported again.
    assert "butler-throwaway" not in steps["removed"]["plugins"]
    assert "throwaway_fmt" not in steps["removed"]["formats"]
    assert "butler-another" in steps["added"]["plugins"]
    assert "another_fmt" in steps["added"]["formats"]
    assert "throwaway_fmt" not in steps["added"]["formats"]
    # Neither the removed plugin nor importlib.metadata (unless the interpreter had it).
    assert steps["imported"] == (["importlib.metadata"] if steps["metadata_before"] else [])


def test_the_importlib_metadata_backport_needs_no_hand_over() -> None:
    """Importing the ``importlib_metadata`` backport (dask does) adds its finder to
    ``sys.meta_path``; it reads the same ``sys.path`` directories, so the scan still runs
    and still agrees (in a fresh process: whether a test imported it first must not matter)."""
    pytest.importorskip("importlib_metadata")
    code = (
        "import importlib_metadata, sys\n"
        "from butler._entry_points import Installed, _needs_importlib_metadata\n"
        "assert any(type(f).__name__ == 'MetadataPathFinder' or "
        "getattr(f, '__name__', '') == 'MetadataPathFinder' for f in sys.meta_path)\n"
        "assert not _needs_importlib_metadata()\n"
        "assert not Installed().via_importlib_metadata\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
