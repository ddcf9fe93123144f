"""Table ``meta`` ↔ FITS header: as ordinary cards where they round-trip, YAML otherwise.

astropy writes a table's meta as header cards (``Table.write``), which every FITS reader
sees, but a card changes some values (a lower-case key comes back upper-case, a numpy
scalar as a python one, a long float rounded, a nested value not at all). Each entry is
written as a card when the card gives back exactly the key and value written (its type
included), and into butler's YAML block otherwise: the header stays as small as
astropy's, and nothing is written twice. The order of the keys is recorded with the
column dtypes (``BUTLCOLS``), so meta comes back in the order it was written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from astropy.io import fits

__all__ = ["meta_from_header", "split_meta", "write_cards"]

_KEYWORD = re.compile(r"^[A-Z0-9_-]{1,8}$")
#: Keywords the table HDU itself, astropy's time columns or butler write: never meta cards.
_RESERVED = {"SIMPLE", "XTENSION", "EXTEND", "END", "CHECKSUM", "DATASUM", "CONTINUE"}
_COMMENTARY = {"comments": "COMMENT", "HISTORY": "HISTORY"}
#: COMMENT blocks that are not the table's comments: astropy's serialized columns, butler's.
BLOCKS = ("ASTROPY-SERIALIZED-COLUMNS", "BUTLER-TABLE-META")


def _card_value_ok(key: str, value: Any) -> bool:
    """True when ``header[key] = value`` reads back as exactly ``value`` (type included)."""
    if type(value) not in (bool, int, float, str):
        return False
    if isinstance(value, str) and not (value.isascii() and value.isprintable()):
        return False
    try:
        card = fits.Card(key, value)
        image = card.image
        if len(image) != 80:  # a CONTINUE'd long string: kept in YAML
            return False
        back = fits.Card.fromstring(image).value
    except Exception:  # anything astropy cannot write as one card
        return False
    return type(back) is type(value) and back == value


def _commentary_ok(values: Any) -> bool:
    """A list of strings each of which is one COMMENT/HISTORY card, verbatim."""
    if not isinstance(values, list) or not values:
        return False
    for value in values:
        if not isinstance(value, str) or not (value.isascii() and value.isprintable()):
            return False
        if len(value) > 72 or value != value.rstrip():
            return False
        if any(value in (f"--BEGIN-{b}--", f"--END-{b}--") for b in BLOCKS):
            return False
    return True


def split_meta(
    meta: Mapping[Any, Any], reserved: Iterable[str] = ()
) -> tuple[list[Any], dict[Any, Any]]:
    """Split ``meta`` into what header cards hold exactly and what YAML must hold.

    Returns
    -------
    order
        Every key in meta order: the key itself when it is written as cards, ``None`` for
        the next entry of the YAML part.
    rest
        The entries to keep in YAML, in order.
    """
    from astropy.io.fits.connect import REMOVE_KEYWORDS, is_column_keyword

    taken = {k.upper() for k in reserved}
    order: list[Any] = []
    rest: dict[Any, Any] = {}
    for key, value in meta.items():
        card = False
        if key in _COMMENTARY:
            card = _commentary_ok(value)
        elif isinstance(key, str) and _KEYWORD.match(key) and key not in taken:
            card = (
                not is_column_keyword(key)
                and key not in REMOVE_KEYWORDS
                and key not in _RESERVED
                and key not in ("COMMENT", "HISTORY")
                and not key.startswith("BUTL")
                and _card_value_ok(key, value)
            )
        if card:
            order.append(key)
        else:
            order.append(None)
            rest[key] = value
    return order, rest


def write_cards(header: fits.Header, meta: Mapping[Any, Any], order: list[Any]) -> dict[str, Any]:
    """Append the card entries of ``meta`` (as chosen by `split_meta`) to ``header``.

    Returns what `meta_from_header` needs, to be recorded in the card that follows them:
    how many cards were appended and where the YAML entries go in the key order.
    """
    count = 0
    for key in order:
        if key is None:
            continue
        values = meta[key] if key in _COMMENTARY else [meta[key]]
        for value in values:
            header.append((_COMMENTARY.get(key, key), value), end=True)
            count += 1
    return {"cards": count, "yaml": [i for i, key in enumerate(order) if key is None]}


def meta_from_header(
    header: fits.Header, anchor: str, recorded: Mapping[str, Any], rest: Mapping[Any, Any]
) -> dict[Any, Any]:
    """Rebuild the meta `split_meta` split, in its original order.

    The meta cards are the ``recorded["cards"]`` cards just before the ``anchor`` keyword;
    COMMENT and HISTORY cards there are the ``comments`` and ``HISTORY`` lists.
    """
    count = int(recorded.get("cards", 0))
    end = header.index(anchor)
    entries: list[tuple[Any, Any]] = []
    for card in header.cards[max(end - count, 0) : end]:
        keyword = card.keyword
        key = "comments" if keyword == "COMMENT" else keyword
        if keyword in ("COMMENT", "HISTORY"):
            if entries and entries[-1][0] == key:
                entries[-1][1].append(str(card.value))
            else:
                entries.append((key, [str(card.value)]))
        else:
            entries.append((key, card.value))
    extra = list(rest.items())
    for position in recorded.get("yaml", []):
        if extra:
            entries.insert(min(int(position), len(entries)), extra.pop(0))
    entries.extend(extra)  # more YAML entries than recorded: keep them all
    return dict(entries)
