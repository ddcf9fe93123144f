"""HDF5 attributes survive every read and round trip; CF packing is decoded, never raw in
silence; ``parameters={"path": ...}`` reads one dataset; unknown parameters are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("butler_hdf5", reason="butler-hdf5 is not installed")
h5py = pytest.importorskip("h5py")

import butler  # noqa: E402
from butler import Butler, FormatError, ParameterError  # noqa: E402


def _foreign(path: Path) -> Path:
    """A file as another program writes it: attributes on the root, groups and datasets."""
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "survey"
        f.attrs["version"] = np.int32(3)
        f.attrs["fixed"] = np.bytes_(b"DIMENSION_SCALE")
        grp = f.create_group("grp")
        grp.attrs["origin"] = "lab"
        ds = grp.create_dataset("temp", data=np.linspace(0, 1, 5).astype("f4"))
        ds.attrs["units"] = "K"
        ds.attrs["valid_range"] = np.array([0.0, 10.0])
        ds.attrs["long_name"] = "température"
        f.create_dataset("plain", data=np.arange(3))
    return path


def _same_attr(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def _same_attrs(got: dict[str, Any], node: Any) -> None:
    expected = {k: v for k, v in node.attrs.items() if not k.startswith("butler.")}
    assert list(got) == list(expected)
    for key, value in expected.items():
        _same_attr(got[key], value)


def test_dict_read_carries_attributes(tmp_path: Path) -> None:
    path = _foreign(tmp_path / "x.h5")
    got = butler.read_file(str(path))
    with h5py.File(path, "r") as f:
        _same_attrs(got["@attrs"]["."], f)
        _same_attrs(got["grp"]["@attrs"]["."], f["grp"])
        _same_attrs(got["grp"]["@attrs"]["temp"], f["grp/temp"])
        assert "plain" not in got["@attrs"]  # no attributes, no entry
        np.testing.assert_array_equal(got["grp"]["temp"], f["grp/temp"][()])
    assert got["grp"]["@attrs"]["temp"]["units"] == "K"
    bare = butler.read_file(str(path), parameters={"attrs": False})
    assert "@attrs" not in bare and "@attrs" not in bare["grp"]


def test_attributes_survive_a_round_trip(tmp_path: Path, posix_repo: Butler) -> None:
    path = _foreign(tmp_path / "x.h5")
    got = butler.read_file(str(path))
    butler.write_file(got, str(tmp_path / "back.h5"))
    posix_repo.register_dataset_type("d", dict, "hdf5", dimensions={"i": int})
    posix_repo.put(got, "d", i=1)
    for back in (butler.read_file(str(tmp_path / "back.h5")), posix_repo.get("d", i=1)):
        assert list(back) == list(got)
        for group in ("@attrs",):
            assert list(back[group]) == list(got[group])
        for where in (".",):
            for key, value in got["@attrs"][where].items():
                _same_attr(back["@attrs"][where][key], value)
        for key, value in got["grp"]["@attrs"]["temp"].items():
            _same_attr(back["grp"]["@attrs"]["temp"][key], value)
    with h5py.File(path, "r") as f, h5py.File(tmp_path / "back.h5", "r") as g:
        for name in ("/", "/grp", "/grp/temp"):
            _same_attrs({k: v for k, v in g[name].attrs.items() if not k.startswith("butler.")},
                        f[name])  # fmt: skip


def test_the_caller_dict_is_not_modified(tmp_path: Path) -> None:
    value = {"a": np.arange(3.0), "@attrs": {"a": {"units": "m"}, ".": {"t": 1}}}
    butler.write_file(value, str(tmp_path / "x.h5"))
    assert value == {"a": value["a"], "@attrs": {"a": {"units": "m"}, ".": {"t": 1}}}
    with h5py.File(tmp_path / "x.h5", "r") as f:
        assert f["a"].attrs["units"] == "m" and f.attrs["t"] == 1


def _packed(path: Path) -> tuple[Path, np.ndarray]:
    raw = np.array([[0, 100, -32767], [250, 32767, 7]], dtype="<i2")
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("t2m", data=raw, fillvalue=-32767)
        ds.attrs["scale_factor"] = np.float32(0.01)
        ds.attrs["add_offset"] = np.float32(273.15)
        ds.attrs["_FillValue"] = np.array([-32767], dtype="<i2")  # netCDF: a 1-element array
        ds.attrs["units"] = "K"
    return path, raw


def _decoded(raw: np.ndarray) -> np.ndarray:
    # What xarray.open_dataset gives (float32 for int16 packed with float32 attributes).
    out = raw.astype(np.float32)
    out[raw == -32767] = np.nan
    out *= np.float32(0.01)
    out += np.float32(273.15)
    return out


def test_packed_variable_is_decoded_not_raw(tmp_path: Path) -> None:
    path, raw = _packed(tmp_path / "p.h5")
    got = butler.read_file(str(path))
    assert got["t2m"].dtype == np.float32
    np.testing.assert_array_equal(got["t2m"], _decoded(raw))
    assert np.isnan(got["t2m"][0, 2])
    assert got["@attrs"]["t2m"] == {"units": "K"}
    encoding = got["@encoding"]["t2m"]
    assert encoding["dtype"] == "<i2" and encoding["scale_factor"] == np.float32(0.01)
    # Arrays read by path are decoded the same way.
    array = butler.read_file(str(path), python_type="numpy.ndarray", parameters={"path": "t2m"})
    np.testing.assert_array_equal(array, _decoded(raw))
    # The raw stored values only when asked for, with the packing attributes beside them.
    plain = butler.read_file(str(path), parameters={"mask_and_scale": False})
    assert plain["t2m"].dtype == np.int16 and "@encoding" not in plain
    np.testing.assert_array_equal(plain["t2m"], raw)
    assert plain["@attrs"]["t2m"]["scale_factor"] == np.float32(0.01)


def test_packed_variable_round_trips_packed(tmp_path: Path) -> None:
    path, raw = _packed(tmp_path / "p.h5")
    got = butler.read_file(str(path))
    butler.write_file(got, str(tmp_path / "back.h5"))
    with h5py.File(tmp_path / "back.h5", "r") as f:
        assert f["t2m"].dtype == np.dtype("<i2")
        np.testing.assert_array_equal(f["t2m"][()], raw)  # packed again, bit for bit
        assert f["t2m"].attrs["add_offset"] == np.float32(273.15)
    back = butler.read_file(str(tmp_path / "back.h5"))
    np.testing.assert_array_equal(back["t2m"], got["t2m"])


def test_undecodable_packing_is_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("s", data=np.array([b"a", b"b"]))
        f["s"].attrs["scale_factor"] = 2.0
    with pytest.raises(FormatError, match=r"'/s' declares CF packing.*'mask_and_scale': False"):
        butler.read_file(str(tmp_path / "p.h5"))
    got = butler.read_file(str(tmp_path / "p.h5"), parameters={"mask_and_scale": False})
    assert list(got["s"]) == [b"a", b"b"]


def test_path_parameter_reads_one_dataset(tmp_path: Path) -> None:
    path = _foreign(tmp_path / "x.h5")
    got = butler.read_file(str(path), parameters={"path": "grp/temp"})
    assert list(got) == ["temp", "@attrs"]
    assert list(got["@attrs"]) == ["temp"]  # the group's own attributes are not asked for
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(got["temp"], f["grp/temp"][()])
    array = butler.read_file(str(path), python_type="numpy.ndarray", parameters={"path": "plain"})
    np.testing.assert_array_equal(array, np.arange(3))
    group = butler.read_file(str(path), parameters={"path": "/grp"})
    assert list(group) == ["temp", "@attrs"] and group["@attrs"]["."]["origin"] == "lab"
    with pytest.raises(FormatError, match=r"nothing at '/nope'.*\['grp', 'plain'\]"):
        butler.read_file(str(path), parameters={"path": "nope"})


def test_unknown_parameters_and_arguments_are_refused(tmp_path: Path, posix_repo: Butler) -> None:
    path = _foreign(tmp_path / "x.h5")
    with pytest.raises(ParameterError, match=r"\['section'\]; accepted: .*fields.*path.*slice"):
        butler.read_file(str(path), parameters={"section": (slice(0, 2),)})
    with pytest.raises(ParameterError, match=r"\['checksum'\]; accepted: .*compression"):
        posix_repo.register_dataset_type(
            "a", "numpy.ndarray", "hdf5", dimensions={"i": int}, serializer_args={"checksum": 1}
        )
    with pytest.raises(FormatError, match=r"'attrs' must be True or False"):
        butler.read_file(str(path), parameters={"attrs": "no"})


def test_declared_arguments_match_the_writers() -> None:
    from butler_hdf5 import _plugin, h5py_

    assert {*h5py_.DATASET_ARGS, *h5py_.READ_ARGS} == _plugin.SERIALIZER_ARGS


def test_reserved_names_in_a_file_are_refused(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "r.h5", "w") as f:
        f.create_dataset("@attrs", data=1)
    with pytest.raises(FormatError, match=r"'/@attrs' has a name butler reserves"):
        butler.read_file(str(tmp_path / "r.h5"))


def test_bad_attributes_on_write_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"attributes or encoding given for 'b'.*\['a'\]"):
        butler.write_file({"a": 1, "@attrs": {"b": {"x": 1}}}, str(tmp_path / "a.h5"))
    with pytest.raises(FormatError, match=r"'butler.kind' cannot be an attribute name"):
        butler.write_file({"a": 1, "@attrs": {"a": {"butler.kind": 1}}}, str(tmp_path / "b.h5"))
    with pytest.raises(FormatError, match=r"NaN values but no '_FillValue'"):
        butler.write_file(
            {"a": np.array([np.nan]), "@encoding": {"a": {"scale_factor": 2.0, "dtype": "i2"}}},
            str(tmp_path / "c.h5"),
        )


def test_attribute_sizes_count_against_the_read_limit(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "big.h5", "w", libver="latest") as f:
        f.create_dataset("x", data=np.zeros(4))
        f["x"].attrs["huge"] = np.zeros(200_000)  # 1.6 MB, dense attribute storage
    with pytest.raises(FormatError, match=r"declares|limit"):
        butler.read_file(str(tmp_path / "big.h5"), max_read_bytes=100_000)
    got = butler.read_file(str(tmp_path / "big.h5"), max_read_bytes=100_000,
                           parameters={"attrs": False})  # fmt: skip
    assert list(got) == ["x"]


def test_table_keeps_units_descriptions_and_meta(tmp_path: Path, posix_repo: Butler) -> None:
    table_mod = pytest.importorskip("astropy.table")
    units = pytest.importorskip("astropy.units")
    table = table_mod.Table(
        {"flux": [1.5, 2.5], "name": ["a", "b"]},
        meta={"zeta": 1, "alpha": "two", "EXTNAME": "CAT"},
    )
    table["flux"].unit = units.Jy
    table["flux"].description = "integrated flux"
    table["flux"].format = ".3f"
    butler.write_file(table, str(tmp_path / "t.h5"))
    posix_repo.register_dataset_type("cat", "astropy.table.Table", "hdf5", dimensions={"i": int})
    posix_repo.put(table, "cat", i=1)
    read = butler.read_file(str(tmp_path / "t.h5"), python_type="astropy.table.Table")
    for back in (read, posix_repo.get("cat", i=1)):
        assert back["flux"].unit == units.Jy
        assert back["flux"].description == "integrated flux"
        assert back["flux"].format == ".3f"
        assert list(back.meta.items()) == list(table.meta.items())  # order kept
        assert list(back["name"]) == ["a", "b"]
