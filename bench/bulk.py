"""Per-dataset latency of butler on S3 against the wire, and bulk calls against the loop.

Run ``python bench/bulk.py [--sections single,many] [--rounds 200] [--size 1024] [--n 1000]``.

``single``: butler's put (create-only, a new data ID each time: one conditional PUT, its
body sent with its headers) and get (one ranged GET whose headers carry the metadata, then
``numpy.load``-equivalent parsing of the .npy bytes) are timed interleaved with one raw
boto3 ``put_object`` / ``get_object`` + ``read()`` of the same bytes (``numpy.save`` of
the same array: what butler's ``npy`` put sends, without its metadata) on the same moto
server (boto3's defaults: its PUT waits for ``100 Continue`` before sending the body, a
loopback round trip), so both see the same load. Prints min / median / max per operation,
the ratio raw / butler of the medians (target >= 0.9: butler takes at most 1/0.9 of one
raw request), the ratios' spread over blocks of 50 rounds, and the requests butler sent per
operation (counted on its botocore clients).

``many``: ``get_many`` / ``put_many`` of ``--n`` small datasets against the serial loop, on S3
(bare loopback, and behind a 20 ms round trip) and posix: see ``bench/_bulk_many.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

KEY, SECRET = "bench-key", "bench-secret"
TARGET = 0.9


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _no_expect(request: Any, **_: Any) -> None:
    request.headers.pop("Expect", None)


def row(name: str, times: list[float]) -> str:
    ms = [t * 1000 for t in times]
    return f"{name:28s} {min(ms):8.2f} {statistics.median(ms):8.2f} {max(ms):8.2f}"


def s3_single_requests(rounds: int, size: int) -> bool:
    """The S3 single-request section; True when both ratios meet the target."""
    import boto3
    import numpy as np

    from butler import Butler
    from butler.testing import moto_server

    os.environ.update(
        AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1"
    )
    with moto_server({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}) as url:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        # The like-for-like baseline: boto3 sending a small body with its headers, as
        # butler does (its default waits for "100 Continue" first).
        direct = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        direct.meta.events.register("before-send.s3.PutObject", _no_expect)
        client.create_bucket(Bucket="bench-bulk")
        options = {"endpoint_url": url, "key": KEY, "secret": SECRET}
        Butler.create("s3://bench-bulk/repo", **options).close()
        b = Butler("s3://bench-bulk/repo", **options)
        b.register_dataset_type("small", "numpy.ndarray", "npy", dimensions=["i"])
        data = np.frombuffer(os.urandom(size), dtype="u1")
        npy = io.BytesIO()
        np.save(npy, data, allow_pickle=False)
        raw_body = npy.getvalue()  # the bytes butler's npy put sends
        sent: list[str] = []
        b.put(data, "small", i=-1)  # connections, the client and the policy are warm
        for botocore_client in b.storage.botocore_clients():
            botocore_client.meta.events.register(
                "before-send.s3", lambda request, **kw: sent.append(request.method)
            )
        timings: dict[str, list[float]] = {
            k: [] for k in ("put", "raw_put", "direct_put", "get", "raw_get")
        }
        put_requests, get_requests = [], []
        for i in range(rounds):
            sent.clear()
            timings["put"].append(timed(lambda i=i: b.put(data, "small", i=i)))
            put_requests.append(len(sent))
            timings["raw_put"].append(
                timed(
                    lambda i=i: client.put_object(
                        Bucket="bench-bulk", Key=f"raw/{i}", Body=raw_body
                    )
                )
            )
            timings["direct_put"].append(
                timed(
                    lambda i=i: direct.put_object(
                        Bucket="bench-bulk", Key=f"direct/{i}", Body=raw_body
                    )
                )
            )
            sent.clear()
            timings["get"].append(timed(lambda i=i: b.get("small", i=i)))
            get_requests.append(len(sent))
            timings["raw_get"].append(
                timed(
                    lambda i=i: client.get_object(Bucket="bench-bulk", Key=f"raw/{i}")[
                        "Body"
                    ].read()
                )
            )
        b.close()

    print(f"S3 single requests (moto on 127.0.0.1), {size} B, {rounds} rounds interleaved")
    print(f"{'':28s} {'min ms':>8s} {'median':>8s} {'max':>8s}")
    for name, label in (
        ("put", "butler put (create-only)"),
        ("raw_put", "boto3 put_object (default)"),
        ("direct_put", "boto3 put_object, no Expect"),
        ("get", "butler get"),
        ("raw_get", "boto3 get_object"),
    ):
        print(row(label, timings[name]))
    ok = True
    default_put = statistics.median(timings["raw_put"]) / statistics.median(timings["put"])
    print(f"put against boto3's default put_object (waits for 100 Continue): {default_put:.2f}")
    # Judged against the like-for-like baseline: the stricter of the two.
    for op, base, requests in (
        ("put", "direct_put", put_requests),
        ("get", "raw_get", get_requests),
    ):
        ratio = statistics.median(timings[base]) / statistics.median(timings[op])
        blocks = [
            statistics.median(timings[base][k : k + 50])
            / statistics.median(timings[op][k : k + 50])
            for k in range(0, rounds - 49, 50)
        ]
        spread = (
            f"; per 50 rounds min/median/max {min(blocks):.2f}/"
            f"{statistics.median(blocks):.2f}/{max(blocks):.2f}"
            if blocks
            else ""
        )
        passed = ratio >= TARGET
        ok &= passed
        print(
            f"{op}: ratio raw/butler (medians) {ratio:.2f} (target >= {TARGET}) "
            f"{'PASS' if passed else 'FAIL'}{spread}; butler requests per {op}: "
            f"{statistics.median(requests):g} (max {max(requests)})"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--sections", default="single,many")
    parser.add_argument("--n", type=int, default=1000, help="items of the bulk section")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    ok = True
    if "single" in sections:
        ok = s3_single_requests(args.rounds, args.size)
    if "many" in sections:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _bulk_many import bench_bulk

        bench_bulk(args.n)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
