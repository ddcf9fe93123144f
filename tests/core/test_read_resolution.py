"""A get resolves a dataset once and keeps the answer (`Butler._resolve_read_at`): the
kept answer must be exactly what resolving again would give, for every input it
depends on, and `butler._json.loads` must be ``json.loads`` of the same bytes (and its
kept encoders ``json.dumps``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from butler import Butler, DatasetTypeError, FormatError, UnsafeFormatError
from butler._json import dumps_compact, dumps_sorted, loads
from butler.formats import json_ as json_format

from ._registries import own_registry


class Sub(dict):  # type: ignore[type-arg]
    """A dict subclass a reader may rebuild (its serializer is registered below)."""


def _own_registry_butler(b: Butler) -> Butler:
    """A Butler on ``b``'s repository with a registry of its own (`own_registry`)."""
    return Butler(b.storage.uri(), registry=own_registry())


def _set_metadata(b: Butler, key: str, **changes: Any) -> None:
    """Rewrite the stored metadata of ``key`` as a hostile writer of the repository would."""
    path = os.path.join(b.storage.root, key)  # type: ignore[attr-defined]
    meta = json.loads(os.getxattr(path, "user.butler"))
    meta.update(changes)
    os.setxattr(path, "user.butler", json.dumps(meta).encode())


def test_repeated_gets_match_a_fresh_butler(posix_repo: Butler) -> None:
    """Gets after the first (answered from the kept resolution) return what a Butler that
    never resolved anything returns, class included."""
    b = posix_repo
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    for i in range(3):
        b.put({"i": i}, "cfg", i=i)
    fresh = Butler(b.storage.uri())
    for i in range(3):
        got = b.get("cfg", i=i)
        assert got == fresh.get("cfg", i=i) == {"i": i}
        assert type(got) is dict
    assert len(b._read_resolutions) == 1  # one (format, class) seen: one kept answer


def test_a_different_recorded_format_is_resolved_again(posix_repo: Butler) -> None:
    """The kept answer is per recorded format: a dataset whose metadata names another
    format is not read with the first one's serializer."""
    b = posix_repo
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"i": 1}, "cfg", i=1)
    b.put({"i": 2}, "cfg", i=2)
    assert b.get("cfg", i=1) == {"i": 1}
    _set_metadata(b, "cfg/2.json", format="pickle")
    with pytest.raises(UnsafeFormatError, match="is a pickle"):
        b.get("cfg", i=2)  # read as what it records: pickle, refused by default
    _set_metadata(b, "cfg/2.json", format="../json")
    with pytest.raises(FormatError, match="not a format name"):
        b.get("cfg", i=2)


@pytest.mark.parametrize("value", [["json"], {"a": 1}, 7, None])
def test_unhashable_or_odd_metadata_values_are_errors_not_crashes(
    posix_repo: Butler, value: Any
) -> None:
    """Hostile metadata may hold any JSON where a name belongs: the resolution still says
    what is wrong (never a TypeError from the cache's key)."""
    b = posix_repo
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"i": 1}, "cfg", i=1)
    b.get("cfg", i=1)
    _set_metadata(b, "cfg/1.json", format=value)
    with pytest.raises(FormatError, match="not a format name"):
        b.get("cfg", i=1)
    _set_metadata(b, "cfg/1.json", format="json", python_type=value)
    if value is None:  # no recorded class: the dataset type's own
        assert b.get("cfg", i=1) == {"i": 1}
    else:
        with pytest.raises(FormatError, match="not a name"):
            b.get("cfg", i=1)


def test_a_recorded_subclass_is_not_read_as_the_kept_base_class(posix_repo: Butler) -> None:
    """A subclass written after a plain dict was read gets its own resolution."""
    b = _own_registry_butler(posix_repo)
    b.registry.register(Sub, "*", "json", "butler.formats.json_:write", "butler.formats.json_:read")
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"i": 1}, "cfg", i=1)
    b.put(Sub(i=2), "cfg", i=2)
    assert type(b.get("cfg", i=1)) is dict
    assert type(b.get("cfg", i=2)) is Sub
    assert type(b.get("cfg", i=1)) is dict


def test_a_serializer_registered_later_is_used(posix_repo: Butler) -> None:
    """The registry's generation is part of the kept answer: a serializer registered
    (with a higher priority) after a get serves the next get."""
    b = _own_registry_butler(posix_repo)
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"i": 1}, "cfg", i=1)
    assert b.get("cfg", i=1) == {"i": 1}
    b.registry.register(
        dict, "posix", "json", "butler.formats.json_:write", lambda location: "mine"
    )
    assert b.get("cfg", i=1) == "mine"


def test_a_redefined_dataset_type_is_resolved_again(posix_repo: Butler, tmp_path: Path) -> None:
    """A redefinition (by this or another process) builds a new location base, and with
    it a new resolution: a type changed to ``list`` refuses the stored dict."""
    b = posix_repo
    b.register_dataset_type("cfg", dict, "json", template="cfg/{i:d}.json")
    b.put({"i": 1}, "cfg", i=1)
    assert b.get("cfg", i=1) == {"i": 1}
    b.register_dataset_type("cfg", list, "json", template="cfg/{i:d}.json", overwrite=True)
    with pytest.raises((FormatError, DatasetTypeError), match="list"):
        b.get("cfg", i=1)


def test_failures_are_not_kept(
    posix_repo: Butler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused resolution is worked out again on the next get: allowing the import
    afterwards (``allow_imports``) makes the same dataset readable."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "resolution_mod_x.py").write_text("class Thing(dict):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.delitem(sys.modules, "resolution_mod_x", raising=False)
    b = posix_repo
    b.register_dataset_type("t", "resolution_mod_x.Thing", "json", template="t/{i:d}.json")
    key = "t/1.json"
    b.storage.write_bytes(
        key,
        b'{"a": 1}',
        metadata={"format": "json", "python_type": "resolution_mod_x.Thing", "run": "default"},
    )
    for _ in range(2):
        with pytest.raises(DatasetTypeError, match="allow_imports"):
            b.get("t", i=1)
    assert "resolution_mod_x" not in sys.modules
    b.allow_imports = ("resolution_mod_x",)
    got = b.get("t", i=1)
    assert type(got).__name__ == "Thing" and got == {"a": 1}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


def _outcome(raw: bytes) -> tuple[str, Any]:
    try:
        return "value", json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


def _ours(raw: bytes) -> tuple[str, Any]:
    try:
        return "value", loads(raw)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(
    value=JSON_VALUES,
    before=st.sampled_from(["", " ", "\n\t"]),
    after=st.sampled_from(["", " ", "\r\n", " x", "]", "{}", "\x00"]),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32", "utf-8-sig"]),
)
def test_loads_is_json_loads(value: Any, before: str, after: str, encoding: str) -> None:
    """Same value or same error (type and message) as ``json.loads``, whatever surrounds
    the document and however it is encoded."""
    raw = (before + json.dumps(value, ensure_ascii=False) + after).encode(encoding)
    assert _ours(raw) == _outcome(raw)


@settings(max_examples=200, deadline=None)
@given(value=JSON_VALUES | st.floats() | st.dictionaries(st.integers(), st.integers(), max_size=3))
def test_the_kept_encoders_are_json_dumps(value: Any) -> None:
    """`dumps_compact` / `dumps_sorted` and the json format's writer (one encoder each,
    built once) write what ``json.dumps`` with the same options writes: the digests stored
    in indexes and the bytes of json datasets depend on it."""
    assert dumps_compact(value) == json.dumps(value, separators=(",", ":"))
    assert dumps_sorted(value) == json.dumps(value, separators=(",", ":"), sort_keys=True)
    assert json_format._encode(value) == json.dumps(value, ensure_ascii=False)


def test_the_kept_encoders_raise_what_json_dumps_raises() -> None:
    for bad in ({"a": object()}, {(1, 2): 1}):
        with pytest.raises(TypeError) as ours:
            dumps_compact(bad)
        with pytest.raises(TypeError) as theirs:
            json.dumps(bad, separators=(",", ":"))
        assert str(ours.value) == str(theirs.value)
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_sorted(circular)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[", b'{"a":1}{"b":2}', b'{"a":"\xff"}', b'{"a":"\xed\xa0\x80"}', b"{\x00",
     b"[" * 100_000, b"[1] ", b"[1]\n\n", b'{"a":1} ,'],
)  # fmt: skip
def test_loads_on_broken_bytes_is_json_loads(raw: bytes) -> None:
    if raw == b'{"a":"\xff"}':  # invalid UTF-8: the decode error of json.loads itself
        with pytest.raises(UnicodeDecodeError):
            json.loads(raw)
        with pytest.raises(UnicodeDecodeError):
            loads(raw)
        return
    assert _ours(raw) == _outcome(raw)
