"""CPU and wall time of ``import butler`` + plugin discovery against a bare interpreter.

Usage: ``python bench/startup.py [--runs N] [--check] [--max-ratio R] [--max-overhead-ms MS]
[--as-is]``.

What each side does, one fresh interpreter per run, run in turn (A B A B ...) so load
affects both alike:

* A, bare: ``python -c pass`` (the same interpreter and virtual environment, so site-packages'
  ``.pth`` files cost both sides the same);
* B, butler: ``python -c "import butler; butler.default_registry()"``: the import plus the
  discovery of every installed plugin (their entry-point modules, pluggy hooks, registry).

CPU time is the child's user + system time (``os.wait4``), the figure the goal is set on;
wall time is printed too. Overhead is B - A and ratio is B / A, per pair (min/median/max).

Bytecode: by default the children run without ``PYTHONDONTWRITEBYTECODE`` after one untimed
warm-up run of each side, so compiled ``.pyc`` files are used as in any installed package
(pip compiles them at install). With that variable set and no ``.pyc`` present, every
start compiles butler's sources again (tens of ms); ``--as-is`` keeps the environment as
it is to measure that case.

``--check`` exits 1 if ``import butler`` plus discovery imports a heavy library (astropy,
h5py, s3fs, sqlalchemy, boto3, botocore, numpy, pandas, dask, yaml, importlib.metadata), or
if the median CPU ratio exceeds ``--max-ratio`` (default 5: 100 ms over a 25 ms bare
interpreter on the reference machine), or the median CPU overhead exceeds
``--max-overhead-ms`` (default 100, the goal). Either limit given alone is checked too.
``--imports-only`` judges the imports alone (CI's lint environment: its environments run
in parallel on the same cores, so times there are not start-up's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

HEAVY = (
    "aiobotocore",
    "astropy",
    "boto3",
    "botocore",
    "dask",
    "h5py",
    "importlib.metadata",
    "numpy",
    "pandas",
    "s3fs",
    "sqlalchemy",
    "yaml",
)
BARE = "pass"
BUTLER = "import butler; butler.default_registry()"
MODULES = "import sys, json; {}; print(json.dumps(sorted(sys.modules)))"
GOAL_MS = 100.0
DEFAULT_MAX_RATIO = 5.0


def _env(as_is: bool) -> dict[str, str]:
    env = dict(os.environ)
    if not as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_once(code: str, env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds (user + system) and wall seconds of one ``python -c code``."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    stderr = child.stderr.read() if child.stderr else b""
    if child.stderr:
        child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"python -c {code!r} failed:\n{stderr.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime, wall


def interleaved(
    codes: Sequence[str], runs: int, env: dict[str, str]
) -> list[list[tuple[float, float]]]:
    """(CPU, wall) of each code, run in turn ``runs`` times."""
    times: list[list[tuple[float, float]]] = [[] for _ in codes]
    for _ in range(runs):
        for i, code in enumerate(codes):
            times[i].append(run_once(code, env))
    return times


def spread(values: Sequence[float], scale: float = 1000.0, fmt: str = "{:8.1f}") -> str:
    """``min median max`` of ``values`` (times ``scale``)."""
    picked = (min(values), statistics.median(values), max(values))
    return " ".join(fmt.format(v * scale) for v in picked)


def added_modules(env: dict[str, str]) -> list[str]:
    """Modules the butler side has loaded that a bare interpreter has not."""

    def modules(code: str) -> set[str]:
        out = subprocess.run(
            [sys.executable, "-c", MODULES.format(code)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return set(json.loads(out.stdout))

    return sorted(modules(BUTLER) - modules(BARE))


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="interleaved pairs (default 15)")
    parser.add_argument(
        "--check", action="store_true", help="fail on a heavy import or a limit exceeded"
    )
    parser.add_argument("--max-ratio", type=float, default=None, help="median CPU B/A limit")
    parser.add_argument(
        "--max-overhead-ms", type=float, default=None, help="median CPU B-A limit in ms"
    )
    parser.add_argument(
        "--as-is", action="store_true", help="keep PYTHONDONTWRITEBYTECODE; no warm-up run"
    )
    parser.add_argument(
        "--imports-only",
        action="store_true",
        help="with --check: judge only the heavy imports, not the times (for CI, whose "
        "environments run in parallel: times there say nothing about start-up)",
    )
    args = parser.parse_args()
    env = _env(args.as_is)
    if not args.as_is:
        interleaved([BARE, BUTLER], 1, env)  # writes any missing .pyc; untimed
    load_before = _load()
    bare, with_butler = interleaved([BARE, BUTLER], args.runs, env)
    load_after = _load()

    print(f"startup: python {sys.version.split()[0]} ({sys.executable})")
    print(f"  A bare  : python -c {BARE!r}")
    print(f"  B butler: python -c {BUTLER!r}")
    print(f"  {args.runs} interleaved pairs (A B A B ...)")
    print(f"  load average (1/5/15 min): before {load_before}, after {load_after}")
    if args.as_is:
        flag = "set" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "unset"
        print(f"  bytecode: environment as is (PYTHONDONTWRITEBYTECODE {flag}; no warm-up)")
    else:
        print("  bytecode: .pyc in use (PYTHONDONTWRITEBYTECODE removed; one warm-up run each)")
    print(f"{'':34}{'min':>8} {'median':>8} {'max':>8}")
    ratios: dict[str, list[float]] = {}
    overheads: dict[str, list[float]] = {}
    for k, kind in enumerate(("CPU", "wall")):
        a = [t[k] for t in bare]
        b = [t[k] for t in with_butler]
        overheads[kind] = [y - x for x, y in zip(a, b, strict=True)]
        ratios[kind] = [y / x for x, y in zip(a, b, strict=True)]
        print(f"{'A bare, ' + kind + ' ms':34}{spread(a)}")
        print(f"{'B butler, ' + kind + ' ms':34}{spread(b)}")
        print(f"{'overhead B - A, ' + kind + ' ms':34}{spread(overheads[kind])}")
        print(f"{'ratio B / A, ' + kind:34}{spread(ratios[kind], 1.0, '{:8.2f}')}")
    print(f"goal: CPU overhead < {GOAL_MS:.0f} ms (median of the pairs)")

    added = added_modules(env)
    tops = sorted({m.split(".")[0] for m in added})
    heavy = [h for h in HEAVY if h in added]
    print(f"modules loaded                : {len(added)} in {len(tops)} top-level packages")
    print("top-level packages            : " + ", ".join(tops))
    print(f"heavy libraries imported      : {', '.join(heavy) or 'none'}")
    return 1 if _verdicts(args, heavy, ratios["CPU"], overheads["CPU"]) else 0


def _verdicts(
    args: argparse.Namespace, heavy: list[str], ratios: list[float], overheads: list[float]
) -> bool:
    """Print each requested check's verdict; True if any failed."""
    failed = False
    if args.check:
        print(f"import check                  : {'FAILED' if heavy else 'passed'}")
        failed = bool(heavy)
        if args.imports_only:
            print("time checks                   : not judged (--imports-only)")
            return failed
    max_ratio = args.max_ratio if args.max_ratio is not None else DEFAULT_MAX_RATIO
    if args.check or args.max_ratio is not None:
        ratio = statistics.median(ratios)
        over = ratio > max_ratio
        verdict = "FAILED" if over else "passed"
        print(
            f"ratio check                   : {verdict} "
            f"(median CPU {ratio:.2f}, limit {max_ratio:g})"
        )
        failed = failed or over
    max_ms = args.max_overhead_ms if args.max_overhead_ms is not None else GOAL_MS
    if args.check or args.max_overhead_ms is not None:
        overhead = statistics.median(overheads) * 1000
        over = overhead > max_ms
        verdict = "FAILED" if over else "passed"
        print(
            f"overhead check                : {verdict} "
            f"(median CPU {overhead:.1f} ms, limit {max_ms:g} ms)"
        )
        failed = failed or over
    return failed


if __name__ == "__main__":
    sys.exit(main())
