"""numpy arrays in HDF5: exact round trips, files checked with h5py, filters, selections."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

from butler import Butler, FormatError, ParameterError  # noqa: E402

DTYPES = [
    "bool",
    "int8",
    "uint8",
    "<i2",
    ">i2",
    "<i4",
    ">u4",
    "<i8",
    ">i8",
    "<f2",
    "<f4",
    ">f4",
    "<f8",
    ">f8",
    "<c8",
    ">c16",
    "S7",
    "<U5",
    ">U3",
    "<M8[ns]",
    ">m8[s]",
]


class Image(np.ndarray):
    """A user subclass that must come back as itself."""


def _values(dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return np.array([[True, False, True], [False, False, True]], dtype=dt)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dt)
    if dt.kind == "f":
        info = np.finfo(dt)
        return np.array([[np.nan, -np.inf, np.inf], [info.max, info.tiny, -0.0]], dtype=dt)
    if dt.kind == "c":
        return np.array([[1 + 2j, np.nan, -3j], [0, 1e30, -1e-30]], dtype=dt)
    if dt.kind == "S":
        return np.array([[b"a", b"", b"1234567"], [b"\x01\xff", b"x y", b"z"]], dtype=dt)
    if dt.kind == "U":
        return np.array([["é", "", "abc"], ["日本", "x y", "z"]], dtype=dt)
    if dt.kind == "M":
        return np.array([["2020-01-01", "NaT", "1970-01-01"], ["2262-04-11"] * 3], dtype=dt)
    return np.array([[1, -2, 3], [0, 10**6, -(10**6)]], dtype=dt)


def _same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    assert a.dtype == b.dtype
    assert a.shape == b.shape
    if a.dtype.kind in "fc":
        np.testing.assert_array_equal(a, b)  # NaN == NaN here
        assert np.array_equal(np.signbit(a.real), np.signbit(b.real))
    else:
        assert np.array_equal(a, b) or (a.dtype.kind in "Mm" and np.array_equal(a, b, True))


def _array_type(butler: Butler, **kwargs: Any) -> None:
    butler.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"i": int}, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(repo: Butler, dtype: str) -> None:
    _array_type(repo)
    values = _values(dtype)
    repo.put(values, "arr", i=1)
    _same(repo.get("arr", i=1), values)


def test_files_hold_native_hdf5_types(posix_repo: Butler, file_of: Any) -> None:
    _array_type(posix_repo)
    for i, dtype in enumerate(DTYPES):
        values = _values(dtype)
        posix_repo.put(values, "arr", i=i)
        with h5py.File(file_of(posix_repo, "arr", i=i), "r") as f:
            dataset = f["data"]
            assert dataset.shape == values.shape
            assert dataset.attrs["butler.python_type"] == "numpy.ndarray"
            raw = dataset[()]
            if values.dtype.kind == "U":  # stored as UTF-8 text any HDF5 reader decodes
                assert h5py.check_string_dtype(dataset.dtype).encoding == "utf-8"
                assert dataset.asstr()[()].tolist() == values.tolist()
            elif values.dtype.kind in "Mm":  # stored as int64 counts of the unit
                assert raw.dtype == np.dtype(values.dtype.str[0] + "i8")
                assert np.array_equal(raw, values.view(raw.dtype))
            else:
                assert raw.dtype == values.dtype  # byte order kept, no conversion
                _same(raw, values)


@pytest.mark.parametrize(
    "values",
    [
        np.zeros((0,), dtype="f8"),
        np.zeros((3, 0, 2), dtype=">i4"),
        np.zeros((0,), dtype="U4"),
        np.array(3.5),
        np.array("scalar é"),
        np.arange(24, dtype="f4").reshape(2, 3, 4)[:, ::2, 1:],  # non-contiguous view
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    ],
    ids=["empty", "empty-3d", "empty-str", "0d", "0d-str", "view", "fortran"],
)
def test_round_trip_shapes(repo: Butler, values: np.ndarray) -> None:
    _array_type(repo)
    repo.put(values, "arr", i=1)
    _same(repo.get("arr", i=1), values)


STRUCT = np.dtype(
    [
        ("id", ">i8"),
        ("flux", "<f4", (2,)),
        ("name", "U6"),
        ("tag", "S3"),
        ("ok", "?"),
        ("when", "M8[ms]"),
        ("pos", [("ra", "f8"), ("dec", "f8")]),
    ]
)


def _records(n: int = 20) -> np.ndarray:
    values = np.zeros(n, dtype=STRUCT)
    values["id"] = np.arange(n) * 10**12
    values["flux"] = np.arange(2 * n, dtype="f4").reshape(n, 2)
    values["flux"][3] = np.nan
    values["name"] = [f"s{i}é" for i in range(n)]
    values["tag"] = [b"ab", b"", b"xyz", b"q"] * (n // 4)
    values["ok"] = np.arange(n) % 3 == 0
    values["when"] = np.datetime64("2026-01-01", "ms") + np.arange(n)
    values["pos"]["ra"] = np.linspace(0, 360, n)
    values["pos"]["dec"] = -np.linspace(-90, 90, n)
    return values


def _same_records(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype.names == b.dtype.names and a.shape == b.shape
    for name in a.dtype.names or ():
        if a.dtype[name].names:
            _same_records(a[name], b[name])
        else:
            assert a[name].dtype == b[name].dtype, name
            np.testing.assert_array_equal(a[name], b[name])


def test_structured_round_trip(repo: Butler) -> None:
    _array_type(repo)
    values = _records()
    repo.put(values, "arr", i=1)
    back = repo.get("arr", i=1)
    assert back.dtype == values.dtype
    _same_records(back, values)
    record = np.rec.array(values)  # record arrays are ndarray subclasses: kept as such
    repo.put(record, "arr", i=2)
    back = repo.get("arr", i=2)
    assert isinstance(back, np.recarray)
    _same_records(np.asarray(back), values)
    assert back.pos.ra[5] == values["pos"]["ra"][5]


def test_structured_file_is_compound(posix_repo: Butler, file_of: Any) -> None:
    _array_type(posix_repo)
    values = _records()
    posix_repo.put(values, "arr", i=1)
    with h5py.File(file_of(posix_repo, "arr", i=1), "r") as f:
        dataset = f["data"]
        assert dataset.dtype.names == values.dtype.names
        assert np.array_equal(dataset["id"], values["id"])
        assert dataset.dtype["id"] == np.dtype(">i8")
        assert [s.decode() for s in dataset["name"]] == values["name"].tolist()


def test_subclass_round_trips_as_itself(repo: Butler) -> None:
    _array_type(repo)
    image = np.arange(12.0).reshape(3, 4).view(Image)
    repo.put(image, "arr", i=1)
    back = repo.get("arr", i=1)
    assert type(back) is Image
    assert np.array_equal(back, image)
    cut = repo.get("arr", i=1, parameters={"slice": (slice(1, 3),)})
    assert type(cut) is Image and np.array_equal(cut, image[1:3])


def test_subclass_recorded_in_file(posix_repo: Butler, file_of: Any) -> None:
    _array_type(posix_repo)
    posix_repo.put(np.zeros(3).view(Image), "arr", i=1)
    with h5py.File(file_of(posix_repo, "arr", i=1), "r") as f:
        assert f["data"].attrs["butler.python_type"] == f"{__name__}.Image"


def test_foreign_subclass_name_is_refused(posix_repo: Butler, file_of: Any) -> None:
    _array_type(posix_repo)
    posix_repo.put(np.zeros(3), "arr", i=1)
    with h5py.File(file_of(posix_repo, "arr", i=1), "r+") as f:
        f["data"].attrs["butler.python_type"] = "collections.OrderedDict"
    with pytest.raises(FormatError, match=r"'arr'.*'collections.OrderedDict'"):
        posix_repo.get("arr", i=1)


@pytest.mark.parametrize(
    ("args", "compression", "opts"),
    [
        ({"compression": "gzip", "compression_opts": 7}, "gzip", 7),
        ({"compression": "lzf"}, "lzf", None),
        ({"compression": "gzip", "shuffle": True, "chunks": (16, 64)}, "gzip", 4),
        ({"chunks": (100, 7)}, None, None),
    ],
)
def test_filters_and_chunks_in_file(
    posix_repo: Butler, file_of: Any, args: dict[str, Any], compression: Any, opts: Any
) -> None:
    _array_type(posix_repo, serializer_args=args)
    values = np.tile(np.arange(64, dtype="f4"), (50, 1))
    posix_repo.put(values, "arr", i=1)
    with h5py.File(file_of(posix_repo, "arr", i=1), "r") as f:
        dataset = f["data"]
        assert dataset.compression == compression
        assert dataset.compression_opts == opts
        assert dataset.shuffle == bool(args.get("shuffle"))
        if "chunks" in args:  # clipped to the data's shape
            wanted = tuple(min(c, n) for c, n in zip(args["chunks"], values.shape, strict=True))
            assert dataset.chunks == wanted
        else:
            assert dataset.chunks is not None  # filters need chunks: h5py chose them
        assert np.array_equal(dataset[()], values)
    assert np.array_equal(posix_repo.get("arr", i=1), values)


def test_compression_on_memory_and_scalars(repo: Butler) -> None:
    _array_type(repo, serializer_args={"compression": "gzip", "chunks": (4,)})
    for i, values in enumerate([np.arange(10), np.array(2.0), np.zeros(0)]):
        repo.put(values, "arr", i=i)  # scalars and empty arrays are stored unfiltered
        _same(repo.get("arr", i=i), values)


def test_per_storage_serializer_args(posix_repo: Butler, file_of: Any) -> None:
    _array_type(
        posix_repo,
        serializer_args={"compression": "lzf", "per_storage": {"posix": {"compression": "gzip"}}},
    )
    posix_repo.put(np.arange(100), "arr", i=1)
    with h5py.File(file_of(posix_repo, "arr", i=1), "r") as f:
        assert f["data"].compression == "gzip"


def test_bad_serializer_args(repo: Butler) -> None:
    _array_type(repo, serializer_args={"compression": "zstd-please"})
    with pytest.raises(FormatError, match=r"'arr'.*unknown hdf5 compression 'zstd-please'"):
        repo.put(np.arange(4), "arr", i=1)
    # A misspelt argument is refused when the dataset type is defined, naming the accepted.
    with pytest.raises(ParameterError, match=r"\['compresion'\]; accepted: .*compression"):
        _array_type(repo, serializer_args={"compresion": "gzip"}, overwrite=True)
    assert not repo.exists("arr", i=1)


def test_additional_data_path(repo: Butler) -> None:
    _array_type(repo, additional_data={"path": "/science/images/main"})
    values = np.arange(6.0).reshape(2, 3)
    repo.put(values, "arr", i=1)
    _same(repo.get("arr", i=1), values)
    if repo.storage.type_name == "posix":
        path = f"{repo.storage.root}/{repo.location('arr', i=1).key}"
        with h5py.File(path, "r") as f:
            assert list(f) == ["science"]
            assert np.array_equal(f["science/images/main"][()], values)


def test_path_missing_in_file(repo: Butler) -> None:
    _array_type(repo)
    repo.put(np.arange(3), "arr", i=1)
    repo.register_dataset_type(
        "arr",
        "numpy.ndarray",
        "hdf5",
        dimensions={"i": int},
        additional_data={"path": "elsewhere"},
        overwrite=True,
    )
    with pytest.raises(FormatError, match=r"'arr'.*nothing at '/elsewhere'.*\['data'\]"):
        repo.get("arr", i=1)
