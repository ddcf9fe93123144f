"""Per-dataset latency of butler on S3 against the wire: one small put and one small get
through butler against one raw boto3 request each, on a moto server started here.

Run ``python bench/bulk.py [--rounds 200] [--size 1024]``. Butler's put (create-only, a new
data ID each time) and get are timed interleaved with a raw boto3 ``put_object`` /
``get_object`` of the same bytes on the same server, so both see the same load. Prints
min / median / max per operation and the ratio raw / butler of the medians (target
>= 0.9: butler takes at most 1/0.9 of one raw request), and the requests butler sent per
operation (counted on its client).

(The bulk sections of issue 17 — ``get_many`` / ``put_many`` — come later.)
"""

from __future__ import annotations

import argparse
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
        client.create_bucket(Bucket="bench-bulk")
        options = {"endpoint_url": url, "key": KEY, "secret": SECRET}
        Butler.create("s3://bench-bulk/repo", **options).close()
        b = Butler("s3://bench-bulk/repo", **options)
        b.register_dataset_type("small", "numpy.ndarray", "npy", dimensions=["i"])
        data = np.frombuffer(os.urandom(size), dtype="u1")
        raw_body = os.urandom(size)
        sent: list[str] = []
        b.put(data, "small", i=-1)  # connections, the client and the policy are warm
        for botocore_client in b.storage.botocore_clients():
            botocore_client.meta.events.register(
                "before-send.s3", lambda request, **kw: sent.append(request.method)
            )
        timings: dict[str, list[float]] = {k: [] for k in ("put", "raw_put", "get", "raw_get")}
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
        ("raw_put", "boto3 put_object"),
        ("get", "butler get"),
        ("raw_get", "boto3 get_object"),
    ):
        print(row(label, timings[name]))
    ok = True
    for op, requests in (("put", put_requests), ("get", get_requests)):
        ratio = statistics.median(timings[f"raw_{op}"]) / statistics.median(timings[op])
        passed = ratio >= TARGET
        ok &= passed
        print(
            f"{op}: ratio raw/butler (medians) {ratio:.2f} (target >= {TARGET}) "
            f"{'PASS' if passed else 'FAIL'}; butler requests per {op}: "
            f"{statistics.median(requests):g} (max {max(requests)})"
        )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    ok = s3_single_requests(args.rounds, args.size)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
