"""Benchmark of butler-db against raw SQLAlchemy and pandas, measured in the same run.

* blob: put/get of an N MiB array (npy format) through butler vs one raw SQLAlchemy
  INSERT/SELECT of the same bytes. Ratio = raw time / butler time (goal >= 0.9).
* sql-table: insert of R rows through butler (format ``sql-table``) vs
  ``pandas.DataFrame.to_sql``, in rows/s. Ratio = butler rows/s / pandas rows/s (goal >= 1).

SQLite always; PostgreSQL when ``BUTLER_TEST_POSTGRES_URL`` (or ``--postgres URL``) is
reachable; MariaDB with ``--mysql URL``.

Usage: ``python bench/db.py [--size-mib 64] [--rows 1000000] [--postgres URL] [--mysql URL]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from butler import Butler


def _time(fn: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@contextmanager
def _fresh(kind: str, url: str | None, tmp: str) -> Iterator[str]:
    """A fresh database (schema on PostgreSQL) for one backend, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db"
        return
    assert url is not None
    name = f"butler_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        if kind == "postgresql":
            conn.execute(sa.schema.CreateSchema(name))
            root = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        else:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            root = make_url(url).set(database=name)
    try:
        yield root.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.schema.DropSchema(name, cascade=True))
            else:
                conn.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


def bench_blob(root: str, size_mib: int) -> dict[str, float]:
    from butler_db._engine import create_engine, normalise_url

    arr = np.random.default_rng(0).integers(0, 2**62, size_mib * 1024 * 1024 // 8)
    payload = arr.tobytes()
    b = Butler.create(root)
    b.register_dataset_type("arr", "numpy.ndarray", "npy", dimensions={"i": int})
    counter = iter(range(10**6))
    put = _time(lambda: b.put(arr, "arr", i=next(counter)))
    get = _time(lambda: b.get("arr", i=0))
    assert np.array_equal(b.get("arr", i=0), arr)
    b.close()

    engine = create_engine(normalise_url(root))
    meta = sa.MetaData()
    table = sa.Table(
        "raw_blob",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary().with_variant(sa.dialects.mysql.LONGBLOB(), "mysql")),
    )
    meta.create_all(engine)
    ids = iter(range(10**6))

    def raw_put() -> None:
        with engine.begin() as conn:
            conn.execute(table.insert(), {"id": next(ids), "data": payload})

    def raw_get() -> bytes:
        with engine.connect() as conn:
            return bytes(conn.execute(sa.select(table.c.data).where(table.c.id == 0)).scalar())

    try:
        raw_put_t = _time(raw_put)
        raw_get_t = _time(raw_get)
    except sa.exc.SQLAlchemyError as e:  # MariaDB: one parameter > max_allowed_packet
        print(f"  (raw single-row INSERT failed: {str(e.orig).splitlines()[0][:90]})")
        raw_put_t = raw_get_t = float("nan")
    engine.dispose()
    return {"put": put, "get": get, "raw_put": raw_put_t, "raw_get": raw_get_t}


def _frame(rows: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "ra": rng.random(rows) * 360,
            "flux": rng.random(rows).astype(np.float32),
            "band": np.array(["g", "r", "i", "z"])[rng.integers(0, 4, rows)].astype(object),
            "ok": rng.random(rows) > 0.5,
        }
    )


def bench_table(root: str, rows: int) -> dict[str, float]:
    from butler_db._engine import create_engine, normalise_url

    df = _frame(rows)
    b = Butler.create(root)
    b.register_dataset_type("cat", "pandas.DataFrame", "sql-table", dimensions={"i": int})
    counter = iter(range(10**6))
    butler_t = _time(lambda: b.put(df, "cat", i=next(counter)), repeat=2)
    read_t = _time(lambda: b.get("cat", i=0), repeat=1)
    b.close()
    engine = create_engine(normalise_url(root))
    names = iter(range(10**6))
    pandas_t = _time(
        lambda: df.to_sql(f"pd_{next(names)}", engine, index=False, if_exists="fail"), repeat=2
    )
    import pandas as pd

    pd_read_t = _time(lambda: pd.read_sql_table("pd_0", engine), repeat=1)
    engine.dispose()
    return {"butler": butler_t, "pandas": pandas_t, "read": read_t, "pd_read": pd_read_t}


def _reachable(url: str | None) -> bool:
    if not url:
        return False
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception as e:
        print(f"  ({make_url(url).render_as_string(hide_password=True)} unreachable: {e})")
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=os.environ.get("BUTLER_TEST_POSTGRES_URL"))
    parser.add_argument("--mysql", default=None)
    args = parser.parse_args()
    backends = [("sqlite", None)]
    if _reachable(args.postgres):
        backends.append(("postgresql", args.postgres))
    if _reachable(args.mysql):
        backends.append(("mysql", args.mysql))
    with tempfile.TemporaryDirectory() as tmp:
        print(f"blob: {args.size_mib} MiB npy array; best of 3; ratio = raw / butler time")
        for kind, url in backends:
            with _fresh(kind, url, tmp) as root:
                r = bench_blob(root, args.size_mib)
            mb = args.size_mib
            for op in ("put", "get"):
                print(
                    f"  {kind:10s} {op}: butler {r[op]:.3f} s ({mb / r[op]:.0f} MiB/s), raw "
                    f"SQLAlchemy {r['raw_' + op]:.3f} s ({mb / r['raw_' + op]:.0f} MiB/s), "
                    f"ratio {r['raw_' + op] / r[op]:.2f}"
                )
        print(f"sql-table: {args.rows:,} rows x 5 columns; ratio = butler / pandas rows/s")
        for kind, url in backends:
            with _fresh(kind, url, tmp) as root:
                r = bench_table(root, args.rows)
            n = args.rows
            print(
                f"  {kind:10s} insert: butler {n / r['butler']:,.0f} rows/s, pandas.to_sql "
                f"{n / r['pandas']:,.0f} rows/s, ratio {r['pandas'] / r['butler']:.2f}; "
                f"read: butler {n / r['read']:,.0f} rows/s, pandas.read_sql_table "
                f"{n / r['pd_read']:,.0f} rows/s"
            )


if __name__ == "__main__":
    main()
