"""Every command on real files, in-process (click's CliRunner)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

import butler
from butler import Butler

pytest.importorskip("numpy")
import numpy as np

Cli = Callable[..., Result]


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}{result.stderr}"
    assert result.stderr == ""
    return result.stdout


def test_init_creates_repository(cli: Cli, cli_json: Any, tmp_path: Path) -> None:
    root = tmp_path / "new"
    assert ok(cli("init", root, "--checksum")) == f"created posix repository {root}\n"
    assert (root / "butler.yaml").exists()
    assert Butler(str(root)).policy.checksum is True
    assert cli_json("init", tmp_path / "other") == {"root": str(tmp_path / "other"),
                                                    "storage": "posix"}  # fmt: skip


def test_define(cli: Cli, cli_json: Any, repo: Path) -> None:
    out = ok(cli("define", repo, "cal", "--type", "numpy.ndarray", "--format", "npy",
                 "-d", "visit=int", "-d", "band"))  # fmt: skip
    assert out == "dataset type cal: numpy.ndarray, npy, cal/{visit:d}/{band}.npy\n"
    assert Butler(str(repo)).dataset_type("cal").dimensions == {"visit": "int", "band": "str"}
    data = cli_json("define", repo, "t", "--type", "dict", "--format", "json",
                    "--template", "t/{visit:04d}.json")  # fmt: skip
    assert data["template"] == "t/{visit:04d}.json" and data["dimensions"] == {"visit": "int"}
    bad = cli("define", repo, "x", "--type", "dict", "--format", "json", "-d", "v=float")
    assert bad.exit_code == 2 and "'v=float' is not NAME, NAME=int or NAME=str" in bad.stderr


def test_put_identifies_format_from_extension(cli: Cli, repo: Path, files: Any) -> None:
    out = ok(cli("put", repo, "img", files["npy"], "--id", "visit=1"))
    assert out == f"stored dataset 'img' {{'visit': 1}} at '{repo}/img/1.npy'\n"
    np.testing.assert_array_equal(Butler(str(repo)).get("img", visit=1),
                                  np.arange(12.0).reshape(3, 4))  # fmt: skip
    ok(cli("put", repo, "cfg", files["json"], "--id", "visit=1", "--id", "band=r"))
    assert Butler(str(repo)).get("cfg", visit=1, band="r") == {"gain": 1.5, "amps": [1, 2]}


def test_put_identifies_format_from_first_bytes(cli: Cli, repo: Path, files: Any) -> None:
    anonymous = files["npy"].with_name("image-without-extension")
    shutil.copy(files["npy"], anonymous)
    ok(cli("put", repo, "img", anonymous, "--id", "visit=2"))
    assert Butler(str(repo)).get("img", visit=2).shape == (3, 4)
    unknown = files["npy"].with_name("mystery")
    unknown.write_bytes(b"no signature here")
    result = cli("put", repo, "img", unknown, "--id", "visit=3")
    assert result.exit_code == 1
    assert result.stderr.startswith("butler: error: FormatError: cannot identify the format of ")


def test_put_with_explicit_format(cli: Cli, repo: Path, files: Any) -> None:
    text = files["json"].with_name("settings.txt")
    shutil.copy(files["json"], text)
    assert cli("put", repo, "cfg", text, "--id", "visit=1", "--id", "band=g").exit_code == 1
    ok(cli("put", repo, "cfg", text, "--id", "visit=1", "--id", "band=g", "--format", "json"))
    assert Butler(str(repo)).get("cfg", visit=1, band="g") == {"gain": 1.5, "amps": [1, 2]}


def test_put_existing_needs_overwrite(cli: Cli, repo: Path, files: Any) -> None:
    ok(cli("put", repo, "img", files["npy"], "--id", "visit=1"))
    result = cli("put", repo, "img", files["npy"], "--id", "visit=1")
    assert result.exit_code == 1
    assert "already exists; pass --overwrite to replace it" in result.stderr
    ok(cli("put", repo, "img", files["npy"], "--id", "visit=1", "--overwrite"))


def test_get_format_from_output_name(cli: Cli, repo: Path, tmp_path: Path) -> None:
    b = Butler(str(repo))
    b.put(np.eye(3), "img", visit=1)
    b.put({"a": [1, 2]}, "cfg", visit=1, band="g")
    out = tmp_path / "out"
    assert ok(cli("get", repo, "img", "--id", "visit=1", "-o", out / "eye.npy")) == (
        f"wrote {out / 'eye.npy'}\n"
    )
    np.testing.assert_array_equal(np.load(out / "eye.npy"), np.eye(3))
    ok(cli("get", repo, "cfg", "--id", "visit=1", "--id", "band=g", "-o", out / "c.json"))
    assert json.loads((out / "c.json").read_text()) == {"a": [1, 2]}
    ok(cli("get", repo, "cfg", "--id", "visit=1", "--id", "band=g", "-o", out / "c.yaml"))
    assert butler.read_file(str(out / "c.yaml")) == {"a": [1, 2]}
    ok(cli("get", repo, "img", "--id", "visit=1", "-o", out / "eye.dat", "--format", "npy"))
    np.testing.assert_array_equal(np.load(out / "eye.dat"), np.eye(3))


def test_get_missing_dataset(cli: Cli, repo: Path, tmp_path: Path) -> None:
    result = cli("get", repo, "img", "--id", "visit=9", "-o", tmp_path / "x.npy")
    assert result.exit_code == 1
    assert result.stderr == (
        f"butler: error: DatasetNotFoundError: dataset 'img' {{'visit': 9}} at "
        f"'{repo}/img/9.npy' does not exist\n"
    )
    assert not (tmp_path / "x.npy").exists()


def test_ls(cli: Cli, cli_json: Any, repo: Path) -> None:
    b = Butler(str(repo))
    for visit in (1, 2, 10):
        b.put(np.zeros(2), "img", visit=visit)
    b.put({}, "cfg", visit=1, band="r")
    assert ok(cli("ls", repo)) == (
        "cfg  (builtins.dict, json, cfg/{visit:d}/{band}.json)\n"
        "img  (numpy.ndarray, npy, img/{visit:d}.npy)\n"
    )
    assert sorted(ok(cli("ls", repo, "img")).split()) == ["visit=1", "visit=10", "visit=2"]
    assert ok(cli("ls", repo, "cfg", "--id", "band=g")) == "(no datasets)\n"
    assert sorted(d["visit"] for d in cli_json("ls", repo, "img")) == [1, 2, 10]
    assert cli_json("ls", repo)["cfg"]["dimensions"] == {"visit": "int", "band": "str"}
    assert cli_json("ls", repo, "cfg", "--id", "band=r") == [{"visit": 1, "band": "r"}]


def test_rm(cli: Cli, repo: Path) -> None:
    Butler(str(repo)).put(np.zeros(2), "img", visit=1)
    assert ok(cli("rm", repo, "img", "--id", "visit=1")) == "removed img {'visit': 1}\n"
    assert ok(cli("ls", repo, "img")) == "(no datasets)\n"
    again = cli("rm", repo, "img", "--id", "visit=1")
    assert again.exit_code == 1 and again.stderr.startswith(
        "butler: error: DatasetNotFoundError: dataset 'img' {'visit': 1}"
    )


def test_info(cli: Cli, cli_json: Any, repo: Path) -> None:
    b = Butler(str(repo))
    b.put(np.zeros(100), "img", visit=1)
    b.put(np.zeros(100), "img", visit=2)
    text = ok(cli("info", repo))
    assert text.startswith(
        f"repository: {repo}\nstorage:    posix\nchecksums:  on\n"
        f"index:      {repo / '.butler' / 'index.sqlite3'}\ndataset types:\n"
    )
    assert "img" in text and "2 datasets" in text and "numpy.ndarray" in text
    data = cli_json("info", repo)
    assert data["dataset_types"]["img"] == {"python_type": "numpy.ndarray", "format": "npy",
                                            "count": 2}  # fmt: skip
    assert data["dataset_types"]["cfg"]["count"] == 0 and data["checksum"] is True


def test_verify_healthy_then_truncated(cli: Cli, cli_json: Any, repo: Path) -> None:
    b = Butler(str(repo))
    b.put(np.arange(50.0), "img", visit=1)
    b.put({"a": 1}, "cfg", visit=1, band="r")
    assert ok(cli("verify", repo)) == "checked 2 datasets: 2 ok\n"
    path = repo / "img" / "1.npy"
    size = path.stat().st_size
    with open(path, "r+b") as f:  # damage behind butler's back; metadata keeps the size
        f.truncate(size // 2)
    result = cli("verify", repo)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "checked 2 datasets: 1 ok",
        f"truncated: dataset 'img' {{'visit': 1}} at '{path}': {size // 2} bytes, recorded {size}",
    ]
    parsed = json.loads(cli("--json", "verify", repo).stdout)
    assert parsed["checked"] == 2 and len(parsed["truncated"]) == 1 and parsed["missing"] == []
    get = cli("get", repo, "img", "--id", "visit=1", "-o", repo.parent / "x.npy")
    assert (
        get.exit_code == 1 and "FormatError" in get.stderr and "truncated or corrupt" in get.stderr
    )


def test_verify_detects_changed_bytes(cli: Cli, repo: Path) -> None:
    b = Butler(str(repo))
    b.put({"a": 1}, "cfg", visit=1, band="r")
    path = repo / "cfg" / "1" / "r.json"
    data = bytearray(path.read_bytes())
    data[-2] = ord("2")  # {"a": 2}: same size, other sha256
    with open(path, "r+b") as f:
        f.write(data)
    result = cli("verify", repo)
    assert result.exit_code == 1 and result.stdout.splitlines()[1] == (
        f"corrupted: dataset 'cfg' {{'visit': 1, 'band': 'r'}} at '{path}': sha256 mismatch"
    )


def test_plugins_text_and_json(cli: Cli, cli_json: Any) -> None:
    text = ok(cli("plugins"))
    assert text.startswith("Plugins:\n  core       butler-core")
    assert "Storages: " in text and "memory (memory) [butler-core]" in text
    assert "  npy        *         numpy.ndarray" in text
    data = cli_json("plugins")
    assert {"json", "npy", "pickle", "config"} <= set(data["formats"])
    assert {"posix", "memory"} <= set(data["storages"])
    core = next(p for p in data["plugins"] if p["distribution"] == "butler-core")
    assert core["status"] == "builtin"
    assert {"type": "builtins.dict", "format": "json", "storage": "*",
            "distribution": "butler-core"} in data["serializers"]  # fmt: skip
    assert all(p["status"] != "failed" for p in data["plugins"]), data["plugins"]


def test_convert_between_core_formats(cli: Cli, files: Any, tmp_path: Path) -> None:
    yaml_path = tmp_path / "cfg.yaml"
    assert ok(cli("convert", files["json"], yaml_path)) == (
        f"converted {files['json']} -> {yaml_path}\n"
    )
    assert butler.read_file(str(yaml_path)) == {"gain": 1.5, "amps": [1, 2]}
    back = tmp_path / "back.json"
    ok(cli("convert", yaml_path, back))
    assert json.loads(back.read_text()) == {"gain": 1.5, "amps": [1, 2]}
    explicit = tmp_path / "cfg.txt"
    ok(cli("convert", files["json"], explicit, "--to", "json"))
    assert json.loads(explicit.read_text()) == {"gain": 1.5, "amps": [1, 2]}


def test_convert_npy_to_json_has_no_serializer(cli: Cli, files: Any, tmp_path: Path) -> None:
    result = cli("convert", files["npy"], tmp_path / "a.json")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "butler: error: NoSerializerError: No serializer for type 'numpy.ndarray' in format 'json'"
    )
    assert "\n" not in result.stderr.rstrip("\n") and not (tmp_path / "a.json").exists()


@pytest.mark.parametrize(("plugin", "ext"), [("butler_hdf5", "h5"), ("butler_fits", "fits")])
def test_convert_npy_round_trip_through(
    cli: Cli, files: Any, tmp_path: Path, plugin: str, ext: str
) -> None:
    pytest.importorskip(plugin, reason=f"{plugin.replace('_', '-')} is not installed")
    middle = tmp_path / f"image.{ext}"
    ok(cli("convert", files["npy"], middle))
    back = tmp_path / "back.npy"
    ok(cli("convert", middle, back))  # the type recorded with the file: numpy.ndarray
    np.testing.assert_array_equal(np.load(back), np.arange(12.0).reshape(3, 4))


def test_convert_missing_source(cli: Cli, tmp_path: Path) -> None:
    result = cli("convert", tmp_path / "nope.json", tmp_path / "x.yaml")
    assert result.exit_code == 1
    assert result.stderr == (
        f"butler: error: DatasetNotFoundError: SRC '{tmp_path / 'nope.json'}' does not exist\n"
    )


def test_storage_options_and_memory_uri(cli: Cli, cli_json: Any, files: Any) -> None:
    ok(cli("init", "memory://cli-test"))
    ok(cli("define", "memory://cli-test", "img", "--type", "numpy.ndarray", "--format", "npy",
           "-d", "visit=int"))  # fmt: skip
    ok(cli("put", "memory://cli-test", "img", files["npy"], "--id", "visit=1"))
    assert cli_json("ls", "memory://cli-test", "img") == [{"visit": 1}]
    bad = cli("ls", "./x", "-O", "novalue")
    assert bad.exit_code == 2 and "'novalue' is not KEY=VALUE" in bad.stderr
