"""Issues 14 item 10 and 19 item 9: ``bench/startup.py`` checks what it says it checks.

It measures a bare interpreter and butler interleaved in the same run and prints both, the
per-pair overhead and ratio; ``--check`` fails on a heavy import, on the CPU ratio and on
the CPU overhead. The limits given here are extreme on purpose so the verdicts do not
depend on the machine's speed or load (no timed assertion).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "startup.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "2", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def _row(stdout: str, label: str) -> list[float]:
    """The min, median and max printed on the row starting with ``label``."""
    line = next(line for line in stdout.splitlines() if line.startswith(label))
    return [float(x) for x in line[len(label) :].split()]


def test_both_sides_are_measured_interleaved_and_compared() -> None:
    done = _run("--max-ratio", "1000", "--max-overhead-ms", "100000")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "  A bare  : python -c 'pass'" in out
    assert "  B butler: python -c 'import butler; butler.default_registry()'" in out
    assert "2 interleaved pairs (A B A B ...)" in out
    assert re.search(r"load average \(1/5/15 min\): before [\d.]+/[\d.]+/[\d.]+, after", out)
    for kind in ("CPU", "wall"):
        bare = _row(out, f"A bare, {kind} ms")
        with_butler = _row(out, f"B butler, {kind} ms")
        overhead = _row(out, f"overhead B - A, {kind} ms")
        ratio = _row(out, f"ratio B / A, {kind}")
        for row in (bare, with_butler, overhead, ratio):
            assert len(row) == 3 and row[0] <= row[1] <= row[2]
        assert bare[0] > 0 and with_butler[0] > 0
    assert "ratio check                   : passed (median CPU" in out
    assert "overhead check                : passed (median CPU" in out
    assert "import check" not in out  # only with --check


def test_check_fails_on_the_ratio() -> None:
    # Importing butler and discovering plugins costs more CPU than ``pass``: ratio > 1.
    done = _run("--check", "--max-ratio", "1", "--max-overhead-ms", "100000")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "import check                  : passed" in done.stdout
    assert re.search(r"ratio check +: FAILED \(median CPU [\d.]+, limit 1\)", done.stdout)
    assert "overhead check                : passed" in done.stdout


def test_check_fails_on_the_overhead() -> None:
    done = _run("--check", "--max-ratio", "1000", "--max-overhead-ms", "0.001")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "ratio check                   : passed" in done.stdout
    assert re.search(
        r"overhead check +: FAILED \(median CPU [\d.]+ ms, limit 0.001 ms\)", done.stdout
    )


def test_check_names_no_heavy_import() -> None:
    done = _run("--check", "--max-ratio", "1000", "--max-overhead-ms", "100000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "heavy libraries imported      : none" in done.stdout
    assert "import check                  : passed" in done.stdout
    assert re.search(r"modules loaded +: \d+ in \d+ top-level packages", done.stdout)
    packages = _row_text(done.stdout, "top-level packages            : ")
    assert {"butler", "pluggy"} <= set(packages.split(", "))


def _row_text(stdout: str, label: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(label))[len(label) :]


def test_check_fails_on_a_heavy_import(tmp_path: Path) -> None:
    # A real plugin distribution whose entry-point module imports yaml (listed as heavy).
    (tmp_path / "heavy_startup_plugin.py").write_text("import yaml\n")
    info = tmp_path / "butler_heavy_startup-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Name: butler-heavy-startup\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[butler]\nheavy = heavy_startup_plugin\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "1", "--check", "--max-ratio", "1000"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "heavy libraries imported      : yaml" in done.stdout
    assert "import check                  : FAILED" in done.stdout
