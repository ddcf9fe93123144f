"""Plugin discovery from real distributions (a dist-info on sys.path, not a monkeypatch)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import butler
from butler import NoSerializerError, StorageError
from butler._plugins import discover

HEAVY = ("astropy", "h5py", "s3fs", "sqlalchemy", "boto3", "botocore", "aiobotocore", "numpy")


def make_distribution(
    site: Path, dist: str, module: str, body: str, *, ep_name: str | None = None
) -> None:
    """Install a minimal real distribution (package + dist-info with entry_points.txt)."""
    (site / f"{module}.py").write_text(textwrap.dedent(body))
    info = site / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[butler]\n{ep_name or module} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """A temporary site directory on sys.path; modules imported from it are forgotten after."""
    site = tmp_path / "site"
    site.mkdir()
    sys.path.insert(0, str(site))
    before = set(sys.modules)
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in set(sys.modules) - before:
            if getattr(sys.modules[name], "__file__", "") and str(site) in str(
                sys.modules[name].__file__
            ):
                del sys.modules[name]


GOOD_PLUGIN = """
    import butler

    class Widget:
        pass

    def write(obj, location):
        with location.open_write() as f:
            f.write(b"widget")

    def read(location):
        with location.open_read() as f:
            assert f.read() == b"widget"
        return Widget()

    @butler.hookimpl
    def butler_serializers():
        return [butler.Serializer(f"{__name__}.Widget", "*", "widget",
                                  f"{__name__}:write", f"{__name__}:read")]

    @butler.hookimpl
    def butler_formats():
        return [butler.FormatDescriptor("widget", (".wdg",), magic=b"widget")]
"""


def test_real_distribution_is_discovered_and_used(site: Path, tmp_path: Path) -> None:
    make_distribution(site, "butler-widget", "butler_widget_plugin", GOOD_PLUGIN)
    found = discover()
    info = {p.distribution: p for p in found.plugins}
    assert info["butler-widget"].status == "loaded"
    assert info["butler-widget"].version == "1.2.3"
    assert "widget" in found.registry.formats
    import butler_widget_plugin as mod

    b = butler.Butler.create(str(tmp_path / "repo"), registry=found.registry)
    b.register_dataset_type("w", "butler_widget_plugin.Widget", "widget", dimensions=["n"])
    b.put(mod.Widget(), "w", n="a")
    assert isinstance(b.get("w", n="a"), mod.Widget)
    assert (tmp_path / "repo" / "w" / "a.wdg").read_bytes() == b"widget"


def test_broken_import_becomes_warning_and_failed_row(site: Path) -> None:
    make_distribution(site, "butler-broken", "butler_broken_plugin", "raise ImportError('no lib')")
    make_distribution(site, "butler-widget", "butler_widget_plugin", GOOD_PLUGIN)
    with pytest.warns(RuntimeWarning, match=r"butler-broken.*\n.*no lib"):
        found = discover()
    status = {p.distribution: p for p in found.plugins}
    assert status["butler-broken"].status == "failed"
    assert "no lib" in status["butler-broken"].error
    assert status["butler-widget"].status == "loaded"  # the others still load
    assert "widget" in found.registry.formats
    assert any("no lib" in f for f in found.registry.plugin_failures)


def test_raising_hook_is_isolated(site: Path) -> None:
    body = """
        import butler

        @butler.hookimpl
        def butler_serializers():
            raise RuntimeError("hook exploded")
    """
    make_distribution(site, "butler-explodes", "butler_explodes_plugin", body)
    with pytest.warns(RuntimeWarning, match="hook exploded"):
        found = discover()
    row = next(p for p in found.plugins if p.distribution == "butler-explodes")
    assert row.status == "failed" and "hook exploded" in row.error
    # core serializers are intact
    assert found.registry.find(dict, "posix", "json").format == "json"
    # and a miss mentions the failure
    with pytest.raises(NoSerializerError, match="hook exploded"):
        found.registry.find(dict, "posix", "nothing")


def test_invalid_hookimpl_signature_is_reported(site: Path) -> None:
    body = """
        import butler

        @butler.hookimpl
        def butler_serializers(unexpected_argument):
            return []
    """
    make_distribution(site, "butler-badsig", "butler_badsig_plugin", body)
    with pytest.warns(RuntimeWarning, match="butler-badsig"):
        found = discover()
    row = next(p for p in found.plugins if p.distribution == "butler-badsig")
    assert row.status == "failed" and "unexpected_argument" in row.error


CONFLICT = """
    import butler

    def write(obj, location):
        with location.open_write() as f:
            f.write(b"{tag}")

    def read(location):
        return "{tag}"

    @butler.hookimpl
    def butler_serializers():
        return [butler.Serializer("builtins.str", "*", "txt", f"{{__name__}}:write",
                                  f"{{__name__}}:read", priority={priority})]

    @butler.hookimpl
    def butler_formats():
        return [butler.FormatDescriptor("txt", (".txt",))]
"""


def test_conflict_resolution_is_deterministic(site: Path) -> None:
    make_distribution(site, "butler-zeta", "zeta_plugin", CONFLICT.format(tag="zeta", priority=0))
    make_distribution(
        site, "butler-alpha", "alpha_plugin", CONFLICT.format(tag="alpha", priority=0)
    )
    found = discover()
    # equal priority: alphabetical distribution name wins, whatever the discovery order
    assert found.registry.find(str, "posix", "txt").distribution == "butler-alpha"
    conflict = next(c for c in found.conflicts if c.kind == "serializer")
    assert conflict.winner == "butler-alpha"
    assert set(conflict.candidates) == {"butler-alpha", "butler-zeta"}


def test_priority_then_user_preference(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(site, "butler-zeta", "zeta_plugin", CONFLICT.format(tag="zeta", priority=5))
    make_distribution(
        site, "butler-alpha", "alpha_plugin", CONFLICT.format(tag="alpha", priority=0)
    )
    assert discover().registry.find(str, "posix", "txt").distribution == "butler-zeta"
    # the user overrides priority explicitly...
    assert discover(prefer=["butler-alpha"]).registry.find(str, "posix", "txt").distribution == (
        "butler-alpha"
    )
    # ... or through the environment
    monkeypatch.setenv("BUTLER_PREFER", "butler-alpha")
    assert discover().registry.find(str, "posix", "txt").distribution == "butler-alpha"


def test_refresh_picks_up_a_distribution_installed_later(site: Path) -> None:
    # Not default_registry(): an earlier test may have built it while its own site (holding
    # another butler-widget) was on sys.path. Discover what is installed now.
    before = butler.refresh_plugins()
    assert "widget" not in before.formats
    make_distribution(site, "butler-widget", "butler_widget_plugin", GOOD_PLUGIN)
    try:
        after = butler.refresh_plugins()
        assert "widget" in after.formats
        assert butler.default_registry() is after
        assert any(p.distribution == "butler-widget" for p in butler.plugins())
    finally:
        sys.path.remove(str(site))
        butler.refresh_plugins()
        sys.path.insert(0, str(site))


def test_import_and_discovery_import_nothing_heavy() -> None:
    code = (
        "import sys, butler\n"
        "butler.default_registry(); butler.plugins()\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"imported at discovery: {out.stdout.strip()}"


def test_unknown_scheme_names_the_distribution(tmp_path: Path) -> None:
    reg = discover().registry
    reg._schemes.pop("s3", None)  # as if butler-s3 were not installed
    with pytest.raises(StorageError, match="butler-s3"):
        butler.Butler.create("s3://bucket/prefix", registry=reg)
    with pytest.raises(StorageError, match=r"'gopher'.*known schemes"):
        butler.Butler.create("gopher://x/y", registry=reg)


# -- issue 14 item 7: one process-wide registry, refreshed in place -----------------------


@pytest.fixture
def own_default_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process-wide registry for this test only (what it registers does not leak)."""
    import butler._plugins

    monkeypatch.setattr(butler._plugins, "_current", None)


class UserThing:
    pass


def user_write(obj: object, location: butler.ButlerLocation) -> None:
    with location.open_write() as f:
        f.write(b"user")


def user_read(location: butler.ButlerLocation) -> UserThing:
    return UserThing()


@pytest.mark.usefixtures("own_default_registry")
def test_refresh_updates_the_registry_earlier_butlers_hold(site: Path, tmp_path: Path) -> None:
    registry = butler.default_registry()
    b = butler.Butler.create(str(tmp_path / "repo"))  # holds default_registry()
    assert b.registry is registry
    butler.register(UserThing, "*", "user-format", user_write, user_read)
    registry.register_format(butler.FormatDescriptor("user-format", (".usr",)))
    with pytest.raises(NoSerializerError, match="widget"):
        b.register_dataset_type("w", "butler_widget_plugin.Widget", "widget", dimensions=["n"])

    make_distribution(site, "butler-widget", "butler_widget_plugin", GOOD_PLUGIN)
    assert butler.refresh_plugins() is registry  # the same object, refreshed in place
    assert butler.default_registry() is registry

    # the Butler created before the plugin was installed now uses it...
    import butler_widget_plugin as mod

    b.register_dataset_type("w", "butler_widget_plugin.Widget", "widget", dimensions=["n"])
    b.put(mod.Widget(), "w", n="a")
    assert isinstance(b.get("w", n="a"), mod.Widget)
    # ...and the user's own registration survived the refresh
    found = registry.find(UserThing, "posix", "user-format")
    assert found.write is user_write and found.distribution == "user"
    b.register_dataset_type("u", UserThing, "user-format", dimensions=["n"])
    b.put(UserThing(), "u", n="a")
    assert isinstance(b.get("u", n="a"), UserThing)

    # uninstalling and refreshing again removes the plugin's entries, still in place
    sys.path.remove(str(site))
    try:
        assert butler.refresh_plugins() is registry
    finally:
        sys.path.insert(0, str(site))
    assert "widget" not in registry.formats
    assert not any(s.format == "widget" for s in registry.serializers.values())
    assert registry.find(UserThing, "posix", "user-format").write is user_write
    assert registry.formats["user-format"].distribution == "user"
    assert registry.find(dict, "posix", "json").distribution == "butler-core"


@pytest.mark.usefixtures("own_default_registry")
def test_user_registration_wins_over_a_plugin_installed_later(site: Path) -> None:
    registry = butler.default_registry()
    registry.register("builtins.str", "*", "txt", user_write, user_read)
    make_distribution(site, "butler-zeta", "zeta_plugin", CONFLICT.format(tag="zeta", priority=9))
    butler.refresh_plugins()
    assert registry.find(str, "posix", "txt").write is user_write
    assert "txt" in registry.formats  # the plugin's format descriptor is installed
    conflict = next(c for c in butler.discovery().conflicts if c.kind == "serializer")
    assert conflict.candidates == ("butler-zeta", "user") and conflict.winner == "user"


def test_invalid_declaration_is_a_failed_plugin(site: Path) -> None:
    body = """
        import butler

        @butler.hookimpl
        def butler_serializers():
            return [butler.Serializer("x.Y", "", "fmt", "m:w", "m:r")]
    """
    make_distribution(site, "butler-badspec", "butler_badspec_plugin", body)
    make_distribution(site, "butler-widget", "butler_widget_plugin", GOOD_PLUGIN)
    with pytest.warns(RuntimeWarning, match="storage must be a non-empty string"):
        found = discover()
    row = next(p for p in found.plugins if p.distribution == "butler-badspec")
    assert row.status == "failed" and "storage" in row.error
    # the other plugin's declarations, called separately, are all there
    assert found.registry.find(str, "posix", "json").format == "json"
    assert any(s.format == "widget" for s in found.registry.serializers.values())
