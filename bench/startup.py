"""Wall time of ``import butler`` + plugin discovery vs a bare interpreter, and what it loads.

Usage: ``python bench/startup.py [--runs N] [--check] [--max-overhead-ms MS]``.

``--check`` checks *imports only*: it exits 1 if ``import butler`` plus discovery imports a
heavy library (astropy, h5py, s3fs, sqlalchemy, boto3, botocore, numpy, pandas, dask, yaml).
Timing is checked only when ``--max-overhead-ms`` is given: then it exits 1 if the median
overhead over a bare interpreter, both measured interleaved in this run, exceeds it.
Goal: under 100 ms more than ``python -c pass`` (not yet met; see the printed figure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = (
    "aiobotocore",
    "astropy",
    "boto3",
    "botocore",
    "dask",
    "h5py",
    "numpy",
    "pandas",
    "s3fs",
    "sqlalchemy",
    "yaml",
)
PROBE = "import sys, json, butler; butler.default_registry();print(json.dumps(sorted(sys.modules)))"


def interleaved(commands: list[list[str]], runs: int) -> list[list[float]]:
    """Wall times of each command, run in turn ``runs`` times (so load affects all alike)."""
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, args in enumerate(commands):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, capture_output=True)
            times[i].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--check", action="store_true", help="fail if anything heavy loads (imports only)"
    )
    parser.add_argument(
        "--max-overhead-ms",
        type=float,
        default=None,
        help="also fail if the median overhead over a bare interpreter exceeds this",
    )
    args = parser.parse_args()
    bare_times, butler_times = interleaved(
        [["-c", "pass"], ["-c", "import butler; butler.default_registry()"]], args.runs
    )
    bare = statistics.median(bare_times)
    with_butler = statistics.median(butler_times)
    overheads = sorted(b - a for a, b in zip(bare_times, butler_times, strict=True))
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
    print(
        f"overhead (paired, interleaved) : min {overheads[0] * 1000:.1f} / median "
        f"{statistics.median(overheads) * 1000:.1f} / max {overheads[-1] * 1000:.1f} ms "
        f"(goal < 100 ms)"
    )
    print(f"modules loaded                : {len(added)} in {len(tops)} top-level packages")
    print("top-level packages            : " + ", ".join(tops))
    print(f"heavy libraries imported      : {', '.join(heavy) or 'none'}")
    failed = bool(args.check and heavy)
    if args.check:
        print(f"import check                  : {'FAILED' if heavy else 'passed'} (imports only)")
    if args.max_overhead_ms is not None:
        over = statistics.median(overheads) * 1000 > args.max_overhead_ms
        verdict = "FAILED" if over else "passed"
        print(f"overhead check                : {verdict} (limit {args.max_overhead_ms:.0f} ms)")
        failed = failed or over
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
