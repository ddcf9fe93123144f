"""Benchmark butler-fits against astropy.io.fits used directly.

Run ``python bench/fits.py [--size-mib 256] [--repeat 3] [--no-s3]``. It prints, for a
float32 image of the given size on local disk:

* put: ``Butler.put`` vs ``HDUList.writeto(path)`` (butler's default posix storage fsyncs
  the file and its directory, so it is also compared with writeto + the same fsyncs;
  ``durable=False`` is shown too);
* get: ``Butler.get`` vs ``fits.getdata(path, memmap=False)`` (both return the whole image
  in memory), which leaves the data big-endian as stored, and vs getdata followed by the
  in-place swap to the native order butler returns (the order the image was put in);
* peak RSS of each, measured in a fresh child process per operation, as a multiple of
  the image size above the process's RSS after imports;
* with butler-s3 and moto installed: bytes fetched for a 100x100 cutout of the image
  stored on S3 (moto server process), as a share of the file.

Speed ratios are raw time / butler time (1.0 = as fast as astropy; goal >= 0.95).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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


def child(op: str, workdir: str, size_mib: int) -> dict[str, Any]:
    """One measured operation in this (fresh) process."""
    from astropy.io import fits

    from butler import Butler

    # Every put writes a new file (replacing a big file costs its deletion, in both cases).
    name = f"{os.getpid()}" if "put" in op else "last"
    path = os.path.join(workdir, f"raw-{name}.fits")
    butler_root = os.path.join(workdir, "repo")
    durable = not op.endswith("-nodurable")
    if op.startswith("butler"):
        butler = Butler(butler_root, durable=durable)
        butler.get  # noqa: B018 - plugin discovery done before the baseline
        fits.PrimaryHDU  # noqa: B018
    base = _current_kib()
    image = _image(size_mib) if "put" in op else None
    os.sync()  # start every measurement without other runs' dirty pages being flushed
    start = time.perf_counter()
    if op == "raw-put":
        fits.HDUList([fits.PrimaryHDU(image)]).writeto(path)
    elif op == "raw-put-fsync":  # what butler's durable put guarantees, done by hand
        with open(path, "wb") as f:
            fits.HDUList([fits.PrimaryHDU(image)]).writeto(f)
            f.flush()
            os.fsync(f.fileno())
        directory = os.open(workdir, os.O_RDONLY)
        os.fsync(directory)
        os.close(directory)
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
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def best(op: str, workdir: str, size_mib: int, repeat: int) -> dict[str, Any]:
    runs = [run_child(op, workdir, size_mib) for _ in range(repeat)]
    fastest = min(runs, key=lambda r: r["seconds"])
    fastest["peak_over_image"] = max(
        (r["peak_kib"] - r["base_kib"]) * 1024 / (size_mib * MIB) for r in runs
    )
    return fastest


def local(size_mib: int, repeat: int) -> None:
    from butler import Butler

    workdir = tempfile.mkdtemp(prefix="butler-bench-fits-")
    try:
        Butler.create(os.path.join(workdir, "repo")).register_dataset_type(
            "image", "numpy.ndarray", "fits", "image/{name}.fits"
        )
        ops = ("raw-put", "raw-put-fsync", "butler-put", "butler-put-nodurable", "raw-get",
               "raw-get-native")  # fmt: skip
        results = {op: best(op, workdir, size_mib, repeat) for op in (*ops, "butler-get")}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nLocal disk, {size_mib} MiB float32 image (best of {repeat}, fresh process each)")
    print(f"{'operation':<34} {'seconds':>8} {'MiB/s':>8} {'ratio':>6} {'peak RSS':>9}")
    rows = [
        ("astropy writeto(path)", "raw-put", "raw-put"),
        ("astropy writeto + fsync file, dir", "raw-put-fsync", "raw-put-fsync"),
        ("butler put (durable: fsync)", "butler-put", "raw-put"),
        ("butler put (vs writeto + fsync)", "butler-put", "raw-put-fsync"),
        ("butler put (durable=False)", "butler-put-nodurable", "raw-put"),
        ("astropy getdata(memmap=False)", "raw-get", "raw-get"),
        ("  + in-place swap to native order", "raw-get-native", "raw-get"),
        ("butler get (vs getdata)", "butler-get", "raw-get"),
        ("butler get (vs getdata + swap)", "butler-get", "raw-get-native"),
    ]
    for label, op, ref in rows:
        r = results[op]
        ratio = results[ref]["seconds"] / r["seconds"]
        print(
            f"{label:<34} {r['seconds']:>8.3f} {size_mib / r['seconds']:>8.0f} {ratio:>6.2f} "
            f"{r['peak_over_image']:>8.2f}x"
        )
    print("ratio = astropy time / butler time (goal >= 0.95); peak RSS above the imports, ")
    print("as a multiple of the image (goal <= 1.2x).")


# -- S3 ----------------------------------------------------------------------------------


def s3(size_mib: int) -> None:
    from importlib.util import find_spec

    if find_spec("butler_s3") is None or find_spec("moto") is None:
        print("\nS3: skipped (butler-s3 or moto is not installed)")
        return
    import boto3

    from butler import Butler
    from butler.testing import moto_server

    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    with moto_server(env) as endpoint:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench-secret"}
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
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.workdir, args.size_mib)))
        return
    import astropy

    print(f"butler-fits benchmark: astropy {astropy.__version__}, python {sys.version.split()[0]}")
    local(args.size_mib, args.repeat)
    if not args.no_s3:
        s3(args.size_mib)


if __name__ == "__main__":
    main()
