"""`astropy.units.UnitBase` ↔ JSON: the unit's FITS string (``{"unit": "electron"}``), so a
disassembled CCDData's unit is a readable part. Parsing a unit string runs no code."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from butler import ButlerLocation

__all__ = ["read", "write"]

#: Longest unit document read (a unit string is a few dozen bytes).
MAX_BYTES = 64 * 1024


def write(obj: Any, location: ButlerLocation, **_: Any) -> None:
    """``{"unit": obj.to_string()}`` (the generic format round-trips every unit)."""
    with location.open_write() as f:
        f.write(json.dumps({"unit": obj.to_string()}).encode())


def read(location: ButlerLocation, **_: Any) -> Any:
    """The unit, parsed by astropy."""
    from astropy import units as u

    with location.open_read() as f:
        data = f.read(MAX_BYTES + 1)
    try:
        text = json.loads(data)["unit"]
        return u.Unit(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise location.format_error(f"is not a unit document: {exc}") from None
