"""`astropy.wcs.WCS` from a primary header's text, without astropy's header round trips.

``WCS(header)`` spends ~95 % of its time (1.7 ms of 1.8 on a 24-card header) in
`astropy.io.fits`: it parses the text into a `~astropy.io.fits.Header` twice and prints it
back twice, verifying every card each time, only to hand wcslib the same text. For the WCS
component of many exposures (a sky map from 10,000 of them) that is the whole cost.

`wcs_from_header_text` builds the same object in ~0.1 ms when that round trip cannot change
the text wcslib reads, and otherwise returns ``None`` (the caller then runs ``WCS(text)``).
The round trip leaves the text alone exactly when astropy's card verification has nothing to
fix, and ``WCS.__init__`` has nothing to take out of it first:

* every card is a plain FITS card: an upper-case standard keyword, ``= `` in columns 9-10,
  a value astropy's own fixed-format pattern accepts (then its looser pattern, which
  ``Card._verify`` checks too, accepts it as well), printable ASCII (commentary cards:
  printable ASCII); no ``HIERARCH`` or ``CONTINUE`` card, no keyword twice;
* nothing ``WCS.__init__`` reads outside wcslib: no SIP keywords or ``-SIP`` axes, no
  distortion-paper (``CPDIS``/``CQDIS``/``DP``/``DQ``/``D2IM``/``AXISCORR``) keywords, no
  ``-TAB`` axes (they need the file), and no ``PV`` keywords beside ``-TAN`` axes (the
  pre-2012 SCAMP fix-up).

Then it makes what ``WCS.__init__`` makes from such a header: the `~astropy.wcs.Wcsprm`
wcslib parses from the text, the same ``fix()`` (and its warnings) and ``wcs.set()``, the
pixel shape from ``NAXISn``, the warning about more WCS axes than image axes.
``tests/fits/test_wcs_fast.py`` checks the result against ``WCS(text)`` on every header
shipped in astropy's WCS test data and on headers built to hit each rule above.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

__all__ = ["wcs_from_header_text"]

CARD = 80
#: Keywords of distortions, lookup tables and SIP that ``WCS.__init__`` handles itself.
_FOREIGN = re.compile(r"(CPDIS|CQDIS|CPERR|CQERR|DP|DQ)[0-9]|D2IM|AXISCORR$|(A|B|AP|BP)_")
_NAXIS_N = re.compile(r"NAXIS([0-9]+)$")
_COMMENTARY = frozenset({"", "COMMENT", "HISTORY"})
_PRINTABLE = re.compile(r"[ -~]*\Z")
#: The value fields of nearly every card (a number, T/F, a string without quotes inside,
#: then maybe a comment): a subset of what astropy's ``Card._value_FSC_RE`` accepts, ~4x
#: cheaper to match; anything else is asked of that pattern itself.
_SIMPLE_VALUE = re.compile(
    r" *(?:'[^']*'|[TF]|[+-]?[0-9]+(?:\.[0-9]*)?(?:E[+-]?[0-9]+)?) *(?:/[ -~]*)?\Z"
)


def _plain_cards(text: str) -> tuple[dict[str, str], int] | None:
    """({keyword: value field}, offset of the END card or the text's length) if every card
    before END is plain (see the module's docstring), else ``None``."""
    from astropy.io.fits.card import Card

    if len(text) % CARD or not _PRINTABLE.match(text):
        return None
    values: dict[str, str] = {}
    for start in range(0, len(text), CARD):
        card = text[start : start + CARD]
        keyword = card[:8].rstrip(" ")
        if keyword == "END":
            return (values, start) if card[3:].isspace() else None
        if not Card._keywd_FSC_RE.match(keyword) or card[:8] != keyword.ljust(8):
            return None
        if keyword in _COMMENTARY:
            continue
        field = card[10:]
        if (
            card[8:10] != "= "
            or keyword in values
            or keyword == "CONTINUE"
            or _FOREIGN.match(keyword)
            or (_SIMPLE_VALUE.match(field) is None and Card._value_FSC_RE.match(field) is None)
        ):
            return None
        values[keyword] = field
    return values, len(text)  # no END card: astropy reads to the end of the text too


def _int_value(field: str) -> int | None:
    value = field.split("/", 1)[0].strip()
    return int(value) if re.fullmatch(r"[+-]?[0-9]+", value) else None


def wcs_from_header_text(text: str) -> Any:
    """``WCS(text)`` for the header ``text`` (80-character cards, up to END if any), or ``None``
    when this shortcut cannot promise the same result: call ``WCS(text)`` then."""
    plain = _plain_cards(text)
    if plain is None:
        return None
    values, end = plain
    if any("-SIP" in v or "-TAB" in v for k, v in values.items() if k.startswith("CTYPE")):
        return None
    if any(k.startswith("PV") for k in values) and any(
        "-TAN" in v for k, v in values.items() if k.startswith("CTYPE")
    ):
        return None
    naxis_n: dict[int, int] = {}
    for keyword, field in values.items():
        if m := _NAXIS_N.match(keyword):
            number = _int_value(field)
            if number is None:
                return None  # astropy would make it a float or a string: leave it to it
            naxis_n[int(m.group(1))] = number
    header_naxis = _int_value(values["NAXIS"]) if "NAXIS" in values else None
    if "NAXIS" in values and header_naxis is None:
        return None
    try:
        return _build(text[:end].encode("ascii"), naxis_n, header_naxis)
    except Exception:
        return None  # WCS(text) decides: an identity WCS, or its own error


def _build(header: bytes, naxis_n: dict[int, int], header_naxis: int | None) -> Any:
    """What ``WCS.__init__(header)`` does for a header without SIP or distortions."""
    from astropy.wcs import WCS, FITSFixedWarning
    from astropy.wcs._wcs import Wcsprm
    from astropy.wcs.wcs import WCSBase, _parse_keysel

    wcs = WCS.__new__(WCS)
    wcs._preserve_units = False
    wcs._init_kwargs = {"keysel": None, "colsel": None, "preserve_units": False}
    wcsprm = Wcsprm(
        header=header,
        key=" ",
        relax=True,
        keysel=_parse_keysel(None),
        colsel=None,
        hdulist=None,
        preserve_units=False,
    )
    wcs.naxis = wcsprm.naxis
    if header_naxis is not None and header_naxis < wcsprm.naxis:
        warnings.warn(
            f"The WCS transformation has more axes ({wcsprm.naxis:d}) than the "
            f"image it is associated with ({header_naxis:d})",
            FITSFixedWarning,
            stacklevel=2,
        )
    WCSBase.__init__(wcs, None, (None, None), wcsprm, (None, None))
    wcs.fix(translate_units="")
    wcs.wcs.set()
    shape = []
    for axis in range(1, len(naxis_n) + 2):  # NAXIS1, NAXIS2... up to the first missing
        if axis not in naxis_n:
            break
        shape.append(naxis_n[axis])
    wcs._naxis = shape or wcs.naxis * [0]
    wcs._pixel_bounds = None
    return wcs
