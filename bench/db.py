"""butler-db against the best raw method of each database, interleaved in one run.

Every measure runs butler and its baseline in alternation (A B A B ...; ``--rounds``
pairs) and prints the median times and the min/median/max of the ratio, with the machine's
load average before and after. Sections (``--sections``, default all):

small   small JSON datasets: butler get/put on the database against butler on posix (the
        goal: a SQLite get within 3x a posix get); N gets or puts per round.
blob    an N MiB array (npy) through butler against raw DB-API on the same connection
        pool: the same bytes inserted as 1 MiB rows of one table in one transaction
        (``executemany`` would hold every chunk at once; one 64 MiB row fails on MariaDB,
        whose max_allowed_packet is 16 MiB), and read back with one ``SELECT ... ORDER BY
        seq``. Ratio = butler / raw time.
table   R rows x 5 columns of a DataFrame: butler's ``sql-table`` put against the best of
        ``pandas.DataFrame.to_sql`` (default ``executemany``, and ``method="multi"``) and the
        raw driver path (PostgreSQL: psycopg ``COPY ... FROM STDIN``; SQLite and MariaDB:
        DB-API ``executemany`` of tuples). Ratio = butler / best raw time.
list    ``storage.list(prefix)`` returning 100 keys from 1k, 10k and 100k rows, against the
        same indexed range query through the raw DB-API cursor.

SQLite always; PostgreSQL with ``--postgres URL`` (default ``BUTLER_TEST_POSTGRES_URL``),
MariaDB with ``--mysql URL`` (default ``BUTLER_TEST_MYSQL_URL``); ``mysql://`` and
``postgresql://`` pick the drivers butler-db uses. A server given but unreachable is
reported, never skipped in silence. Each run uses fresh databases (schemas), dropped after.

Usage: ``python bench/db.py [--sections small,blob,table,list] [--rounds 5]
[--size-mib 64] [--rows 200000] [--n 200]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa

from butler import Butler

CHUNK = 1024 * 1024


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _url(text: str) -> sa.URL:
    from butler_db._engine import normalise_url

    return normalise_url(text)


@contextmanager
def _fresh(kind: str, base: str | None, tmp: str) -> Iterator[str]:
    """A fresh database (schema on PostgreSQL) for one backend, dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp}/bench-{uuid.uuid4().hex[:6]}.db"
        return
    assert base is not None
    url = _url(base)
    name = f"butler_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        if kind == "postgresql":
            conn.execute(sa.schema.CreateSchema(name))
            root = url.update_query_dict({"options": f"-csearch_path={name}"})
        else:
            conn.exec_driver_sql(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            root = url.set(database=name)
    try:
        yield root.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            if kind == "postgresql":
                conn.execute(sa.schema.DropSchema(name, cascade=True))
            else:
                conn.exec_driver_sql(f"DROP DATABASE {name}")
        admin.dispose()


def _begin(kind: str, cursor: Any) -> None:
    """One transaction for the raw side too: butler-db's SQLite connections run in
    autocommit mode (it issues its own BEGIN), so without this every raw INSERT would be
    a transaction of its own. psycopg and PyMySQL begin implicitly."""
    if kind == "sqlite":
        cursor.execute("BEGIN")


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def _interleave(rounds: int, butler: Callable[[int], Any], raw: Callable[[int], Any]) -> Any:
    """``(butler times, raw times)`` of ``rounds`` alternated calls (the order flips every
    round, so neither side always runs on a warmer cache), after one untimed call each
    (round ``-1``)."""
    butler(-1)  # warm-up, untimed: compiled statements, schema checks, pools
    raw(-1)
    ours, theirs = [], []
    for r in range(rounds):
        if r % 2:
            theirs.append(_timed(raw, r))
            ours.append(_timed(butler, r))
        else:
            ours.append(_timed(butler, r))
            theirs.append(_timed(raw, r))
    return ours, theirs


def _report(label: str, ours: list[float], theirs: list[float], unit: float, what: str) -> None:
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    print(
        f"  {label:34s} butler {statistics.median(ours) / unit * 1e3:9.3f} ms  "
        f"raw {statistics.median(theirs) / unit * 1e3:9.3f} ms  ratio butler/raw "
        f"min {ratios[0]:.2f} median {statistics.median(ratios):.2f} max {ratios[-1]:.2f}"
        f"{'  ' + what if what else ''}"
    )


# -- small datasets ------------------------------------------------------------------------


def bench_small(kind: str, root: str, tmp: str, n: int, rounds: int) -> None:
    obj = {"visit": 1, "gain": 1.5, "name": "dataset", "flags": [1, 2, 3]}
    posix = Butler.create(os.path.join(tmp, f"posix-{uuid.uuid4().hex[:6]}"))
    db = Butler.create(root)
    for b in (posix, db):
        b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})

    def puts(b: Butler) -> Callable[[int], None]:
        return lambda r: [b.put(obj, "cfg", visit=r * n + i) for i in range(n)]

    def gets(b: Butler) -> Callable[[int], None]:
        return lambda r: [b.get("cfg", visit=i) for i in range(n)]

    ours, theirs = _interleave(rounds, puts(db), puts(posix))
    _report(f"{kind} small put (vs posix)", ours, theirs, n, "per put")
    ours, theirs = _interleave(rounds, gets(db), gets(posix))
    goal = "; goal SQLite <= 3" if kind.lower().startswith("sqlite") else ""  # SQLite's only
    _report(f"{kind} small get (vs posix)", ours, theirs, n, f"per get{goal}")
    db.close()
    posix.close()


# -- blobs ---------------------------------------------------------------------------------


def bench_blob(kind: str, root: str, size_mib: int, rounds: int) -> None:
    arr = np.random.default_rng(0).integers(0, 2**62, size_mib * CHUNK // 8)
    payload = memoryview(arr.tobytes())
    b = Butler.create(root)
    b.register_dataset_type("arr", "numpy.ndarray", "npy", dimensions={"i": int})
    engine: sa.Engine = b.storage.engine  # type: ignore[attr-defined]  # butler's own pool
    table = sa.Table(
        "raw_chunks",
        sa.MetaData(),
        sa.Column("blob_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary().with_variant(sa.dialects.mysql.LONGBLOB(), "mysql")),
    )
    table.metadata.create_all(engine)
    insert = str(table.insert().compile(dialect=engine.dialect))
    select = str(
        sa.select(table.c.data)
        .where(table.c.blob_id == sa.bindparam("b"))
        .order_by(table.c.seq)
        .compile(dialect=engine.dialect)
    )
    positional = engine.dialect.positional

    def raw_put(r: int) -> None:
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            _begin(kind, cursor)
            for seq, start in enumerate(range(0, len(payload), CHUNK)):
                data = bytes(payload[start : start + CHUNK]) if kind == "mysql" else payload[
                    start : start + CHUNK
                ]  # fmt: skip
                row = {"blob_id": r, "seq": seq, "data": data}
                cursor.execute(insert, tuple(row.values()) if positional else row)
            conn.commit()
        finally:
            conn.close()

    def raw_get(_r: int) -> np.ndarray[Any, Any]:
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(select, (0,) if positional else {"b": 0})
            data = b"".join(bytes(row[0]) for row in cursor.fetchall())
            conn.rollback()
        finally:
            conn.close()
        return np.frombuffer(data, dtype=arr.dtype)

    def put(r: int) -> None:
        b.put(arr, "arr", i=r)

    ours, theirs = _interleave(rounds, put, raw_put)
    _report(f"{kind} {size_mib} MiB put", ours, theirs, 1, f"({size_mib} MiB)")
    assert np.array_equal(b.get("arr", i=0), arr) and np.array_equal(raw_get(0), arr)
    ours, theirs = _interleave(rounds, lambda r: b.get("arr", i=0), raw_get)
    _report(f"{kind} {size_mib} MiB get", ours, theirs, 1, "")
    b.close()  # disposes of the engine both sides used


# -- tables --------------------------------------------------------------------------------


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


def _raw_insert(engine: sa.Engine, name: str, df: Any) -> None:
    """The driver's fastest bulk path into a new table (COPY on PostgreSQL)."""
    columns = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.BigInteger),
        sa.Column("ra", sa.Double),
        sa.Column("flux", sa.Float),
        sa.Column("band", sa.String(8)),
        sa.Column("ok", sa.Boolean),
    )
    columns.create(engine)
    rows = list(
        zip(
            df["id"].tolist(), df["ra"].tolist(), df["flux"].tolist(), df["band"].tolist(),
            df["ok"].tolist(), strict=True,
        )
    )  # fmt: skip
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        _begin(engine.dialect.name, cursor)
        if engine.dialect.name == "postgresql":
            with cursor.copy(f"COPY {name} (id, ra, flux, band, ok) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
            sql = f"INSERT INTO {name} (id, ra, flux, band, ok) VALUES ({', '.join([mark] * 5)})"
            for start in range(0, len(rows), 50_000):
                cursor.executemany(sql, rows[start : start + 50_000])
        conn.commit()
    finally:
        conn.close()


def bench_table(kind: str, root: str, rows: int, rounds: int) -> None:
    from butler_db._engine import create_engine

    df = _frame(rows)
    b = Butler.create(root)
    b.register_dataset_type("cat", "pandas.DataFrame", "sql-table", dimensions={"i": int})
    engine = create_engine(_url(root))
    names = iter(range(10**6))
    methods: dict[str, Callable[[Any], Any]] = {
        "to_sql": lambda frame: frame.to_sql(f"pd_{next(names)}", engine, index=False),
        "to_sql multi": lambda frame: frame.to_sql(
            f"pd_{next(names)}", engine, index=False, method="multi", chunksize=2000
        ),
        "raw " + ("COPY" if kind == "postgresql" else "executemany"): lambda frame: _raw_insert(
            engine, f"raw_{next(names)}", frame
        ),
    }
    ids = iter(range(10**6))

    def butler_put(frame: Any) -> None:
        b.put(frame, "cat", i=next(ids))

    # One untimed warm-up each on 100 rows (imports, compiled statements, pools), then the
    # rounds: butler first in even rounds, last in odd ones.
    for fn in (butler_put, *methods.values()):
        fn(df.head(100))
    times: dict[str, list[float]] = {m: [] for m in methods}
    ours: list[float] = []
    for r in range(rounds):
        if r % 2 == 0:
            ours.append(_timed(butler_put, df))
        for name, fn in methods.items():
            times[name].append(_timed(fn, df))
        if r % 2:
            ours.append(_timed(butler_put, df))
    best = min(methods, key=lambda m: statistics.median(times[m]))
    for name in methods:
        print(f"    {kind:10s} {name:18s} {rows / statistics.median(times[name]):12,.0f} rows/s")
    print(f"    {kind:10s} {'butler sql-table':18s} {rows / statistics.median(ours):12,.0f} rows/s")
    _report(f"{kind} {rows:,}-row insert vs {best}", ours, times[best], 1, "")
    b.close()
    engine.dispose()


# -- listings ------------------------------------------------------------------------------


def bench_list(kind: str, root: str, sizes: list[int], rounds: int) -> None:
    import json
    import secrets

    from butler_db import _queries as q
    from butler_db import _schema as schema
    from butler_db._engine import create_engine

    b = Butler.create(root)
    storage = b.storage
    engine = create_engine(_url(root))
    done = 0
    for size in sizes:
        with engine.begin() as conn:  # raw rows: 100k puts would take minutes
            batch = []
            for i in range(done, size):
                key = f"calexp/{i // 100:06d}/{i % 100}.json"
                batch.append(
                    {
                        "key_hash": schema.key_hash(key), "key": key, "dataset_type": "calexp",
                        "data_id": json.dumps({"i": i}), "format": "json",
                        "python_type": "dict", "size": 2, "sha256": None, "created": 0.0,
                        "metadata": "{}", "blob_id": secrets.token_hex(16), "chunk_size": CHUNK,
                        "table_name": None,
                    }
                )  # fmt: skip
            conn.execute(schema.datasets.insert(), batch)
        done = size
        prefix = f"calexp/{(size // 200):06d}/"  # 100 keys, from the middle
        statement, params = q.list_keys(kind, prefix)
        compiled = statement.compile(dialect=engine.dialect)
        values = compiled.construct_params(params)
        sql = str(compiled)
        bound: Any = (
            tuple(values[k] for k in compiled.positiontup or []) if compiled.positional else values
        )

        def raw(_r: int, sql: str = sql, bound: Any = bound) -> list[str]:
            conn = engine.raw_connection()
            try:
                cursor = conn.cursor()
                cursor.execute(sql, bound)
                keys = [row[0] for row in cursor.fetchall()]
                conn.rollback()
            finally:
                conn.close()
            return keys

        found = list(storage.list(prefix))
        assert len(found) == 100 and sorted(raw(0)) == found, (len(found), prefix)
        ours, theirs = _interleave(rounds * 4, lambda r, p=prefix: list(storage.list(p)), raw)
        _report(f"{kind} list 100 of {size:,} keys", ours, theirs, 1, "")
    b.close()
    engine.dispose()


# -- main ----------------------------------------------------------------------------------


def _reachable(kind: str, url: str | None) -> str | None:
    """The URL if the server answers; says so loudly when it does not."""
    if not url:
        print(f"  ({kind}: no URL given: --{'postgres' if kind == 'postgresql' else 'mysql'})")
        return None
    try:
        engine = sa.create_engine(_url(url), poolclass=sa.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
        return url
    except Exception as e:
        shown = _url(url).render_as_string(hide_password=True)
        print(f"  !! {kind} at {shown} is unreachable, not measured: {str(e).splitlines()[0]}")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sections", default="small,blob,table,list")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=200, help="small datasets per round")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--list-sizes", default="1000,10000,100000")
    parser.add_argument("--postgres", default=os.environ.get("BUTLER_TEST_POSTGRES_URL"))
    parser.add_argument("--mysql", default=os.environ.get("BUTLER_TEST_MYSQL_URL"))
    args = parser.parse_args()
    sections = args.sections.split(",")
    print(f"bench/db.py {' '.join(sys.argv[1:])}  [{_load()}]")
    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    for kind, url in (("postgresql", args.postgres), ("mysql", args.mysql)):
        if _reachable(kind, url):
            backends.append((kind, url))
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            print(f"{section}:  [{_load()}]")
            for kind, url in backends:
                with _fresh(kind, url, tmp) as root:
                    if section == "small":
                        bench_small(kind, root, tmp, args.n, args.rounds)
                    elif section == "blob":
                        bench_blob(kind, root, args.size_mib, args.rounds)
                    elif section == "table":
                        bench_table(kind, root, args.rows, args.rounds)
                    elif section == "list":
                        sizes = [int(s) for s in args.list_sizes.split(",")]
                        bench_list(kind, root, sizes, args.rounds)
                    else:
                        raise SystemExit(f"unknown section {section!r}")
    print(f"done  [{_load()}]")


if __name__ == "__main__":
    main()
