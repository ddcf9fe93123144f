"""Benchmark butler-fits against astropy.io.fits used directly, interleaved in one run.

Run ``python bench/fits.py [--size-mib 256] [--repeat 3] [--no-s3] [--no-local]``. For a
float32 image of the given size on local disk, each of the ``--repeat`` rounds runs every
operation below once, each in a fresh child process (rounds alternate the order: A B ... B
A), and prints, per comparison, the ratio raw time / butler time of each round
(min/median/max; 1.0 = as fast as astropy, goal >= 0.95), the median seconds and MiB/s, and
the peak RSS:

* put, like for like on durability. butler's default posix storage writes a temporary file
  in the destination directory, sets its metadata xattr, fsyncs *the file* (not the
  directory), then renames it into place, create-only (``renameat2(RENAME_NOREPLACE)``;
  ``link`` where the system has no such rename), and records a row in the repository's
  SQLite index (WAL, ``synchronous=NORMAL``: no fsync of its own). So:

  - ``Butler.put`` (default) vs ``writeto`` into an open file + ``fsync`` of that file;
  - ``Butler.put`` with ``durable=False`` (no fsync) vs ``HDUList.writeto(path)``;
  - ``Butler.put`` with ``sync_directories=True`` (fsync the file, then its directory) vs
    ``writeto`` + ``fsync`` of the file + ``fsync`` of the directory;
  - and, for reference, the default put vs a plain ``writeto(path)`` (no fsync).

  The image is little-endian float32. astropy's ``writeto`` byte-swaps a writable array *in
  place* to FITS's big-endian order while writing and swaps it back after; butler never
  mutates the caller's array (another thread could see swapped values, an interrupted write
  would leave them): it hands astropy a copy of the HDU whose data writer converts 4 MiB at
  a time into a scratch buffer (``butler_fits._chunked``), so the file is byte for byte
  what ``writeto`` writes, with the same memory;

* get: ``Butler.get`` vs ``fits.getdata(path, memmap=False)`` (both return the whole image
  in memory), which leaves the data big-endian as stored, and vs getdata followed by the
  in-place swap to the native order butler returns (the order the image was put in). Each
  side's file is read once, untimed, just before: both gets read from the page cache (the
  kernel may have evicted either file since it was written, and a read from the disk
  would measure the disk);
* peak RSS of each, the largest over the rounds, as a multiple of the image size above the
  child's RSS after imports;
* with butler-s3 and moto installed (pytest is not needed): bytes fetched for a 100x100
  cutout of the image stored on S3 (moto server process on loopback), as a share of the
  file.

Before timing, each child writes and reads a 2x2 image both through astropy (in memory)
and, on the butler side, through butler: the imports a first use pays (butler's serializer
modules load lazily) and the index's opening are outside the measurement on both sides.
The machine's load average is printed before and after.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

MIB = 2**20


def _image(size_mib: int) -> Any:
    import numpy as np

    side = int((size_mib * MIB // 4) ** 0.5)
    rows = size_mib * MIB // 4 // side
    image = np.empty((rows, side), dtype=np.float32)
    image[...] = np.arange(side, dtype=np.float32)  # touch every page: real memory
    return image


def _peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _current_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return _peak_kib()


def _fsync_directory(path: str) -> None:
    directory = os.open(path, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _butler_options(op: str) -> dict[str, Any]:
    """Storage options of the butler side of ``op``."""
    if op == "butler-put-nodurable":
        return {"durable": False}
    if op == "butler-put-syncdir":
        return {"sync_directories": True}
    return {}


def _warm_up(butler: Any) -> None:
    """Do once, untimed, what a long-running program has done before: import the write and
    read paths (astropy's, and butler's serializer modules, which load on first use) and
    open the repository's index. Without it the butler side's first put also paid its
    imports (and, with PYTHONDONTWRITEBYTECODE, their compilation): hundreds of ms."""
    import numpy as np
    from astropy.io import fits

    tiny = np.arange(4, dtype=np.float32).reshape(2, 2)
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(tiny)]).writeto(buffer)
    buffer.seek(0)
    fits.getdata(buffer, memmap=False)
    if butler is not None:
        name = f"warm-{os.getpid()}"
        butler.put(tiny, "image", name=name)
        butler.get("image", name=name)
        butler.remove("image", name=name)


def _read_through(path: str) -> None:
    """Read a file once (untimed), so that the measured read finds it in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB * 8):
            pass


def child(op: str, workdir: str, size_mib: int) -> dict[str, Any]:
    """One measured operation in this (fresh) process."""
    from astropy.io import fits

    from butler import Butler

    # Every put writes a new file (replacing a big file costs its deletion, in both cases).
    name = f"{os.getpid()}" if "put" in op else "last"
    path = os.path.join(workdir, f"raw-{name}.fits")
    butler_root = os.path.join(workdir, "repo")
    butler: Any = Butler(butler_root, **_butler_options(op)) if op.startswith("butler") else None
    _warm_up(butler)
    base = _current_kib()
    image = _image(size_mib) if "put" in op else None
    if "get" in op:  # both sides read from the page cache, never one from the disk
        _read_through(butler.location("image", name=name).uri if butler else path)
    os.sync()  # start every measurement without other runs' dirty pages being flushed
    start = time.perf_counter()
    if op == "raw-put":
        fits.HDUList([fits.PrimaryHDU(image)]).writeto(path)
    elif op.startswith("raw-put-fsync"):  # butler's durability, done by hand
        with open(path, "wb") as f:
            fits.HDUList([fits.PrimaryHDU(image)]).writeto(f)
            f.flush()
            os.fsync(f.fileno())
        if op == "raw-put-fsync-dir":
            _fsync_directory(workdir)
    elif op.startswith("butler-put"):
        butler.put(image, "image", name=name)
    elif op == "raw-get":
        image = fits.getdata(path, memmap=False)
    elif op == "raw-get-native":
        image = fits.getdata(path, memmap=False)
        image.byteswap(inplace=True)
        image = image.view(image.dtype.newbyteorder())
    elif op == "butler-get":
        image = butler.get("image", name=name)
    else:
        raise ValueError(op)
    elapsed = time.perf_counter() - start
    if "put" in op:  # keep one copy of each for the gets, delete the others (untimed)
        last = os.path.join(workdir, "raw-last.fits")
        if op == "butler-put":
            last = butler.location("image", name="last").uri
            os.replace(butler.location("image", name=name).uri, last)
        elif op.startswith("raw-put"):
            os.replace(path, last)
        else:
            butler.remove("image", name=name)
    assert image is not None and image.size * 4 >= size_mib * MIB * 0.99
    assert float(image[0, 5]) == 5.0
    assert "put" in op or op == "raw-get" or image.dtype.isnative
    return {"op": op, "seconds": elapsed, "base_kib": base, "peak_kib": _peak_kib()}


def run_child(op: str, workdir: str, size_mib: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", op, "--workdir", workdir]
    out = subprocess.run(
        [*command, "--size-mib", str(size_mib)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


#: Every operation, in the order of the even rounds (odd rounds run it reversed). The gets
#: read the files the puts of the first round left.
OPS = (
    "raw-put",
    "butler-put",
    "raw-put-fsync",
    "butler-put-nodurable",
    "raw-put-fsync-dir",
    "butler-put-syncdir",
    "raw-get",
    "butler-get",
    "raw-get-native",
)

#: (label, butler operation, raw reference) of each printed comparison.
ROWS = (
    ("put (default) vs writeto + fsync file", "butler-put", "raw-put-fsync"),
    ("put durable=False vs writeto(path)", "butler-put-nodurable", "raw-put"),
    ("put sync_directories vs + fsync dir", "butler-put-syncdir", "raw-put-fsync-dir"),
    ("put (default) vs writeto(path)", "butler-put", "raw-put"),
    ("get vs getdata(memmap=False)", "butler-get", "raw-get"),
    ("get vs getdata + swap to native", "butler-get", "raw-get-native"),
)


def interleaved(workdir: str, size_mib: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Each operation's runs, ``rounds`` of each, interleaved (A B ... B A per pair of rounds)."""
    runs: dict[str, list[dict[str, Any]]] = {op: [] for op in OPS}
    for i in range(rounds):
        for op in OPS if i % 2 == 0 else reversed(OPS):
            runs[op].append(run_child(op, workdir, size_mib))
    return runs


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _spread(values: list[float]) -> str:
    return f"{min(values):5.2f} {statistics.median(values):5.2f} {max(values):5.2f}"


def local(size_mib: int, repeat: int) -> None:
    from butler import Butler

    workdir = tempfile.mkdtemp(prefix="butler-bench-fits-")
    load_before = _load()
    try:
        Butler.create(os.path.join(workdir, "repo")).register_dataset_type(
            "image", "numpy.ndarray", "fits", "image/{name}.fits"
        )
        runs = interleaved(workdir, size_mib, repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nLocal disk, {size_mib} MiB float32 image: {repeat} interleaved rounds, each")
    print("operation in a fresh process; load average before " + load_before + ", after " + _load())
    print(f"{'operation':<34} {'median s':>8} {'MiB/s':>6} {'peak RSS':>8}")
    for op in OPS:
        seconds = statistics.median(r["seconds"] for r in runs[op])
        peak = max((r["peak_kib"] - r["base_kib"]) * 1024 / (size_mib * MIB) for r in runs[op])
        print(f"{op:<34} {seconds:>8.3f} {size_mib / seconds:>6.0f} {peak:>7.2f}x")
    print(f"\n{'ratio raw time / butler time':<40} {'min':>5} {'med':>5} {'max':>5}")
    for label, op, ref in ROWS:
        ratios = [r["seconds"] / b["seconds"] for b, r in zip(runs[op], runs[ref], strict=True)]
        print(f"{label:<40} {_spread(ratios)}")
    print("ratio per round (same round, alternating order); goal >= 0.95. Peak RSS: largest")
    print("over the rounds, above the child's RSS after imports, as a multiple of the image")
    print("(goal <= 1.2x).")


# -- S3 ----------------------------------------------------------------------------------


def s3(size_mib: int) -> None:
    from importlib.util import find_spec

    if find_spec("butler_s3") is None or find_spec("moto") is None:
        print("\nS3: skipped (butler-s3 or moto is not installed)")
        return
    import boto3

    from butler import Butler
    from butler.testing import moto_server  # needs moto, not pytest

    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    with moto_server(env) as endpoint:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        options: dict[str, Any] = {
            "endpoint_url": endpoint,
            "key": "bench",
            "secret": "bench-secret",
        }
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench-secret",
            region_name="us-east-1",
        ).create_bucket(Bucket=bucket)
        butler = Butler.create(f"s3://{bucket}/repo", **options)
        butler.register_dataset_type("image", "numpy.ndarray", "fits", "image.fits")
        image = _image(size_mib)
        start = time.perf_counter()
        butler.put(image, "image")
        put_seconds = time.perf_counter() - start
        size = butler.storage.size("image.fits")
        opened: list[Any] = []
        real_open = butler.storage.open

        def spy(*args: Any, **kwargs: Any) -> Any:
            f = real_open(*args, **kwargs)
            opened.append(f)
            return f

        butler.storage.open = spy  # type: ignore[method-assign]
        rows, cols = image.shape
        section = (slice(rows // 2, rows // 2 + 100), slice(cols // 2, cols // 2 + 100))
        start = time.perf_counter()
        cut = butler.get("image", parameters={"section": section})
        cut_seconds = time.perf_counter() - start
        assert (cut == image[section]).all()
        fetched = sum(f.bytes_fetched for f in opened)
        requests = sum(f.requests for f in opened)
        opened.clear()
        start = time.perf_counter()
        whole = butler.get("image")
        whole_seconds = time.perf_counter() - start
        assert (whole == image).all()
        whole_fetched = sum(f.bytes_fetched for f in opened)
        butler.close()
    print(f"\nS3 (moto server on loopback), {size_mib} MiB float32 image, {size} bytes")
    print(f"load average: {_load()}")
    print(f"put: {put_seconds:.2f} s ({size_mib / put_seconds:.0f} MiB/s)")
    print(
        f"100x100 cutout: {fetched} bytes fetched in {requests} requests = "
        f"{100 * fetched / size:.2f}% of the file (goal <= 2%), {cut_seconds * 1000:.0f} ms"
    )
    print(
        f"whole image: {whole_fetched} bytes fetched ({whole_fetched / size:.3f}x the file), "
        f"{whole_seconds:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 section")
    parser.add_argument("--no-local", action="store_true", help="skip the local-disk section")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.size_mib)))
        return
    import astropy

    print(f"butler-fits benchmark: astropy {astropy.__version__}, python {sys.version.split()[0]}")
    if not args.no_local:
        local(args.size_mib, args.repeat)
    if not args.no_s3:
        s3(args.size_mib)


if __name__ == "__main__":
    main()
