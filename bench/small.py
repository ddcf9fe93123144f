"""Puts/s and gets/s of 1,000 small JSON datasets through the Butler on local disk, against
raw atomic file writes (write, fsync, rename) and raw reads of the same bytes, in one run.

Goals: put >= 0.5x raw, get >= 0.2x raw. Usage: ``python bench/small.py [--n 1000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from butler import Butler


def raw_put_one(root: str, i: int, data: bytes) -> None:
    directory = os.path.join(root, "cfg", str(i % 10))
    os.makedirs(directory, exist_ok=True)
    final = os.path.join(directory, f"{i}.json")
    tmp = final + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)


def raw_get_one(root: str, i: int) -> None:
    with open(os.path.join(root, "cfg", str(i % 10), f"{i}.json"), "rb") as f:
        json.loads(f.read())


def timed(fn, items) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved raw/butler blocks")
    args = parser.parse_args()
    n = args.n
    objs = [{"visit": i, "gain": 1.5 + i, "name": f"dataset {i}", "flags": [1, 2, 3]}
            for i in range(n)]  # fmt: skip
    payloads = [json.dumps(o).encode() for o in objs]
    base = tempfile.mkdtemp(prefix="butler-bench-")
    raw_root = os.path.join(base, "raw")
    totals = {"raw put": 0.0, "butler put": 0.0, "raw get": 0.0, "butler get": 0.0}
    try:
        b = Butler.create(os.path.join(base, "repo"))
        b.register_dataset_type("cfg", dict, "json", template="cfg/{bucket:d}/{i:d}.json")
        # Interleave blocks so that both sides see the same disk and journal conditions.
        blocks = [range(r, n, args.rounds) for r in range(args.rounds)]
        for block in blocks:
            totals["raw put"] += timed(lambda i: raw_put_one(raw_root, i, payloads[i]), block)
            totals["butler put"] += timed(
                lambda i: b.put(objs[i], "cfg", bucket=i % 10, i=i), block
            )
        for block in blocks:
            totals["raw get"] += timed(lambda i: raw_get_one(raw_root, i), block)
            totals["butler get"] += timed(lambda i: b.get("cfg", bucket=i % 10, i=i), block)
    finally:
        shutil.rmtree(base)
    print(f"{n} small JSON datasets on local disk ({args.rounds} interleaved blocks)")
    print(f"raw atomic put : {n / totals['raw put']:8.0f} /s  (write, fsync, rename)")
    ratio = totals["raw put"] / totals["butler put"]
    print(f"butler put     : {n / totals['butler put']:8.0f} /s   ratio {ratio:.2f} (goal >= 0.5)")
    print(f"raw get        : {n / totals['raw get']:8.0f} /s  (read + json.loads)")
    ratio = totals["raw get"] / totals["butler get"]
    print(f"butler get     : {n / totals['butler get']:8.0f} /s   ratio {ratio:.2f} (goal >= 0.2)")
    print("(LSST Gen3 butler on this machine kind: ~270 puts/s, ~280 gets/s)")


if __name__ == "__main__":
    main()
