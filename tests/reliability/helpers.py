"""Helpers shared by the reliability suites (importable by spawned worker processes)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from butler import Butler

#: The distinctive secret of the shared moto fixtures (tests/conftest.py).
S3_SECRET = "butler-test-secret-do-not-leak"


@dataclass
class Repo:
    """A repository root on one storage, with the options to open it."""

    kind: str
    root: str
    options: dict[str, Any] = field(default_factory=dict)
    bucket: str | None = None
    schema: str | None = None

    @property
    def cross_process(self) -> bool:
        return self.kind != "memory"

    @property
    def is_database(self) -> bool:
        return self.kind in ("sqlite", "postgresql", "mysql")

    def create(self, **kwargs: Any) -> Butler:
        return Butler.create(self.root, **kwargs, **self.options)

    def open(self, **kwargs: Any) -> Butler:
        return Butler(self.root, **kwargs, **self.options)

    def __str__(self) -> str:
        return self.kind


# -- generation-stamped arrays: every element of generation g equals g ---------------------

#: Elements of the smallest crash array (int32: 16 MiB).
BASE_ELEMENTS = 4 * 2**20
#: Extra elements per generation step (so old and new sizes differ).
STEP_ELEMENTS = 2**16


def elements_for(gen: int, base: int = BASE_ELEMENTS) -> int:
    """How many elements generation ``gen`` has (sizes cycle over 8 values)."""
    return base + (gen % 8) * STEP_ELEMENTS


def make_array(gen: int, base: int = BASE_ELEMENTS) -> Any:
    import numpy as np

    return np.full(elements_for(gen, base), gen, dtype=np.int32)


def check_array(array: Any, base: int = BASE_ELEMENTS) -> int:
    """Return the generation of an array, asserting it is complete and unmixed."""
    import numpy as np

    assert isinstance(array, np.ndarray) and array.dtype == np.int32 and array.ndim == 1
    assert array.size > 0, "empty array"
    gen = int(array[0])
    assert array.size == elements_for(gen, base), (
        f"generation {gen} has {array.size} elements, expected {elements_for(gen, base)}"
    )
    mixed = np.flatnonzero(array != gen)
    assert mixed.size == 0, f"generation {gen} mixed with {set(array[mixed[:10]].tolist())}"
    return gen


# -- looking behind butler's back ------------------------------------------------------------


_CLIENTS: dict[tuple[str, str], Any] = {}


def boto_client(options: dict[str, Any]) -> Any:
    """A plain boto3 client on the test server (cached: creating one takes ~0.1 s)."""
    import boto3

    cache_key = (options["endpoint_url"], options["key"])
    if cache_key in _CLIENTS:
        return _CLIENTS[cache_key]
    client = _CLIENTS[cache_key] = boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id=options["key"],
        aws_secret_access_key=options["secret"],
        region_name="us-east-1",
    )
    return client


def s3_objects(repo: Repo) -> dict[str, tuple[int, str]]:
    """Every object (key -> (size, etag)) in the repository's bucket."""
    client = boto_client(repo.options)
    found: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=repo.bucket):
        for item in page.get("Contents", ()):
            found[item["Key"]] = (item["Size"], item["ETag"])
    return found


def s3_settle(repo: Repo, timeout: float = 10.0) -> int:
    """Wait until the bucket stops changing; return how many changes were seen.

    A request a killed writer had fully sent (a PUT, or a CompleteMultipartUpload) is still
    carried out by the server after the writer died.
    """
    import time

    deadline = time.monotonic() + timeout
    changes = 0
    before = s3_objects(repo)
    while time.monotonic() < deadline:
        time.sleep(0.15)
        after = s3_objects(repo)
        if after == before:
            return changes
        changes += 1
        before = after
    raise AssertionError(f"the bucket kept changing for {timeout} s")


def s3_pending_uploads(repo: Repo) -> int:
    """Incomplete multipart uploads in the bucket (invisible to readers)."""
    client = boto_client(repo.options)
    return len(client.list_multipart_uploads(Bucket=repo.bucket).get("Uploads", []))


def db_engine(repo: Repo) -> Any:
    import sqlalchemy as sa

    from butler_db._engine import normalise_url

    return sa.create_engine(normalise_url(repo.root), poolclass=sa.pool.NullPool)


def db_counts(repo: Repo) -> dict[str, int]:
    """Rows of the repository tables, and chunk rows no dataset points to (orphans)."""
    engine = db_engine(repo)
    try:
        with engine.connect() as conn:
            datasets = conn.exec_driver_sql("SELECT COUNT(*) FROM butler_datasets").scalar_one()
            chunks = conn.exec_driver_sql("SELECT COUNT(*) FROM butler_chunks").scalar_one()
            orphans = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM butler_chunks WHERE blob_id NOT IN "
                "(SELECT blob_id FROM butler_datasets WHERE blob_id IS NOT NULL)"
            ).scalar_one()
            policy = conn.exec_driver_sql(
                "SELECT value FROM butler_repository WHERE name = 'policy'"
            ).scalar()
    finally:
        engine.dispose()
    return {
        "datasets": int(datasets),
        "chunks": int(chunks),
        "orphans": int(orphans),
        "policy": policy or "",
    }


def posix_debris(root: str) -> list[str]:
    """Hidden temporary files left under a posix repository."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found += [os.path.join(dirpath, f) for f in files if ".butler-tmp" in f]
    return found


# -- worker functions for spawned processes (test_concurrent_access) -------------------------


def process_worker(
    kind: str, root: str, options: dict[str, Any], worker: int, barrier: Any, rounds: int
) -> dict[str, Any]:
    """Distinct puts, then ``rounds`` synchronized races for one data ID, then reads.

    Returns what the worker saw: its distinct visits, the race outcomes, the reads checked.
    """
    from butler import DatasetExistsError

    outcome: dict[str, Any] = {"worker": worker, "distinct": [], "races": [], "reads": 0}
    with Butler(root, **options) as b:
        for i in range(8):
            visit = worker * 1000 + i
            value = {"worker": worker, "i": i, "pad": "p" * (worker * 100 + i)}
            b.put(value, "cfg", visit=visit)
            assert b.get("cfg", visit=visit) == value
            outcome["distinct"].append(visit)
        for r in range(rounds):
            barrier.wait()
            try:
                b.put({"winner": worker, "round": r}, "race", visit=r)
                outcome["races"].append("won")
            except DatasetExistsError as exc:
                assert f"dataset 'race' {{'visit': {r}}}" in str(exc), str(exc)
                outcome["races"].append("exists")
        barrier.wait()
        # Everyone reads everything written so far while worker 0 overwrites arrays.
        if worker == 0:
            for gen in range(1, 13):
                b.put(make_array(gen, 2**18), "snap", visit=0, overwrite=True)
        else:
            from butler import StorageError

            while True:
                try:
                    gen = check_array(b.get("snap", visit=0), 2**18)
                except StorageError as exc:  # S3: the object changed while being read
                    assert "changed while being read" in str(exc), str(exc)
                    continue
                outcome["reads"] += 1
                if gen == 12:
                    break
    return outcome
