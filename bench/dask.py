"""butler.dask against plain Dask over raw library calls, on one LocalCluster (2 worker
processes), posix, interleaved rounds, in one run:

* write N small npy arrays: ``butler.dask.write`` vs ``dask.delayed`` tasks doing
  ``numpy.save`` to a temporary file + fsync + rename;
* read them back: ``butler.dask.read`` vs ``dask.delayed`` ``numpy.load``;
* one array: ``butler.dask.array(...).mean()`` vs ``dask.array.from_array`` over a
  ``numpy.load(mmap_mode="r")`` memory map, same chunks.

The raw side does less than butler (no provenance, no index row, no metadata, no type
checks); the ratios show what those cost per dataset on Dask. Usage:
``python bench/dask.py [--n 200] [--rounds 3] [--side 4096]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any

# Run as a script, this file's folder comes first on sys.path and "dask" would be this file.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

import dask
import dask.array as da
import dask.bag as db
import numpy as np
from distributed import Client, LocalCluster

import butler.dask as bd
from butler import Butler


def raw_save(root: str, i: int, array: Any) -> None:
    final = os.path.join(root, f"{i}.npy")
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def raw_load(root: str, i: int) -> Any:
    return np.load(os.path.join(root, f"{i}.npy"), allow_pickle=False)


def one_round(
    work: str, r: int, small: list[Any], image: Any, raw_image: str, chunks: Any, timed: Any
) -> None:
    n = len(small)
    b = Butler.create(os.path.join(work, f"repo-{r}"))
    b.register_dataset_type("img", np.ndarray, "npy", dimensions={"i": int})
    b.put(image, "img", i=-1)
    raw = os.path.join(work, f"raw-{r}")
    os.makedirs(raw)
    bag = db.from_sequence(list(enumerate(small)), npartitions=16)
    pairs = bag.map(lambda item: (item[1], {"i": item[0]}))
    timed("write butler", lambda: bd.write(b, "img", pairs).compute())
    timed(
        "write raw",
        lambda: dask.compute(*[dask.delayed(raw_save)(raw, i, a) for i, a in enumerate(small)]),
    )
    timed("read butler", lambda: bd.read(b, "img", "i >= 0", npartitions=16).compute())
    timed(
        "read raw",
        lambda: dask.compute(*[dask.delayed(raw_load)(raw, i) for i in range(n)]),
    )
    got = timed("array butler", lambda: bd.array(b, "img", chunks=chunks, i=-1).mean().compute())
    want = timed(
        "array raw",
        lambda: da.from_array(np.load(raw_image, mmap_mode="r"), chunks=chunks).mean().compute(),
    )
    assert abs(float(got) - float(want)) < 1e-6 * abs(float(want)) + 1e-9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=200, help="small datasets")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--side", type=int, default=4096, help="the array is side x side f4")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="bench-dask-")
    small = [np.full((16, 16), i, dtype="f4") for i in range(args.n)]
    image = np.random.default_rng(1).random((args.side, args.side), dtype="f4")
    chunks = (args.side // 4, args.side // 4)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Any) -> Any:
        start = time.perf_counter()
        result = fn()
        times.setdefault(name, []).append(time.perf_counter() - start)
        return result

    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        raw_image = os.path.join(work, "image.npy")
        np.save(raw_image, image)
        for r in range(args.rounds):
            one_round(work, r, small, image, raw_image, chunks, timed)
    shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.n} small datasets (16x16 f4), one {args.side}^2 f4 array, "
        f"2 worker processes, {args.rounds} interleaved rounds, median seconds"
    )
    for what in ("write", "read", "array"):
        ours = float(np.median(times[f"{what} butler"]))
        theirs = float(np.median(times[f"{what} raw"]))
        print(
            f"  {what:6s} butler.dask {ours:8.3f} s   raw {theirs:8.3f} s   "
            f"speed ratio (raw time / butler time) {theirs / ours:5.2f}"
        )
    print(
        "  raw writes skip provenance, metadata, the index row and type checks; the array\n"
        "  raw side memory-maps one local file (butler reopens it per chunk). butler.dask\n"
        "  runs 16 partitions of the small datasets; the raw side one delayed task per\n"
        "  dataset (the usual pattern), so part of the read ratio is task overhead."
    )


if __name__ == "__main__":
    main()
