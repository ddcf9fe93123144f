"""butler.dask on a LocalCluster of 2 worker processes (1 thread each), posix, in one run.
Three sections (``--sections``, default all):

``array`` -- the issue's memory claim. One 1 GiB FITS image (float32, ``--image-side``
16384 squared) is written once with butler's FITS format into a posix repository under
/tmp; ``butler.dask.array(b, "image", chunks=(2048, 2048)).mean().compute()`` runs on a
cluster started before the client allocates the image. Checks: the result equals numpy's
float64 mean of the whole image (computed on the client, relative tolerance 1e-5: Dask's
float32 mean sums each chunk in float32), and each worker's peak RSS during the compute is
at most its baseline plus two chunks. Baseline: the worker's own ``psutil`` RSS just
before each round, after a warm-up (imports, repository opened, one small FITS section
read, one ``butler.dask.array`` mean over a 64 x 64 image); the growth over the warm-up
RSS is printed too. Peak: a thread started in each worker (``client.run``) samples
its own RSS every 2 ms during the compute. ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(the worker process's lifetime peak, read in the worker) is printed next to it, and
``tracemalloc``'s peak for one chunk's section read in a worker says how many chunk-sized
buffers a read allocates.

``write`` -- the issue's scaling claim. 64 arrays of 16 MiB (float32 2048 x 2048, npy
format, posix, fsynced puts), four sides interleaved per round (order rotated):
  serial: one process, ``for i: b.put(make(i), "arr", i=i)``;
  dask: ``butler.dask.write`` of a bag of 64 partitions whose items are made *on the
  workers* (``make(i)``, the same ``numpy.full``) -- the pipeline case;
  dask-shipped: the same, the 64 arrays made on the client and shipped through the graph;
  raw-serial: one process, ``numpy.save`` + fsync + rename of the same arrays (no butler),
  to show what the disk itself allows.
``os.sync()`` runs (untimed) before each side, so no side pays for writing back the
previous side's dirty pages.
Target: serial time / dask time >= 1.5. A warm-up write (4 tiny arrays) runs first so
that worker imports are not timed.

``raw`` -- butler.dask against plain Dask over raw library calls (``--n`` small npy
arrays written and read back, one ``--side`` squared array's mean): ``butler.dask.write``
vs ``dask.delayed`` tasks doing ``numpy.save`` + fsync + rename; ``butler.dask.read`` vs
``dask.delayed`` ``numpy.load``; ``butler.dask.array(...).mean()`` vs
``dask.array.from_array`` over a ``numpy.load(mmap_mode="r")`` memory map, same chunks. The
raw side does less than butler (no provenance, no index row, no metadata, no type checks).

Times are min / median / max over ``--rounds`` rounds. Usage:
``python bench/dask.py [--sections array,write,raw] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

# Run as a script, this file's folder comes first on sys.path and "dask" would be this file:
# it goes last instead (bench/_report.py is still found there).
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import psutil
from _report import load
from dask.base import compute
from dask.delayed import delayed
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
        lambda: compute(*[delayed(raw_save)(raw, i, a) for i, a in enumerate(small)]),
    )
    timed("read butler", lambda: bd.read(b, "img", "i >= 0", npartitions=16).compute())
    timed(
        "read raw",
        lambda: compute(*[delayed(raw_load)(raw, i) for i in range(n)]),
    )
    got = timed("array butler", lambda: bd.array(b, "img", chunks=chunks, i=-1).mean().compute())
    want = timed(
        "array raw",
        lambda: da.from_array(np.load(raw_image, mmap_mode="r"), chunks=chunks).mean().compute(),
    )
    assert abs(float(got) - float(want)) < 1e-6 * abs(float(want)) + 1e-9


MiB = 2**20


def spread(values: list[float]) -> str:
    return (
        f"min {min(values):7.3f}  median {float(np.median(values)):7.3f}  max {max(values):7.3f} s"
    )


@contextlib.contextmanager
def cluster() -> Iterator[LocalCluster]:
    """The cluster, its workers' scratch space in a directory removed afterwards (by default
    Dask leaves ``dask-scratch-space`` in the system's temporary directory)."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-dask-scratch-") as scratch,
        dask.config.set({"temporary-directory": scratch}),
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            local_directory=scratch,
        ) as c,
    ):
        yield c


# -- array: a 1 GiB FITS image, mean on the workers, peak RSS per worker ----------------------


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _ru_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def _start_sampler(dask_worker: Any) -> int:
    """In a worker: a thread sampling this process's RSS every 2 ms until stopped."""
    stop = threading.Event()
    peak = [_rss()]

    def sample() -> None:
        process = psutil.Process()
        while not stop.is_set():
            peak[0] = max(peak[0], int(process.memory_info().rss))
            stop.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    dask_worker.bench_sampler = (stop, thread, peak)
    return peak[0]


def _stop_sampler(dask_worker: Any) -> int:
    stop, thread, peak = dask_worker.bench_sampler
    stop.set()
    thread.join()
    return int(peak[0])


def _warm(root: str) -> int:
    """In a worker: imports, the repository opened, one small FITS section read."""
    b = Butler(root)
    b.get("image", i=1, parameters={"section": (slice(0, 8), slice(0, 8))})
    return _rss()


def _traced_chunk_read(root: str, chunk: int) -> int:
    """In a worker: peak bytes numpy/astropy allocate for one chunk's FITS section read."""
    import tracemalloc

    b = Butler(root)
    tracemalloc.start()
    try:
        b.get("image", i=0, parameters={"section": (slice(0, chunk), slice(0, chunk))})
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def array_section(args: argparse.Namespace) -> bool:
    side, chunk = args.image_side, args.chunk
    chunk_bytes = chunk * chunk * 4
    work = tempfile.mkdtemp(prefix="bench-dask-array-", dir="/tmp")
    times: list[float] = []
    over: list[int] = []
    over_warm: list[int] = []
    ok = True
    # The cluster starts first: its workers are spawned from this process, and a spawned
    # process's ru_maxrss starts from its parent's RSS at the fork (1 GiB image later).
    with cluster() as c, Client(c) as client:
        try:
            print(f"array: worker RSS at start (MiB): {_fmt(client.run(_rss))}")
            root = os.path.join(work, "repo")
            b = Butler.create(root)
            b.register_dataset_type("image", np.ndarray, "fits", dimensions={"i": int})
            rng = np.random.default_rng(7)
            image = np.empty((side, side), dtype="f4")
            for row in range(0, side, 1024):  # 1 GiB of random floats, made in slabs
                image[row : row + 1024] = rng.random((min(1024, side - row), side), dtype="f4")
            want = float(image.mean(dtype=np.float64))
            start = time.perf_counter()
            b.put(image, "image", i=0)
            put_s = time.perf_counter() - start
            b.put(image[:64, :64].copy(), "image", i=1)
            del image
            size = sum(
                os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs
            )
            print(
                f"  one {side} x {side} float32 FITS image ({size / 2**30:.2f} GiB on disk, "
                f"put in {put_s:.1f} s), chunks {chunk} x {chunk} ({chunk_bytes // MiB} MiB), "
                f"{(side // chunk) ** 2} chunks, LocalCluster(n_workers=2, processes=True, "
                f"threads_per_worker=1)"
            )
            client.run(_warm, root)
            # Dask's own array code imported and run once on the workers (a 64 x 64 image).
            bd.array(b, "image", chunks=(32, 32), i=1).mean().compute()
            baseline = client.run(_rss)
            print(
                f"  baseline after warm-up (MiB): {_fmt(baseline)}; "
                f"ru_maxrss so far: {_fmt(client.run(_ru_maxrss))}"
            )
            for r in range(args.rounds):
                before = client.run(_rss)
                client.run(_start_sampler)
                start = time.perf_counter()
                got = float(bd.array(b, "image", chunks=(chunk, chunk), i=0).mean().compute())
                times.append(time.perf_counter() - start)
                peaks = client.run(_stop_sampler)
                maxrss = client.run(_ru_maxrss)
                rel = abs(got - want) / abs(want)
                equal = rel <= 1e-5
                ok = ok and equal
                grown = {w: peaks[w] - before[w] for w in peaks}
                over.extend(grown.values())
                over_warm.extend(peaks[w] - baseline[w] for w in peaks)
                print(
                    f"  round {r}: {times[-1]:6.2f} s  mean {got:.9f} vs numpy float64 "
                    f"{want:.9f} (rel diff {rel:.1e}, {'equal' if equal else 'DIFFERENT'} "
                    f"within 1e-5)\n"
                    f"    RSS before the round - warm-up baseline (MiB): "
                    f"{_fmt({w: before[w] - baseline[w] for w in before})}; "
                    f"peak RSS - RSS before (sampled): {_fmt(grown)}; "
                    f"ru_maxrss - RSS before: {_fmt({w: maxrss[w] - before[w] for w in maxrss})}"
                )
            traced = client.run(_traced_chunk_read, root, chunk)
            print(
                f"  one chunk's section read, peak traced allocation (tracemalloc, in each "
                f"worker, MiB): {_fmt(traced)}"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    limit = 2 * chunk_bytes
    worst = max(over)
    mem_ok = worst <= limit
    print(
        f"  time {spread(times)}\n"
        f"  worst peak growth over the RSS before its round {worst / MiB:.1f} MiB, target "
        f"<= 2 chunks = {limit / MiB:.0f} MiB: {'PASS' if mem_ok else 'FAIL'}\n"
        f"  (over the warm-up baseline, which the worker's RSS creeps above from round to "
        f"round: {max(over_warm) / MiB:.1f} MiB)\n"
        f"  mean equals numpy's (rel 1e-5): {'PASS' if ok else 'FAIL'}"
    )
    return ok and mem_ok


def _fmt(per_worker: dict[str, int]) -> str:
    return ", ".join(f"{v / MiB:.1f}" for _, v in sorted(per_worker.items()))


# -- write: 64 x 16 MiB arrays, butler.dask.write vs a serial put loop ----------------------


def make(i: int, side: int) -> Any:
    return np.full((side, side), i, dtype="f4")


def write_serial(b: Butler, n: int, side: int, shipped: Any, path: str) -> None:
    for i in range(n):
        b.put(make(i, side), "arr", i=i)


def _pair(i: int, side: int) -> tuple[Any, dict[str, int]]:
    return make(i, side), {"i": i}


def write_on_workers(b: Butler, n: int, side: int, shipped: Any, path: str) -> None:
    bag = db.from_sequence(range(n), npartitions=n).map(_pair, side)
    assert len(bd.write(b, "arr", bag).compute()) == n


def write_shipped(b: Butler, n: int, side: int, shipped: Any, path: str) -> None:
    bag = db.from_sequence(shipped, npartitions=n)
    assert len(bd.write(b, "arr", bag).compute()) == n


def write_raw_serial(b: Butler, n: int, side: int, shipped: Any, path: str) -> None:
    os.makedirs(path)
    for i in range(n):
        raw_save(path, i, make(i, side))


SIDES = {
    "serial": write_serial,
    "dask": write_on_workers,
    "dask-shipped": write_shipped,
    "raw-serial": write_raw_serial,
}


def write_section(args: argparse.Namespace) -> bool:
    n, side = args.arrays, args.array_side
    work = tempfile.mkdtemp(prefix="bench-dask-write-", dir="/tmp")
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    print(
        f"write: {n} arrays of {side * side * 4 / MiB:.0f} MiB (float32 {side} x {side}, npy, "
        f"posix), {args.rounds} interleaved rounds (order rotated)"
    )
    try:
        with cluster() as c, Client(c):
            warm = Butler.create(os.path.join(work, "warm-up"))
            warm.register_dataset_type("arr", np.ndarray, "npy", dimensions={"i": int})
            write_on_workers(warm, 4, 16, None, "")  # workers import and open a repository once
            for r in range(args.rounds):
                repos: dict[str, Butler] = {}
                for name in times:
                    b = Butler.create(os.path.join(work, f"{name}-{r}"))
                    b.register_dataset_type("arr", np.ndarray, "npy", dimensions={"i": int})
                    repos[name] = b
                shipped = [(make(i, side), {"i": i}) for i in range(n)]
                order = list(times)
                order = order[r % len(order) :] + order[: r % len(order)]
                for name in order:
                    os.sync()  # the previous side's dirty pages written back, untimed
                    start = time.perf_counter()
                    SIDES[name](repos[name], n, side, shipped, os.path.join(work, f"raw-{r}"))
                    times[name].append(time.perf_counter() - start)
                del shipped
                print(f"  round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
                assert len(os.listdir(os.path.join(work, f"raw-{r}"))) == n
                shutil.rmtree(os.path.join(work, f"raw-{r}"))
                for name in times:  # every butler side wrote all n, with the right values
                    b = repos[name]
                    if name != "raw-serial":
                        assert len(list(b.datasets("arr"))) == n
                        assert float(b.get("arr", i=n - 1)[0, 0]) == n - 1
                    shutil.rmtree(os.path.join(work, f"{name}-{r}"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    serial_med = float(np.median(times["serial"]))
    ok = True
    for name, what in (
        ("serial", "one process, b.put(make(i)) in a loop"),
        ("dask", "butler.dask.write, 2 workers, arrays made on the workers"),
        ("dask-shipped", "butler.dask.write, 2 workers, arrays made on the client"),
        ("raw-serial", "one process, numpy.save + fsync + rename, no butler: the disk's pace"),
    ):
        med = float(np.median(times[name]))
        line = f"  {name:13s} {spread(times[name])}  ({what})"
        if name in ("dask", "dask-shipped"):
            ratio = serial_med / med
            line += f"\n  {'':13s} speed-up (serial median / median) {ratio:4.2f}"
            if name == "dask":
                passed = ratio >= 1.5
                ok = passed
                line += f", target >= 1.5: {'PASS' if passed else 'FAIL'}"
        print(line)
    return ok


# -- raw: butler.dask against plain dask over raw library calls ---------------------------


def raw_section(args: argparse.Namespace) -> None:
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

    try:
        with cluster() as c, Client(c):
            raw_image = os.path.join(work, "image.npy")
            np.save(raw_image, image)
            for r in range(args.rounds):
                one_round(work, r, small, image, raw_image, chunks, timed)
    finally:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default="array,write,raw", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image-side", type=int, default=16384, help="array: the FITS image side")
    parser.add_argument("--chunk", type=int, default=2048, help="array: chunk side")
    parser.add_argument("--arrays", type=int, default=64, help="write: number of arrays")
    parser.add_argument("--array-side", type=int, default=2048, help="write: array side")
    parser.add_argument("--n", type=int, default=200, help="raw: small datasets")
    parser.add_argument("--side", type=int, default=4096, help="raw: the array is side x side f4")
    args = parser.parse_args()
    sections = args.sections.split(",")
    unknown = set(sections) - {"array", "write", "raw"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from array, write, raw")
    command = "python bench/dask.py " + " ".join(sys.argv[1:])
    print(f"{os.cpu_count()} CPUs; {command}; {load()}")
    results = {}
    if "array" in sections:
        results["array"] = array_section(args)
    if "write" in sections:
        results["write"] = write_section(args)
    if "raw" in sections:
        raw_section(args)
    print(load())
    if results:
        print("targets: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items()))


if __name__ == "__main__":
    main()
