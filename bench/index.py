"""The dataset index (issue 15): queries through the index against listing the storage, the
cost of indexing a put, and rebuilding the index, each printed with its target and PASS/FAIL.

1. Queries at ``--index-n`` (1,000,000) datasets: a posix repository whose index is
   bulk-loaded through ``Index.add`` in batches of ``butler._index.BATCH`` rows (only the
   rows: no bytes are written). A constraint query and a ``where`` query each returning
   1,000 data IDs, and ``count``, through ``Butler.datasets`` / ``Butler.count``.
   Target: median <= 50 ms each.
2. ``--posix-n`` (100,000) small JSON datasets put for real (``Butler.put``) on posix:
   ``ccd=3`` (no key prefix: every visit) through the index against
   ``Butler(root, index=False)``, which lists the repository, shown; and the issue's query,
   ``ccd=[3, 4]`` in 500 visits (1,000 data IDs at 100,000 datasets), the same two ways.
   Target for that one: >= 100x faster (judged at 100,000 only). Then the index files are
   deleted and ``Butler.reindex()`` rebuilds the index from the storage. Target: <= 60 s
   for 100,000 datasets (projected from ``--posix-n``).
3. Put overhead on posix: small fsync'ed puts into a repository with the embedded index
   against one created with ``index="none"``, alternating put by put (who goes first
   alternates too). Target: <= 1.15x, on the totals.
4. ``--s3-n`` (10,000) datasets on S3 (a moto server on 127.0.0.1): the listing query (S3
   has no embedded index) against the same query through an index in a SQLite file
   (``index="sqlite:////tmp/....db"``) and, when ``BUTLER_TEST_POSTGRES_URL`` is set, in
   PostgreSQL (both need butler-db). S3 put with a PostgreSQL index against S3 put
   without: target <= 1.2x.

Usage: ``python bench/index.py [--quick] [--index-n N] [--posix-n N] [--s3-n N]
[--only queries,posix,overhead,s3]``. Exits 1 if a measured target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from _report import load

from butler import Butler, ButlerError
from butler._index import BATCH, INDEX_NAME, IndexEntry

#: ccds per visit in every repository here (data IDs are visit x ccd 1..CCDS).
CCDS = 10
DATASET = "calexp"
KEY, SECRET = "bench-key", "bench-secret"


@dataclass
class Check:
    """One target: what was measured, against what, and whether it was met (``None``:
    not measured, with the reason in ``value``)."""

    name: str
    value: str
    target: str
    ok: bool | str | None


CHECKS: list[Check] = []


def verdict(ok: bool | str | None) -> str:
    """PASS/FAIL; SKIP (not measured); INFO (no target, or not at the target's size)."""
    return "INFO" if isinstance(ok, str) else {True: "PASS", False: "FAIL", None: "SKIP"}[ok]


def check(name: str, value: str, target: str, ok: bool | str | None) -> None:
    CHECKS.append(Check(name, value, target, ok))
    print(f"  -> {verdict(ok)}  {name}: {value}" + (f" (target {target})" if target else ""))


def samples(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def spread(times: list[float], unit: str = "ms") -> str:
    """``min / median / max`` of seconds, in ``unit``."""
    scale = {"ms": 1e3, "s": 1.0}[unit]
    lo, mid, hi = min(times), statistics.median(times), max(times)
    return f"min {lo * scale:.1f} / median {mid * scale:.1f} / max {hi * scale:.1f} {unit}"


def obj(visit: int, ccd: int) -> dict[str, Any]:
    return {"visit": visit, "ccd": ccd, "gain": 1.5, "name": f"v{visit} c{ccd}"}


def register(butler: Butler) -> None:
    """``calexp``: dict as JSON, dimensions visit and ccd, key ``calexp/{visit}/{ccd}.json``."""
    butler.register_dataset_type(DATASET, dict, "json", dimensions={"visit": int, "ccd": int})


# -- 1. queries at a million ----------------------------------------------------------


def bench_queries(base: str, n: int, repeat: int) -> None:
    visits = n // CCDS
    if visits < 1000:
        raise SystemExit("--index-n must be at least 10,000 (1,000 visits x 10 ccds)")
    root = os.path.join(base, "million")
    butler = Butler.create(root)
    register(butler)
    dt = butler.dataset_type(DATASET)
    index = butler.index
    assert index is not None
    assert butler.location(DATASET, visit=7, ccd=3).locations == ["calexp/7/3.json"]
    print(
        f"\n1. queries at {visits * CCDS:,} indexed datasets ({visits:,} visits x {CCDS} ccds), "
        f"posix repository {root}"
    )
    print(
        f"   bulk load: Index.add of IndexEntry rows in batches of BATCH={BATCH} straight "
        f"into .butler/{INDEX_NAME}; the bytes are not written"
    )
    now = time.time()
    start = time.perf_counter()
    batch: list[IndexEntry] = []
    for visit in range(visits):
        for ccd in range(1, CCDS + 1):
            batch.append(
                IndexEntry(
                    data_id={"visit": visit, "ccd": ccd},
                    key=f"calexp/{visit}/{ccd}.json",
                    format="json",
                    python_type=dt.python_type,
                    size=80,
                    created=now,
                )
            )
            if len(batch) == BATCH:
                index.add(dt, batch)
                batch = []
    index.add(dt, batch)
    load = time.perf_counter() - start
    print(f"   loaded in {load:.1f} s ({visits * CCDS / load:,.0f} rows/s)")
    butler.close()

    # Both queries return exactly 1,000 data IDs, from the middle of the visit range.
    v0 = visits // 2 - 250
    constraint: dict[str, Any] = {"visit": range(v0, v0 + 250), "ccd": [1, 2, 5, 7]}  # 250 x 4
    where = f"ccd in (3, 4) and visit >= {v0} and visit < {v0 + 500}"  # 500 x 2
    expected_c = [{"visit": v, "ccd": c} for v in range(v0, v0 + 250) for c in (1, 2, 5, 7)]
    expected_w = [{"visit": v, "ccd": c} for v in range(v0, v0 + 500) for c in (3, 4)]

    fresh = Butler(root)
    start = time.perf_counter()
    first = list(fresh.datasets(DATASET, **constraint))
    cold = time.perf_counter() - start
    assert first == expected_c, "constraint query answered wrongly"
    assert list(fresh.datasets(DATASET, where)) == expected_w, "where query answered wrongly"
    assert fresh.count(DATASET, **constraint) == 1000
    assert fresh.count(DATASET, ccd=3) == visits
    assert fresh.count(DATASET) == visits * CCDS
    print(
        f"   first query of a new Butler (policy read, index opened): {cold * 1e3:.1f} ms; "
        f"then {repeat} calls each, interleaved, answers checked against the expected lists"
    )
    cases: list[tuple[str, str, Callable[[], Any]]] = [
        (
            f"datasets(visit=range({v0}, {v0 + 250}), ccd=[1, 2, 5, 7]) -> 1,000",
            "constraint query",
            lambda: list(fresh.datasets(DATASET, **constraint)),
        ),
        (
            f'datasets("{where}") -> 1,000',
            "where query",
            lambda: list(fresh.datasets(DATASET, where)),
        ),
        (
            "count(same constraint) -> 1,000",
            "count (1,000)",
            lambda: fresh.count(DATASET, **constraint),
        ),
        (f"count(ccd=3) -> {visits:,}", f"count ({visits:,})", lambda: fresh.count(DATASET, ccd=3)),
        (f"count() -> {visits * CCDS:,}", "count (all)", lambda: fresh.count(DATASET)),
    ]
    measure_cases(cases, repeat, visits * CCDS, "")
    fresh.close()

    # What SQLite's planner does with more statistics: the index runs ANALYZE itself (after
    # ANALYZE_FIRST added rows, at each doubling, and on a first query without statistics),
    # so the figures above are what a user gets; these show what one more full ANALYZE,
    # run from outside butler, would change.
    import sqlite3

    conn = sqlite3.connect(os.path.join(root, ".butler", INDEX_NAME))
    start = time.perf_counter()
    conn.execute("ANALYZE")
    conn.commit()
    conn.close()
    print(
        f"\n   after ANALYZE on the index file (sqlite3, outside butler; "
        f"{time.perf_counter() - start:.1f} s), same calls on a new Butler:"
    )
    fresh = Butler(root)
    assert list(fresh.datasets(DATASET, **constraint)) == expected_c
    measure_cases(cases, repeat, visits * CCDS, " after ANALYZE")
    fresh.close()
    shutil.rmtree(root)


def measure_cases(
    cases: list[tuple[str, str, Callable[[], Any]]], repeat: int, n: int, note: str
) -> None:
    """Each case ``repeat`` times, the cases interleaved; one check per case."""
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(repeat):
        for name, _, fn in cases:
            times[name] += samples(fn, 1)
    at_size = n >= 1_000_000
    for name, short, _ in cases:
        print(f"   {name}\n      {spread(times[name])}")
        median = statistics.median(times[name])
        if note:  # not what butler does by itself: shown, not judged
            ok: bool | str = "info"
        else:
            ok = median <= 0.050 if at_size else "info"
        check(
            f"{short} at {n:,} indexed{note}",
            f"median {median * 1e3:.1f} ms",
            "<= 50 ms at 1,000,000" + ("" if at_size else "; judged only at that size"),
            ok,
        )


# -- 2. real puts on posix: index vs listing, reindex -----------------------------------


def put_many(butler: Butler, n: int, threads: int = 1, what: str = "") -> float:
    """Put ``n`` datasets (visit x ccd); return seconds."""
    ids = [(v, c) for v in range(n // CCDS) for c in range(1, CCDS + 1)]
    start = time.perf_counter()
    if threads == 1:
        for i, (v, c) in enumerate(ids):
            butler.put(obj(v, c), DATASET, visit=v, ccd=c)
            if (i + 1) % max(n // 10, 1) == 0:
                print(f"   ... {what}{i + 1:,} put ({time.perf_counter() - start:.0f} s)")
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda vc: butler.put(obj(*vc), DATASET, visit=vc[0], ccd=vc[1]), ids))
    return time.perf_counter() - start


def query_ccd3(butler: Butler) -> list[dict[str, Any]]:
    return list(butler.datasets(DATASET, ccd=3))


def compare_query(
    indexed: Butler,
    listed: Butler,
    rounds: int,
    per_round: int,
    where: str,
    constraints: dict[str, Any] | None = None,
) -> tuple[list[float], list[float]]:
    """The same query (default ``ccd=3``) both ways, interleaved; answers must be equal."""
    constraints = constraints or {"ccd": 3}
    a = list(indexed.datasets(DATASET, **constraints))
    b = list(listed.datasets(DATASET, **constraints))
    assert a == b and len(a) == indexed.count(DATASET, **constraints), f"answers differ ({where})"
    t_index: list[float] = []
    t_list: list[float] = []
    for _ in range(rounds):
        t_index += samples(lambda: list(indexed.datasets(DATASET, **constraints)), per_round)
        t_list += samples(lambda: list(listed.datasets(DATASET, **constraints)), 1)
    return t_index, t_list


def bench_posix(base: str, n: int, rounds: int) -> None:
    n -= n % CCDS
    root = os.path.join(base, "posix")
    print(f"\n2. {n:,} small JSON datasets put for real on posix ({root})")
    butler = Butler.create(root)
    register(butler)
    took = put_many(butler, n)
    print(f"   Butler.put x {n:,} (fsync'ed, each indexed): {took:.0f} s, {n / took:,.0f} puts/s")
    listed = Butler(root, index=False)
    visits = n // CCDS
    v0 = max(visits // 2 - 250, 0)
    width = min(500, visits)
    # No query pins a key prefix (the template is calexp/{visit}/{ccd}.json and visit is
    # not given as one value): listing reads every key; the index answers from SQL. The
    # judged one is the issue's: 1,000 data IDs (at 100,000 datasets); ccd=3 returns a
    # tenth of the repository and is shown for information.
    queries: list[tuple[str, str, dict[str, Any], int, bool]] = [
        (
            f"ccd=[3, 4], visit=range({v0}, {v0 + width})",
            "1,000-answer",
            {"ccd": [3, 4], "visit": range(v0, v0 + width)},
            2 * width,
            True,
        ),
        ("ccd=3", "ccd=3", {"ccd": 3}, visits, False),
    ]
    for text, short, constraints, answers, judged in queries:
        t_index, t_list = compare_query(butler, listed, rounds, 5, "posix", constraints)
        print(f"   query {text} -> {answers:,} data IDs; {rounds} interleaved rounds")
        print(f"     through the index (SELECT on .butler/{INDEX_NAME}) : {spread(t_index)}")
        print(f"     Butler(root, index=False): list + parse every key: {spread(t_list)}")
        ratio = statistics.median(t_list) / statistics.median(t_index)
        check(
            f"posix {short} query at {n:,} ({answers:,} answers), index vs listing",
            f"{ratio:,.0f}x faster",
            (">= 100x at 100,000" if judged else "none (a tenth of the repository)")
            + ("" if n >= 100_000 or not judged else "; judged only at that size"),
            ratio >= 100 if n >= 100_000 and judged else "info",
        )
    butler.close()
    listed.close()

    # Reindex: delete the index files; the policy still says "embedded", so the next
    # Butler opens an empty index and reindex() rebuilds it from the bytes' metadata.
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(root, ".butler", INDEX_NAME + suffix))
    fresh = Butler(root)
    start = time.perf_counter()
    report = fresh.reindex()
    took = time.perf_counter() - start
    assert report.indexed == n and fresh.count(DATASET) == n, report
    assert list(fresh.datasets(DATASET, ccd=3)) == list(listed.datasets(DATASET, ccd=3))
    print(
        f"   index files deleted; Butler.reindex() listed {report.listed:,}, read each "
        f"dataset's metadata, indexed {report.indexed:,}: {took:.1f} s "
        f"({n / took:,.0f} datasets/s)"
    )
    projected = took * 100_000 / n
    check(
        f"reindex of {n:,} posix datasets",
        f"{took:.1f} s" + (f" (projected to 100,000: {projected:.1f} s)" if n != 100_000 else ""),
        "<= 60 s for 100,000",
        projected <= 60,
    )
    fresh.close()
    listed.close()
    shutil.rmtree(root)


# -- 3. put overhead on posix -----------------------------------------------------------


def interleaved_puts(
    with_index: Butler, without: Butler, n: int
) -> tuple[list[float], list[float]]:
    """Seconds of each put on each side, alternating one put each (who goes first
    alternates too), so both sides see the same disk, cache and machine load."""
    t_with: list[float] = []
    t_without: list[float] = []
    for i in range(n):
        pair = [(with_index, t_with), (without, t_without)]
        for butler, times in pair if i % 2 else pair[::-1]:
            start = time.perf_counter()
            butler.put(obj(i, 1), DATASET, visit=i, ccd=1)
            times.append(time.perf_counter() - start)
    return t_with, t_without


def report_overhead(what: str, t_with: list[float], t_without: list[float], goal: float) -> None:
    print(f"   with index   : {spread(t_with)} per put, total {sum(t_with):.2f} s")
    print(f"   without index: {spread(t_without)} per put, total {sum(t_without):.2f} s")
    median = statistics.median(t_with) / statistics.median(t_without)
    total = sum(t_with) / sum(t_without)
    print(f"   ratio with/without: of the medians {median:.3f}, of the totals {total:.3f}")
    check(what, f"{total:.3f}x (totals), {median:.3f}x (medians)", f"<= {goal}x", total <= goal)


def bench_overhead(base: str, n: int) -> None:
    print(f"\n3. put overhead on posix: {n:,} small JSON puts per side, alternating put by put")
    print(
        "   with: Butler.create(root) (embedded index: fsync'ed bytes, then one INSERT in "
        "SQLite WAL, synchronous=NORMAL); without: Butler.create(root, index='none')"
    )
    with_index = Butler.create(os.path.join(base, "with"))
    without = Butler.create(os.path.join(base, "without"), index="none")
    assert with_index.index is not None and without.index is None
    for b in (with_index, without):
        register(b)
    t_with, t_without = interleaved_puts(with_index, without, n)
    assert with_index.count(DATASET) == n
    report_overhead("posix put with index vs without", t_with, t_without, 1.15)
    with_index.close()
    without.close()


# -- 4. S3 --------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_schema(url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema (``search_path`` in the URL), dropped afterwards."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"butler_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    try:
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()


def s3_repo(root: str, options: dict[str, Any], index: str | None) -> Butler | str:
    """A new S3 repository with ``index``, or why it could not be created."""
    try:
        butler = Butler.create(root, index=index, **options)
    except ButlerError as exc:
        return f"{type(exc).__name__}: {exc}"
    register(butler)
    return butler


def bench_s3(base: str, n: int, rounds: int, overhead_n: int) -> None:
    import boto3

    from butler.testing import start_moto, stop_moto

    n -= n % CCDS
    pg_url = os.environ.get("BUTLER_TEST_POSTGRES_URL")
    endpoint, proc = start_moto({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    stack = contextlib.ExitStack()
    try:
        os.environ.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        options: dict[str, Any] = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}
        print(f"\n4. S3: moto server at {endpoint}; {n:,} small JSON datasets per repository")
        print(
            "   S3 has no embedded index: Butler(root, index=False) lists the bucket; the "
            "indexed side is a repository created with Butler.create(root, index=URL)"
        )
        indexes: list[tuple[str, str]] = [("SQLite file", f"sqlite:///{base}/s3-index.db")]
        pg_missing = "BUTLER_TEST_POSTGRES_URL unset"
        if pg_url:
            try:
                indexes.append(("PostgreSQL", stack.enter_context(postgres_schema(pg_url))))
            except Exception as exc:  # a server given but not there: said, never silent
                pg_missing = f"PostgreSQL unreachable: {str(exc).splitlines()[0]}"
                pg_url = None
        if not pg_url:
            check("S3 query through a PostgreSQL index", pg_missing, "", None)
        repos: list[tuple[str, str, Butler]] = []
        for label, url in indexes:
            root = f"s3://bench/{label.split()[0].lower()}"
            repo = s3_repo(root, options, url)
            if isinstance(repo, str):
                check(f"S3 query through a {label} index", f"not available ({repo})", "", None)
            else:
                repos.append((label, root, repo))
        if not repos:  # still measure what listing costs
            plain = s3_repo("s3://bench/plain", options, None)
            assert not isinstance(plain, str), plain
            repos.append(("no", "s3://bench/plain", plain))
        for label, root, repo in repos:
            took = put_many(repo, n, threads=8)
            print(
                f"   {label} index: Butler.put x {n:,} into {root} (8 threads): {took:.0f} s, "
                f"{n / took:,.0f} puts/s"
            )
            listed = Butler(root, index=False, **options)
            if repo.index is None:
                t_list = samples(functools.partial(query_ccd3, listed), rounds)
                print(f"   query ccd=3 -> {n // CCDS:,} data IDs, listing: {spread(t_list)}")
                median = statistics.median(t_list)
                check(f"S3 ccd=3 query by listing, at {n:,}", f"median {median:.2f} s", "", "info")
            else:
                t_index, t_list = compare_query(repo, listed, rounds, 5, label)
                print(f"   query ccd=3 -> {n // CCDS:,} data IDs, {rounds} interleaved rounds")
                print(f"     through the {label} index     : {spread(t_index)}")
                print(f"     listing the bucket (index=False): {spread(t_list)}")
                ratio = statistics.median(t_list) / statistics.median(t_index)
                check(
                    f"S3 ccd=3 query at {n:,}, {label} index vs listing",
                    f"{ratio:,.0f}x faster (listing {statistics.median(t_list):.2f} s, index "
                    f"{statistics.median(t_index) * 1e3:.1f} ms)",
                    "",
                    "info",
                )
            repo.close()
            listed.close()
        what = "S3 put with a PostgreSQL index vs without"
        if not pg_url:
            check(what, pg_missing, "", None)
            return
        print(f"   put overhead: {overhead_n:,} puts per side, alternating put by put")
        with_pg = s3_repo("s3://bench/put-pg", options, indexes[1][1])
        without = s3_repo("s3://bench/put-none", options, "none")
        if isinstance(with_pg, str) or isinstance(without, str):
            why = with_pg if isinstance(with_pg, str) else without
            check(what, f"not available ({why})", "", None)
            return
        t_with, t_without = interleaved_puts(with_pg, without, overhead_n)
        report_overhead(what, t_with, t_without, 1.2)
        with_pg.close()
        without.close()
    finally:
        stack.close()
        stop_moto(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller N everywhere")
    parser.add_argument("--index-n", type=int, help="rows bulk-loaded (default 1,000,000)")
    parser.add_argument("--posix-n", type=int, help="posix puts (default 100,000)")
    parser.add_argument("--s3-n", type=int, help="S3 puts per repository (default 10,000)")
    parser.add_argument("--only", default="queries,posix,overhead,s3", help="sections to run")
    args = parser.parse_args()
    quick = args.quick
    index_n = args.index_n or 1_000_000
    posix_n = args.posix_n or (10_000 if quick else 100_000)
    s3_n = args.s3_n or (1_000 if quick else 10_000)
    only = set(args.only.split(","))
    base = tempfile.mkdtemp(prefix="butler-bench-index-")
    print(f"butler dataset index bench{' (--quick)' if quick else ''}, scratch {base}")
    print(load())
    try:
        if "queries" in only:
            bench_queries(base, index_n, repeat=10 if quick else 30)
        if "posix" in only:
            bench_posix(base, posix_n, rounds=3)
        if "overhead" in only:
            bench_overhead(base, 500 if quick else 2000)
        if "s3" in only:
            bench_s3(base, s3_n, 3, 100 if quick else 400)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(load())
    print("\nsummary")
    for c in CHECKS:
        print(
            f"  {verdict(c.ok)}  {c.name}: {c.value}"
            + (f" (target {c.target})" if c.target else "")
        )
    sys.exit(1 if any(c.ok is False for c in CHECKS) else 0)


if __name__ == "__main__":
    main()
