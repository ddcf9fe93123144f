"""Posix storage: writes are atomic after exceptions and after SIGKILL of the writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from butler import Butler, DatasetExistsError, DatasetNotFoundError, StorageError
from butler.storages.posix import PosixStorage

from .._mounts import mounted


def test_exception_keeps_old_and_leaves_no_partial(tmp_path: Path) -> None:
    storage = PosixStorage(str(tmp_path))
    storage.write_bytes("a/b.bin", b"old" * 1000)
    with pytest.raises(RuntimeError), storage.atomic_write("a/b.bin") as f:
        f.write(b"new-partial")
        raise RuntimeError("serializer failed half-way")
    assert storage.read_bytes("a/b.bin") == b"old" * 1000
    assert os.listdir(tmp_path / "a") == ["b.bin"]  # no temporary file left
    assert list(storage.list()) == ["a/b.bin"]


def test_metadata_committed_with_bytes(tmp_path: Path) -> None:
    storage = PosixStorage(str(tmp_path))
    with storage.atomic_write("x.json", metadata={"format": "json"}, checksum=True) as f:
        f.write(b"[1, 2]")
    meta = storage.metadata("x.json")
    assert meta["format"] == "json" and meta["size"] == 6
    import hashlib

    assert meta["sha256"] == hashlib.sha256(b"[1, 2]").hexdigest()


def test_sidecar_fallback_without_xattrs(tmp_path: Path) -> None:
    storage = PosixStorage(str(tmp_path))
    storage.use_xattr = False
    with storage.atomic_write("d/x.json", metadata={"format": "json"}) as f:
        f.write(b"{}")
    assert storage.metadata("d/x.json")["format"] == "json"
    assert list(storage.list()) == ["d/x.json"]  # the sidecar is hidden
    inode = (tmp_path / "d" / "x.json").stat().st_ino
    sidecar = tmp_path / "d" / f"..butler-meta.{inode}.x.json"  # bound to this very file
    assert json.loads(sidecar.read_text())["size"] == 2
    assert sorted(os.listdir(tmp_path / "d")) == [sidecar.name, "x.json"]
    storage.remove("d/x.json")
    assert not sidecar.exists()


def test_legacy_sidecar_still_read(tmp_path: Path) -> None:
    """0.1 repositories without xattrs kept metadata in ``.<name>.butler-meta``."""
    storage = PosixStorage(str(tmp_path))
    storage.use_xattr = False
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.json").write_bytes(b"{}")
    (tmp_path / "d" / ".x.json.butler-meta").write_text('{"format": "json", "size": 2}')
    assert storage.metadata("d/x.json") == {"format": "json", "size": 2}
    storage.write_bytes("d/x.json", b"[]", metadata={"format": "json"})
    assert storage.metadata("d/x.json")["size"] == 2
    assert not (tmp_path / "d" / ".x.json.butler-meta").exists()  # superseded: removed


def test_create_only_has_exactly_one_winner(tmp_path: Path) -> None:
    storage = PosixStorage(str(tmp_path))
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def create(i: int) -> None:
        barrier.wait()
        try:
            storage.write_bytes("race.bin", f"writer {i}".encode(), overwrite=False)
            outcomes.append("won")
        except DatasetExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists"] * 7 + ["won"]
    assert storage.read_bytes("race.bin").startswith(b"writer ")
    assert os.listdir(tmp_path) == ["race.bin"]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (needs root and mount rights, as in CI; skipped elsewhere)."""
    with mounted(tmp_path / "tiny") as mountpoint:
        yield mountpoint


def test_disk_full_gives_storage_error_and_keeps_old_data(tiny_tmpfs: Path) -> None:
    storage = PosixStorage(str(tiny_tmpfs))
    storage.write_bytes("x.bin", b"old" * 1000)
    with pytest.raises(StorageError, match=r"x\.bin.*No space left"):
        storage.write_bytes("x.bin", b"n" * (4 * 1024 * 1024))
    assert storage.read_bytes("x.bin") == b"old" * 1000
    assert sorted(os.listdir(tiny_tmpfs)) == ["x.bin"]


def test_read_only_filesystem_gives_storage_error(tiny_tmpfs: Path) -> None:
    storage = PosixStorage(str(tiny_tmpfs))
    storage.write_bytes("x.bin", b"old")
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_tmpfs)], check=True)
    with pytest.raises(StorageError, match="Read-only file system"):
        storage.write_bytes("x.bin", b"new")
    assert storage.read_bytes("x.bin") == b"old"


def test_file_size_limit_gives_storage_error(tmp_path: Path) -> None:
    """Works without root: RLIMIT_FSIZE makes writes fail with EFBIG in a child process."""
    code = textwrap.dedent(
        f"""
        import resource, signal
        from butler import StorageError
        from butler.storages.posix import PosixStorage
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        storage = PosixStorage({str(tmp_path)!r})
        storage.write_bytes("x.bin", b"old")
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            storage.write_bytes("x.bin", b"n" * 1_000_000)
        except StorageError as exc:
            print("StorageError", exc)
        assert storage.read_bytes("x.bin") == b"old"
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("StorageError") and "x.bin" in out.stdout
    assert os.listdir(tmp_path) == ["x.bin"]


def test_unwritable_root_gives_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    storage = PosixStorage(str(blocker))
    with pytest.raises(StorageError, match="cannot"):
        storage.write_bytes("a/b.bin", b"x")


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from butler import Butler
    b = Butler(sys.argv[1])
    value = int(sys.argv[2])
    array = np.full(48 * 1024 * 1024 // 8, value, dtype=np.int64)
    print("ready", flush=True)
    while True:
        b.put(array, "big", n=1, overwrite=True)
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.5, 1.0, 1.7])
def test_sigkill_during_large_write_leaves_old_or_new(tmp_path: Path, delay: float) -> None:
    """A writer killed at any moment leaves a complete dataset and no visible debris."""
    np = pytest.importorskip("numpy")
    root = str(tmp_path / "repo")
    b = Butler.create(root)
    b.register_dataset_type("big", "numpy.ndarray", "npy", dimensions={"n": int})
    b.put(np.full(48 * 1024 * 1024 // 8, 7, dtype=np.int64), "big", n=1)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), root, "9"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    value = b.get("big", n=1)
    assert value.shape == (48 * 1024 * 1024 // 8,)
    assert value[0] in (7, 9) and (value == value[0]).all(), "a mix of old and new bytes"
    assert list(b.datasets("big")) == [{"n": 1}]
    assert b.verify().healthy
    # and the repository stays usable
    b.put(np.zeros(3), "big", n=1, overwrite=True)
    assert b.get("big", n=1).tolist() == [0.0, 0.0, 0.0]


def test_purge_removes_only_old_writer_debris(tmp_path: Path) -> None:
    """A killed writer's hidden temporary file is purged once old; datasets never are."""
    b = Butler.create(str(tmp_path / "repo"))
    b.register_dataset_type("j", dict, "json", dimensions=["n"])
    b.put({"keep": True}, "j", n="a")
    directory = tmp_path / "repo" / "j"
    old = directory / "..butler-tmp.0123456789ab.a.json"
    fresh = directory / "..butler-tmp.456789abcdef.b.json"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"a live writer")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert b.purge_debris(older_than=3600) == ["j/..butler-tmp.0123456789ab.a.json"]
    assert not old.exists() and fresh.exists()
    assert b.get("j", n="a") == {"keep": True}
    assert b.purge_debris(older_than=3600) == []


def test_purge_from_the_command_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from butler._cli import main

    b = Butler.create(str(tmp_path / "repo"))
    debris = tmp_path / "repo" / ".x.npy.0123456789ab.butler-tmp"  # a 0.1 writer's
    debris.write_bytes(b"x")
    os.utime(debris, (0, 0))
    result = CliRunner().invoke(main, ["--json", "purge", b.storage.root])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"removed": [".x.npy.0123456789ab.butler-tmp"]}
    assert not debris.exists()


def test_durability_options_still_commit(tmp_path: Path) -> None:
    for options in ({"sync_directories": True}, {"durable": False}):
        b = Butler.create(str(tmp_path / str(sorted(options))), **options)
        assert b.storage.sync_directories is options.get("sync_directories", False)
        b.register_dataset_type("j", dict, "json", dimensions=["n"])
        b.put({"o": 1}, "j", n="a")
        b.put({"o": 2}, "j", n="a", overwrite=True)
        assert b.get("j", n="a") == {"o": 2}


def test_get_reads_the_bytes_whose_metadata_it_read(tmp_path: Path) -> None:
    """metadata() then open() of one key in one thread read the same file, even if another
    writer replaces it in between (Butler.get pairs format and bytes of one version)."""
    reader = PosixStorage(str(tmp_path))
    writer = PosixStorage(str(tmp_path))
    writer.write_bytes("k.json", b"[1]", metadata={"version": 1})
    assert reader.metadata("k.json")["version"] == 1
    writer.write_bytes("k.json", b"[2, 2]", metadata={"version": 2})
    assert reader.read_bytes("k.json") == b"[1]"  # the version whose metadata was read
    assert reader.read_bytes("k.json") == b"[2, 2]"  # handed over once only
    assert reader.metadata("k.json")["version"] == 2
    reader.write_bytes("k.json", b"[3]")  # this thread's own write drops what it kept
    assert reader.read_bytes("k.json") == b"[3]"
    assert reader.metadata("k.json")["size"] == 3
    with reader.local_path("k.json") as path:
        assert Path(path).read_bytes() == b"[3]"
    reader.metadata("k.json")
    writer.remove("k.json")
    other = PosixStorage(str(tmp_path))
    with pytest.raises(DatasetNotFoundError):
        other.read_bytes("k.json")
