"""butler-fits's shortcut for a header's WCS (`butler_fits._wcs`) gives exactly what
``astropy.wcs.WCS(text)`` gives, or steps aside (``None``): on every header shipped in
astropy's WCS test data (as astropy prints it and as the files hold it), on headers built to
hit each rule that sends a header to astropy, and through ``get("calexp.wcs")``."""

from __future__ import annotations

import glob
import os
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

fits = pytest.importorskip("astropy.io.fits")
astropy_wcs = pytest.importorskip("astropy.wcs")

from astropy.io.fits.card import Card  # noqa: E402
from astropy.nddata import CCDData  # noqa: E402
from astropy.wcs import WCS  # noqa: E402

from butler_fits._components import _wcs  # noqa: E402
from butler_fits._wcs import _SIMPLE_VALUE, wcs_from_header_text  # noqa: E402

DATA = os.path.join(os.path.dirname(astropy_wcs.__file__), "tests", "data")


def _raw_header(path: str, index: int) -> str | None:
    """The header of HDU ``index`` as the file holds it (not as astropy prints it)."""
    with fits.open(path) as hdul:
        try:
            offset = hdul.fileinfo(index)["hdrLoc"]
            end = hdul.fileinfo(index)["datLoc"]
        except AttributeError:  # astropy keeps no offsets for a non-standard HDU
            return None
    opener: Any = open
    if path.endswith(".gz"):
        import gzip

        opener = gzip.open
    with opener(path, "rb") as f:
        raw = f.read()[offset:end]
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return None


def _corpus() -> dict[str, str]:
    texts: dict[str, str] = {}
    for path in sorted(glob.glob(os.path.join(DATA, "**", "*"), recursive=True)):
        name = os.path.relpath(path, DATA)
        if path.endswith(".hdr"):
            with open(path, "rb") as f:
                raw = f.read()
            if b"\n" in raw:  # a text file of lines: each line padded to a card
                lines = raw.decode("ascii", "replace").splitlines()
                texts[name] = "".join(line.ljust(80)[:80] for line in lines)
            else:
                texts[name] = raw.decode("ascii", "replace")
        elif ".fits" in path:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with fits.open(path) as hdul:
                    count = len(hdul)
                    printed = [hdu.header.tostring() for hdu in hdul]
                for i in range(count):
                    texts[f"{name}[{i}]"] = printed[i]
                    raw_text = _raw_header(path, i)
                    if raw_text is not None:
                        texts[f"{name}[{i}] raw"] = raw_text
    return texts


CORPUS = _corpus()


def _read(text: str, fn: Any) -> tuple[Any, list[str], BaseException | None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(text), [str(w.message) for w in caught], None
        except Exception as exc:
            return None, [str(w.message) for w in caught], exc


def assert_same_wcs(fast: Any, slow: Any) -> None:
    assert type(fast) is type(slow)
    assert set(vars(fast)) == set(vars(slow))
    assert fast.naxis == slow.naxis
    assert fast._naxis == slow._naxis
    assert fast.pixel_shape == slow.pixel_shape
    assert fast.wcs.compare(slow.wcs)
    assert fast.to_header_string(relax=True) == slow.to_header_string(relax=True)
    assert (fast.sip is None) == (slow.sip is None)
    if fast.sip is not None:
        for part in ("a", "b", "ap", "bp"):
            np.testing.assert_array_equal(getattr(fast.sip, part), getattr(slow.sip, part))
    pixels = np.array([[0.0] * fast.naxis, [10.5] * fast.naxis, [-3.0] * fast.naxis])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = slow.all_pix2world(pixels, 0)
        except Exception:
            return  # no transformation to compare (astropy cannot compute one either)
        np.testing.assert_array_equal(fast.all_pix2world(pixels, 0), expected)


def test_the_corpus_is_astropys_wcs_test_data() -> None:
    assert len(CORPUS) >= 70, sorted(CORPUS)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_every_astropy_test_header_gives_astropys_wcs_or_steps_aside(name: str) -> None:
    text = CORPUS[name]
    fast, fast_warnings, _ = _read(text, wcs_from_header_text)
    if fast is None:
        return  # astropy's own WCS(text) reads it (tested below through _wcs)
    slow, slow_warnings, error = _read(text, WCS)
    assert error is None, f"the shortcut made a WCS where WCS() fails: {error!r}"
    assert fast_warnings == slow_warnings
    assert fast.sip is None
    assert_same_wcs(fast, slow)


def test_most_of_the_corpus_takes_the_shortcut() -> None:
    """The shortcut is not a test that cannot fail: it answers for most plain headers."""
    fast = [n for n, text in CORPUS.items() if _read(text, wcs_from_header_text)[0] is not None]
    assert len(fast) >= 50, fast
    assert any(n.startswith("maps") for n in fast) and any(n.startswith("spectra") for n in fast)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_component_reader_gives_what_astropy_gives(name: str) -> None:
    """`_wcs` (the CCDData reader's rule: None when WCS() fails or has no celestial type)
    equals astropy's, whichever path it takes."""
    text = CORPUS[name]
    got, _, error = _read(text, _wcs)
    assert error is None
    slow, _, slow_error = _read(text, WCS)
    if slow_error is not None or not slow.wcs.ctype[0]:
        assert got is None
    else:
        assert_same_wcs(got, slow)


def _ccd_header(**extra: Any) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0, 2.0]
    w.wcs.crpix = [512.0, 512.0]
    w.wcs.cdelt = [-5e-5, 5e-5]
    ccd = CCDData(np.zeros((4, 6), np.float32), unit="adu", wcs=w, meta={"EXPTIME": 30.0})
    header = ccd.to_hdu()[0].header
    for key, value in extra.items():
        header[key] = value
    return header


def _replace_card(text: str, keyword: str, card: str) -> str:
    """``text`` with the card of ``keyword`` replaced by ``card`` (padded to 80)."""
    for start in range(0, len(text), 80):
        if text[start : start + 8].rstrip() == keyword:
            return text[:start] + card.ljust(80)[:80] + text[start + 80 :]
    raise AssertionError(f"no {keyword} card")


BASE = _ccd_header().tostring()


def test_a_plain_ccddata_header_takes_the_shortcut() -> None:
    fast = wcs_from_header_text(BASE)
    assert fast is not None
    assert_same_wcs(fast, WCS(BASE))
    assert fast.pixel_shape == (6, 4)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(_replace_card(BASE, "EXPTIME", "exptime = 30.0"), id="lower-case"),
        pytest.param(_replace_card(BASE, "EXPTIME", "EXPTIME   30.0"), id="no-equals"),
        pytest.param(_replace_card(BASE, "EXPTIME", "EXPTIME =   30.0.5"), id="bad-value"),
        pytest.param(_replace_card(BASE, "EXPTIME", "EXPTIME = 30.0e5"), id="lower-exponent"),
        pytest.param(_replace_card(BASE, "EXPTIME", "CRVAL1  = 151.0"), id="duplicate"),
        pytest.param(_replace_card(BASE, "EXPTIME", "HIERARCH ESO DET CHIP = 3"), id="hierarch"),
        pytest.param(_replace_card(BASE, "EXPTIME", "CONTINUE  'abc'"), id="continue"),
        pytest.param(_ccd_header(A_ORDER=2, B_ORDER=2).tostring(), id="sip-order"),
        pytest.param(_ccd_header(A_0_2=1e-6).tostring(), id="sip-coefficient"),
        pytest.param(_ccd_header(CTYPE1="RA---TAN-SIP").tostring(), id="sip-axis"),
        pytest.param(_ccd_header(CTYPE1="RA---TAB").tostring(), id="tab-axis"),
        pytest.param(_ccd_header(CPDIS1="Lookup").tostring(), id="cpdis"),
        pytest.param(_ccd_header(D2IMDIS1="Lookup").tostring(), id="d2im"),
        pytest.param(_ccd_header(AXISCORR=1).tostring(), id="axiscorr"),
        pytest.param(_ccd_header(PV1_5=0.1).tostring(), id="pv-with-tan"),
        pytest.param(_ccd_header(NAXIS1=4.5).tostring(), id="float-naxis"),
        pytest.param(BASE[:-1] + "\x07", id="unprintable"),
        pytest.param(BASE[:-40], id="not-cards"),
    ],
)
def test_headers_the_shortcut_cannot_promise_go_to_astropy(text: str) -> None:
    assert wcs_from_header_text(text) is None
    got, _, error = _read(text, _wcs)
    assert error is None
    slow, _, slow_error = _read(text, WCS)
    if slow_error is not None or not slow.wcs.ctype[0]:
        assert got is None
    else:
        assert_same_wcs(got, slow)


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.from_regex(r"[+-]?[0-9]{1,12}(\.[0-9]{0,10})?(E[+-]?[0-9]{1,3})?", fullmatch=True),
        st.sampled_from(["T", "F", "''", "'RA---TAN'", "'a b  '"]),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    ),
    pad=st.integers(0, 20),
    comment=st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=126))),
)
def test_the_quick_value_pattern_accepts_only_what_astropys_accepts(
    value: str, pad: int, comment: str | None
) -> None:
    field = (" " * pad + value + ("" if comment is None else " / " + comment)).ljust(70)[:70]
    if _SIMPLE_VALUE.match(field):
        assert Card._value_FSC_RE.match(field), field


@pytest.mark.parametrize(
    "cards",
    [
        {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN"},
        {"CTYPE1": "GLON-CAR", "CTYPE2": "GLAT-CAR", "CRVAL1": 0.0, "CRVAL2": 0.0},
    ],
)
def test_get_of_the_wcs_component_equals_astropys_reader(
    posix_repo: Any, cards: dict[str, Any]
) -> None:
    header = _ccd_header(**cards)
    ccd = CCDData(np.ones((4, 6), np.float32), unit="adu", wcs=WCS(header))
    posix_repo.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
    posix_repo.put(ccd, "calexp", visit=1)
    with posix_repo.storage.local_path(posix_repo.location("calexp", visit=1).key) as path:
        expected = CCDData.read(path).wcs
    assert_same_wcs(posix_repo.get("calexp.wcs", visit=1), expected)
