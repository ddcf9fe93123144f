"""Issue 14 item 9: a read-only posix repository keeps its metadata (types, formats,
sizes), and ``verify`` never calls healthy what it could not check."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from butler import Butler, Config

from .._mounts import mounted, remount_read_only


class Settings(Config):
    """A Config subclass: only the recorded metadata can bring it back as such."""


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    with mounted(tmp_path / "mnt", options="size=8m") as mnt:
        yield mnt


def test_read_only_repository_keeps_metadata(tmpfs: Path) -> None:
    root = str(tmpfs / "repo")
    b = Butler.create(root, checksum=True)
    b.register_dataset_type("conf", Config, "config", dimensions={"v": int})
    b.put(Settings({"gain": 2}), "conf", v=1)
    b.close()
    remount_read_only(tmpfs)
    before = sorted(os.listdir(tmpfs / "repo"))
    reader = Butler(root)
    got = reader.get("conf", v=1)
    assert type(got) is Settings and got == {"gain": 2}
    assert reader.storage.metadata(reader.location("conf", v=1).key)["python_type"].endswith(
        "Settings"
    )
    report = reader.verify()
    assert report.healthy and report.checked == 1 and report.ok
    assert sorted(os.listdir(tmpfs / "repo")) == before


def test_verify_is_unhealthy_when_it_cannot_check(tmp_path: Path) -> None:
    b = Butler.create(str(tmp_path / "r"))
    b.register_dataset_type("cfg", dict, "json", dimensions={"v": int})
    b.put({"a": 1}, "cfg", v=1)
    (tmp_path / "r" / "cfg" / "2.json").write_text("{}")  # a file butler did not write
    report = b.verify()
    assert report.unrecorded and not report.healthy
