"""Components of nested dicts stored in HDF5: one group (or dataset) read directly equals the
same component of the whole read, on posix, memory and S3; errors name what the file has."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from butler import Butler, ComponentError, component_catalog


def _cube() -> dict[str, Any]:
    rng = np.random.default_rng(3)
    return {
        "image": rng.normal(size=(256, 256)),
        "calib": {
            "gain": 1.5,
            "amps": {"A": np.arange(4.0), "B": np.arange(4.0) * 2, "name": "amp"},
        },
        "tags": ["a", "b"],
    }


@pytest.fixture(params=["posix", "memory", "s3"])
def repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    b = butler_repo(request.param)
    b.register_dataset_type("cube", dict, "hdf5", dimensions={"visit": int})
    b.put(_cube(), "cube", visit=1)
    return b


def _same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    else:
        assert a == b and type(a) is type(b)


@pytest.mark.parametrize(
    "path", ["image", "calib", "calib.gain", "calib.amps", "calib.amps.B", "tags"]
)
def test_a_group_read_directly_equals_the_whole_reads(repo: Butler, path: str) -> None:
    whole: Any = repo.get("cube", visit=1)
    for name in path.split("."):
        whole = whole[name]
    _same(repo.get(f"cube.{path}", visit=1), whole)


def test_hdf5_declares_the_direct_read() -> None:
    reader = component_catalog().reader(dict, "s3", "hdf5", "calib")
    assert reader is not None and reader.nested and reader.distribution == "butler-hdf5"


def test_one_group_on_s3_fetches_less_than_the_whole(
    s3_repo: Butler, opened: list[tuple[dict[str, Any], Any]]
) -> None:
    s3_repo.register_dataset_type("cube", dict, "hdf5", dimensions={"visit": int})
    big = _cube()
    big["image"] = np.zeros((1024, 1024))  # 8 MiB the group read must not fetch
    s3_repo.put(big, "cube", visit=1)
    opened.clear()
    amps = s3_repo.get("cube.calib.amps", visit=1)
    fetched = sum(f.bytes_fetched for _, f in opened)
    np.testing.assert_array_equal(amps["B"], np.arange(4.0) * 2)
    assert fetched < 1024 * 1024, fetched


def test_missing_components_name_what_exists(repo: Butler) -> None:
    with pytest.raises(ComponentError, match=r"no component 'nope'; its components are \['calib'"):
        repo.get("cube.nope", visit=1)
    with pytest.raises(
        ComponentError, match=r"'nope' in 'calib'; its components are \['amps', 'gain'\]"
    ):
        repo.get("cube.calib.nope.deeper", visit=1)
    with pytest.raises(ComponentError, match=r"'image' is an HDF5 dataset .* no components"):
        repo.get("cube.image.x", visit=1)


@pytest.mark.parametrize(
    ("name", "missing", "where"),
    [("/calib", "/calib", ""), ("calib/gain", "calib/gain", ""), ("calib./amps", "/amps", "calib")],
)
def test_a_name_hdf5_would_read_as_a_path_is_no_component(
    repo: Butler, name: str, missing: str, where: str
) -> None:
    """'/calib' or 'calib/gain' is no key of the dict (HDF5 names hold no '/'; the writer
    refuses such keys): refused, never read as the node that path reaches."""
    inside = f" in {where!r}" if where else ""
    with pytest.raises(ComponentError, match=f"no component {missing!r}{inside}; its components"):
        repo.get(f"cube.{name}", visit=1)
