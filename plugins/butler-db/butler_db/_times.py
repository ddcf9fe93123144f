"""Timestamps in ``sql-table``: numpy ``datetime64`` and astropy ``Time`` columns as SQL
timestamps (``TIMESTAMP`` on PostgreSQL, ``DATETIME(6)`` on MariaDB, ISO text on SQLite).

SQL timestamps hold microseconds from year 1 to 9999. A value that does not fit exactly
(a nanosecond part, a ``Time`` off a whole microsecond by 0.5 ns or more, a leap second, a
year outside 1-9999) is refused with a `TypeError` naming the column and the value, unless
the writer asked for rounding (``parameters={"round_times": True}``): never rounded in
silence. Values travel as `datetime.datetime` to PostgreSQL and MariaDB, and as canonical
text ``YYYY-MM-DD HH:MM:SS.ffffff`` to SQLite, which has no timestamp type: fixed-width text
sorts and compares correctly there.
"""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np

__all__ = [
    "TIME_INFO",
    "check_time_info",
    "from_datetime64",
    "from_time",
    "restore",
    "sql_text",
    "sql_values",
    "to_time",
    "where_value",
]

#: Column info keys recording an astropy ``Time`` column (restored as ``Time`` on read).
TIME_INFO = ("time_scale", "time_format", "time_precision")

_US = np.dtype("M8[us]")
_LOW, _HIGH = np.datetime64("0001-01-01", "us"), np.datetime64("9999-12-31T23:59:59.999999")


def _round_us(ns: np.ndarray) -> np.ndarray:
    """``datetime64[ns]`` values rounded to the nearest microsecond (NaT kept)."""
    ints = ns.astype("M8[ns]").view(np.int64)
    rounded = (ints + 500) // 1000
    out = rounded.astype("M8[us]")
    out[np.isnat(ns)] = np.datetime64("NaT")
    return out


def _to_us(name: str, values: np.ndarray, round_times: bool, what: str) -> np.ndarray:
    """``values`` (any datetime64 unit) as microseconds, exact or refused."""
    unit, _count = np.datetime_data(values.dtype)
    if unit == "generic":
        raise TypeError(f"column {name!r} has the unit-less dtype {values.dtype}; give it a unit")
    nat = np.isnat(values)
    if unit in ("ns", "ps", "fs", "as"):
        us = _round_us(values) if round_times else values.astype(_US)
        exact = (us.astype(values.dtype) == values) | nat
        if not round_times and not exact.all():
            first = values[np.flatnonzero(~exact)[0]]
            raise TypeError(
                f"column {name!r} holds {what} with a sub-microsecond part (first: {first}); "
                f"SQL timestamps hold microseconds: round them yourself or pass "
                f"parameters={{'round_times': True}} to round to the nearest microsecond"
            )
    else:
        us = values.astype(_US)
    bad = ~nat & ((us < _LOW) | (us > _HIGH))
    if bad.any():
        raise TypeError(
            f"column {name!r} holds {values[np.flatnonzero(bad)[0]]}, outside the years "
            f"1-9999 that SQL timestamps hold"
        )
    return us


def from_datetime64(
    name: str, values: np.ndarray, mask: np.ndarray | None, round_times: bool
) -> np.ndarray:
    """Check a ``datetime64`` column (exact microseconds, years 1-9999); its values as
    microseconds. Masked entries are not checked."""
    check = values if mask is None else np.where(mask, np.datetime64("NaT"), values)
    return _to_us(name, check.astype(values.dtype), round_times, "values")


def from_time(
    name: str, time: Any, round_times: bool
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """``(datetime64[us] values, mask, info)`` of an astropy ``Time`` column.

    The values are the calendar dates of the column *in its own scale* (a ``tt`` time is
    stored as its TT date); the scale, format and precision go to ``info``.
    """
    if getattr(time, "location", None) is not None:
        raise TypeError(
            f"Time column {name!r} has an observatory location, which sql-table cannot store; "
            f"drop it (t[{name!r}].location = None) or use FITS or HDF5"
        )
    mask = np.asarray(time.mask, dtype=bool) if time.masked else None
    plain = time.unmasked if time.masked else time
    if mask is not None and mask.any():  # what lies under a mask is not stored: J2000
        jd1, jd2 = np.where(mask, 2451545.0, plain.jd1), np.where(mask, 0.0, plain.jd2)
        plain = type(time)(jd1, jd2, format="jd", scale=time.scale)
    try:
        ns = np.asarray(plain.datetime64)
    except ValueError as e:  # a leap second (23:59:60) has no calendar timestamp
        raise TypeError(f"Time column {name!r} cannot be a SQL timestamp: {e}") from None
    if mask is not None:
        ns = np.where(mask, np.datetime64("NaT"), ns)
    us = _to_us(name, ns, round_times, "times")
    info = {"time_scale": time.scale, "time_format": time.format, "time_precision": time.precision}
    return us, mask, info


def sql_text(us: np.ndarray) -> list[str | None]:
    """Canonical SQL text of microsecond values (``None`` for NaT)."""
    text = np.datetime_as_string(us, unit="us").tolist()
    return [None if t == "NaT" else t.replace("T", " ") for t in text]


def sql_values(us: np.ndarray, dialect: str) -> list[Any]:
    """Microsecond values as the driver takes them (``None`` for NaT): text on SQLite,
    `datetime.datetime` elsewhere."""
    if dialect == "sqlite":
        return sql_text(us)
    return list(us.astype(object).tolist())


def restore(name: str, values: list[Any], dtype: np.dtype) -> np.ndarray:
    """Values read from the database (``datetime``, text or ``None``) as ``dtype``.

    Raises
    ------
    ValueError
        If a value is not a timestamp, or does not fit ``dtype`` exactly (the table was
        changed outside butler).
    """
    try:
        us = np.array(values, dtype=_US)
    except (TypeError, ValueError) as e:
        raise ValueError(f"column {name!r} holds a value that is not a timestamp: {e}") from None
    out = us.astype(dtype)
    lost = (out.astype(_US) != us) & ~np.isnat(us)
    if lost.any():
        raise ValueError(
            f"column {name!r} holds {us[np.flatnonzero(lost)[0]]}, which its recorded dtype "
            f"{dtype} cannot hold (the table was changed outside butler)"
        )
    return out


def check_time_info(name: str, info: dict[str, Any]) -> None:
    """Refuse a recorded Time scale/format astropy does not know (metadata is untrusted)."""
    from astropy.time import Time

    scale, fmt = info.get("time_scale"), info.get("time_format")
    precision = info.get("time_precision", 3)
    if scale not in Time.SCALES or fmt not in Time.FORMATS:
        raise ValueError(f"column {name!r}: stored Time scale/format {scale!r}/{fmt!r} unknown")
    if not isinstance(precision, int) or not 0 <= precision <= 9:
        raise ValueError(f"column {name!r}: stored Time precision {precision!r:.50} is invalid")


def to_time(name: str, values: np.ndarray, mask: np.ndarray | None, info: dict[str, Any]) -> Any:
    """An astropy ``Time`` column from stored microseconds and its recorded ``info``."""
    from astropy.time import Time

    check_time_info(name, info)
    ok = ~np.isnat(values) if mask is None else ~mask & ~np.isnat(values)
    filled = np.where(ok, values, np.datetime64("2000-01-01", "us")) if not ok.all() else values
    time = Time(filled, scale=info["time_scale"], format="datetime64")
    if not ok.all():
        time[~ok] = np.ma.masked
    time.format = info["time_format"]
    time.precision = info.get("time_precision", 3)
    return time


def where_value(name: str, value: Any, info: dict[str, Any], dialect: str) -> Any:
    """A ``where`` value for a timestamp column, as `sql_values` sends it.

    Accepts `datetime.datetime`, `datetime.date`, ``numpy.datetime64``, ISO strings,
    pandas ``Timestamp`` and astropy ``Time`` scalars (converted to the column's scale).
    """
    if value is None:
        return None
    if hasattr(value, "jd1") and hasattr(value, "scale"):  # astropy Time
        scale = info.get("time_scale")
        if scale is not None and value.scale != scale:
            value = getattr(value, scale)
        value = value.datetime64
    elif isinstance(value, datetime.datetime) and value.tzinfo is not None:
        raise ValueError(
            f"'where' value {value!r} for column {name!r} has a time zone; timestamps are "
            f"stored without one: convert it and drop the tzinfo"
        )
    if not isinstance(value, str | datetime.date | np.datetime64):
        raise ValueError(
            f"'where' value for timestamp column {name!r} must be a datetime, date, "
            f"numpy.datetime64, ISO string or astropy Time, not a {type(value).__name__!r}"
        )
    try:
        stamp = np.datetime64(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"'where' value {value!r:.100} for column {name!r}: {e}") from None
    return sql_values(_to_us(name, np.array([stamp]), False, "values"), dialect)[0]
