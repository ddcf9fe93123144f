"""Issue 14 item 10: ``bench/startup.py`` checks what it says it checks.

``--check`` checks imports only and says so; a timing limit is checked only when one is
given, against a bare interpreter measured interleaved in the same run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "startup.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--runs", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_check_is_an_import_check_and_says_so() -> None:
    done = _run("--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "import check                  : passed (imports only)" in done.stdout
    assert "overhead check" not in done.stdout
    assert "heavy libraries imported      : none" in done.stdout


def test_a_timing_limit_is_checked_when_given() -> None:
    done = _run("--max-overhead-ms", "0.001")
    assert done.returncode == 1
    assert "overhead check                : FAILED (limit 0 ms)" in done.stdout
    generous = _run("--max-overhead-ms", "100000")
    assert generous.returncode == 0
    assert "overhead check                : passed" in generous.stdout
