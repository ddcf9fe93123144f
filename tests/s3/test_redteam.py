"""Red-team of bulk calls on S3 (the moto server, a fault-injecting proxy in front of it):
attacks that did not break a promise, kept as tests of what holds."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from butler import BulkError, Butler, StorageError

from ..conftest import S3_SECRET
from ..reliability.faultproxy import FaultProxy

MIB = 2**20


def _pending_uploads(boto_client: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in boto_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _keys(boto_client: Any, bucket: str) -> list[str]:
    pages = boto_client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_put_many_with_one_multipart_upload_failing_midway(
    s3_repo: Butler, s3_credentials: dict[str, str], boto_client: Any, s3_bucket: str
) -> None:
    """put_many of four arrays; the one big enough for a multipart upload has its second
    part refused (500) on every attempt. The others are committed, that one fails alone
    with a StorageError naming it, its previous version is intact, no upload is left
    pending, and the error (message, pickle) holds no secret."""
    s3_repo.register_dataset_type("arr", np.ndarray, "npy", dimensions={"visit": int})
    old = np.zeros(3)
    s3_repo.put(old, "arr", visit=3)
    big = np.arange(11 * MIB // 8, dtype="f8")  # 11 MiB: three 5 MiB parts

    def schedule(n: int, method: str, path: str) -> Any:
        return 500 if method == "PUT" and "arr/3.npy" in path and "partNumber=2" in path else "pass"

    options = dict(s3_credentials, part_size=5 * MIB, multipart_threshold=10 * MIB)
    options["config_kwargs"] = {"retries": {"max_attempts": 2}}
    with FaultProxy(s3_credentials["endpoint_url"], schedule) as proxy:
        options["endpoint_url"] = proxy.url
        with Butler(s3_repo.storage.uri(), **options) as b:
            items = [(np.full(4, i, dtype="f8"), {"visit": i}) for i in range(3)]
            items.insert(1, (big, {"visit": 3}))
            with pytest.raises(BulkError) as caught:
                b.put_many("arr", items, overwrite=True, max_workers=4)
        assert proxy.count(500) >= 2  # the part was really refused, more than once
    err = caught.value
    assert list(err.errors) == [1]
    assert isinstance(err.errors[1], StorageError)
    assert "arr/3.npy" in str(err.errors[1]) and "[1] data ID {'visit': 3}" in str(err)
    assert sorted(err.results) == [0, 2, 3]
    for i in range(3):
        np.testing.assert_array_equal(s3_repo.get("arr", visit=i), np.full(4, i, dtype="f8"))
    np.testing.assert_array_equal(s3_repo.get("arr", visit=3), old)
    assert _pending_uploads(boto_client, s3_bucket) == []
    assert _keys(boto_client, s3_bucket) == [
        "repo/arr/0.npy",
        "repo/arr/1.npy",
        "repo/arr/2.npy",
        "repo/arr/3.npy",
        "repo/butler.yaml",
    ]
    for shown in (str(err), repr(err), repr(err.errors[1])):
        assert S3_SECRET not in shown
    assert S3_SECRET.encode() not in pickle.dumps(err)


ODD_NAMES = [
    "a b", "a+b", "a%20b", "a?b", "a#b", "\u00e9", "e\u0301", "a&b", "~x", "a*b", "[x]",
    "a=b", "x:y", "a;b", "a'b", 'a"b', "a{b}", "a^b", "a|b", "a`b", "a<b>", "%", "+ ",
]  # fmt: skip


@pytest.mark.parametrize("cache_type", ["blocks", "readahead"])
def test_odd_characters_in_keys_round_trip_through_bulk_calls(
    s3_repo: Butler, s3_credentials: dict[str, str], cache_type: str
) -> None:
    """Data ID values with URL-special characters (``+ % ? # & =``), glob characters and
    two Unicode spellings of e-acute become keys that put_many writes, the listing finds
    and get_many reads back, each its own dataset (through butler's reader and s3fs's)."""
    s3_repo.register_dataset_type("cfg", dict, "json", dimensions={"name": str})
    s3_repo.put_many("cfg", [({"n": n}, {"name": n}) for n in ODD_NAMES])
    with Butler(s3_repo.storage.uri(), cache_type=cache_type, **s3_credentials) as b:
        assert sorted(d["name"] for d in b.datasets("cfg")) == sorted(ODD_NAMES)
        got = b.get_many("cfg", [{"name": n} for n in ODD_NAMES])
        assert got == [{"n": n} for n in ODD_NAMES]
        assert b.verify("cfg").healthy
