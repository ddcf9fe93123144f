"""Listings: pagination past 1,000 keys, and other writers' changes seen at once."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

from butler import Butler


def test_datasets_past_1000_keys(s3_butler: Butler, boto_client: Any, s3_bucket: str) -> None:
    s3_butler.register_dataset_type("cfg", dict, "json", dimensions={"visit": int, "ccd": int})
    # A few through butler; the rest straight through boto3 with the same metadata header,
    # which is much faster than 1,000 puts through the full stack.
    for ccd in range(5):
        s3_butler.put({"ccd": ccd}, "cfg", visit=0, ccd=ccd)
    template = s3_butler.storage.metadata("cfg/0/0.json")

    def put(visit: int) -> None:
        for ccd in range(10):
            body = json.dumps({"ccd": ccd}).encode()
            meta = dict(template, data_id={"visit": visit, "ccd": ccd}, size=len(body))
            boto_client.put_object(
                Bucket=s3_bucket,
                Key=f"repo/cfg/{visit}/{ccd}.json",
                Body=body,
                Metadata={"butler": json.dumps(meta)},
            )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(1, 121)))
    ids = list(s3_butler.datasets("cfg"))
    assert len(ids) == 5 + 120 * 10
    assert len({(d["visit"], d["ccd"]) for d in ids}) == len(ids)
    keys = list(s3_butler.storage.list())
    assert keys == sorted(keys)
    assert len(keys) == 1205
    assert sorted(d["ccd"] for d in s3_butler.datasets("cfg", visit=77)) == list(range(10))
    assert s3_butler.get("cfg", visit=119, ccd=9) == {"ccd": 9}


def test_second_butler_sees_writes(s3_root: str, s3_credentials: dict[str, str]) -> None:
    with Butler.create(s3_root, **s3_credentials) as first:
        first.register_dataset_type("cfg", dict, "json", dimensions=["n"])
        with Butler(s3_root, **s3_credentials) as second:
            assert list(second.datasets("cfg")) == []
            assert not second.exists("cfg", n="a")
            # Warm s3fs's own listing machinery too: it must not hide later writes.
            fs, base = second.storage.fs, second.storage.full_path("cfg")
            assert fs.ls(base.rsplit("/", 1)[0], detail=False) != []
            first.put({"v": 1}, "cfg", n="a")
            assert list(second.datasets("cfg")) == [{"n": "a"}]
            assert second.exists("cfg", n="a")
            assert fs.ls(base, detail=False) == [f"{base}/a.json"]
            assert second.get("cfg", n="a") == {"v": 1}
            first.put({"v": 2}, "cfg", n="a", overwrite=True)
            assert second.get("cfg", n="a") == {"v": 2}
            first.remove("cfg", n="a")
            assert list(second.datasets("cfg")) == []
            assert not second.exists("cfg", n="a")


def test_dataset_types_registered_elsewhere_are_found(
    s3_root: str, s3_credentials: dict[str, str]
) -> None:
    with (
        Butler.create(s3_root, **s3_credentials) as first,
        Butler(s3_root, **s3_credentials) as second,
    ):
        time.sleep(0)  # both opened before the registration below
        first.register_dataset_type("late", dict, "json", dimensions=["n"])
        first.put({"x": 1}, "late", n="q")
        assert second.get("late", n="q") == {"x": 1}
