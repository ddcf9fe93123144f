"""In each tox environment, exactly the expected plugins are discovered."""

from __future__ import annotations

import os

import pytest

import butler


def test_expected_plugins_discovered() -> None:
    expected = os.environ.get("BUTLER_EXPECTED_PLUGINS")
    if expected is None:
        pytest.skip("BUTLER_EXPECTED_PLUGINS is set by tox environments only")
    wanted = {name.strip() for name in expected.split(",") if name.strip()}
    loaded = {p.distribution for p in butler.plugins() if p.status == "loaded"} - {"butler-core"}
    failed = [p for p in butler.plugins() if p.status == "failed"]
    assert not failed, f"plugins failed to load: {failed}"
    first_party = {
        d for d in loaded if d in {"butler-fits", "butler-hdf5", "butler-s3", "butler-db"}
    }
    assert first_party == wanted
