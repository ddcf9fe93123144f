"""CCDData and HDUList components: each one read directly equals the same component of the
whole read, on posix, memory, SQLite and S3; sections apply; errors name what exists."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, StdDevUncertainty
from astropy.wcs import WCS

from butler import Butler, ComponentError, component_catalog

COMPONENTS = ("data", "mask", "uncertainty", "wcs", "meta", "header", "unit")


class MyCCD(CCDData):
    """A subclass: components and the whole come back from its file."""


def _wcs() -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [16.0, 10.0]
    w.wcs.cdelt = [-5e-5, 5e-5]
    return w


def make_ccd(cls: type[CCDData] = CCDData, shape: tuple[int, int] = (40, 64)) -> CCDData:
    rng = np.random.default_rng(7)
    return cls(
        rng.normal(size=shape).astype(np.float32),
        unit="electron",
        mask=rng.random(shape) > 0.8,
        uncertainty=InverseVariance(rng.random(shape) + 1.0),
        wcs=_wcs(),
        meta={"OBJECT": "COSMOS", "EXPTIME": 30.0},
    )


def assert_same(name: str, got: Any, expected: Any) -> None:
    """Compare one component with astropy's and numpy's own tools."""
    if name in ("data", "mask"):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, expected)
        # Same kind and size; a section read directly comes native-endian where astropy's
        # whole read leaves big-endian FITS order.
        assert got.dtype.newbyteorder("=") == expected.dtype.newbyteorder("=")
    elif name == "uncertainty":
        assert type(got) is type(expected)
        np.testing.assert_array_equal(got.array, expected.array)
    elif name == "wcs":
        assert isinstance(got, WCS)
        assert got.to_header() == expected.to_header()
    elif name in ("meta", "header"):
        assert list(got.items()) == list(expected.items())
    else:
        assert got == expected


@pytest.fixture(params=["posix", "memory", "sqlite", "s3"])
def any_repo(request: pytest.FixtureRequest, butler_repo: Callable[..., Butler]) -> Butler:
    b = butler_repo(request.param)
    b.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    return b


def test_every_component_read_directly_equals_the_whole_reads(any_repo: Butler) -> None:
    any_repo.put(make_ccd(), "calexp", visit=1)
    whole = any_repo.get("calexp", visit=1)
    for name in COMPONENTS:
        got = any_repo.get(f"calexp.{name}", visit=1)
        expected = whole.meta if name == "header" else getattr(whole, name)
        assert_same(name, got, expected)


def test_a_section_applies_to_components(any_repo: Butler) -> None:
    any_repo.put(make_ccd(), "calexp", visit=1)
    section = (slice(5, 17), slice(20, 41))
    cut = any_repo.get("calexp", visit=1, parameters={"section": section})
    for name in ("data", "mask", "uncertainty", "wcs"):
        got = any_repo.get(f"calexp.{name}", visit=1, parameters={"section": section})
        assert_same(name, got, getattr(cut, name))
    assert any_repo.get("calexp.mask", visit=1, parameters={"section": section}).shape == (12, 21)


def test_the_direct_reader_is_what_reads_them() -> None:
    """FITS declares the direct read; the components are not extracted from a whole read."""
    catalog = component_catalog()
    reader = catalog.reader(CCDData, "s3", "fits", "wcs")
    assert reader is not None and reader.distribution == "butler-fits"
    assert catalog.reader(fits.HDUList, "posix", "fits", "SCI") is not None
    assert catalog.find(MyCCD) is catalog.find(CCDData)


def test_wcs_on_s3_fetches_the_header_not_the_image(
    s3_repo: Butler, opened: list[tuple[dict[str, Any], Any]]
) -> None:
    s3_repo.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    s3_repo.put(make_ccd(shape=(512, 512)), "calexp", visit=1)
    size = s3_repo.storage.size(s3_repo.location("calexp", visit=1).key)
    opened.clear()
    wcs = s3_repo.get("calexp.wcs", visit=1)
    fetched = sum(f.bytes_fetched for _, f in opened)
    assert wcs.wcs.crval[0] == pytest.approx(150.1)
    assert opened[0][0]["access"] == "random"
    assert fetched <= 64 * 1024 < size / 20, (fetched, size)
    opened.clear()
    s3_repo.get("calexp.mask", visit=1)
    mask_fetched = sum(f.bytes_fetched for _, f in opened)
    # The mask HDU (one byte per pixel, as uint8) and headers: not the float image and
    # the float64 uncertainty.
    assert mask_fetched < size / 3, (mask_fetched, size)


def test_the_written_subclass_holds_for_the_whole_and_its_components(any_repo: Butler) -> None:
    ccd = make_ccd(MyCCD)
    ccd.uncertainty = StdDevUncertainty(np.full(ccd.shape, 0.5))
    any_repo.put(ccd, "calexp", visit=2)
    assert type(any_repo.get("calexp", visit=2)) is MyCCD
    assert type(any_repo.get("calexp.uncertainty", visit=2)) is StdDevUncertainty


def test_absent_optional_components_are_none(any_repo: Butler) -> None:
    any_repo.put(CCDData(np.zeros((3, 4)), unit="adu"), "calexp", visit=3)
    assert any_repo.get("calexp.mask", visit=3) is None
    assert any_repo.get("calexp.uncertainty", visit=3) is None
    assert any_repo.get("calexp.unit", visit=3) == "adu"


def test_an_unknown_component_names_the_ones_that_exist(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    posix_repo.put(make_ccd(), "calexp", visit=1)
    with pytest.raises(ComponentError) as info:
        posix_repo.get("calexp.psf", visit=1)
    message = str(info.value)
    assert "'psf'" in message and "CCDData" in message
    assert "['data', 'header', 'mask', 'meta', 'uncertainty', 'unit', 'wcs']" in message
    with pytest.raises(ComponentError, match="has no component 'psf'"):
        posix_repo.exists("calexp.psf", visit=1)
    assert posix_repo.exists("calexp.wcs", visit=1)
    assert not posix_repo.exists("calexp.wcs", visit=9)


def test_get_many_reads_components(posix_repo: Butler) -> None:
    posix_repo.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    for visit in range(4):
        ccd = make_ccd(shape=(8, 8))
        ccd.wcs.wcs.crval = [10.0 + visit, 2.0]
        posix_repo.put(ccd, "calexp", visit=visit)
    wcss = posix_repo.get_many("calexp.wcs", [{"visit": v} for v in range(4)])
    assert [w.wcs.crval[0] for w in wcss] == [10.0, 11.0, 12.0, 13.0]


def _hdulist() -> fits.HDUList:
    return fits.HDUList(
        [
            fits.PrimaryHDU(np.arange(6, dtype=np.int16).reshape(2, 3)),
            fits.ImageHDU(np.ones((4, 4)), name="SCI"),
            fits.BinTableHDU.from_columns(
                [fits.Column(name="flux", format="D", array=np.array([1.0, 2.0]))], name="CAT"
            ),
        ]
    )


def test_hdulist_components_by_name_and_index(any_repo: Butler) -> None:
    any_repo.register_dataset_type("raw", fits.HDUList, "fits", dimensions={"visit": int})
    any_repo.put(_hdulist(), "raw", visit=1)
    whole = any_repo.get("raw", visit=1)
    sci = any_repo.get("raw.SCI", visit=1)
    np.testing.assert_array_equal(sci.data, whole["SCI"].data)
    assert sci.header["EXTNAME"] == "SCI"
    np.testing.assert_array_equal(any_repo.get("raw.0", visit=1).data, whole[0].data)
    cat = any_repo.get("raw.2", visit=1)
    np.testing.assert_array_equal(cat.data["flux"], [1.0, 2.0])
    with pytest.raises(ComponentError, match=r"no component 'VAR'.*'PRIMARY', 'SCI', 'CAT'"):
        any_repo.get("raw.VAR", visit=1)


def test_disassembled_ccddata_round_trips_and_reads_one_part(any_repo: Butler) -> None:
    any_repo.register_dataset_type(
        "calexp_d",
        CCDData,
        "fits",
        dimensions={"visit": int},
        disassemble=True,
        component_formats={"meta": "json", "unit": "json"},
    )
    ccd = make_ccd(MyCCD)
    any_repo.put(ccd, "calexp_d", visit=1)
    back = any_repo.get("calexp_d", visit=1)
    assert type(back) is MyCCD
    for name in ("data", "mask", "uncertainty", "wcs", "unit"):
        assert_same(name, getattr(back, name), getattr(ccd, name))
    assert dict(back.meta) == dict(ccd.meta)
    assert_same("wcs", any_repo.get("calexp_d.wcs", visit=1), ccd.wcs)
    section = (slice(0, 4), slice(0, 5))
    part = any_repo.get("calexp_d.mask", visit=1, parameters={"section": section})
    np.testing.assert_array_equal(part, ccd.mask[section])
    assert list(any_repo.datasets("calexp_d")) == [{"visit": 1}]
    assert any_repo.verify().healthy


def test_disassembled_components_equal_the_assembled_ones(posix_repo: Butler) -> None:
    """Disassembling changes where components are stored, not what a component read
    gives: with or without a section, and for ``header`` (an alias of ``meta``, stored in
    no part of its own), the parts read as the assembled file's components do."""
    b = posix_repo
    b.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    b.register_dataset_type(
        "calexp_d",
        CCDData,
        "fits",
        dimensions={"visit": int},
        disassemble=True,
        component_formats={"meta": "json", "unit": "json"},
    )
    ccd = make_ccd()
    kept = ccd.copy()
    b.put(ccd, "calexp", visit=1)
    b.put(ccd, "calexp_d", visit=1)
    # A put never changes its argument (its parts are written as they are).
    assert dict(ccd.meta) == dict(kept.meta) and ccd.unit == kept.unit
    assert ccd.wcs.to_header() == kept.wcs.to_header()
    for name in ("data", "mask"):
        np.testing.assert_array_equal(getattr(ccd, name), getattr(kept, name))
    np.testing.assert_array_equal(ccd.uncertainty.array, kept.uncertainty.array)
    assert type(ccd.uncertainty) is type(kept.uncertainty)
    for name in ("data", "mask", "uncertainty", "wcs", "unit", "meta", "header"):
        got = b.get(f"calexp_d.{name}", visit=1)
        expected = b.get(f"calexp.{name}", visit=1)
        if name in ("meta", "header"):  # the file's header adds FITS's own cards
            assert dict(got) == dict(ccd.meta)
            assert {k: expected[k] for k in ccd.meta} == dict(ccd.meta)
        else:
            assert_same(name, got, expected)
    section = {"section": (slice(5, 17), slice(20, 41))}
    for name in ("data", "mask", "uncertainty", "wcs"):
        got = b.get(f"calexp_d.{name}", visit=1, parameters=section)
        assert_same(name, got, b.get(f"calexp.{name}", visit=1, parameters=section))
    assert b.get("calexp_d.wcs", visit=1, parameters=section).wcs.crpix.tolist() == [-4.0, 5.0]


def test_disassembled_hdulist_components_by_name_index_and_case(posix_repo: Butler) -> None:
    """An HDU by EXTNAME (any case) or by index, as from an assembled file."""
    b = posix_repo
    hdul = fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(np.ones((2, 3)), name="SCI"), fits.ImageHDU(np.zeros(4))]
    )
    b.register_dataset_type("raw", fits.HDUList, "fits", dimensions={"visit": int})
    b.register_dataset_type(
        "raw_d", fits.HDUList, "fits", dimensions={"visit": int}, disassemble=True
    )
    b.put(hdul, "raw", visit=1)
    b.put(hdul, "raw_d", visit=1)
    for name in ("PRIMARY", "SCI", "sci", "0", "1", "2"):
        got, expected = b.get(f"raw_d.{name}", visit=1), b.get(f"raw.{name}", visit=1)
        assert got.name == expected.name
        np.testing.assert_array_equal(got.data, expected.data)
    for name in ("raw", "raw_d"):
        with pytest.raises(ComponentError, match="has no component 'NOPE'"):
            b.get(f"{name}.NOPE", visit=1)


def _sip_wcs() -> WCS:
    from astropy.wcs import Sip

    w = _wcs()
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"]
    a = np.zeros((3, 3))
    a[0, 2], a[1, 1] = 1e-6, -2e-6
    b = np.zeros((3, 3))
    b[2, 0] = 3e-6
    w.sip = Sip(a, b, None, None, w.wcs.crpix)
    return w


@pytest.mark.parametrize("template", ["c/{visit}.fits", "c/{visit}.fits.gz"])
def test_the_wcs_fast_path_and_its_fallback_equal_the_whole_read(
    posix_repo: Butler, template: str
) -> None:
    """Plain files: the WCS is parsed from the header's text; gzip files (no plain header
    at the start) go through astropy. Either way: the whole read's WCS, SIP included,
    with many header cards before it."""
    posix_repo.register_dataset_type("c", CCDData, "fits", template)
    ccd = make_ccd(shape=(16, 16))
    ccd.wcs = _sip_wcs()
    ccd.meta.update({f"KEY{i}": i for i in range(150)})  # a header of several blocks
    posix_repo.put(ccd, "c", visit=1)
    whole = posix_repo.get("c", visit=1)
    got = posix_repo.get("c.wcs", visit=1)
    assert got.sip is not None and whole.wcs.sip is not None
    assert got.to_header(relax=True) == whole.wcs.to_header(relax=True)
    np.testing.assert_allclose(
        got.pixel_to_world_values(3, 4), whole.wcs.pixel_to_world_values(3, 4)
    )


@pytest.mark.parametrize("component", ["wcs", "meta", "mask"])
def test_a_file_truncated_behind_butlers_back_is_refused(
    posix_repo: Butler, tools: Any, component: str
) -> None:
    """A component read touches part of the file; the size recorded at write time still
    catches a truncated file (the header it reads may be intact)."""
    import os

    from butler import FormatError

    posix_repo.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    posix_repo.put(make_ccd(), "calexp", visit=1)
    path = tools.path(posix_repo, "calexp", visit=1)
    size = os.path.getsize(path)
    os.truncate(path, size - 2880)
    with pytest.raises(
        FormatError,
        match=rf"'calexp' \{{'visit': 1\}}.* is truncated or altered: {size - 2880} bytes "
        rf"stored, {size} recorded",
    ):
        posix_repo.get(f"calexp.{component}", visit=1)
