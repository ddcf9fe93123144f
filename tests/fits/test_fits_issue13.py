"""Issue 13 (FITS side): files come back as astropy reads them, or are refused clearly.

Each test compares, value by value, with astropy reading the same file directly.
"""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import MaskedColumn, Table
from astropy.wcs import WCS

import butler
from butler import Butler, FormatError, ParameterError

DATA = Path(fits.__file__).parent / "tests" / "data"
WCS_DATA = Path(fits.__file__).parents[2] / "wcs" / "tests" / "data"


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- 1. random groups ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["group.fits", "random_groups.fits"])
def test_random_groups_as_array_refused_and_as_hdulist_equal(name: str) -> None:
    with pytest.raises(FormatError, match="random groups") as info:
        butler.read_file(str(DATA / name))
    assert "HDUList" in str(info.value)
    got = butler.read_file(str(DATA / name), python_type=fits.HDUList)
    with fits.open(DATA / name) as want:
        assert isinstance(got[0], fits.GroupsHDU)
        assert got[0].data.parnames == want[0].data.parnames
        np.testing.assert_array_equal(got[0].data.data, want[0].data.data)
        for par in set(want[0].data.parnames):
            np.testing.assert_array_equal(got[0].data.par(par), want[0].data.par(par))


# -- 2. a table HDU read as an array ---------------------------------------------------


@pytest.mark.parametrize("name", ["btable.fits", "tb.fits", "tdim.fits", "ascii.fits"])
def test_table_hdu_as_array_is_its_rows(name: str) -> None:
    rows = butler.read_file(str(DATA / name), parameters={"hdu": 1})
    with fits.open(DATA / name, character_as_bytes=True) as hdul:
        want = hdul[1].data
        assert rows.dtype.names == tuple(want.columns.names)
        assert len(rows) == len(want)
        for col in want.columns.names:
            np.testing.assert_array_equal(rows[col], np.asarray(want[col]))
            assert rows[col].dtype == np.asarray(want[col]).dtype


def test_variable_length_columns_as_array_refused() -> None:
    with pytest.raises(FormatError, match="variable-length") as info:
        butler.read_file(str(DATA / "variable_length_table.fits"), parameters={"hdu": 1})
    assert "'var'" in str(info.value) and "astropy.table.Table" in str(info.value)


# -- 3 and 10. CCDData cutouts, units, image --------------------------------------------


def _ccd() -> CCDData:
    wcs = WCS(naxis=2)
    wcs.wcs.crpix = [5, 6]
    wcs.wcs.cdelt = [-0.1, 0.1]
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    data = np.arange(120.0).reshape(10, 12)
    return CCDData(
        data,
        unit="adu",
        mask=(np.arange(120) % 7 == 0).reshape(10, 12),
        uncertainty=StdDevUncertainty(np.sqrt(data)),
        wcs=wcs,
        meta={"OBJECT": "M31"},
    )


@pytest.fixture
def ccd_repo(repo: Butler) -> Butler:
    repo.register_dataset_type("ccd", python_type=CCDData, format="fits", template="c/{v}")
    repo.put(_ccd(), "ccd", v=1)
    return repo


@pytest.mark.parametrize(
    "section", [(slice(2, 5), slice(3, 9)), (slice(None), slice(0, 4)), (slice(1, 8, 2),)]
)
def test_ccddata_section_slices_everything_consistently(
    ccd_repo: Butler, section: tuple[Any, ...]
) -> None:
    got = ccd_repo.get("ccd", v=1, parameters={"section": section})
    want = _ccd()[section]
    np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_array_equal(got.mask, want.mask)
    np.testing.assert_array_equal(got.uncertainty.array, want.uncertainty.array)
    np.testing.assert_array_equal(got.wcs.wcs.crpix, want.wcs.wcs.crpix)
    assert got.unit == want.unit and got.meta["OBJECT"] == "M31"


def test_ccddata_section_that_does_not_fit_refused(ccd_repo: Butler) -> None:
    with pytest.raises(FormatError, match="does not fit the CCDData of shape"):
        ccd_repo.get("ccd", v=1, parameters={"section": (0, 0, 0)})


def test_ccddata_file_read_as_array_gives_its_image(tmp_path: Path) -> None:
    written = tmp_path / "written.fits"
    butler.write_file(_ccd(), str(written))
    path = tmp_path / "frame.fits"  # the bytes only: the header still says CCDData
    shutil.copyfile(written, path)
    got = butler.read_file(str(path), python_type=np.ndarray)
    with fits.open(path) as hdul:
        np.testing.assert_array_equal(got, hdul[0].data)
        assert got.dtype == hdul[0].data.dtype


def test_ccddata_without_bunit_needs_and_takes_a_unit(tmp_path: Path) -> None:
    path = tmp_path / "raw.fits"
    fits.PrimaryHDU(np.arange(6.0).reshape(2, 3)).writeto(path)
    with pytest.raises(FormatError, match=r"no BUNIT.*parameters=\{'unit'"):
        butler.read_file(str(path), python_type=CCDData)
    got = butler.read_file(str(path), python_type=CCDData, parameters={"unit": "electron"})
    want = CCDData.read(path, unit="electron")
    assert got.unit == want.unit
    np.testing.assert_array_equal(got.data, want.data)


# -- 4. declared parameters and serializer arguments --------------------------------------


@pytest.mark.parametrize("parameters", [{"sectoin": (slice(0, 1),)}, {"slice": (slice(0, 1),)}])
def test_unknown_parameters_refused(repo: Butler, parameters: dict[str, Any]) -> None:
    repo.register_dataset_type("img", python_type=np.ndarray, format="fits", template="i/{v}")
    repo.put(np.ones((3, 3)), "img", v=1)
    with pytest.raises(ParameterError) as info:
        repo.get("img", v=1, parameters=parameters)
    message = str(info.value)
    assert repr(next(iter(parameters))) in message
    assert "columns, hdu, section, unit" in message


def test_unknown_serializer_args_refused_at_registration(repo: Butler) -> None:
    with pytest.raises(ParameterError, match=r"checksun.*checksum, compress"):
        repo.register_dataset_type(
            "img", python_type=np.ndarray, format="fits", serializer_args={"checksun": True}
        )
    repo.register_dataset_type(
        "ok",
        python_type=np.ndarray,
        format="fits",
        serializer_args={
            "checksum": True,
            "compress": "GZIP_2",
            "compress_args": {"quantize_level": 0},
            "per_storage": {"s3": {"block_size": 65536, "cache_blocks": 4}},
        },
    )


# -- 7 and 15. tables as Table.read gives them, and back --------------------------------


@pytest.mark.parametrize("name", ["chandra_time.fits", "checksum.fits", "memtest.fits"])
def test_time_column_tables_round_trip(repo: Butler, name: str) -> None:
    want = Table.read(DATA / name, hdu=1)
    got = butler.read_file(str(DATA / name), python_type=Table)
    _assert_tables_equal(got, want)
    repo.register_dataset_type("t", python_type=Table, format="fits", template="t/{v}")
    repo.put(got, "t", v=1)
    back = repo.get("t", v=1)
    _assert_tables_equal(back, want)
    assert list(back.meta.items()) == list(want.meta.items())


def test_foreign_table_strings_are_bytes_and_nans_masked(tmp_path: Path) -> None:
    path = tmp_path / "other.fits"
    cols = [
        fits.Column(name="name", format="8A", array=np.array([b"a  ", b"bb", b""])),
        fits.Column(name="flux", format="D", array=np.array([1.0, np.nan, 3.0])),
    ]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    got = butler.read_file(str(path), python_type=Table)
    want = Table.read(path)
    _assert_tables_equal(got, want)
    assert got["name"].dtype.kind == "S" and got["name"].data[0] == b"a"
    assert isinstance(got["flux"], MaskedColumn) and list(got["flux"].mask) == [0, 1, 0]


def _assert_tables_equal(got: Table, want: Table) -> None:
    assert got.colnames == want.colnames
    for name in want.colnames:
        g, w = got[name], want[name]
        assert type(g) is type(w), name
        assert g.dtype == w.dtype, name
        assert g.unit == w.unit, name
        np.testing.assert_array_equal(np.ma.getmaskarray(g), np.ma.getmaskarray(w))
        np.testing.assert_array_equal(np.ma.getdata(g), np.ma.getdata(w))


# -- 13. table meta, EXTNAME, comments, header size ------------------------------------


def test_table_meta_order_extname_comments_units(tmp_path: Path) -> None:
    table = Table({"a": [1, 2], "b": [1.5, 2.5]})
    table["a"].unit = "erg / (s cm2)"
    table["b"].unit = "count"
    table.meta.update(
        {
            "zeta": 1,
            "EXTNAME": "EVENTS",
            "alpha": 2.5 * u.m,
            "comments": ["hello", "world"],
            "HISTORY": ["made here"],
            "OBJECT": "M31",
            "nested": {"x": [1, 2]},
            "SUM": 0.1 + 0.2,
        }
    )
    path = tmp_path / "t.fits"
    butler.write_file(table, str(path))
    back = butler.read_file(str(path), python_type=Table)
    assert list(back.meta) == list(table.meta)
    for key, value in table.meta.items():
        assert back.meta[key] == value and type(back.meta[key]) is type(value), key
    assert back["a"].unit == table["a"].unit and back["b"].unit == table["b"].unit
    with fits.open(path) as hdul:
        assert hdul[1].name == "EVENTS"
        header = hdul[1].header
        assert header["OBJECT"] == "M31" and list(header["COMMENT"])[-2:] == ["hello", "world"]
        # written once: as cards, or (those cards cannot hold exactly) as YAML
        assert sum("M31" in str(card.value) for card in header.cards) == 1


def test_table_header_no_bigger_than_astropys_plus_bookkeeping(tmp_path: Path) -> None:
    table = Table.read(DATA / "chandra_time.fits", hdu=1)
    for column in table.itercols():  # astropy writes masks as TNULL, butler as columns
        if isinstance(column, MaskedColumn):
            table[column.name] = column.filled()
    ours, theirs = tmp_path / "ours.fits", tmp_path / "theirs.fits"
    butler.write_file(table, str(ours))
    table.write(theirs)
    assert len(fits.getheader(ours, 1)) <= len(fits.getheader(theirs, 1)) + 12


# -- 14. a put never modifies what it is given ------------------------------------------


def _bad_header() -> fits.Header:
    cards = ["SIMPLE  =                    T", "FOO     = 1.0.0 / bad", "bar     =      1"]
    return fits.Header.fromstring("".join(c.ljust(80) for c in cards) + "END".ljust(80))


def test_failed_header_put_leaves_the_header_as_given(tmp_path: Path) -> None:
    header = _bad_header()
    before = [card._image for card in header.cards]
    for attempt in ("h1.fits", "h2.fits"):  # a retry fails the same way
        with pytest.raises(FormatError, match="not FITS standard"):
            butler.write_file(header, str(tmp_path / attempt))
        assert [card._image for card in header.cards] == before


def test_hdulist_put_leaves_headers_and_arrays_as_given(tmp_path: Path) -> None:
    image = np.arange(12, dtype="<f8").reshape(3, 4)
    hdul = fits.HDUList([fits.PrimaryHDU(image)])
    cards = len(hdul[0].header)
    Butler.create(str(tmp_path / "r"))
    repo = Butler(str(tmp_path / "r"))
    repo.register_dataset_type(
        "h",
        python_type=fits.HDUList,
        format="fits",
        template="h/{v}",
        serializer_args={"checksum": True},
    )
    repo.put(hdul, "h", v=1)
    assert "CHECKSUM" not in hdul[0].header and len(hdul[0].header) == cards
    assert hdul[0].data is image and image.dtype.str == "<f8"
    np.testing.assert_array_equal(image, np.arange(12.0).reshape(3, 4))


def test_array_put_never_byteswaps_the_callers_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = np.arange(1000, dtype="<i4").reshape(10, 100)
    seen: list[bool] = []
    original = fits.file._File.writearray

    def spy(self: Any, array: Any) -> Any:
        seen.append(np.shares_memory(array, image))
        return original(self, array)

    monkeypatch.setattr(fits.file._File, "writearray", spy)
    butler.write_file(image, str(tmp_path / "a.fits"))
    assert seen == [False]
    np.testing.assert_array_equal(butler.read_file(str(tmp_path / "a.fits")), image)


# -- 8. SIMPLE = F ---------------------------------------------------------------------


def test_nonstandard_file_reads_as_astropy_and_is_refused_elsewhere(tmp_path: Path) -> None:
    path = WCS_DATA / "header_with_time.fits"
    got = butler.read_file(str(path), python_type=fits.HDUList)
    with fits.open(path) as want:
        assert len(got) == len(want) == 1
        assert [tuple(c) for c in got[0].header.cards] == [tuple(c) for c in want[0].header.cards]
    with pytest.raises(FormatError, match=r"NonstandardHDU.*HDUList"):
        butler.read_file(str(path))
    with pytest.raises(FormatError, match="non-standard HDU"):
        butler.write_file(got, str(tmp_path / "copy.fits"))


# -- 9. names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.fit", "a.fts", "a.fit.gz", "a.fts.gz", "a.fits.gz"])
def test_fits_file_names_identified(tmp_path: Path, name: str) -> None:
    source = DATA / "test0.fits"
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(source.read_bytes()))
    else:
        shutil.copyfile(source, path)
    got = butler.read_file(str(path))
    np.testing.assert_array_equal(got, fits.getdata(source))


def test_gzip_stream_identified_by_content() -> None:
    from butler_fits._checks import identify

    data = gzip.compress((DATA / "test0.fits").read_bytes())
    assert identify(data[:512]) and identify(data[:64]) is False  # too short to inflate
    assert not identify(gzip.compress(b'{"a": 1}' * 100)[:512])


def test_fpack_name_identified(tmp_path: Path) -> None:
    path = tmp_path / "img.fz"
    shutil.copyfile(DATA / "comp.fits", path)
    assert butler.default_registry().identify_format("img.fz") == "fits"
    np.testing.assert_array_equal(butler.read_file(str(path)), fits.getdata(DATA / "comp.fits"))
