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


def raw_put(root: str, payloads: list[bytes]) -> float:
    start = time.perf_counter()
    for i, data in enumerate(payloads):
        directory = os.path.join(root, "cfg", str(i % 10))
        os.makedirs(directory, exist_ok=True)
        final = os.path.join(directory, f"{i}.json")
        tmp = final + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    return time.perf_counter() - start


def raw_get(root: str, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        with open(os.path.join(root, "cfg", str(i % 10), f"{i}.json"), "rb") as f:
            json.loads(f.read())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    objs = [{"visit": i, "gain": 1.5 + i, "name": f"dataset {i}", "flags": [1, 2, 3]} for i in
            range(args.n)]  # fmt: skip
    payloads = [json.dumps(o).encode() for o in objs]
    base = tempfile.mkdtemp(prefix="butler-bench-")
    try:
        t_raw_put = raw_put(os.path.join(base, "raw"), payloads)
        t_raw_get = raw_get(os.path.join(base, "raw"), args.n)
        b = Butler.create(os.path.join(base, "repo"))
        b.register_dataset_type("cfg", dict, "json", template="cfg/{bucket:d}/{i:d}.json")
        start = time.perf_counter()
        for i, obj in enumerate(objs):
            b.put(obj, "cfg", bucket=i % 10, i=i)
        t_put = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(args.n):
            b.get("cfg", bucket=i % 10, i=i)
        t_get = time.perf_counter() - start
    finally:
        shutil.rmtree(base)
    n = args.n
    print(f"{n} small JSON datasets on local disk")
    print(f"raw atomic put : {n / t_raw_put:8.0f} /s")
    print(f"butler put     : {n / t_put:8.0f} /s   ratio {t_raw_put / t_put:.2f} (goal >= 0.5)")
    print(f"raw get        : {n / t_raw_get:8.0f} /s")
    print(f"butler get     : {n / t_get:8.0f} /s   ratio {t_raw_get / t_get:.2f} (goal >= 0.2)")
    print("(LSST Gen3 butler on this machine kind: ~270 puts/s, ~280 gets/s)")


if __name__ == "__main__":
    main()
