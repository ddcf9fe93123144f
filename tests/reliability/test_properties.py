"""Property-based round trips: every (type, format) on every storage, values from Hypothesis.

What goes in comes back equal, value by value (arrays: dtype, shape and every element,
NaNs included), of the same class. Examples are bounded (``max_examples``) to stay fast.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from importlib.util import find_spec
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from butler import Config

from .helpers import Repo

pytestmark = pytest.mark.reliability

EXAMPLES = 20
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples on every run: no flaky CI
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text that survives every format: no lone surrogates (not encodable).
TEXT = st.text(st.characters(codec="utf-8"), max_size=20)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
JSON_DICTS = st.dictionaries(TEXT, JSON, max_size=5)


@dataclasses.dataclass
class Inner:
    label: str
    weights: list[float]


@dataclasses.dataclass
class Record:
    name: str
    count: int
    scale: float
    flags: dict[str, bool]
    inner: Inner
    note: str | None = None


RECORDS = st.builds(
    Record,
    name=TEXT,
    count=st.integers(-(2**31), 2**31),
    scale=st.floats(allow_nan=False, allow_infinity=False),
    flags=st.dictionaries(TEXT, st.booleans(), max_size=3),
    inner=st.builds(Inner, label=TEXT, weights=st.lists(st.floats(-1e9, 1e9), max_size=4)),
    note=st.none() | TEXT,
)


class SurveyConfig(Config):
    defaults = {"band": "r"}


CONFIGS = JSON_DICTS.map(lambda d: SurveyConfig({"band": "g", **d}))

NPY_DTYPES = (
    hnp.integer_dtypes(endianness="=")
    | hnp.unsigned_integer_dtypes(endianness="=")
    | hnp.floating_dtypes(endianness="=")
    | hnp.complex_number_dtypes(endianness="=")
    | hnp.boolean_dtypes()
    | hnp.unicode_string_dtypes(max_len=8)
    | hnp.byte_string_dtypes(max_len=8)
    | hnp.datetime64_dtypes()
    | hnp.floating_dtypes(endianness=">")
)
NPY = hnp.arrays(NPY_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=6))

IMAGE_DTYPES = st.sampled_from(["u1", "i2", "i4", "i8", "f4", "f8", ">i2", ">f8", "u2"])
IMAGES = IMAGE_DTYPES.flatmap(
    lambda dt: hnp.arrays(np.dtype(dt), hnp.array_shapes(min_dims=1, max_dims=3, max_side=8))
)
HDF5_DTYPES = (
    hnp.integer_dtypes() | hnp.unsigned_integer_dtypes() | hnp.floating_dtypes(sizes=(32, 64))
)
HDF5_ARRAYS = hnp.arrays(HDF5_DTYPES, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6))

PICKLES = st.recursive(
    SCALARS | st.binary(max_size=16) | st.complex_numbers(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.tuples(inner, inner)
        | st.frozensets(st.integers(), max_size=3)
        | st.dictionaries(st.integers() | TEXT, inner, max_size=3)
    ),
    max_leaves=10,
)


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        np.testing.assert_array_equal(a, b)  # NaN == NaN here
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def _fits_same(a: np.ndarray, b: np.ndarray) -> None:
    # FITS stores big-endian: the value and dtype kind/size must survive, not the byte order.
    assert b.shape == a.shape and b.dtype.kind == a.dtype.kind
    assert b.dtype.itemsize == a.dtype.itemsize
    np.testing.assert_array_equal(a, b)


@dataclasses.dataclass
class Combo:
    id: str
    python_type: Any
    format: str
    values: st.SearchStrategy[Any]
    same: Callable[[Any, Any], None] = _same
    needs: str | None = None
    get_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


COMBOS = [
    Combo("dict-json", dict, "json", JSON_DICTS),
    Combo("list-json", list, "json", st.lists(JSON, max_size=5)),
    Combo("dataclass-json", Record, "json", RECORDS),
    Combo("dict-config", dict, "config", JSON_DICTS),
    Combo("Config-config", Config, "config", CONFIGS),
    Combo("dataclass-config", Record, "config", RECORDS),
    Combo("ndarray-npy", np.ndarray, "npy", NPY),
    Combo("object-pickle", object, "pickle", PICKLES, get_kwargs={"allow_pickle": True}),
    Combo("ndarray-fits", np.ndarray, "fits", IMAGES, _fits_same, needs="butler_fits"),
    Combo("ndarray-hdf5", np.ndarray, "hdf5", HDF5_ARRAYS, needs="butler_hdf5"),
]


@pytest.mark.parametrize("combo", COMBOS, ids=[c.id for c in COMBOS])
def test_round_trip(combo: Combo, storage_root: Repo) -> None:
    if combo.needs and find_spec(combo.needs) is None:
        pytest.skip(f"{combo.needs.replace('_', '-')} is not installed")
    b = storage_root.create()
    b.register_dataset_type("prop", combo.python_type, combo.format, dimensions={"visit": int})
    count = [0]

    @SETTINGS
    @given(value=combo.values)
    def round_trip(value: Any) -> None:
        count[0] += 1
        b.put(value, "prop", visit=count[0] % 3, overwrite=True)
        combo.same(value, b.get("prop", visit=count[0] % 3, **combo.get_kwargs))

    try:
        round_trip()
        assert b.verify().healthy
    finally:
        b.close()
    assert count[0] >= 1
