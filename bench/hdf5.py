"""Benchmark butler-hdf5 against raw h5py, measured in the same run.

Usage::

    python bench/hdf5.py [--size-mib 256] [--repeat 3] [--no-s3]

Prints:

* put/get of a ``--size-mib`` float32 array on local disk, through butler and through raw
  h5py (``--repeat`` rounds, each run in a fresh subprocess warmed up by a one-element
  write and read, raw and butler runs alternating): the best time of each side, the ratio
  raw time / butler time of each round as min / median / max (goal >= 0.95), each
  process's peak RSS and the machine's load;
* when butler-s3 and moto are installed: bytes fetched and requests made to read a 1%
  slice of a chunked dataset on S3 (moto server on loopback), for several block sizes and
  cache types, next to the object's size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from typing import Any

MIB = 1024 * 1024


# -- children (each measurement in a fresh process) -----------------------------------


def _array(size_mib: int) -> Any:
    import numpy as np

    n = size_mib * MIB // 4
    side = 4096
    return np.arange(n, dtype="f4").reshape(-1, side) if n % side == 0 else np.arange(n, dtype="f4")


def _child(case: str, size_mib: int, directory: str, run: int) -> dict[str, Any]:
    import h5py
    import numpy as np

    from butler import Butler

    path = os.path.join(directory, f"raw-{run}.h5")
    root = os.path.join(directory, "repo")
    durable = not case.endswith("-nofsync")
    result: dict[str, Any] = {}
    # Warm up both sides alike (first-use imports and caches), outside the timing: a
    # one-element write and read through h5py, and through butler on the butler side.
    warm_path = os.path.join(directory, f"warm-{case}.h5")
    with h5py.File(warm_path, "w") as f:
        f["x"] = np.zeros(1)
    with h5py.File(warm_path, "r") as f:
        f["x"][()]
    if case.startswith("butler"):
        warm = Butler(root)
        warm.put(np.zeros(1), "arr", i=10_000 + run, overwrite=True)
        warm.get("arr", i=10_000 + run)
    if case.startswith("raw-put"):
        data = _array(size_mib)
        start = time.perf_counter()
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=data)
        if durable:
            fd = os.open(path, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        result["seconds"] = time.perf_counter() - start
    elif case.startswith("butler-put"):
        data = _array(size_mib)
        butler = Butler(root, durable=durable)
        start = time.perf_counter()
        butler.put(data, "arr", i=run)
        result["seconds"] = time.perf_counter() - start
    elif case == "raw-get":
        start = time.perf_counter()
        with h5py.File(path, "r") as f:
            data = f["data"][()]
        result["seconds"] = time.perf_counter() - start
        result["ok"] = bool(data[-1, -1] == np.float32(data.size - 1))
    elif case == "butler-get":
        butler = Butler(root)
        start = time.perf_counter()
        data = butler.get("arr", i=run)
        result["seconds"] = time.perf_counter() - start
        result["ok"] = bool(data[-1, -1] == np.float32(data.size - 1))
    else:
        raise SystemExit(f"unknown case {case!r}")
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_child(case: str, size_mib: int, directory: str, run: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", case, "--size-mib", str(size_mib)]
    out = subprocess.run(
        [*command, "--dir", directory, "--run", str(run)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _clean(directory: str) -> None:
    """Remove the files of the previous run (outside any timing)."""
    for dirpath, _, names in os.walk(directory):
        for name in names:
            if name.endswith(".h5"):
                os.unlink(os.path.join(dirpath, name))


def _fixed_overhead(directory: str, calls: int = 50) -> None:
    """Per-call cost of butler over h5py, independent of disk bandwidth (tiny arrays); the
    sides alternate call by call (who goes first alternating too)."""
    import h5py
    import numpy as np

    from butler import Butler

    butler = Butler(os.path.join(directory, "repo"), durable=False)
    small = np.zeros(16)
    path = os.path.join(directory, "small.h5")

    def raw_put() -> None:
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=small)

    def raw_get() -> None:
        with h5py.File(path, "r") as f:
            f["data"][()]

    sides: dict[str, Any] = {
        "raw put": raw_put,
        "butler put": lambda: butler.put(small, "arr", i=-1, overwrite=True),
        "raw get": raw_get,
        "butler get": lambda: butler.get("arr", i=-1),
    }
    for fn in sides.values():  # the files exist before any timed call
        fn()
    timings = dict.fromkeys(sides, 0.0)
    for op in ("put", "get"):
        pair = [f"raw {op}", f"butler {op}"]
        for i in range(calls):
            for name in pair if i % 2 == 0 else pair[::-1]:
                start = time.perf_counter()
                sides[name]()
                timings[name] += time.perf_counter() - start
    text = ", ".join(f"{k} {1000 * v / calls:.2f} ms" for k, v in timings.items())
    print(f"per call, 16-element array, no fsync, alternating call by call: {text}")


def bench_local(size_mib: int, repeat: int) -> None:
    from _report import load, ratios

    from butler import Butler

    with tempfile.TemporaryDirectory(prefix="bench-hdf5-", dir=os.getcwd()) as directory:
        butler = Butler.create(os.path.join(directory, "repo"))
        butler.register_dataset_type("arr", "numpy.ndarray", "hdf5", dimensions={"i": int})
        print(f"\n== local disk: {size_mib} MiB float32, {repeat} rounds (fresh processes) ==")
        print(load())
        print(f"(the array itself is {size_mib} MiB of each process's peak RSS)")
        print(f"{'case':<28}{'seconds':>9}{'MiB/s':>9}{'peak RSS MiB':>14}")
        results: dict[str, list[dict[str, Any]]] = {}
        # raw and butler alternate, each run writing new files, so that load from other
        # processes and page-cache state hit both sides alike; ratios are per round.
        for op in ("put", "put-nofsync", "get"):
            for run in range(repeat):
                for side in ("raw", "butler"):
                    case = f"{side}-{op}"
                    results.setdefault(case, []).append(_run_child(case, size_mib, directory, run))
            if op == "put":
                _clean(directory)
        best: dict[str, dict[str, Any]] = {}
        for case, runs in results.items():
            best[case] = r = min(runs, key=lambda x: x["seconds"])
            rss = max(x["peak_rss_mib"] for x in runs)
            print(f"{case:<28}{r['seconds']:>9.3f}{size_mib / r['seconds']:>9.0f}{rss:>14.0f}")
        _fixed_overhead(directory)
        for op in ("put", "put-nofsync", "get"):
            raw = [x["seconds"] for x in results[f"raw-{op}"]]
            ours = [x["seconds"] for x in results[f"butler-{op}"]]
            print(f"ratio {op:<12} raw time / butler time: {ratios(raw, ours)} (goal >= 0.95)")
        print(load())
        print("(put: butler's durable commit vs h5py + fsync; put-nofsync: durable=False vs h5py)")


# -- S3 ------------------------------------------------------------------------------------


def bench_s3() -> None:
    if not (find_spec("butler_s3") and find_spec("moto") and find_spec("boto3")):
        print("\n== S3: skipped (butler-s3, moto or boto3 missing) ==")
        return
    import boto3
    import numpy as np

    from butler import Butler
    from butler.testing import moto_server

    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    with moto_server(env) as endpoint:
        os.environ.update(AWS_DEFAULT_REGION="us-east-1")
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench-secret"}
        butler = Butler.create("s3://bench/repo", **options)
        butler.register_dataset_type(
            "cube",
            "numpy.ndarray",
            "hdf5",
            dimensions={"i": int},
            serializer_args={"chunks": (256, 256)},
        )
        values = np.random.default_rng(0).random((4096, 4096)).astype("f4")  # 64 MiB
        butler.put(values, "cube", i=1)
        size = butler.storage.size(butler.location("cube", i=1).key)
        selection = (slice(1000, 1410), slice(2000, 2410))  # 1% of the elements, 4 chunks
        files: list[Any] = []
        real_open = butler.storage.open

        def spy(*args: Any, **kwargs: Any) -> Any:
            f = real_open(*args, **kwargs)
            files.append((f, getattr(f, "cache", None)))  # fsspec drops .cache on close
            return f

        butler.storage.open = spy  # type: ignore[method-assign]
        print(
            f"\n== S3 (moto on loopback): 1% slice {selection} of a {size / MIB:.1f} MiB "
            f"object, chunks 256x256 (256 KiB) =="
        )
        print(
            f"{'cache_type':<12}{'block_size':>11}{'fetched MiB':>13}{'% object':>10}"
            f"{'requests':>10}{'seconds':>9}"
        )
        from butler_hdf5.h5py_ import DEFAULT_S3_BLOCK_SIZE

        for cache_type in ("blocks", "blockcache", "readahead", "bytes"):
            for block_size in (64 * 1024, 256 * 1024, 1 * MIB, 4 * MIB):
                files.clear()
                start = time.perf_counter()
                part = butler.get(
                    "cube",
                    i=1,
                    parameters={
                        "slice": selection,
                        "block_size": block_size,
                        "cache_type": cache_type,
                    },
                )
                seconds = time.perf_counter() - start
                assert np.array_equal(part, values[selection])
                f, cache = files[-1]
                fetched = getattr(f, "bytes_fetched", None)
                requests = getattr(f, "requests", None)
                if fetched is None and cache is not None:
                    fetched = cache.total_requested_bytes
                    requests = cache.miss_count
                mark = (
                    " (default)"
                    if (cache_type == "blocks" and block_size == DEFAULT_S3_BLOCK_SIZE)
                    else ""
                )
                print(
                    f"{cache_type:<12}{block_size // 1024:>9}Ki{fetched / MIB:>13.2f}"
                    f"{100 * fetched / size:>9.1f}%{requests!s:>10}{seconds:>9.3f}{mark}"
                )
        for block_size in (DEFAULT_S3_BLOCK_SIZE, 4 * MIB):
            start = time.perf_counter()
            full = butler.get("cube", i=1, parameters={"block_size": block_size})
            seconds = time.perf_counter() - start
            assert np.array_equal(full, values)
            f, _ = files[-1]
            print(
                f"full read, blocks {block_size // 1024} KiB: {seconds:.3f} s, "
                f"{getattr(f, 'requests', '?')} requests"
            )
        butler.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--run", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.size_mib, args.dir, args.run)))
        return
    import h5py

    print(f"butler-hdf5 benchmark; h5py {h5py.__version__}, HDF5 {h5py.version.hdf5_version}")
    bench_local(args.size_mib, args.repeat)
    if not args.no_s3:
        bench_s3()


if __name__ == "__main__":
    main()
