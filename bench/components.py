"""Benchmark reading one component (``get("calexp.wcs")``) against reading the whole.

Run ``python bench/components.py [--size-mib 256] [--repeat 5] [--exposures 1000]
[--no-s3]``. It prints, with the machine load (``os.getloadavg()``) before each part:

* posix, a CCDData of ``--size-mib`` MiB of float32 image (plus a uint8 mask and a WCS):
  ``b.get("calexp.wcs")`` (butler-fits's direct read: the primary header's text only, the WCS
  made from it without astropy's header round trip when that cannot change it) against
  ``b.get("calexp")`` (astropy's CCDData reader, the whole file), interleaved A B A B,
  ``--repeat`` times; and the raw library doing the same two things
  (``WCS(fits.getheader(path))`` vs ``CCDData.read(path, memmap=False)``: both read the
  whole image into memory), interleaved too. Ratios are
  whole time / component time: min / median / max (goal for butler: >= 50);
* S3 (moto server on loopback, with butler-s3): bytes the client fetched (the storage's
  file objects count them) for ``get("calexp.wcs")`` and for ``get("calexp")`` of the same
  dataset (goal: the WCS <= 1 % of the whole);
* S3, ``--exposures`` small CCDData (64 x 64 float32 with a WCS; small so this part runs
  in well under two minutes on a loaded machine): the WCS of every one with
  ``get_many("calexp.wcs", ...)`` against ``get_many("calexp", ...)`` then ``.wcs`` of
  each (the whole-image alternative): time and bytes fetched, each once (A then B).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

MIB = 2**20


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _ccd(size_mib: int, seed: float = 0.0, side: int | None = None) -> Any:
    """A CCDData of about ``size_mib`` MiB of float32, or ``side`` x ``side`` if given."""
    import numpy as np
    from astropy.nddata import CCDData
    from astropy.wcs import WCS

    side = side or max(int((size_mib * MIB // 4) ** 0.5), 8)
    data = np.empty((side, side), dtype=np.float32)
    data[...] = np.arange(side, dtype=np.float32)  # touch every page: real memory
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.0 + seed, 2.0]
    w.wcs.crpix = [side / 2, side / 2]
    w.wcs.cdelt = [-5e-5, 5e-5]
    return CCDData(data, unit="electron", mask=data > side / 2, wcs=w, meta={"EXPTIME": 30.0})


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(
    a: Callable[[], Any], b: Callable[[], Any], repeat: int
) -> tuple[list[float], list[float]]:
    """Times of ``a`` and ``b`` run A B A B ..."""
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(_timed(a))
        tb.append(_timed(b))
    return ta, tb


def _ratios(component: list[float], whole: list[float]) -> str:
    ratios = sorted(w / c for c, w in zip(component, whole, strict=True))
    return (
        f"whole/component {ratios[0]:.0f}x / {statistics.median(ratios):.0f}x / "
        f"{ratios[-1]:.0f}x (min/median/max); component median "
        f"{statistics.median(component) * 1000:.2f} ms, whole median "
        f"{statistics.median(whole) * 1000:.0f} ms"
    )


def posix(size_mib: int, repeat: int) -> None:
    from astropy.io import fits
    from astropy.nddata import CCDData
    from astropy.wcs import WCS

    from butler import Butler

    with tempfile.TemporaryDirectory() as workdir:
        b = Butler.create(os.path.join(workdir, "repo"))
        b.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
        b.put(_ccd(size_mib), "calexp", visit=1)
        path = b.location("calexp", visit=1).uri
        size = os.path.getsize(path)
        b.get("calexp", visit=1)  # warm the page cache for both sides
        print(f"\nposix: CCDData file of {size / MIB:.0f} MiB; {_load()}")
        wcs_t, whole_t = _interleaved(
            lambda: b.get("calexp.wcs", visit=1), lambda: b.get("calexp", visit=1), repeat
        )
        print(f"  butler  get('calexp.wcs') vs get('calexp'):    {_ratios(wcs_t, whole_t)}")
        raw_wcs, raw_whole = _interleaved(
            lambda: WCS(fits.getheader(path)),
            lambda: CCDData.read(path, memmap=False),
            repeat,
        )
        print(f"  astropy WCS(getheader) vs CCDData.read:       {_ratios(raw_wcs, raw_whole)}")
        print(f"  {_load()}")
        b.close()


def _s3_butler(endpoint: str) -> Any:
    import boto3

    from butler import Butler

    bucket = f"bench-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    options = {"endpoint_url": endpoint, "key": "bench", "secret": "bench-secret"}
    return Butler.create(f"s3://{bucket}/repo", **options)


class _Counter:
    """Counts the bytes every file object the storage opens fetched."""

    def __init__(self, storage: Any) -> None:
        self.opened: list[Any] = []
        real = storage.open

        def spy(*args: Any, **kwargs: Any) -> Any:
            f = real(*args, **kwargs)
            self.opened.append(f)
            return f

        storage.open = spy

    def take(self) -> tuple[int, int]:
        """(bytes fetched, requests) since the last call."""
        fetched = sum(getattr(f, "bytes_fetched", 0) for f in self.opened)
        requests = sum(getattr(f, "requests", 0) for f in self.opened)
        self.opened.clear()
        return fetched, requests


def s3(size_mib: int, exposures: int) -> None:
    from importlib.util import find_spec

    if not (find_spec("butler_s3") and find_spec("moto") and find_spec("boto3")):
        print("\nS3: skipped (butler-s3, moto or boto3 is not installed)")
        return
    from astropy.nddata import CCDData

    from butler.testing import moto_server

    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret"}
    with moto_server(env) as endpoint:
        b = _s3_butler(endpoint)
        b.register_dataset_type("calexp", CCDData, "fits", dimensions={"visit": int})
        b.put(_ccd(size_mib), "calexp", visit=1)
        size = b.storage.size(b.location("calexp", visit=1).key)
        counter = _Counter(b.storage)
        print(f"\nS3 (moto on loopback): CCDData object of {size / MIB:.0f} MiB; {_load()}")
        wcs_s = _timed(lambda: b.get("calexp.wcs", visit=1))
        wcs_bytes, wcs_requests = counter.take()
        whole_s = _timed(lambda: b.get("calexp", visit=1))
        whole_bytes, _ = counter.take()
        print(
            f"  get('calexp.wcs'): {wcs_bytes} bytes in {wcs_requests} request(s), "
            f"{wcs_s * 1000:.0f} ms = {100 * wcs_bytes / whole_bytes:.3f}% of the whole get's "
            f"{whole_bytes} bytes ({whole_s:.1f} s) (goal <= 1%)"
        )
        many(b, counter, exposures)
        b.close()


def many(b: Any, counter: _Counter, exposures: int) -> None:
    from astropy.nddata import CCDData

    b.register_dataset_type("small", CCDData, "fits", dimensions={"visit": int})
    start = time.perf_counter()
    b.put_many("small", [(_ccd(0, seed=i / 1000, side=64), {"visit": i}) for i in range(exposures)])
    put_s = time.perf_counter() - start
    ids = [{"visit": i} for i in range(exposures)]
    counter.take()
    print(f"  {exposures} CCDData of 64x64 float32 put in {put_s:.1f} s; {_load()}")
    start = time.perf_counter()
    wcss = b.get_many("small.wcs", ids)
    wcs_s = time.perf_counter() - start
    wcs_bytes, _ = counter.take()
    start = time.perf_counter()
    whole = [ccd.wcs for ccd in b.get_many("small", ids)]
    whole_s = time.perf_counter() - start
    whole_bytes, _ = counter.take()
    assert [w.wcs.crval[0] for w in wcss] == [w.wcs.crval[0] for w in whole]
    print(
        f"  WCS of {exposures}: get_many('small.wcs') {wcs_s:.1f} s, {wcs_bytes / MIB:.1f} MiB "
        f"fetched; get_many('small') then .wcs {whole_s:.1f} s, {whole_bytes / MIB:.1f} MiB "
        f"fetched (ratio {whole_s / wcs_s:.1f}x time, {whole_bytes / max(wcs_bytes, 1):.1f}x "
        f"bytes); {_load()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--exposures", type=int, default=1000)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    import astropy

    print(f"components benchmark: astropy {astropy.__version__}, python {sys.version.split()[0]}")
    posix(args.size_mib, args.repeat)
    if not args.no_s3:
        s3(args.size_mib, args.exposures)


if __name__ == "__main__":
    main()
