"""Issue 13 item 16: ``datetime64`` and astropy ``Time`` columns in ``sql-table`` are SQL
timestamps that read back exactly, or are refused with a message (never rounded in silence).

Runs on SQLite, and on PostgreSQL / MariaDB when ``BUTLER_TEST_POSTGRES_URL`` /
``BUTLER_TEST_MYSQL_URL`` are set.
"""

from __future__ import annotations

import datetime

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")
pytest.importorskip("astropy")

import numpy as np
import sqlalchemy as sa
from astropy.table import MaskedColumn, Table
from astropy.time import Time

from butler import Butler, FormatError

from ..db._helpers import raw_engine
from ..db.conftest import *  # noqa: F403 - the db_root/backend fixtures of tests/db


def _butler(root: str, python_type: str = "astropy.table.Table") -> Butler:
    b = Butler.create(root)
    b.register_dataset_type("cat", python_type, "sql-table", dimensions={"visit": int})
    return b


def _stamps() -> Table:
    t = Table()
    t["us"] = np.array(
        ["2020-01-01T00:00:00.123456", "NaT", "0001-01-01", "9999-12-31T23:59:59.999999"],
        dtype="M8[us]",
    )
    t["day"] = np.array(["2020-02-29", "1970-01-01", "1000-01-01", "NaT"], dtype="M8[D]")
    t["sec"] = np.array(
        ["2020-01-01T12:34:56", "NaT", "1999-12-31T23:59:59", "2038-01-19"], dtype="M8[s]"
    )
    t["ms"] = np.array(["2020-01-01T00:00:00.001", "NaT", "1900-01-01", "2100-01-01"], "M8[ms]")
    # nanosecond dtype (pandas' default) with whole microseconds: stored exactly
    t["ns"] = np.array(["2020-01-01T00:00:00.000001", "NaT", "1700-01-01", "2200-01-01"], "M8[ns]")
    t["m"] = MaskedColumn(
        np.array(["2020-01-01", "2021-01-01", "2022-01-01", "2023-01-01"], "M8[us]"),
        mask=[False, True, False, False],
    )
    return t


def test_datetime64_columns_round_trip_exactly(db_root: str, backend: str) -> None:
    b = _butler(db_root)
    t = _stamps()
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1)
    assert out.colnames == t.colnames
    for name in t.colnames:
        assert out[name].dtype == t[name].dtype, name
        keep = ~np.ma.getmaskarray(t[name])  # what lies under a mask is not stored
        got, want = np.ma.getdata(out[name])[keep], np.ma.getdata(t[name])[keep]
        np.testing.assert_array_equal(got, want, err_msg=name)  # NaT equals NaT here
    assert out["m"].mask.tolist() == [False, True, False, False]
    assert type(out["us"]).__name__ == "Column"  # NaT in a plain column is NaT, not a mask
    # the SQL column is a real timestamp with microseconds (DATETIME(6) on MariaDB)
    name = b.storage.table_name("cat/1")  # type: ignore[attr-defined]
    engine = raw_engine(db_root)
    with engine.connect() as conn:
        types = {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(name)}
        raw = sa.table(name, sa.column("us"), sa.column("_butler_row"))
        first = conn.execute(sa.select(raw.c.us).order_by(raw.c._butler_row)).first()
    engine.dispose()
    assert isinstance(types["us"], sa.DateTime)
    if backend == "mysql":
        assert types["us"].fsp == 6  # type: ignore[attr-defined]
    if backend == "sqlite":  # ISO text, fixed width: sorts and compares as text
        assert first[0] == "2020-01-01 00:00:00.123456"
    else:
        assert first[0] == datetime.datetime(2020, 1, 1, 0, 0, 0, 123456)


def test_time_column_comes_back_as_time(db_root: str) -> None:
    b = _butler(db_root)
    t = Table()
    t["tt"] = Time(
        ["2020-01-01T00:00:00.5", "2021-06-30T12:00:00", "1995-01-01T00:00:00.000001"],
        scale="tt",
        format="isot",
        precision=6,
    )
    t["tt"].info.description = "observation time"
    t["mjd"] = Time([58849.0, 58850.5, 58851.25], format="mjd", scale="tdb")
    t["masked"] = Time(["2020-01-01", "2020-01-02", "2020-01-03"], scale="utc")
    t["masked"][1] = np.ma.masked
    t["flux"] = [1.0, 2.0, 3.0]
    b.put(t, "cat", visit=1)
    out = b.get("cat", visit=1)
    for name in ("tt", "mjd", "masked"):
        got, want = out[name], t[name]
        assert isinstance(got, Time), name
        assert (got.scale, got.format, got.precision) == (want.scale, want.format, want.precision)
        keep = ~np.asarray(want.mask) if want.masked else slice(None)
        np.testing.assert_array_equal(got.jd1[keep], want.jd1[keep], err_msg=name)
        np.testing.assert_array_equal(got.jd2[keep], want.jd2[keep], err_msg=name)
    assert out["masked"].mask.tolist() == [False, True, False]
    assert out["tt"].info.description == "observation time"
    assert out["mjd"].value.tolist() == [58849.0, 58850.5, 58851.25]
    assert isinstance(b.get("cat", visit=1, parameters={"columns": ["tt"]})["tt"], Time)


def test_sub_microsecond_values_refused_unless_rounding_is_asked(db_root: str) -> None:
    b = _butler(db_root)
    t = Table({"ns": np.array(["2020-01-01T00:00:00.000000001", "NaT"], "M8[ns]")})
    with pytest.raises(FormatError, match=r"column 'ns' holds values with a sub-microsecond") as e:
        b.put(t, "cat", visit=1)
    assert "2020-01-01T00:00:00.000000001" in str(e.value)
    assert "round_times" in str(e.value)
    assert not b.exists("cat", visit=1)
    b.put(t, "cat", visit=1, parameters={"round_times": True})
    out = b.get("cat", visit=1)
    assert out["ns"].dtype == np.dtype("M8[ns]")
    assert str(out["ns"][0]) == "2020-01-01T00:00:00.000000000"  # rounded, as asked
    # a Time from a float MJD is off a whole microsecond: refused, or rounded on request
    mjd = Table({"t": Time([59000.123456789], format="mjd", scale="tdb")})
    with pytest.raises(FormatError, match=r"column 't' holds times with a sub-microsecond"):
        b.put(mjd, "cat", visit=2)
    b.put(mjd, "cat", visit=2, parameters={"round_times": True})
    back = b.get("cat", visit=2)["t"]
    assert abs((back - mjd["t"]).to_value("s")[0]) <= 0.5e-6
    assert back.scale == "tdb" and back.format == "mjd"


def test_unrepresentable_times_refused(db_root: str) -> None:
    b = _butler(db_root)
    far = Table({"y": np.array(["10000-01-01"], "M8[D]")})
    with pytest.raises(FormatError, match=r"'y' holds 10000-01-01, outside the years 1-9999"):
        b.put(far, "cat", visit=1)
    leap = Table({"t": Time(["2016-12-31T23:59:60"], scale="utc")})
    with pytest.raises(FormatError, match=r"Time column 't' cannot be a SQL timestamp"):
        b.put(leap, "cat", visit=1)
    located = Table({"t": Time(["2020-01-01"], scale="utc", location=(1.0, 2.0, 3.0))})
    with pytest.raises(FormatError, match=r"Time column 't' has an observatory location"):
        b.put(located, "cat", visit=1)
    assert not b.exists("cat", visit=1)


def test_where_on_timestamps(db_root: str) -> None:
    b = _butler(db_root)
    t = Table()
    t["id"] = np.arange(4)
    t["d"] = np.array(
        ["2020-01-01", "2020-01-02T12:00:00.000001", "2020-01-03", "NaT"], dtype="M8[us]"
    )
    t["t"] = Time(["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-04"], scale="tt")
    b.put(t, "cat", visit=1)

    def ids(where: dict[str, object]) -> list[int]:
        return list(b.get("cat", visit=1, parameters={"where": where})["id"])

    assert ids({"d": (np.datetime64("2020-01-02"), None)}) == [1, 2]
    assert ids({"d": (None, datetime.datetime(2020, 1, 2, 12, 0, 0, 1))}) == [0, 1]
    assert ids({"d": "2020-01-03"}) == [2]
    assert ids({"d": [np.datetime64("2020-01-01"), datetime.date(2020, 1, 3)]}) == [0, 2]
    assert ids({"d": None}) == [3]
    assert ids({"t": Time("2020-01-02", scale="tt")}) == [1]
    # a Time in another scale is converted to the column's: UTC midnight is not TT midnight
    assert ids({"t": Time("2020-01-02", scale="utc")}) == []
    assert ids({"t": (Time("2020-01-01T23:58:50.816", scale="utc"), None)}) == [1, 2, 3]
    with pytest.raises(FormatError, match=r"timestamp column 'd' must be a datetime"):
        b.get("cat", visit=1, parameters={"where": {"d": 5}})
    aware = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(FormatError, match=r"has a time zone"):
        b.get("cat", visit=1, parameters={"where": {"d": aware}})


def test_append_times_checks_the_scale(db_root: str) -> None:
    b = _butler(db_root)
    t = Table({"t": Time(["2020-01-01"], scale="tt"), "v": [1]})
    b.put(t, "cat", visit=1)
    b.put(Table({"t": Time(["2020-01-02"], scale="tt"), "v": [2]}), "cat", visit=1,
          parameters={"mode": "append"})  # fmt: skip
    assert b.get("cat", visit=1)["t"].isot.tolist() == [
        "2020-01-01T00:00:00.000",
        "2020-01-02T00:00:00.000",
    ]
    utc = Table({"t": Time(["2020-01-03"], scale="utc"), "v": [3]})
    with pytest.raises(FormatError, match=r"holds times in scale 'tt'; cannot append .* 'utc'"):
        b.put(utc, "cat", visit=1, parameters={"mode": "append"})
    key = Table({"t": Time(["2020-01-02"], scale="tt"), "v": [20]})
    b.put(key, "cat", visit=1, parameters={"mode": "upsert", "key": ["t"]})
    assert b.get("cat", visit=1)["v"].tolist() == [1, 20]


def test_pandas_datetimes(db_root: str) -> None:
    pd = pytest.importorskip("pandas")
    b = _butler(db_root, "pandas.DataFrame")
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(
                ["2020-01-01 00:00:00.000001", None, "1990-05-05"], format="ISO8601"
            ),
            "x": [1, 2, 3],
        }
    )
    frame["ns"] = frame["when"].astype("datetime64[ns]")  # pandas' classic unit
    b.put(frame, "cat", visit=1)
    out = b.get("cat", visit=1)
    assert str(out["ns"].dtype) == "datetime64[ns]"
    assert out["when"].dtype == frame["when"].dtype
    pd.testing.assert_frame_equal(out, frame)
    aware = pd.DataFrame({"when": pd.to_datetime(["2020-01-01"]).tz_localize("Europe/Paris")})
    with pytest.raises(FormatError, match=r"time-zone aware timestamps: store them as UTC"):
        b.put(aware, "cat", visit=2)
