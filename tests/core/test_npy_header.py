"""The ``.npy`` header reader (`butler.formats.npy._read_header`): numpy's answer for every
header, the plain ones read without `ast` (CPython 3.11's AST conversion is not
thread-safe: concurrent gets raised "SystemError: AST constructor recursion depth
mismatch"), and hostile headers refused."""

from __future__ import annotations

import ast
import io
import threading
from typing import Any

import numpy as np
import pytest
from numpy.lib import format as npf

from butler import Butler, FormatError
from butler.formats.npy import _read_header

ARRAYS = [
    np.zeros(()),
    np.arange(5),
    np.ones((3, 4), ">f4"),
    np.ones((2, 3, 4), order="F"),
    np.array(["ab", "c"]),
    np.zeros((0, 3), "u1"),
    np.zeros(3, "M8[ns]"),
    np.zeros(3, "m8[s]"),
    np.zeros(3, complex),
    np.array([b"x"]),
    np.zeros((1,), "V16"),
    np.zeros((1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), "f2"),
    np.zeros(2, [("a", "<f4"), ("b", "<i8", (2,))]),  # structured: numpy's own reader
]


def _saved(array: Any, version: tuple[int, int] | None = None) -> io.BytesIO:
    out = io.BytesIO()
    if version is None:
        np.save(out, array)
    else:
        npf.write_array(out, array, version=version)
    out.seek(0)
    return out


def _numpy_reads(f: io.BytesIO) -> tuple[Any, int]:
    version = npf.read_magic(f)
    reader = getattr(npf, "_read_array_header", None)
    if reader is None:  # numpy 2 keeps it in the implementation module
        from numpy.lib import _format_impl

        reader = _format_impl._read_array_header
    return reader(f, version), f.tell()


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}-{a.shape}")
def test_the_header_numpy_reads(array: Any, version: tuple[int, int] | None) -> None:
    f = _saved(array, version)
    got = _read_header(f)
    at = f.tell()
    expected, expected_at = _numpy_reads(_saved(array, version))
    assert got == expected
    assert at == expected_at


def test_plain_headers_never_reach_ast(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("a", "numpy.ndarray", "npy", dimensions={"i": int})
    b.put(np.arange(12.0).reshape(3, 4), "a", i=1)  # (imports numpy.ma, which uses ast)

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("ast.literal_eval called")

    monkeypatch.setattr(ast, "literal_eval", refuse)
    for array in ARRAYS[:-1]:
        assert _read_header(_saved(array))[2] == array.dtype
    np.testing.assert_array_equal(b.get("a", i=1), np.arange(12.0).reshape(3, 4))
    with pytest.raises(AssertionError, match="literal_eval"):  # structured: numpy's reader
        _read_header(_saved(ARRAYS[-1]))


@pytest.mark.parametrize(
    "header",
    [
        "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999999, 99999999999), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (-1,), }",
        "{'descr': 'nonsense', 'fortran_order': False, 'shape': (1,), }",
        "{'descr': '<f8', 'fortran_order': 1, 'shape': (1,), }",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'x': __import__('os'), }",
        "not a dict at all",
    ],
)
def test_hostile_headers_are_format_errors(tmp_path: Any, header: str) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("a", "numpy.ndarray", "npy", dimensions={"i": int})
    b.put(np.zeros(2), "a", i=1)
    path = tmp_path / "repo" / "a" / "1.npy"
    text = header.encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    raw = b"\x93NUMPY\x01\x00" + (len(text) + pad + 1).to_bytes(2, "little")
    data = raw + text + b" " * pad + b"\n" + bytes(16)
    # butler's metadata (an xattr) stays: only the bytes are replaced, behind its back
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
    with pytest.raises(FormatError):
        b.get("a", i=1)


def test_threads_reading_structured_and_plain_arrays_at_once(tmp_path: Any) -> None:
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("a", "numpy.ndarray", "npy", dimensions={"i": int})
    for i, array in enumerate(ARRAYS):
        b.put(array, "a", i=i)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(30):
                for i, array in enumerate(ARRAYS):
                    assert b.get("a", i=i).dtype == array.dtype
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
