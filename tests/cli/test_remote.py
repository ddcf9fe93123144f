"""The CLI on the plugin storages: S3 (``-O`` options, the kit's moto server) and SQLite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from butler.testing import RepositoryFactory, unavailable_reason

pytest.importorskip("numpy")
import numpy as np


def _workflow(cli: Callable[..., Result], cli_json: Any, root: str, opts: list[str],
              files: Any, tmp_path: Path, *, indexed: bool) -> None:  # fmt: skip
    def ok(*args: Any) -> str:
        result = cli(*args, *opts)
        assert result.exit_code == 0, result.output + result.stderr
        return result.stdout

    ok("init", root)
    ok("define", root, "img", "--type", "numpy.ndarray", "--format", "npy", "-d", "visit=int")
    ok("put", root, "img", files["npy"], "--id", "visit=3")
    assert cli_json("ls", root, "img", *opts) == [{"visit": 3}]
    ok("get", root, "img", "--id", "visit=3", "-o", tmp_path / "back.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), np.load(files["npy"]))
    info = cli_json("info", root, *opts)
    if indexed:  # the database's own index (tables bidx_*) gives the count
        assert "bidx_" in info["index"] and info["dataset_types"]["img"]["count"] == 1
    else:  # S3 keeps no index: info lists nothing, so the count is unknown
        assert info["index"] is None and info["dataset_types"]["img"]["count"] is None
        assert ok("info", root).count("not indexed") == 1
    assert ok("ls", root, "img", "--count") == "1\n"  # through the index, or by listing
    assert ok("verify", root) == "checked 1 datasets: 1 ok\n"
    ok("rm", root, "img", "--id", "visit=3")
    assert cli_json("ls", root, "img", *opts) == []


def test_s3(cli: Any, cli_json: Any, files: Any, tmp_path: Path) -> None:
    reason = unavailable_reason("s3")
    if reason:
        pytest.skip(reason)
    factory = RepositoryFactory("s3", tmp_path)
    root, options = factory.root(), factory.options  # a fresh prefix on the kit's moto server
    opts = [arg for k, v in options.items() for arg in ("-O", f"{k}={v}")]
    _workflow(cli, cli_json, root, opts, files, tmp_path, indexed=False)
    secret = cli("--json", "info", root, *opts)
    assert options["secret"] not in secret.stdout + secret.stderr
    remote = f"{root}/loose/image.npy"  # convert to and from a plain S3 key
    assert cli("convert", files["npy"], remote, *opts).exit_code == 0
    assert cli("convert", remote, tmp_path / "again.npy", *opts).exit_code == 0
    np.testing.assert_array_equal(np.load(tmp_path / "again.npy"), np.load(files["npy"]))


def test_sqlite(cli: Any, cli_json: Any, files: Any, tmp_path: Path) -> None:
    reason = unavailable_reason("database")
    if reason:
        pytest.skip(reason)
    root = f"sqlite:///{tmp_path / 'repo.db'}"
    _workflow(cli, cli_json, root, [], files, tmp_path, indexed=True)
