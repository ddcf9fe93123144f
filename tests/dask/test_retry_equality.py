"""A retried create-only `butler.dask.write` accepts an existing dataset only when it holds
the very same value: JSON keeps ``True`` apart from ``1`` and ``1.0`` from ``1``, so must
the comparison (``==`` says they are equal)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dask.bag")

import dask.bag as db

from butler import Butler, DatasetExistsError
from butler.dask import _equal, write

SAME: list[tuple[Any, Any]] = [
    ({"a": 1, "b": [1, 2.5, None]}, {"b": [1, 2.5, None], "a": 1}),
    ([{"x": "y"}], [{"x": "y"}]),
    ((1, "a"), (1, "a")),
]
DIFFERENT: list[tuple[Any, Any]] = [
    ({"a": True}, {"a": 1}),
    ({"a": 1.0}, {"a": 1}),
    ([0], [False]),
    ({"a": [1, {"b": 2.0}]}, {"a": [1, {"b": 2}]}),
    ({"a": 1}, {"a": 1, "b": 2}),
    ([1, 2], [1, 2, 3]),
    ({"a": math.nan}, {"a": 0.0}),
]


@pytest.mark.parametrize(("stored", "given"), SAME, ids=repr)
def test_same_values_are_equal(stored: Any, given: Any) -> None:
    assert _equal(stored, given)


@pytest.mark.parametrize(("stored", "given"), DIFFERENT, ids=repr)
def test_values_json_keeps_apart_are_different(stored: Any, given: Any) -> None:
    assert not _equal(stored, given)
    assert not _equal(given, stored)


def test_deep_nesting_never_raises() -> None:
    """Past `_MAX_DEPTH` levels ``==`` compares (a RecursionError there means: not shown
    equal, so the retry is refused rather than a different value accepted)."""

    def nested(n: int) -> Any:
        deep: Any = 1
        for _ in range(n):
            deep = [deep]
        return deep

    assert _equal(nested(100), nested(100))
    assert _equal(nested(5000), nested(5000)) in (True, False)
    assert not _equal(nested(100), nested(101))


def test_a_retry_with_a_bool_where_an_int_was_written_is_refused(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    write(b, "cfg", db.from_sequence([({"flag": 1}, {"visit": 1})])).compute(scheduler="sync")
    again = db.from_sequence([({"flag": 1}, {"visit": 1})])
    assert len(write(b, "cfg", again).compute(scheduler="sync")) == 1
    changed = db.from_sequence([({"flag": True}, {"visit": 1})])
    with pytest.raises(DatasetExistsError, match="holds a different object"):
        write(b, "cfg", changed).compute(scheduler="sync")
    assert b.get("cfg", visit=1) == {"flag": 1} and b.get("cfg", visit=1)["flag"] is not True
