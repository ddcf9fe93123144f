"""Every core format through the s3 storage, and what ends up in the bucket."""

from __future__ import annotations

import dataclasses
import json
import pickle
from typing import Any

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
np = pytest.importorskip("numpy")

from butler import Butler, Config, DatasetNotFoundError, UnsafeFormatError  # noqa: E402


class IsrConfig(Config):
    defaults = {"gain": 1.0, "overscan": True}


class FancyIsrConfig(IsrConfig):
    defaults = {**IsrConfig.defaults, "fancy": "yes"}


@dataclasses.dataclass
class Calib:
    name: str
    values: list[float]


class Weird:
    def __init__(self, x: int) -> None:
        self.x = x

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Weird) and other.x == self.x


def _head_meta(client: Any, bucket: str, key: str) -> dict[str, Any]:
    head = client.head_object(Bucket=bucket, Key=key)
    return json.loads(head["Metadata"]["butler"])  # type: ignore[no-any-return]


def test_json_round_trip_and_metadata_header(
    s3_butler: Butler, boto_client: Any, s3_bucket: str
) -> None:
    s3_butler.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
    value = {"gain": 1.5, "names": ["a", "é"], "nested": {"k": None}}
    s3_butler.put(value, "cfg", visit=7)
    assert s3_butler.get("cfg", visit=7) == value
    body = boto_client.get_object(Bucket=s3_bucket, Key="repo/cfg/7.json")["Body"].read()
    assert json.loads(body) == value
    meta = _head_meta(boto_client, s3_bucket, "repo/cfg/7.json")
    assert meta["format"] == "json"
    assert meta["dataset_type"] == "cfg"
    assert meta["data_id"] == {"visit": 7}
    assert meta["size"] == len(body)
    assert s3_butler.storage.metadata("cfg/7.json") == meta


def test_json_dataclass(s3_butler: Butler) -> None:
    s3_butler.register_dataset_type("calib", Calib, "json", dimensions=["name"])
    s3_butler.put(Calib("bias", [1.0, 2.5]), "calib", name="bias")
    got = s3_butler.get("calib", name="bias")
    assert type(got) is Calib
    assert got == Calib("bias", [1.0, 2.5])


def test_pickle_requires_opt_in(s3_butler: Butler, boto_client: Any, s3_bucket: str) -> None:
    s3_butler.register_dataset_type("obj", object, "pickle", dimensions=["n"])
    s3_butler.put(Weird(3), "obj", n="a")
    with pytest.raises(UnsafeFormatError, match="allow_pickle=True"):
        s3_butler.get("obj", n="a")
    assert s3_butler.get("obj", n="a", allow_pickle=True) == Weird(3)
    raw = boto_client.get_object(Bucket=s3_bucket, Key="repo/obj/a.pickle")["Body"].read()
    assert pickle.loads(raw) == Weird(3)


def test_npy_round_trip_and_slices(s3_butler: Butler, boto_client: Any, s3_bucket: str) -> None:
    import io

    s3_butler.register_dataset_type("img", "numpy.ndarray", "npy", dimensions={"visit": int})
    array = np.arange(300 * 200, dtype=">i4").reshape(300, 200)
    s3_butler.put(array, "img", visit=1)
    got = s3_butler.get("img", visit=1)
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)
    part = s3_butler.get("img", visit=1, parameters={"slice": (slice(10, 20), slice(5, 8))})
    np.testing.assert_array_equal(part, array[10:20, 5:8])
    raw = boto_client.get_object(Bucket=s3_bucket, Key="repo/img/1.npy")["Body"].read()
    np.testing.assert_array_equal(np.load(io.BytesIO(raw)), array)


def test_config_subclass(s3_butler: Butler) -> None:
    s3_butler.register_dataset_type("isr", IsrConfig, "config", dimensions=["n"])
    s3_butler.put(FancyIsrConfig(gain=2.0), "isr", n="x")
    got = s3_butler.get("isr", n="x")
    assert type(got) is FancyIsrConfig
    assert dict(got) == {"gain": 2.0, "overscan": True, "fancy": "yes"}


def test_checksum_recorded_and_verified(s3_root: str, s3_credentials: dict[str, str]) -> None:
    import hashlib

    with Butler.create(s3_root, checksum=True, **s3_credentials) as b:
        b.register_dataset_type("cfg", dict, "json", dimensions=["n"])
        b.put({"a": 1}, "cfg", n="x")
        data = b.storage.read_bytes("cfg/x.json")
        assert b.storage.metadata("cfg/x.json")["sha256"] == hashlib.sha256(data).hexdigest()
        report = b.verify()
        assert report.healthy
        assert report.checked == 1


def test_missing_dataset(s3_butler: Butler) -> None:
    s3_butler.register_dataset_type("cfg", dict, "json", dimensions=["n"])
    with pytest.raises(DatasetNotFoundError, match=r"'cfg' \{'n': 'nope'\}"):
        s3_butler.get("cfg", n="nope")
    with pytest.raises(DatasetNotFoundError, match=r"cfg/nope\.json"):
        s3_butler.remove("cfg", n="nope")
    assert not s3_butler.exists("cfg", n="nope")
    storage = s3_butler.storage
    for call in (storage.open, storage.size, storage.metadata, storage.remove):
        with pytest.raises(DatasetNotFoundError, match=r"no dataset at 's3://.*/repo/x/y'"):
            call("x/y")


def test_remove(s3_butler: Butler, boto_client: Any, s3_bucket: str) -> None:
    s3_butler.register_dataset_type("cfg", dict, "json", dimensions=["n"])
    s3_butler.put({"a": 1}, "cfg", n="x")
    assert s3_butler.exists("cfg", n="x")
    s3_butler.remove("cfg", n="x")
    assert not s3_butler.exists("cfg", n="x")
    listing = boto_client.list_objects_v2(Bucket=s3_bucket, Prefix="repo/cfg/")
    assert listing.get("Contents", []) == []


def test_foreign_object_has_empty_metadata(
    s3_butler: Butler, boto_client: Any, s3_bucket: str
) -> None:
    boto_client.put_object(Bucket=s3_bucket, Key="repo/foreign.bin", Body=b"abc")
    assert s3_butler.storage.metadata("foreign.bin") == {}
    assert s3_butler.storage.size("foreign.bin") == 3
    assert s3_butler.storage.read_bytes("foreign.bin") == b"abc"


def test_bucket_root_without_prefix(s3_bucket: str, s3_credentials: dict[str, str]) -> None:
    with Butler.create(f"s3://{s3_bucket}", **s3_credentials) as b:
        b.register_dataset_type("cfg", dict, "json", dimensions=["n"])
        b.put({"a": 1}, "cfg", n="x")
        assert b.storage.uri("cfg/x.json") == f"s3://{s3_bucket}/cfg/x.json"
        assert list(b.datasets("cfg")) == [{"n": "x"}]
