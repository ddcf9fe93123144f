"""Atomic writes on S3: failures, killed writers and concurrent writers leave no partial object."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

from butler import Butler, DatasetExistsError, FormatError
from butler_s3 import S3Storage

MIB = 2**20


class Boom:
    """Pickling this fails after everything before it in a container has been written."""

    def __reduce__(self) -> Any:
        raise RuntimeError("boom while pickling")


def _uploads(client: Any, bucket: str) -> list[Any]:
    return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _keys(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def storage(s3_root: str, s3_credentials: dict[str, str]) -> Any:
    # Small parts so that a few MiB already take the multipart path.
    s = S3Storage(s3_root, part_size=5 * MIB, **s3_credentials)
    yield s
    s.close()


@pytest.mark.parametrize("size", [1000, 12 * MIB], ids=["single-put", "multipart"])
def test_exception_in_block_keeps_old_object(
    storage: S3Storage, boto_client: Any, s3_bucket: str, size: int
) -> None:
    storage.write_bytes("d.bin", b"old", metadata={"v": 1})
    writing = storage.atomic_write("d.bin", metadata={"v": 2})
    with pytest.raises(RuntimeError, match="serializer failed"), writing as f:
        f.write(b"n" * size)
        raise RuntimeError("serializer failed")
    assert storage.read_bytes("d.bin") == b"old"
    assert storage.metadata("d.bin")["v"] == 1
    writing = storage.atomic_write("new.bin")
    with pytest.raises(RuntimeError, match="serializer failed"), writing as f:
        f.write(b"n" * size)
        raise RuntimeError("serializer failed")
    assert not storage.exists("new.bin")
    assert _uploads(boto_client, s3_bucket) == []


def test_failure_during_multipart_upload_is_aborted(
    storage: S3Storage, boto_client: Any, s3_bucket: str
) -> None:
    storage.write_bytes("d.bin", b"old")

    def progress(done: int, total: int | None) -> None:
        if done >= 5 * MIB:
            raise RuntimeError("connection lost")

    writing = storage.atomic_write("d.bin", progress=progress)
    with pytest.raises(RuntimeError, match="connection lost"), writing as f:
        f.write(os.urandom(16 * MIB))
    assert storage.read_bytes("d.bin") == b"old"
    assert _uploads(boto_client, s3_bucket) == []


def test_serializer_failure_through_butler(s3_butler: Butler, boto_client: Any, s3_bucket: str):
    s3_butler.register_dataset_type("obj", object, "pickle", dimensions=["n"])
    s3_butler.put({"old": True}, "obj", n="x")
    with pytest.raises(FormatError, match="boom while pickling"):
        s3_butler.put([b"x" * (2 * MIB), Boom()], "obj", n="x", overwrite=True)
    assert s3_butler.get("obj", n="x", allow_pickle=True) == {"old": True}
    with pytest.raises(FormatError, match="boom while pickling"):
        s3_butler.put([b"x" * (2 * MIB), Boom()], "obj", n="y")
    assert not s3_butler.exists("obj", n="y")
    assert sorted(_keys(boto_client, s3_bucket)) == ["repo/butler.yaml", "repo/obj/x.pickle"]


_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from butler_s3 import S3Storage

    root, endpoint, phase = sys.argv[1:4]
    storage = S3Storage(root, endpoint_url=endpoint, part_size=8 * 2**20)

    def progress(done, total):
        if phase == "upload" and done > 0:
            print("UPLOADING", flush=True)
            time.sleep(60)  # blocks the event loop: the upload stays half done

    with storage.atomic_write("big.bin", metadata={"v": 2}, progress=progress) as f:
        chunk = b"n" * 2**20
        for i in range(64):
            f.write(chunk)
            if phase == "write" and i == 32:
                print("WRITING", flush=True)
                time.sleep(60)
    print("DONE", flush=True)
    """
)


@pytest.mark.parametrize("phase", ["write", "upload"])
def test_killed_writer_leaves_old_object(
    storage: S3Storage,
    boto_client: Any,
    s3_bucket: str,
    s3_root: str,
    s3_credentials: dict[str, str],
    phase: str,
) -> None:
    old = os.urandom(3 * MIB)
    storage.write_bytes("big.bin", old, metadata={"v": 1})
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, s3_root, s3_credentials["endpoint_url"], phase],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == ("WRITING" if phase == "write" else "UPLOADING")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert storage.read_bytes("big.bin") == old
    assert storage.metadata("big.bin")["v"] == 1
    assert _keys(boto_client, s3_bucket) == ["repo/big.bin"]
    uploads = _uploads(boto_client, s3_bucket)
    # Killed mid-upload, an incomplete multipart upload remains: invisible to readers, to
    # be removed by a lifecycle rule. Killed before uploading, nothing was sent at all.
    assert len(uploads) == (1 if phase == "upload" else 0)


@pytest.mark.parametrize("size", [100, 7 * MIB], ids=["single-put", "multipart"])
def test_concurrent_creators_one_winner(
    storage: S3Storage, boto_client: Any, s3_bucket: str, size: int
) -> None:
    n = 4 if size > MIB else 8
    barrier = threading.Barrier(n)

    def create(i: int) -> str:
        try:
            with storage.atomic_write("c.bin", overwrite=False, metadata={"i": i}) as f:
                f.write(bytes([i]) * size)
                barrier.wait(10)
        except DatasetExistsError as exc:
            assert str(exc) == f"a dataset already exists at {storage.uri('c.bin')!r}"
            return "lost"
        return "won"

    with ThreadPoolExecutor(n) as pool:
        outcomes = list(pool.map(create, range(n)))
    assert sorted(outcomes) == ["lost"] * (n - 1) + ["won"]
    winner = outcomes.index("won")
    assert storage.read_bytes("c.bin") == bytes([winner]) * size
    assert storage.metadata("c.bin")["i"] == winner
    assert _uploads(boto_client, s3_bucket) == []


def test_concurrent_puts_from_8_threads(s3_butler: Butler) -> None:
    np = pytest.importorskip("numpy")
    s3_butler.register_dataset_type("a", "numpy.ndarray", "npy", dimensions={"i": int})

    def put(i: int) -> None:
        for j in range(5):
            s3_butler.put(np.full((64, 64), i * 10 + j, dtype="i4"), "a", i=i * 10 + j)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(8)))
    found = sorted(d["i"] for d in s3_butler.datasets("a"))
    assert found == sorted(i * 10 + j for i in range(8) for j in range(5))
    for i in found:
        assert (s3_butler.get("a", i=i) == i).all()


def test_overwrite_replaces(storage: S3Storage) -> None:
    storage.write_bytes("o.bin", b"one")
    storage.write_bytes("o.bin", b"two")
    assert storage.read_bytes("o.bin") == b"two"
    with pytest.raises(DatasetExistsError):
        storage.write_bytes("o.bin", b"three", overwrite=False)
    assert storage.read_bytes("o.bin") == b"two"


def test_purge_aborts_old_incomplete_uploads(
    storage: S3Storage, boto_client: Any, s3_bucket: str
) -> None:
    """A killed writer's incomplete multipart upload is invisible; purge aborts it."""
    boto_client.create_multipart_upload(Bucket=s3_bucket, Key="repo/orphan.bin")
    boto_client.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/not-ours.bin")
    assert len(_uploads(boto_client, s3_bucket)) == 2
    # moto stamps every upload "2010-11-10", so "too young" is tested with a 30-year bound.
    assert storage.purge_debris(older_than=30 * 365 * 86400) == []
    assert storage.purge_debris(older_than=0) == ["incomplete upload of orphan.bin"]
    remaining = boto_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in remaining] == ["elsewhere/not-ours.bin"]
