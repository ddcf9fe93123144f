"""HDF5 files written by other tools (pandas, PyTables, netCDF4, xarray, h5py) read through
butler equal what h5py (and, for CF-packed variables, xarray) read, or are refused with a
clear `ButlerError`; what butler reads survives a round trip through posix and S3."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

import butler  # noqa: E402
from butler import Butler, UnsafeFormatError  # noqa: E402

# -- files ------------------------------------------------------------------------------


def _pandas_fixed(path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    frame = pd.DataFrame({"a": np.arange(5), "b": np.linspace(0, 1, 5), "c": list("vwxyz")})
    frame.to_hdf(path, key="frame", format="fixed")


def _pandas_table(path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("tables")
    frame = pd.DataFrame({"a": np.arange(5), "b": np.linspace(0, 1, 5)})
    frame.to_hdf(path, key="frame", format="table", data_columns=True)


def _pytables(path: Path) -> None:
    tables = pytest.importorskip("tables")

    class Row(tables.IsDescription):
        name = tables.StringCol(8)
        energy = tables.Float64Col()
        count = tables.Int32Col()

    with tables.open_file(str(path), "w", title="pytables file") as f:
        group = f.create_group("/", "detector", "Detector info")
        table = f.create_table(group, "events", Row, "events")
        for i in range(4):
            table.row["name"] = f"ev{i}".encode()
            table.row["energy"] = 1.5 * i
            table.row["count"] = i
            table.row.append()
        table.flush()
        table.attrs.units = "keV"
        f.create_array("/", "array", np.arange(6).reshape(2, 3), "an array")
        f.create_carray("/", "carray", obj=np.ones((10, 10)), filters=tables.Filters(complevel=5))


def _netcdf4(path: Path) -> None:
    netcdf4 = pytest.importorskip("netCDF4")
    with netcdf4.Dataset(path, "w") as ds:
        ds.title = "netCDF4 test"
        ds.createDimension("time", 3)
        ds.createDimension("x", 4)
        time = ds.createVariable("time", "f8", ("time",))
        time.units = "days since 2000-01-01"
        time[:] = [0, 1, 2]
        packed = ds.createVariable("t2m", "i2", ("time", "x"), fill_value=-32767)
        packed.scale_factor = np.float32(0.01)
        packed.add_offset = np.float32(273.15)
        packed.units = "K"
        packed.set_auto_maskandscale(False)
        packed[:] = np.array([[0, 1, 2, 3], [100, -32767, 5, 6], [7, 8, 9, 10]], dtype="i2")
        plain = ds.createVariable("plain", "f4", ("x",), fill_value=np.float32(-999))
        plain.long_name = "plain floats"
        plain[:] = [1.0, 2.0, 3.0, 4.0]
        grp = ds.createGroup("sub")
        grp.createVariable("counts", "i4", ("x",))[:] = [1, 2, 3, 4]
        grp.comment = "in a group"
        words = ds.createVariable("words", str, ("x",))
        words[:] = np.array(["a", "bb", "ccc", "é"], dtype=object)


def _xarray(engine: str) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        xr = pytest.importorskip("xarray")
        pytest.importorskip("netCDF4" if engine == "netcdf4" else "h5netcdf")
        dataset = xr.Dataset(
            {
                "temp": (("t", "x"), np.arange(12.0).reshape(3, 4), {"units": "degC"}),
                "flag": (("x",), np.array([1, 0, 1, 1], dtype="i1")),
            },
            coords={"x": [10, 20, 30, 40], "t": np.array([0.0, 0.5, 1.0])},
            attrs={"history": "made by xarray"},
        )
        dataset["temp"].encoding = {
            "dtype": "int16",
            "scale_factor": 0.1,
            "add_offset": 0.0,
            "_FillValue": -9999,
        }
        dataset.to_netcdf(path, engine=engine)

    make.__name__ = f"_xarray_{engine}"
    return make


def _h5py(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["creator"] = "h5py"
        f.attrs["numbers"] = np.array([1, 2, 3], dtype="i2")
        grp = f.create_group("a/b")
        grp.attrs["level"] = np.float64(2.5)
        grp.create_dataset("scalar_int", data=np.int64(7))
        grp.create_dataset("scalar_str", data="text", dtype=h5py.string_dtype())
        records = np.array(
            [(1, 2.5, b"x"), (3, 4.5, b"yz")], dtype=[("i", "<i4"), ("f", ">f8"), ("s", "S2")]
        )
        f.create_dataset("compound", data=records)
        f.create_dataset(
            "vlen_str", data=np.array(["é", "bb"], dtype=object), dtype=h5py.string_dtype()
        )
        f.create_dataset("fixed_str", data=np.array([b"abc", b"d"], dtype="S3"))
        chunked = f.create_dataset(
            "chunked", data=np.arange(1000.0).reshape(10, 100), chunks=(5, 50), compression="gzip"
        )
        chunked.attrs["units"] = "m"
        f.create_dataset("bools", data=np.array([True, False]))
        f["soft"] = h5py.SoftLink("/chunked")


def _h5py_external_link(path: Path) -> None:
    with h5py.File(path.with_name("target.h5"), "w") as f:
        f.create_dataset("data", data=np.arange(3))
    with h5py.File(path, "w") as f:
        f.create_dataset("own", data=np.arange(2))
        f["outside"] = h5py.ExternalLink(str(path.with_name("target.h5")), "/data")


FILES: dict[str, Callable[[Path], None]] = {
    "pandas-fixed": _pandas_fixed,
    "pandas-table": _pandas_table,
    "pytables": _pytables,
    "netcdf4": _netcdf4,
    "xarray-netcdf4": _xarray("netcdf4"),
    "xarray-h5netcdf": _xarray("h5netcdf"),
    "h5py": _h5py,
}
#: Read equal, but writing the dict back is refused: pandas' fixed format keeps object
#: columns as variable-length uint8 (pickled) datasets, read as object arrays of arrays.
ROUND_TRIP_REFUSED = {"pandas-fixed": r"block2_values: arrays of Python objects"}
REFUSED: dict[str, tuple[Callable[[Path], None], type[Exception], str]] = {
    "h5py-external-link": (
        _h5py_external_link,
        UnsafeFormatError,
        r"'/outside' is an external link",
    ),
}


# -- comparison -------------------------------------------------------------------------


def _same_value(got: Any, expected: Any, where: str) -> None:
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert got.shape == expected.shape, where
        if expected.dtype.kind == "O":  # variable-length: text (butler gives str) or arrays
            for x, y in zip(got.flat, expected.flat, strict=True):
                if isinstance(y, np.ndarray):
                    np.testing.assert_array_equal(x, y, err_msg=where)
                else:
                    assert x == (y.decode() if isinstance(y, bytes) else y), where
            return
        assert got.dtype == expected.dtype, where
        np.testing.assert_array_equal(got, expected, err_msg=where)
    elif isinstance(expected, bytes) and isinstance(got, str):
        assert got == expected.decode(), where
    else:
        assert type(got) is type(expected) and got == expected, where


def _same_attrs(got: dict[str, Any], node: Any, where: str) -> None:
    """butler's attributes equal h5py's, but butler's own and those holding references."""
    from butler_hdf5._attrs import _holds_references

    expected = {
        k: node.attrs[k]
        for k in node.attrs
        if not k.startswith("butler.") and not _holds_references(node.attrs.get_id(k).dtype)
    }
    assert set(got) == set(expected), where
    for key, value in expected.items():
        _same_value(got[key], value, f"{where}@{key}")


def _compare(got: dict[str, Any], group: Any, where: str = "/") -> None:
    """``got`` (a dict read by butler) equals what h5py reads from ``group``."""
    attrs = got.get("@attrs", {})
    encoding = got.get("@encoding", {})
    _same_attrs(attrs.get(".", {}), group, where)
    names = [n for n in got if not n.startswith("@")]
    assert names == list(group), where
    for name in names:
        node, path = group[name], f"{where.rstrip('/')}/{name}"
        if isinstance(node, h5py.Group):
            _compare(got[name], node, path)
            continue
        member_attrs = dict(attrs.get(name, {}))
        if name in encoding:  # decoded: compare the packing with the file, values below
            member_attrs.update({k: v for k, v in encoding[name].items() if k != "dtype"})
            assert encoding[name]["dtype"] == node.dtype.str, path
        else:
            _same_value(got[name], node[()], path)
        _same_attrs(member_attrs, node, path)


def _compare_packed_with_xarray(got: dict[str, Any], path: Path) -> int:
    """Decoded CF-packed variables equal what xarray decodes; returns how many."""
    xr = pytest.importorskip("xarray")
    count = 0
    with xr.open_dataset(path, engine="h5netcdf", decode_times=False) as dataset:
        for name in got.get("@encoding", {}):
            expected = dataset[name].values
            assert got[name].dtype == expected.dtype, name
            np.testing.assert_array_equal(got[name], expected, err_msg=name)
            count += 1
    return count


def _same_dict(a: Any, b: Any, where: str = "") -> None:
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same_dict(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b or (a != a and b != b), where


@pytest.fixture
def posix_repo(butler_repo: Callable[..., Butler]) -> Butler:
    return butler_repo("posix")


# -- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("tool", sorted(FILES))
def test_reads_equal_h5py_and_round_trips(tool: str, tmp_path: Path, posix_repo: Butler) -> None:
    path = tmp_path / f"{tool}.h5"
    FILES[tool](path)
    got = butler.read_file(str(path))
    with h5py.File(path, "r") as f:
        _compare(got, f)
    if "@encoding" in got or "netcdf" in tool:
        _compare_packed_with_xarray(got, path)
    # Round trips: a standalone file and a posix repository give back the same dict.
    if tool in ROUND_TRIP_REFUSED:
        with pytest.raises(butler.FormatError, match=ROUND_TRIP_REFUSED[tool]):
            butler.write_file(got, str(tmp_path / "back.h5"))
        assert not (tmp_path / "back.h5").exists()
        return
    butler.write_file(got, str(tmp_path / "back.h5"))
    _same_dict(butler.read_file(str(tmp_path / "back.h5")), got)
    posix_repo.register_dataset_type("d", dict, "hdf5", dimensions={"i": int})
    posix_repo.put(got, "d", i=1)
    _same_dict(posix_repo.get("d", i=1), got)


@pytest.mark.parametrize("tool", ["netcdf4", "h5py"])
def test_round_trips_through_s3(tool: str, tmp_path: Path, s3_repo: Butler) -> None:
    path = tmp_path / f"{tool}.h5"
    FILES[tool](path)
    got = butler.read_file(str(path))
    s3_repo.register_dataset_type("d", dict, "hdf5", dimensions={"i": int})
    s3_repo.put(got, "d", i=1)
    _same_dict(s3_repo.get("d", i=1), got)
    name = "chunked" if tool == "h5py" else "t2m"
    part = s3_repo.get("d", i=1, parameters={"path": name})
    assert list(part) == [name, "@attrs"] + (["@encoding"] if name == "t2m" else [])
    np.testing.assert_array_equal(part[name], got[name])


def test_one_dataset_by_path(tmp_path: Path) -> None:
    path = tmp_path / "n.nc"
    _netcdf4(path)
    array = butler.read_file(str(path), python_type="numpy.ndarray", parameters={"path": "t2m"})
    xr = pytest.importorskip("xarray")
    with xr.open_dataset(path, engine="netcdf4") as dataset:
        np.testing.assert_array_equal(array, dataset["t2m"].values)
    counts = butler.read_file(str(path), parameters={"path": "sub/counts"})
    np.testing.assert_array_equal(counts["counts"], [1, 2, 3, 4])


@pytest.mark.parametrize("tool", sorted(REFUSED))
def test_refused_with_a_clear_error(tool: str, tmp_path: Path) -> None:
    make, error, message = REFUSED[tool]
    path = tmp_path / f"{tool}.h5"
    make(path)
    with pytest.raises(error, match=message):
        butler.read_file(str(path))


def test_external_links_refused_alike_on_every_storage(
    tmp_path: Path, posix_repo: Butler, s3_repo: Butler
) -> None:
    path = tmp_path / "ext.h5"
    _h5py_external_link(path)
    messages = []
    for repo in (posix_repo, s3_repo):
        repo.register_dataset_type("d", dict, "hdf5", dimensions={"i": int})
        repo.storage.write_bytes(repo.location("d", i=1).key, path.read_bytes())
        with pytest.raises(UnsafeFormatError) as info:
            repo.get("d", i=1)
        messages.append(str(info.value).split(".h5': ", 1)[1])
    assert messages[0] == messages[1]
    assert "'/outside' is an external link" in messages[0]
