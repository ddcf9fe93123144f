"""Issue 19 item 7: ``bench/fits.py``'s S3 section runs where pytest is not installed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("butler_fits", reason="butler-fits is not installed")
pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
pytest.importorskip("moto", reason="moto is not installed")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "fits.py"


def test_s3_section_runs_without_pytest(tmp_path: Path) -> None:
    # A module named pytest that fails to import, first on the path: as if not installed.
    (tmp_path / "pytest.py").write_text("raise ImportError('No module named pytest')\n")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--size-mib", "1", "--no-local"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "S3 (moto server on loopback), 1 MiB float32 image" in done.stdout
    assert re.search(r"100x100 cutout: \d+ bytes fetched in \d+ requests", done.stdout)
    assert re.search(r"whole image: \d+ bytes fetched \([01]\.\d{3}x the file\)", done.stdout)
    assert "Local disk" not in done.stdout
