"""Benchmark butler's s3 storage against raw s3fs, on a moto server started here.

Run ``python bench/s3.py [--size-mib 256] [--repeat 2]``. Prints:

* put / get of one ``--size-mib`` array through butler (``npy`` dataset) against
  ``fs.pipe_file`` / ``fs.cat_file`` of the same bytes, ``--repeat`` interleaved rounds:
  ratio = raw time / butler time of each round (1.0 means butler costs nothing extra), as
  min / median / max, with the machine's load before and after. The sides do not split
  uploads alike by default: butler's S3 storage uploads parts of 16 MiB with 8 in flight at
  any time (``part_size``, ``max_concurrency``), s3fs's ``pipe_file`` parts of 50 MiB,
  launched in batches of ``max_concurrency`` (10) that each wait for their slowest part. So
  the put is also timed like for like: ``pipe_file(chunksize=butler's part size,
  max_concurrency=butler's)`` (same parts, same concurrency; s3fs still waits batch by
  batch where butler keeps 8 parts in flight). A get is one whole-object GET on both sides
  (s3fs's ``cat_file``; butler's GET of the first ``prefetch_size`` bytes with the
  metadata, then one GET of the rest), checked against the array put;
* GET requests and bytes fetched for partial reads through ``S3Storage.open`` against a
  default ``s3fs`` file object. moto rebuilds the whole object for every ranged GET, so
  only requests and bytes are meaningful there, not time.
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

KEY, SECRET = "bench-key", "bench-secret"
MIB = 2**20


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class GetCounter:
    """Counts GET requests and the bytes their responses carried, on one S3FileSystem."""

    def __init__(self, fs: Any) -> None:
        self.requests = 0
        self.bytes = 0
        original = fs._call_s3

        async def counting(method: str, *args: Any, **kwargs: Any) -> Any:
            out = await original(method, *args, **kwargs)
            if method == "get_object":
                self.requests += 1
                self.bytes += int(out.get("ContentLength", 0))
            return out

        fs._call_s3 = counting

    def reset(self) -> None:
        self.requests = self.bytes = 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import boto3
    import numpy as np
    import s3fs
    from _report import load, ratios

    from butler import Butler
    from butler.testing import start_moto, stop_moto

    endpoint, proc = start_moto({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    try:
        os.environ.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench"
        )
        options = {"endpoint_url": endpoint, "key": KEY, "secret": SECRET}
        config = {
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }
        fs = s3fs.S3FileSystem(**options, config_kwargs=config, skip_instance_cache=True)

        n = args.size_mib * MIB // 8
        array = np.random.default_rng(1).standard_normal(n)
        raw = array.tobytes()
        butler = Butler.create("s3://bench/repo", **options)
        butler.register_dataset_type("a", "numpy.ndarray", "npy", dimensions={"i": int})

        print(
            f"object: {args.size_mib} MiB, moto server at {endpoint}, "
            f"{args.repeat} interleaved rounds"
        )
        storage = butler.storage
        alike = {"chunksize": storage.part_size, "max_concurrency": storage.max_concurrency}
        got: list[Any] = []
        times: dict[str, list[float]] = {k: [] for k in ("pipe", "alike", "put", "cat", "get")}
        print(load())
        for _ in range(args.repeat):  # interleaved: the server's state drifts between runs
            times["pipe"].append(best(lambda: fs.pipe_file("bench/raw.bin", raw), 1))
            times["put"].append(best(lambda: butler.put(array, "a", i=1, overwrite=True), 1))
            times["alike"].append(best(lambda: fs.pipe_file("bench/raw.bin", raw, **alike), 1))
            times["cat"].append(best(lambda: fs.cat_file("bench/raw.bin"), 1))
            times["get"].append(best(lambda: got.append(butler.get("a", i=1)), 1))
        assert np.array_equal(got[-1], array)
        parts = f"{storage.part_size // MIB} MiB x {storage.max_concurrency}"
        # s3fs's own defaults, read from the installed version rather than assumed.
        s3fs_chunk = inspect.signature(fs._pipe_file).parameters["chunksize"].default
        defaults = f"{s3fs_chunk // MIB} MiB x {fs.max_concurrency}"
        rows = [
            (f"put, s3fs defaults ({defaults})", "pipe", "put"),
            (f"put, same parts ({parts})", "alike", "put"),
            ("get (cat_file)", "cat", "get"),
        ]
        print(f"{'':34s} {'raw s3fs':>9s} {'butler':>9s}  ratio raw/butler per round")
        for label, raw_side, ours in rows:
            t_raw, t_ours = min(times[raw_side]), min(times[ours])
            print(
                f"{label:34s} {t_raw:8.2f}s {t_ours:8.2f}s  "
                f"{ratios(times[raw_side], times[ours])}; best MiB/s "
                f"{args.size_mib / t_raw:.0f} / {args.size_mib / t_ours:.0f}"
            )
        print(load())

        # -- partial reads: requests and bytes, not time ------------------------------
        key = "a/1.npy"
        size = storage.size(key)
        ours = GetCounter(storage.fs)
        theirs = GetCounter(fs)
        path = storage.full_path(key)
        rng = random.Random(0)
        offsets = [rng.randrange(0, size - 4096) for _ in range(100)]
        scenarios: list[tuple[str, Callable[[Any], None]]] = [
            ("100 random 4 KiB reads", lambda f: [_read_at(f, o, 4096) for o in offsets]),
            ("one 1 MiB read at 50%", lambda f: _read_at(f, size // 2, MIB)),
            (
                "header + 64 KiB at 75%",
                lambda f: (_read_at(f, 0, 128), _read_at(f, 3 * size // 4, 65536)),
            ),
            ("whole object, 256 KiB reads", lambda f: _read_all(f, 256 * 1024)),
        ]
        print(f"\npartial reads of the {args.size_mib} MiB object (GET requests / MiB fetched)")
        print(f"{'':30s} {'s3fs default':>18s} {'S3Storage.open':>18s}")
        for name, scenario in scenarios:
            theirs.reset()
            with fs.open(path, "rb") as f:
                scenario(f)
            ours.reset()
            with storage.open(key) as f:
                scenario(f)
                fetched = f.bytes_fetched
            print(
                f"{name:30s} {theirs.requests:7d} / {theirs.bytes / MIB:7.1f} "
                f"{ours.requests:7d} / {fetched / MIB:7.1f}"
            )
        butler.close()
    finally:
        stop_moto(proc)
        tempfile.tempdir = None


def _read_at(f: Any, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)  # type: ignore[no-any-return]


def _read_all(f: Any, chunk: int) -> None:
    while f.read(chunk):
        pass


if __name__ == "__main__":
    main()
