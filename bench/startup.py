"""Wall time of ``import butler`` + plugin discovery vs a bare interpreter, and what it loads.

Usage: ``python bench/startup.py [--runs N] [--check]``. ``--check`` exits 1 if discovery
imports a heavy library (astropy, h5py, s3fs, sqlalchemy, boto3, botocore, numpy).
Goal: under 100 ms more than ``python -c pass``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("astropy", "h5py", "s3fs", "sqlalchemy", "boto3", "botocore", "aiobotocore", "numpy")
PROBE = "import sys, json, butler; butler.default_registry();print(json.dumps(sorted(sys.modules)))"


def wall(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--check", action="store_true", help="fail if anything heavy loads")
    args = parser.parse_args()
    bare = wall(["-c", "pass"], args.runs)
    with_butler = wall(["-c", "import butler; butler.default_registry()"], args.runs)
    modules = json.loads(
        subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True).stdout
    )
    baseline = set(
        json.loads(
            subprocess.run(
                [sys.executable, "-c", "import sys, json; print(json.dumps(sorted(sys.modules)))"],
                check=True,
                capture_output=True,
            ).stdout
        )
    )
    added = sorted(set(modules) - baseline)
    heavy = sorted({m.split(".")[0] for m in added} & set(HEAVY))
    tops = sorted({m.split(".")[0] for m in added})
    print(f"python -c pass                : {bare * 1000:7.1f} ms (median of {args.runs})")
    print(f"import butler + discovery     : {with_butler * 1000:7.1f} ms")
    print(f"overhead                      : {(with_butler - bare) * 1000:7.1f} ms (goal < 100 ms)")
    print(f"modules loaded                : {len(added)} in {len(tops)} top-level packages")
    print("top-level packages            : " + ", ".join(tops))
    print(f"heavy libraries imported      : {', '.join(heavy) or 'none'}")
    return 1 if args.check and heavy else 0


if __name__ == "__main__":
    sys.exit(main())
