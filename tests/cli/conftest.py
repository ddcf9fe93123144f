"""Fixtures of the CLI tests: an in-process runner and small real files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from butler import Butler
from butler._cli import main


def make_runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into output unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


@pytest.fixture
def cli() -> Callable[..., Result]:
    """``cli("ls", root)`` runs the command in-process and returns click's `Result`."""
    runner = make_runner()

    def run(*args: Any, **kwargs: Any) -> Result:
        return runner.invoke(main, [str(a) for a in args], **kwargs)

    return run


@pytest.fixture
def cli_json(cli: Callable[..., Result]) -> Callable[..., Any]:
    """Runs a command with ``--json``, asserts success and returns the parsed output."""

    def run(*args: Any) -> Any:
        result = cli("--json", *args)
        assert result.exit_code == 0, result.output + result.stderr
        return json.loads(result.stdout)

    return run


@pytest.fixture
def repo(butler_repo: Callable[..., Butler]) -> Path:
    """A posix repository with checksums and dataset types ``img`` (npy) and ``cfg`` (json)."""
    b = butler_repo("posix", checksum=True)
    b.register_dataset_type("img", "numpy.ndarray", "npy", dimensions={"visit": int})
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "band": str})
    return Path(b.storage.root)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Real input files: ``npy`` (a 3x4 float array), ``json`` (a dict)."""
    np = pytest.importorskip("numpy")
    npy = tmp_path / "in" / "image.npy"
    npy.parent.mkdir()
    np.save(npy, np.arange(12.0).reshape(3, 4))
    cfg = tmp_path / "in" / "cfg.json"
    cfg.write_text(json.dumps({"gain": 1.5, "amps": [1, 2]}), encoding="utf-8")
    return {"npy": npy, "json": cfg}
