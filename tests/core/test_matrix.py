"""Discovery finds exactly the installed plugins; in each tox environment, exactly the
plugins that environment installs (``BUTLER_EXPECTED_PLUGINS``)."""

from __future__ import annotations

import os
from importlib.metadata import distributions

import butler

FIRST_PARTY = {"butler-fits", "butler-hdf5", "butler-s3", "butler-db"}


def _installed_plugins() -> set[str]:
    """Distributions advertising the ``butler`` entry-point group (butler-core aside)."""
    found = set()
    for dist in distributions():
        if any(ep.group == "butler" for ep in dist.entry_points):
            found.add(dist.metadata["Name"])
    return found - {"butler-core"}


def test_every_installed_plugin_is_discovered_and_loaded() -> None:
    infos = butler.plugins()
    failed = [p for p in infos if p.status == "failed"]
    assert not failed, f"plugins failed to load: {failed}"
    loaded = {p.distribution for p in infos if p.status == "loaded"} - {"butler-core"}
    assert loaded == _installed_plugins()


def test_tox_environment_installs_what_it_says() -> None:
    expected = os.environ.get("BUTLER_EXPECTED_PLUGINS")
    installed = _installed_plugins() & FIRST_PARTY
    if expected is None:  # outside tox: the check above is the whole story
        assert installed <= FIRST_PARTY
        return
    wanted = {name.strip() for name in expected.split(",") if name.strip()}
    assert installed == wanted
