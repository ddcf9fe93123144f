"""Runs and provenance (issue 16): what a put into a run and its provenance record cost, and
how fast a data ID's history across runs is, each printed with its target and PASS/FAIL.

1. Put cost on posix (fsync'ed, the default; embedded index), small JSON datasets, one
   repository per side, the sides alternating put by put (the order rotating), so that all
   see the same disk, cache and machine load:

   * **run**: ``Butler(root, run="u/bench/run-1").put`` -- this build's put into a run
     (key ``@runs/u~bench~run-1/calexp/<visit>/<ccd>.json``, provenance recorded);
   * **default**: ``Butler(root).put`` -- this build's put into the default run (key
     ``calexp/<visit>/<ccd>.json``, provenance recorded);
   * **no provenance**: ``Butler(root).put`` of this build with ``_with_provenance``
     replaced by the identity: no provenance record, no creation stamp; everything else
     (data ID check, existence check, JSON serialization, fsync'ed atomic commit with the
     metadata, index row) as in *default*. The released butler's put did exactly this work
     (it had neither runs nor provenance), so this side stands for today's put;
   * **raw**: ``storage.write_bytes(key, same JSON bytes, metadata=...)`` on a posix
     storage: the same fsync'ed atomic commit with the same metadata minus the provenance
     record (format, python type, dataset type, data ID, created), and nothing else (no
     data ID check, no existence check, no serialization, no index row).

   Targets: run <= 1.1x default and run <= 1.1x no provenance ("a put into a run costs
   <= 1.1x today's put"), on the totals. Raw is shown, not judged. Then, shown: the run,
   default and no-provenance sides again on ``memory://`` repositories (no disk: butler's
   own CPU time per put), and puts with
   3 inputs (inline: the inline list holds at most 600 bytes of JSON, 3-5 refs) and with 50
   (a content-addressed record written per put, because the inputs differ) against puts
   with none, in three runs of the *run* repository.
2. History: one data ID put into 100 runs (``--others`` more data IDs in each run, so the
   listing has something to wade through); ``Butler.history`` of that data ID through the
   index (target: median <= 10 ms) and with ``Butler(root, index=False)``, which lists the
   whole runs area and reads one metadata per run (shown).

Usage: ``python bench/runs.py [--quick] [--puts N] [--others N]``. Exits 1 if a target is
missed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from _report import load

from butler import Butler, DatasetRef
from butler._location import ButlerLocation
from butler._provenance import provenance_record

DATASET = "calexp"
RUN = "u/bench/run-1"
CCDS = 10
OBJ = {"gain": 1.5, "name": "a small dataset", "flags": [1, 2, 3]}


@dataclass
class Check:
    name: str
    value: str
    target: str
    ok: bool | None  # None: shown, not judged


CHECKS: list[Check] = []


def verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "INFO"}[ok]


def check(name: str, value: str, target: str, ok: bool | None) -> None:
    CHECKS.append(Check(name, value, target, ok))
    print(f"  -> {verdict(ok)}  {name}: {value}" + (f" (target {target})" if target else ""))


def spread(times: Sequence[float]) -> str:
    lo, mid, hi = min(times), statistics.median(times), max(times)
    return f"min {lo * 1e3:.2f} / median {mid * 1e3:.2f} / max {hi * 1e3:.2f} ms"


def register(butler: Butler) -> None:
    """``calexp``: dict as JSON, dimensions visit and ccd, key ``calexp/{visit}/{ccd}.json``."""
    butler.register_dataset_type(DATASET, dict, "json", dimensions={"visit": int, "ccd": int})


class NoProvenance(Butler):
    """This build's Butler with the provenance step taken out of put (see section 1)."""

    def _with_provenance(
        self, location: ButlerLocation, inputs: Sequence[DatasetRef] | None
    ) -> ButlerLocation:
        return location


def data_id(i: int) -> dict[str, Any]:
    return {"visit": i // CCDS, "ccd": i % CCDS}


def putter(butler: Butler) -> Callable[[int], Any]:
    """``put(i)``: the same object under data ID ``i``."""
    return lambda i: butler.put(OBJ, DATASET, data_id(i))


def interleave(sides: Mapping[str, Callable[[int], Any]], ids: range) -> dict[str, list[float]]:
    """Seconds of each call on each side; one call per side per item, the order rotating."""
    names = list(sides)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in ids:
        shift = i % len(names)
        for name in names[shift:] + names[:shift]:
            fn = sides[name]
            start = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - start)
    return times


def ratio_line(a: str, b: str, times: Mapping[str, list[float]]) -> tuple[float, float]:
    total = sum(times[a]) / sum(times[b])
    median = statistics.median(times[a]) / statistics.median(times[b])
    print(f"   {a} / {b}: totals {total:.3f}x, medians {median:.3f}x")
    return total, median


# -- 1. put cost -------------------------------------------------------------------------


def bench_put(base: str, n: int) -> None:
    print(f"\n1. put cost on posix: {n:,} small JSON puts per side, alternating put by put")
    roots = {name: os.path.join(base, name) for name in ("run", "default", "noprov", "raw")}
    for root in roots.values():
        register(Butler.create(root))
    run = Butler(roots["run"], run=RUN)
    default = Butler(roots["default"])
    noprov = NoProvenance(roots["noprov"])
    raw = Butler(roots["raw"]).storage
    # Warm-up (not timed): the same object everywhere, so the JSON bytes are one string.
    for b in (run, default, noprov):
        b.put(OBJ, DATASET, visit=-1, ccd=0)
    stored = run.storage.metadata(run.location(DATASET, visit=-1, ccd=0).key)
    with run.storage.open(run.location(DATASET, visit=-1, ccd=0).key) as f:
        payload = f.read()
    assert json.loads(payload) == OBJ
    prov_bytes = len(json.dumps(stored["provenance"], separators=(",", ":")))
    print(f"   key of the run side: {run.location(DATASET, data_id(0)).key}")
    print(
        f"   JSON payload {len(payload)} bytes; metadata {len(json.dumps(stored)):,} bytes, "
        f"of which the provenance record {prov_bytes} bytes"
    )

    def raw_put(i: int) -> None:
        ids = data_id(i)
        meta = {
            "format": "json",
            "python_type": "builtins.dict",
            "dataset_type": DATASET,
            "data_id": ids,
            "created": time.time(),
        }
        key = f"{DATASET}/{ids['visit']}/{ids['ccd']}.json"
        raw.write_bytes(key, payload, metadata=meta, overwrite=False, checksum=False)

    sides: dict[str, Callable[[int], Any]] = {
        "run": putter(run),
        "default": putter(default),
        "no provenance": putter(noprov),
        "raw": raw_put,
    }
    times = interleave(sides, range(n))
    assert run.count(DATASET) == default.count(DATASET) == noprov.count(DATASET) == n + 1
    assert run.provenance(DATASET, data_id(0)).ref.run == RUN
    assert noprov.provenance(DATASET, data_id(0)).butler_version is None
    assert raw.metadata(f"{DATASET}/0/0.json").get("provenance") is None
    for name, t in times.items():
        print(f"   {name:14s}: {spread(t)} per put, total {sum(t):.2f} s")
    total, median = ratio_line("run", "default", times)
    check(
        "put into a run vs default run",
        f"{total:.3f}x (totals), {median:.3f}x (medians)",
        "<= 1.1x",
        total <= 1.1,
    )
    total, median = ratio_line("run", "no provenance", times)
    check(
        "put into a run vs put without runs or provenance",
        f"{total:.3f}x (totals), {median:.3f}x (medians)",
        "<= 1.1x",
        total <= 1.1,
    )
    total, median = ratio_line("default", "no provenance", times)
    extra = statistics.median(times["default"]) - statistics.median(times["no provenance"])
    check(
        "provenance record alone (default vs no provenance)",
        f"{total:.3f}x (totals), {extra * 1e3:+.3f} ms per put (medians)",
        "",
        None,
    )
    total, median = ratio_line("run", "raw", times)
    check(
        "put into a run vs raw write_bytes (same bytes, metadata minus provenance)",
        f"{total:.3f}x (totals), {median:.3f}x (medians)",
        "",
        None,
    )

    # The same three Butler sides without a disk: memory:// repositories (in-process
    # bytes and index), so what remains is butler's own CPU time per put.
    k = 5 * n
    mem = {name: f"memory://bench-runs-{name}" for name in ("run", "default", "noprov")}
    for root in mem.values():
        register(Butler.create(root))
    in_memory = {
        "run": Butler(mem["run"], run=RUN),
        "default": Butler(mem["default"]),
        "no provenance": NoProvenance(mem["noprov"]),
    }
    times = interleave(
        {name: putter(b) for name, b in in_memory.items()},
        range(k),
    )
    print(f"   the same without a disk (memory:// repositories), {k:,} puts per side:")
    for name, t in times.items():
        print(f"   {name:14s}: {spread(t)} per put, total {sum(t):.2f} s")
    extra = statistics.median(times["run"]) - statistics.median(times["no provenance"])
    total, median = ratio_line("run", "no provenance", times)
    check(
        "memory:// put into a run vs put without runs or provenance (CPU only)",
        f"{extra * 1e3:+.3f} ms per put (medians), {total:.3f}x (totals)",
        "",
        None,
    )

    # Building the record alone, without storage: what provenance costs in Python.
    reps = 20_000
    start = time.perf_counter()
    for _ in range(reps):
        provenance_record(raw, run=RUN, created="x", distribution="butler-core", inputs=())
    per = (time.perf_counter() - start) / reps
    print(f"   provenance_record() without inputs, {reps:,} calls: {per * 1e6:.1f} us each")

    # Inputs: 3 refs fit inline (inline JSON holds at most 600 bytes: 3-5 refs); 50 go to a
    # content-addressed record (a new one per put here, since each put's inputs differ: one
    # more fsync'ed file).
    m = max(n // 4, 20)
    source = run.ref(DATASET, visit=-1, ccd=0)

    def refs(i: int, k: int) -> list[DatasetRef]:
        return [replace(source, data_id={"visit": i, "ccd": j}) for j in range(k)]

    print(f"   inputs: {m:,} puts per side into three runs of the 'run' repository, alternating")
    with_inputs = {k: Butler(roots["run"], run=f"inputs-{k}") for k in (0, 3, 50)}

    def put_with(k: int) -> Callable[[int], Any]:
        return lambda i: with_inputs[k].put(OBJ, DATASET, data_id(i), inputs=refs(i, k))

    sides = {f"{k} inputs": put_with(k) for k in with_inputs}
    times = interleave(sides, range(m))
    assert len(with_inputs[50].provenance(DATASET, data_id(0)).inputs) == 50
    records = list(run.storage.list(".butler/provenance/"))
    assert len(records) == m, f"{len(records)} input records for {m} puts with 50 inputs"
    print(f"   {len(records):,} input records written under .butler/provenance/ (one per put")
    print("   with 50 inputs; the 3 inputs stay inline in the metadata)")
    for name, t in times.items():
        print(f"   {name:14s}: {spread(t)} per put, total {sum(t):.2f} s")
    for k in (3, 50):
        total, median = ratio_line(f"{k} inputs", "0 inputs", times)
        where = "inline" if k == 3 else "a record per put"
        check(
            f"put with {k} inputs ({where}) vs none",
            f"{total:.3f}x (totals), {median:.3f}x (medians)",
            "",
            None,
        )
    for b in (run, default, noprov, *with_inputs.values()):
        b.close()


# -- 2. history ---------------------------------------------------------------------------


def bench_history(base: str, runs: int, others: int, repeat: int) -> None:
    root = os.path.join(base, "history")
    register(Butler.create(root))
    names = [f"u/bench/run-{k:03d}" for k in range(runs)]
    total = runs * (1 + others)
    print(
        f"\n2. history: data ID visit=0, ccd=0 put into {runs} runs, with {others} more data "
        f"IDs per run ({total:,} datasets in all, posix, embedded index)"
    )
    start = time.perf_counter()
    for name in names:
        writer = Butler(root, run=name)
        for i in range(1 + others):
            writer.put(OBJ, DATASET, data_id(i))
        writer.close()
    print(f"   put in {time.perf_counter() - start:.1f} s")
    indexed = Butler(root)
    listed = Butler(root, index=False)
    start = time.perf_counter()
    first = indexed.history(DATASET, visit=0, ccd=0)
    cold = time.perf_counter() - start
    by_listing = listed.history(DATASET, visit=0, ccd=0)
    assert [v.run for v in first] == names, [v.run for v in first][:5]
    assert first == by_listing, "index and listing disagree"
    assert indexed.runs() == dict.fromkeys(names, 1 + others)
    print(f"   first call on a new Butler (opens the index): {cold * 1e3:.1f} ms")
    t_index: list[float] = []
    t_list: list[float] = []
    for r in range(repeat):
        for _ in range(5):
            start = time.perf_counter()
            indexed.history(DATASET, visit=0, ccd=0)
            t_index.append(time.perf_counter() - start)
        if r % 3 == 0:
            start = time.perf_counter()
            listed.history(DATASET, visit=0, ccd=0)
            t_list.append(time.perf_counter() - start)
    print(f"   history through the index ({len(t_index)} calls): {spread(t_index)}")
    print(
        f"   Butler(root, index=False): list @runs/ ({total:,} keys) + one "
        f"metadata read per run ({len(t_list)} calls): {spread(t_list)}"
    )
    median = statistics.median(t_index)
    check(
        f"history of a data ID in {runs} runs, with the index",
        f"median {median * 1e3:.2f} ms (listing: median {statistics.median(t_list) * 1e3:.0f} ms)",
        "<= 10 ms",
        median <= 0.010,
    )
    indexed.close()
    listed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer puts")
    parser.add_argument("--puts", type=int, help="puts per side in section 1 (default 1,000)")
    parser.add_argument("--others", type=int, help="more data IDs per run (default 49)")
    args = parser.parse_args()
    puts = args.puts or (300 if args.quick else 1000)
    others = args.others if args.others is not None else (4 if args.quick else 49)
    base = tempfile.mkdtemp(prefix="butler-bench-runs-")
    print(f"butler runs and provenance bench{' (--quick)' if args.quick else ''}, scratch {base}")
    print(load())
    try:
        bench_put(base, puts)
        bench_history(base, 100, others, repeat=12 if args.quick else 30)
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
