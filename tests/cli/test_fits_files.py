"""FITS files through the CLI keep what they hold, or say what is dropped (issue 13, items 5, 6).

``butler put`` reads FILE as the dataset type's python type: a ``numpy.ndarray`` dataset type
drops the header cards and the other HDUs, and the CLI says so on stderr. ``butler convert``
without ``--type`` reads a FITS file as its whole ``HDUList`` when the destination format can
write one, refuses when reading it as an array would drop HDUs holding data, and warns when
it would drop header cards. Every check compares with astropy reading the same files.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("butler_fits")
fits = pytest.importorskip("astropy.io.fits")
np = pytest.importorskip("numpy")
from astropy.table import Table  # noqa: E402

import butler  # noqa: E402
from butler import Butler, Registry  # noqa: E402
from butler._plugins import discover  # noqa: E402

HDULIST = "astropy.io.fits.HDUList"

Cli = Callable[..., Any]


def ok(result: Any) -> Any:
    assert result.exit_code == 0, result.output + result.stderr
    return result


def cards(header: Any) -> list[tuple[str, Any, str]]:
    return [(c.keyword, c.value, c.comment) for c in header.cards]


def assert_same_fits(a: Path, b: Path) -> None:
    """Every HDU of ``a`` and ``b``: same class, name, header cards and data."""
    with fits.open(a) as x, fits.open(b) as y:
        assert [type(h).__name__ for h in x] == [type(h).__name__ for h in y]
        for hx, hy in zip(x, y, strict=True):
            assert hx.name == hy.name
            assert cards(hx.header) == cards(hy.header)
            if isinstance(hx, fits.BinTableHDU):
                assert hx.columns.names == hy.columns.names
                for name in hx.columns.names:
                    np.testing.assert_array_equal(hx.data[name], hy.data[name])
            else:
                assert hx.data.dtype == hy.data.dtype
                np.testing.assert_array_equal(hx.data, hy.data)


@pytest.fixture
def fitsfiles(tmp_path: Path) -> dict[str, Path]:
    """``multi`` (image + table + image, header cards), ``image`` (one HDU with cards),
    ``bare`` (one HDU, layout cards only)."""
    folder = tmp_path / "fits"
    folder.mkdir()
    header = fits.Header([("OBJECT", "M31", "target"), ("EXPTIME", 30.5, "[s]")])
    catalog = Table({"id": [1, 2, 3], "flux": [1.5, 2.5, 3.5]})
    catalog["flux"].unit = "Jy"
    files = {name: folder / f"{name}.fits" for name in ("multi", "image", "bare")}
    fits.HDUList(
        [
            fits.PrimaryHDU(np.arange(6.0).reshape(2, 3), header=header),
            fits.BinTableHDU(catalog, name="CAT"),
            fits.ImageHDU(np.full((2, 2), 7, dtype="i2"), name="SCI"),
        ]
    ).writeto(files["multi"])
    fits.PrimaryHDU(np.arange(12, dtype="f4").reshape(3, 4), header=header).writeto(files["image"])
    fits.PrimaryHDU(np.arange(4.0)).writeto(files["bare"])
    return files


# -- item 6: butler put of a FITS file ------------------------------------------------


@pytest.fixture
def fits_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    b = Butler.create(str(root))
    b.register_dataset_type("img", "numpy.ndarray", "fits", dimensions={"visit": int})
    b.register_dataset_type("whole", HDULIST, "fits", dimensions={"visit": int})
    return root


def test_put_as_array_warns_that_the_header_is_dropped(
    cli: Cli, fits_repo: Path, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    result = ok(cli("put", fits_repo, "img", fitsfiles["image"], "--id", "visit=1"))
    assert result.stderr == (
        f"butler: warning: '{fitsfiles['image']}' read as numpy.ndarray keeps only HDU "
        f"0:PRIMARY: dropping 2 header card(s) (OBJECT, EXPTIME); to keep them, store FILE in "
        f"a dataset type defined with --type {HDULIST}\n"
    )
    ok(cli("get", fits_repo, "img", "--id", "visit=1", "-o", tmp_path / "out.fits"))
    np.testing.assert_array_equal(
        fits.getdata(tmp_path / "out.fits"), fits.getdata(fitsfiles["image"])
    )


def test_put_multi_hdu_as_array_names_the_dropped_hdus(
    cli: Cli, fits_repo: Path, fitsfiles: dict[str, Path]
) -> None:
    result = ok(cli("put", fits_repo, "img", fitsfiles["multi"], "--id", "visit=1"))
    assert "dropping 2 header card(s) (OBJECT, EXPTIME) and HDU(s) 1:CAT (table, 3 rows), " \
        "2:SCI (image 2x2)" in result.stderr  # fmt: skip
    assert f"--type {HDULIST}" in result.stderr


def test_put_header_less_file_as_array_is_silent(
    cli: Cli, fits_repo: Path, fitsfiles: dict[str, Path]
) -> None:
    result = ok(cli("put", fits_repo, "img", fitsfiles["bare"], "--id", "visit=1"))
    assert result.stderr == ""
    got = Butler(str(fits_repo)).get("img", visit=1)
    np.testing.assert_array_equal(got, fits.getdata(fitsfiles["bare"]))


def test_put_hdu_picks_one_hdu_knowingly(
    cli: Cli, fits_repo: Path, fitsfiles: dict[str, Path]
) -> None:
    result = ok(cli("put", fits_repo, "img", fitsfiles["multi"], "--hdu", "SCI", "--id", "visit=2"))
    assert result.stderr == ""
    got = Butler(str(fits_repo)).get("img", visit=2)
    expected = fits.getdata(fitsfiles["multi"], extname="SCI")
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_put_as_hdulist_keeps_every_hdu_and_card(
    cli: Cli, fits_repo: Path, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    result = ok(cli("put", fits_repo, "whole", fitsfiles["multi"], "--id", "visit=1"))
    assert result.stderr == ""
    ok(cli("get", fits_repo, "whole", "--id", "visit=1", "-o", tmp_path / "back.fits"))
    assert_same_fits(fitsfiles["multi"], tmp_path / "back.fits")


def test_put_hdu_with_hdulist_is_refused(
    cli: Cli, fits_repo: Path, fitsfiles: dict[str, Path]
) -> None:
    result = cli("put", fits_repo, "whole", fitsfiles["multi"], "--hdu", "1", "--id", "visit=1")
    assert result.exit_code == 1
    assert result.stderr == (
        f"butler: error: ParameterError: --hdu 1: {HDULIST} reads every HDU of "
        f"'{fitsfiles['multi']}'; drop --hdu\n"
    )


# -- item 5: butler convert of a FITS file --------------------------------------------


def test_convert_fits_to_fits_keeps_every_hdu(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "copy.fits"
    result = ok(cli("convert", fitsfiles["multi"], out))
    assert result.stderr == ""
    assert_same_fits(fitsfiles["multi"], out)


def test_convert_multi_hdu_to_npy_is_refused(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "x.npy"
    result = cli("convert", fitsfiles["multi"], out)
    assert result.exit_code == 1 and not out.exists()
    message = result.stderr
    assert message.startswith("butler: error: NoSerializerError: ")
    for part in (
        "would keep only HDU 0:PRIMARY",
        "HDU(s) 1:CAT (table, 3 rows), 2:SCI (image 2x2)",
        "2 header card(s) (OBJECT, EXPTIME)",
        f"no installed serializer writes {HDULIST} as npy",
        "--hdu N",
        "--hdu N --type astropy.table.Table",
        "keeps every HDU: fits",
    ):
        assert part in message, (part, message)


def test_convert_one_hdu_to_npy_warns_about_the_cards(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "x.npy"
    result = ok(cli("convert", fitsfiles["image"], out))
    assert result.stderr.startswith(
        f"butler: warning: '{fitsfiles['image']}' read as numpy.ndarray keeps only HDU "
        f"0:PRIMARY: dropping 2 header card(s) (OBJECT, EXPTIME); formats that keep them: fits"
    )
    assert result.stderr.rstrip().endswith("; --hdu N picks another HDU")
    expected = fits.getdata(fitsfiles["image"])
    got = np.load(out)
    assert got.dtype == expected.dtype  # astropy's big-endian dtype, as astropy gives it
    np.testing.assert_array_equal(got, expected)


def test_convert_layout_only_fits_to_npy_is_silent(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    result = ok(cli("convert", fitsfiles["bare"], tmp_path / "x.npy"))
    assert result.stderr == ""
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), fits.getdata(fitsfiles["bare"]))


def test_convert_explicit_type_warns_what_it_drops(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    result = ok(cli("convert", fitsfiles["multi"], tmp_path / "x.npy", "--type", "numpy.ndarray"))
    assert "read as numpy.ndarray keeps only HDU 0:PRIMARY: dropping 2 header card(s) " \
        "(OBJECT, EXPTIME) and HDU(s) 1:CAT (table, 3 rows), 2:SCI (image 2x2)" \
        in result.stderr  # fmt: skip
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), fits.getdata(fitsfiles["multi"]))


def test_convert_hdu_flag_on_a_format_without_hdus(
    cli: Cli, files: dict[str, Path], tmp_path: Path
) -> None:
    result = cli("convert", files["npy"], tmp_path / "x.json", "--hdu", "1")
    assert result.exit_code == 1
    assert result.stderr.startswith("butler: error: ParameterError: --hdu 1: ")
    assert "['hdu']" in result.stderr


# -- item 5 with HDF5: refused until an HDUList serializer for hdf5 is installed ------


def _fake_write(obj: Any, location: Any, **_: Any) -> None:
    import h5py

    buffer = io.BytesIO()
    obj.writeto(buffer)
    with location.local_path_for_write() as path, h5py.File(path, "w") as f:
        f["fits"] = np.frombuffer(buffer.getvalue(), dtype="u1")


def _fake_read(location: Any, **_: Any) -> Any:
    import h5py

    with location.local_path() as path, h5py.File(path, "r") as f:
        data = f["fits"][()].tobytes()
    return fits.HDUList.fromstring(data)


def _registry(*, hdulist_hdf5: bool) -> Registry:
    """Every installed plugin's declarations, with or without an HDUList serializer for
    hdf5 (a fake one that keeps the FITS bytes, standing in for butler-hdf5's)."""
    found = discover().registry
    reg = Registry()
    for spec in found.storages.values():
        reg.register_storage(spec)
    for descriptor in found.formats.values():
        reg.register_format(descriptor)
    for s in found.serializers.values():
        if not (s.python_type == HDULIST and s.format == "hdf5"):
            reg.register(s.python_type, s.storage, s.format, s.write_ref, s.read_ref)
    if hdulist_hdf5:
        reg.register(HDULIST, "*", "hdf5", _fake_write, _fake_read)
    return reg


@pytest.fixture
def use_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Registry], None]]:
    import butler._plugins

    def use(reg: Registry) -> None:
        monkeypatch.setattr(butler._plugins, "default_registry", lambda: reg)

    yield use


def test_convert_multi_hdu_to_hdf5_without_hdulist_serializer_is_refused(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path, use_registry: Any
) -> None:
    pytest.importorskip("butler_hdf5")
    use_registry(_registry(hdulist_hdf5=False))
    out = tmp_path / "x.h5"
    result = cli("convert", fitsfiles["multi"], out)
    assert result.exit_code == 1 and not out.exists()
    assert "no installed serializer writes astropy.io.fits.HDUList as hdf5" in result.stderr
    assert "--hdu N --type astropy.table.Table" in result.stderr


def test_convert_table_hdu_to_hdf5_with_hdu_and_type(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path, use_registry: Any
) -> None:
    pytest.importorskip("butler_hdf5")
    use_registry(_registry(hdulist_hdf5=False))
    out = tmp_path / "cat.h5"
    result = cli(
        "convert", fitsfiles["multi"], out, "--hdu", "CAT", "--type", "astropy.table.Table"
    )
    ok(result)
    got = butler.read_file(str(out), python_type=Table)
    expected = Table.read(fitsfiles["multi"], hdu="CAT")
    assert got.colnames == expected.colnames
    assert got["flux"].unit == expected["flux"].unit
    for name in expected.colnames:
        np.testing.assert_array_equal(got[name], expected[name])


def test_convert_multi_hdu_to_hdf5_keeps_every_hdu_when_a_serializer_exists(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path, use_registry: Any
) -> None:
    pytest.importorskip("h5py")
    reg = _registry(hdulist_hdf5=True)
    use_registry(reg)
    out = tmp_path / "x.h5"
    result = ok(cli("convert", fitsfiles["multi"], out))
    assert result.stderr == ""
    back = tmp_path / "back.fits"
    butler.read_file(str(out), python_type=HDULIST, registry=reg).writeto(back)
    assert_same_fits(fitsfiles["multi"], back)


def test_convert_multi_hdu_to_hdf5_with_the_installed_serializer(
    cli: Cli, fitsfiles: dict[str, Path], tmp_path: Path
) -> None:
    """The real butler-hdf5 HDUList serializer, once installed: every HDU comes back."""
    reg = butler.default_registry()
    entry = next(
        (s for s in reg.serializers.values() if s.python_type == HDULIST and s.format == "hdf5"),
        None,
    )
    if entry is None:
        pytest.skip("no HDUList serializer for hdf5 installed")
    module = str(entry.write_ref).partition(":")[0]
    pytest.importorskip(module)
    out = tmp_path / "x.h5"
    result = ok(cli("convert", fitsfiles["multi"], out))
    assert result.stderr == ""
    ok(cli("convert", out, tmp_path / "back.fits"))
    assert_same_fits(fitsfiles["multi"], tmp_path / "back.fits")
