"""Fault injection: failing S3 servers, dropped database connections, full or read-only disks.

Every fault ends in a bounded number of retries and then a `StorageError` (or a success when
the fault is transient), never a partial, duplicate or corrupt dataset: the previous value
stays intact, checked behind butler's back (boto3 against moto, SQL on the database, the
files on disk), and the repository stays usable.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler, StorageError

from .._mounts import mounted
from .conftest import make_repo
from .faultproxy import FaultProxy
from .helpers import Repo, boto_client, db_counts, posix_debris, s3_pending_uploads

pytestmark = pytest.mark.reliability

#: botocore retry settings for the S3 fault tests: 2 attempts (legacy backoff, < 1 s); s3fs
#: then retries connection errors twice (``S3FileSystem.retries``, a class attribute).
FAST_RETRIES: dict[str, Any] = {"config_kwargs": {"retries": {"max_attempts": 2}}}


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


# -- S3 behind a fault-injecting proxy -----------------------------------------------------------


@pytest.fixture
def s3_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    gen = make_repo(request, "s3", tmp_path)
    repo = next(gen)
    with repo.create() as b:
        b.register_dataset_type("arr", np.ndarray, "npy", dimensions={"visit": int})
    yield repo
    gen.close()


def _proxied(repo: Repo, proxy: FaultProxy, **extra: Any) -> Butler:
    fast = "config_kwargs" in extra
    options = dict(repo.options, endpoint_url=proxy.url, **extra)
    # 5 MiB parts: arrays above 10 MiB are multipart uploads.
    options.setdefault("part_size", 5 * 2**20)
    options.setdefault("multipart_threshold", 10 * 2**20)
    butler = Butler(repo.root, **options)
    if fast:
        butler.storage.fs.retries = 2  # type: ignore[attr-defined]
    return butler


def _object(repo: Repo, key: str) -> bytes | None:
    client = boto_client(repo.options)
    try:
        return client.get_object(Bucket=repo.bucket, Key=f"repo/{key}")["Body"].read()  # type: ignore[no-any-return]
    except client.exceptions.NoSuchKey:
        return None


def _keys(repo: Repo) -> list[str]:
    client = boto_client(repo.options)
    listing = client.list_objects_v2(Bucket=repo.bucket).get("Contents", [])
    return sorted(item["Key"] for item in listing)


@pytest.mark.parametrize("size_mib", [1, 12], ids=["single-put", "multipart"])
def test_s3_transient_faults_are_retried(s3_repo: Repo, size_mib: int) -> None:
    """Every write request fails once (500, 503, reset mid-upload in turn): the put retries
    and succeeds; the object is exactly the new bytes, once."""
    failed: set[str] = set()
    kinds = [500, 503, "reset-request"]

    def schedule(n: int, method: str, path: str) -> Any:
        if method in ("PUT", "POST") and path not in failed:
            failed.add(path)
            return kinds[len(failed) % 3]
        return "pass"

    array = np.full(size_mib * 2**18, 7.0)
    with FaultProxy(s3_repo.options["endpoint_url"], schedule) as proxy:
        with _proxied(s3_repo, proxy, **FAST_RETRIES) as b:
            b.put(array, "arr", visit=1)
            assert np.array_equal(b.get("arr", visit=1), array)
        injected = len(failed)
    assert injected >= (1 if size_mib == 1 else 4)
    assert _object(s3_repo, "arr/1.npy") == _npy(array)
    assert _keys(s3_repo) == ["repo/arr/1.npy", "repo/butler.yaml"]
    assert s3_pending_uploads(s3_repo) == 0
    print(f"{size_mib} MiB: {injected} faults injected in {len(proxy.log)} requests")


@pytest.mark.parametrize(
    "fault", [500, 503, "reset-request", "reset-response"], ids=lambda f: f"always-{f}"
)
@pytest.mark.parametrize("size_mib", [1, 12], ids=["overwrite-single-put", "create-multipart"])
def test_s3_persistent_faults_end_in_storage_error(
    s3_repo: Repo, fault: Any, size_mib: int
) -> None:
    """Every write request fails: bounded retries, then StorageError naming the dataset;
    the old object is untouched and nothing new (or partial) is visible."""
    old = np.full(2**16, 1.0)
    with Butler(s3_repo.root, **s3_repo.options) as b:
        b.put(old, "arr", visit=1)
    before = _object(s3_repo, "arr/1.npy")

    def schedule(n: int, method: str, path: str) -> Any:
        return fault if method in ("PUT", "POST") else "pass"

    new = np.full(size_mib * 2**18, 2.0)
    visit = 1 if size_mib == 1 else 2  # overwrite an old dataset / create a new one
    with FaultProxy(s3_repo.options["endpoint_url"], schedule) as proxy:
        with _proxied(s3_repo, proxy, **FAST_RETRIES) as b:
            t0 = time.monotonic()
            with pytest.raises(StorageError) as info:
                b.put(new, "arr", visit=visit, overwrite=True)
            elapsed = time.monotonic() - t0
            if fault != "reset-response":
                assert np.array_equal(b.get("arr", visit=1), old)  # reads still pass
        writes = proxy.count(method="PUT") + proxy.count(method="POST")
    assert f"arr/{visit}.npy" in str(info.value), info.value
    assert s3_repo.options["secret"] not in str(info.value)
    assert writes <= 30, f"{writes} write requests: retries are not bounded"
    assert elapsed < 60
    if fault == "reset-response":
        # The server carried the write out and only its answer was lost: the put reports a
        # StorageError, yet the object is complete, old or new (the usual ambiguity of a
        # lost reply; retrying with overwrite=True settles it).
        assert _object(s3_repo, f"arr/{visit}.npy") in (before if visit == 1 else None, _npy(new))
    else:
        assert _object(s3_repo, f"arr/{visit}.npy") == (before if visit == 1 else None)
    assert set(_keys(s3_repo)) <= {"repo/arr/1.npy", "repo/arr/2.npy", "repo/butler.yaml"}
    assert _object(s3_repo, "arr/1.npy") in (before, _npy(new))
    print(
        f"always {fault}, {size_mib} MiB: StorageError after {writes} write requests, "
        f"{elapsed:.1f} s"
    )


def test_s3_default_retry_settings_are_bounded(s3_repo: Repo) -> None:
    """With butler's (and botocore's) default settings a failing server still ends in a
    StorageError within a bounded number of attempts and time."""
    with FaultProxy(
        s3_repo.options["endpoint_url"], lambda n, m, p: 503 if m == "PUT" else "pass"
    ) as proxy:
        with _proxied(s3_repo, proxy) as b:
            t0 = time.monotonic()
            with pytest.raises(StorageError, match=r"arr/3\.npy"):
                b.put(np.zeros(10), "arr", visit=3)
            elapsed = time.monotonic() - t0
        attempts = proxy.count(503)
    assert 1 <= attempts <= 10 and elapsed < 60, (attempts, elapsed)
    assert _keys(s3_repo) == ["repo/butler.yaml"]
    print(f"defaults: {attempts} attempts, {elapsed:.1f} s")


def test_s3_reset_while_reading(s3_repo: Repo) -> None:
    """Connections reset mid-download: the read retries or fails with StorageError, and
    never returns partial data."""
    array = np.arange(3 * 2**18, dtype=np.float64)  # 6 MiB
    with Butler(s3_repo.root, **s3_repo.options) as b:
        b.put(array, "arr", visit=1)
    outcomes = []
    for every in (2, 1):  # every other GET reset, then every GET reset

        def schedule(n: int, method: str, path: str, every: int = every) -> Any:
            return "reset-response" if method == "GET" and n % every == 0 else "pass"

        with FaultProxy(s3_repo.options["endpoint_url"], schedule) as proxy:
            try:  # opening reads butler.yaml: that read may be the one reset
                with _proxied(s3_repo, proxy, **FAST_RETRIES) as b:
                    got = b.get("arr", visit=1)
                assert np.array_equal(got, array)
                outcomes.append("ok")
            except StorageError as exc:
                assert "arr/1.npy" in str(exc) or "butler.yaml" in str(exc), exc
                assert "cannot read" in str(exc), exc
                outcomes.append("StorageError")
            assert proxy.count("reset-response") >= 1
    assert outcomes[-1] == "StorageError", outcomes
    print(f"resets while reading: {outcomes}")


# -- databases -------------------------------------------------------------------------------------


@pytest.fixture
def pg_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    gen = make_repo(request, "postgresql", tmp_path)
    repo = next(gen)
    yield repo
    gen.close()


def test_postgres_connection_terminated_mid_put(pg_repo: Repo) -> None:
    """pg_terminate_backend() on the writer's connection during a 24 MiB put: StorageError,
    the transaction is rolled back (old value intact, no orphan chunks), butler reconnects."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    app = f"butler_victim_{uuid.uuid4().hex[:8]}"
    root = make_url(pg_repo.root).update_query_dict({"application_name": app})
    root_text = root.render_as_string(hide_password=False)
    b = Butler.create(root_text)
    b.register_dataset_type("arr", np.ndarray, "npy", dimensions={"visit": int})
    old = np.full(2**20, 1.0)
    b.put(old, "arr", visit=1)
    admin = sa.create_engine(os.environ["BUTLER_TEST_POSTGRES_URL"], poolclass=sa.pool.NullPool)
    killed: list[int] = []

    def progress(done: int, total: int | None) -> None:
        if done > 8 * 2**20 and not killed:
            with admin.connect() as conn:
                rows = conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :app AND state <> 'idle'"
                    ),
                    {"app": app},
                ).all()
            killed.append(len(rows))

    try:
        with pytest.raises(StorageError) as info:
            b.put(np.full(3 * 2**20, 2.0), "arr", visit=1, overwrite=True, progress=progress)
        assert killed and killed[0] >= 1, killed
        assert "arr/1.npy" in str(info.value)
        counts = db_counts(pg_repo)
        assert counts["datasets"] == 1 and counts["orphans"] == 0, counts
        assert np.array_equal(b.get("arr", visit=1), old)  # the pool reconnects
        b.put(np.full(10, 3.0), "arr", visit=2)
        assert b.verify().healthy
    finally:
        b.close()
        admin.dispose()


_SLOW_PUT = """
import sys, time
from butler import Butler
b = Butler(sys.argv[1])
location = b.location("blob", visit=1, overwrite=True)
with location.open_write() as f:
    for _ in range(6):
        f.write(b"\\x02" * (1024 * 1024))
    print("writing", flush=True)
    time.sleep(120)
"""


def test_sqlite_writer_killed_mid_transaction(tmp_path: Path) -> None:
    """A SQLite writer SIGKILLed inside its write transaction: rolled back on the next open
    (old value intact, no orphan chunks, the database not left locked)."""
    pytest.importorskip("butler_db", reason="butler-db is not installed")
    repo = Repo("sqlite", f"sqlite:///{tmp_path}/repo/butler.db")
    with repo.create() as b:
        b.register_dataset_type("blob", bytes, "pickle", dimensions={"visit": int})
        b.put(b"\x01" * 3_000_000, "blob", visit=1)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_PUT, repo.root], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with repo.open(allow_pickle=True) as b:
        assert b.get("blob", visit=1) == b"\x01" * 3_000_000
        counts = db_counts(repo)
        assert counts["datasets"] == 1 and counts["orphans"] == 0, counts
        t0 = time.monotonic()
        b.put(b"\x03" * 10, "blob", visit=2)  # not locked
        assert time.monotonic() - t0 < 5
        assert b.verify().healthy


# -- posix: full and read-only file systems ---------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (skips when mounting is not allowed)."""
    with mounted(tmp_path / "tiny") as mnt:
        yield mnt


def test_posix_disk_full_and_read_only(tiny_fs: Path) -> None:
    root = str(tiny_fs / "repo")
    b = Butler.create(root, checksum=True)
    b.register_dataset_type("arr", np.ndarray, "npy", dimensions={"visit": int})
    b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    old = np.arange(1000.0)
    b.put(old, "arr", visit=1)
    b.put({"v": 1}, "cfg", visit=1)
    big = np.ones(2**19)  # 4 MiB: does not fit

    with pytest.raises(StorageError) as info:
        b.put(big, "arr", visit=1, overwrite=True)
    assert "No space left on device" in str(info.value) and "arr/1.npy" in str(info.value)
    with pytest.raises(StorageError, match="No space left"):
        b.put(big, "arr", visit=2)
    assert np.array_equal(b.get("arr", visit=1), old)
    assert sorted(d["visit"] for d in b.datasets("arr")) == [1]
    assert posix_debris(root) == []
    assert b.verify().healthy
    b.put(np.arange(10.0), "arr", visit=3)  # space was given back

    # The Butler's open index (a writable SQLite file) keeps the kernel from remounting
    # read-only, as any open database would: close it, remount, reopen.
    b.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    try:
        b = Butler(root)
        with pytest.raises(StorageError) as info:
            b.put({"v": 2}, "cfg", visit=1, overwrite=True)
        assert "Read-only file system" in str(info.value) and "cfg/1.json" in str(info.value)
        with pytest.raises(StorageError, match=r"(?i)read-?only"):
            b.remove("cfg", visit=1)  # the index row cannot go: nothing changes
        with pytest.raises(StorageError, match="Read-only"):
            b.register_dataset_type("new", dict, "json", dimensions={"visit": int})
        assert b.get("cfg", visit=1) == {"v": 1}
        assert np.array_equal(b.get("arr", visit=1), old)
        assert b.verify().healthy
        assert sorted(d["visit"] for d in b.datasets("cfg")) == [1]  # read-only index
    finally:
        b.close()
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)
    b = Butler(root)
    b.put({"v": 3}, "cfg", visit=1, overwrite=True)
    assert b.get("cfg", visit=1) == {"v": 3}
    assert json.loads((tiny_fs / "repo" / "cfg" / "1.json").read_text()) == {"v": 3}
