"""A repository written by the released butler (244cd73, before runs and the index) opens
with the current code (issue 16): every dataset reads back as written, lives in the default
run under its old key, reading writes nothing, ``reindex`` then makes queries work, and a put
into a new run leaves the old keys alone.

Two forms of the fixture (tests/fixtures/README.md): the xattr tarball (metadata survives
extraction) and a copy of the sidecar directory (metadata lost: *foreign files*).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
EXPECTED = json.loads((FIXTURES / "release-0.2-repo.expected.json").read_text())
N_DATASETS = sum(len(v) for v in EXPECTED["datasets"].values())


def _extract_xattrs(dest: Path) -> Path:
    """The README's snippet: extract the tarball and restore ``user.butler``."""
    with tarfile.open(FIXTURES / "release-0.2-repo-xattrs.tar.gz") as tar:
        tar.extractall(dest, filter="data")
        for member in tar.getmembers():
            value = member.pax_headers.get("SCHILY.xattr.user.butler")
            if value is not None:
                os.setxattr(os.path.join(dest, member.name), "user.butler", value.encode())
    (root,) = [p for p in dest.iterdir() if (p / "butler.yaml").exists()]
    return root


@pytest.fixture(params=["xattrs", "sidecars"])
def release(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(form, root) of a fresh copy of the released repository."""
    pytest.importorskip("butler_fits", reason="butler-fits is not installed (image/1.fits)")
    if request.param == "xattrs":
        if not hasattr(os, "setxattr"):
            pytest.skip("no extended attributes on this platform")
        try:
            root = _extract_xattrs(tmp_path / "x")
        except OSError as exc:  # a file system without user xattrs
            pytest.skip(f"cannot restore user extended attributes here: {exc}")
    else:
        root = tmp_path / "release-0.2-repo"
        shutil.copytree(FIXTURES / "release-0.2-repo", root)
    yield request.param, root


def snapshot(root: Path) -> dict[str, tuple[str, bytes | None]]:
    """Every file (and directory) under ``root``: sha256 of its bytes, its xattr."""
    found: dict[str, tuple[str, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root) + "/"] = ("dir", None)
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                xattr: bytes | None = os.getxattr(path, "user.butler")
            except OSError:
                xattr = None
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            found[os.path.relpath(path, root)] = (digest, xattr)
    return found


def expected_value(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "ndarray":
        return np.array(spec["data"], dtype=spec["dtype"]).reshape(spec["shape"])
    return spec["data"]


def check_value(got: Any, spec: dict[str, Any]) -> None:
    if spec["kind"] == "ndarray":
        assert isinstance(got, np.ndarray)
        assert got.dtype == np.dtype(spec["dtype"]) and list(got.shape) == spec["shape"]
        np.testing.assert_array_equal(got, expected_value(spec))
    else:
        assert f"{type(got).__module__}.{type(got).__qualname__}" == spec["class"]
        assert dict(got) == spec["data"]


def read_everything(b: Butler, form: str) -> None:
    """Every reading call, checked against expected.json."""
    assert set(b.dataset_types) == set(EXPECTED["dataset_types"])
    assert b.runs() == {"default": N_DATASETS}
    assert b.chains == {}
    for name, entries in EXPECTED["datasets"].items():
        assert b.count(name) == len(entries)
        assert sorted(map(json.dumps, b.datasets(name))) == sorted(
            json.dumps({d: e["data_id"][d] for d in b.dataset_type(name).dimensions})
            for e in entries
        )
        for e in entries:
            data_id = e["data_id"]
            check_value(b.get(name, data_id), e["value"])
            check_value(b.get(name, data_id, run="default"), e["value"])
            assert b.exists(name, data_id)
            assert not b.exists(name, data_id, run="rerun")
            assert b.location(name, data_id).key == e["key"]
            stored = b.storage.metadata(e["key"])
            if form == "xattrs":
                written = {k: v for k, v in e["metadata"].items() if k != "created"}
                assert {k: v for k, v in stored.items() if k != "created"} == written
            else:
                assert stored == {}  # sidecars of other inodes: foreign files
            (version,) = b.history(name, data_id)
            assert version.run == "default"
            assert version.ref.data_id == data_id
            if form == "xattrs":
                assert version.checksum == e["metadata"]["sha256"]
                assert version.size == e["metadata"]["size"]
            else:
                assert version.checksum is None
            ref = b.ref(name, data_id)
            assert ref.run == "default" and ref.checksum == version.checksum
            p = b.provenance(name, data_id)  # written before provenance existed: none
            assert (p.user, p.host, p.butler_version, p.inputs) == (None, None, None, ())
            assert p.ref == ref
    by_listing = [(loc.data_id, loc.run) for loc in b.stored_locations("cfg", visit=2, ccd=1)]
    assert by_listing == [
        ({"visit": 2, "ccd": 1, "band": "g"}, "default"),
        ({"visit": 2, "ccd": 1, "band": "r"}, "default"),
    ]


def test_release_repository_reads_unchanged_and_writes_nothing(
    release: tuple[str, Path],
) -> None:
    form, root = release
    before = snapshot(root)
    with Butler(str(root)) as b:
        assert b.index is None  # the released policy names none
        read_everything(b, form)
        report = b.verify()
        assert report.checked == N_DATASETS
        if form == "xattrs":
            assert report.healthy and len(report.ok) == N_DATASETS
        else:
            assert len(report.unrecorded) == N_DATASETS
    with Butler(str(root), collections=["rerun", "default"]) as b:
        check_value(b.get("arr", visit=2), EXPECTED["datasets"]["arr"][1]["value"])
    assert snapshot(root) == before


def test_release_repository_reindexed_then_new_run(release: tuple[str, Path]) -> None:
    form, root = release
    data_files = {k: v for k, v in snapshot(root).items() if not k.startswith((".", "butler.yaml"))}
    with Butler(str(root)) as b:
        report = b.reindex()
        assert report.indexed == N_DATASETS
        assert b.index is not None
    with Butler(str(root)) as b:
        assert b.index is not None
        read_everything(b, form)
        assert b.count("cfg", "visit = 2 and band = 'r'") == 3
        assert [d["ccd"] for d in b.datasets("cfg", visit=1, band="g", order_by="-ccd")] == [
            2,
            1,
            0,
        ]
        assert b.verify().healthy == (form == "xattrs")
        # A put into a new run: old keys stay as they were; the new one is under @runs.
        w = Butler(str(root), run="rerun")
        w.put(np.arange(3), "arr", visit=2)
        w.put({"gain": 9.0}, "cfg", visit=1, ccd=0, band="g")
        w.close()
        assert b.runs() == {"default": N_DATASETS, "rerun": 2}
        assert [h.run for h in b.history("arr", visit=2)] == ["default", "rerun"]
        check_value(b.get("arr", visit=2), EXPECTED["datasets"]["arr"][1]["value"])
        np.testing.assert_array_equal(b.get("arr", visit=2, run="rerun"), np.arange(3))
        chained = Butler(str(root), collections=["rerun", "default"])
        assert chained.get("cfg", visit=1, ccd=0, band="g") == {"gain": 9.0}
        assert chained.count("cfg") == 12 and chained.count("arr") == 3
        chained.close()
    after = {k: v for k, v in snapshot(root).items() if not k.startswith((".", "butler.yaml"))}
    added = {k for k in after if k not in data_files}
    assert {k for k in added if not k.endswith("/") and "..butler-meta" not in k} == {
        "@runs/rerun/arr/2.npy",
        "@runs/rerun/cfg/1/0/g.json",
    }
    assert {k: after[k] for k in data_files} == data_files
