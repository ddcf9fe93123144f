"""The real console script / module entry point, in separate processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy")
import numpy as np


def butler_cmd() -> list[str]:
    script = shutil.which("butler")
    # The console script when it belongs to this interpreter, else the module.
    if script and Path(script).resolve().parent == Path(sys.executable).resolve().parent:
        return [script]
    return [sys.executable, "-m", "butler"]


def run(*args: object, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="100")
    proc = subprocess.run(
        [*butler_cmd(), *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_workflow_in_subprocesses(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    image = tmp_path / "image.npy"
    np.save(image, np.arange(6, dtype="i2").reshape(2, 3))
    run("init", repo, "--checksum")
    run("define", repo, "img", "--type", "numpy.ndarray", "--format", "npy", "-d", "visit=int")
    assert run("put", repo, "img", image, "--id", "visit=7").stdout.startswith("stored dataset")
    assert json.loads(run("--json", "ls", repo, "img").stdout) == [{"visit": 7}]
    run("get", repo, "img", "--id", "visit=7", "-o", tmp_path / "out.npy")
    back = np.load(tmp_path / "out.npy")
    assert back.dtype == np.dtype("i2") and back.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert run("verify", repo).stdout == "checked 1 datasets: 1 ok\n"


def test_errors_and_debug_in_a_subprocess(tmp_path: Path) -> None:
    plain = run("ls", tmp_path / "none", check=False)
    assert plain.returncode == 1 and plain.stdout == ""
    assert plain.stderr == (
        f"butler: error: StorageError: no butler repository at '{tmp_path / 'none'}'; create "
        f"one with 'butler init'\n"
    )
    debug = run("--debug", "ls", tmp_path / "none", check=False)
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.rstrip().endswith("or 'butler init'")
    assert "butler._errors.StorageError" in debug.stderr


def test_module_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "butler", "--json", "plugins"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert "npy" in json.loads(proc.stdout)["formats"]
