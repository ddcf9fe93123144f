"""The S3Storage contract: reads, listings, local paths, options, progress."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

from butler import Butler, InvalidDataIdError, StorageError
from butler_s3 import S3Storage

MIB = 2**20


@pytest.fixture
def storage(s3_root: str, s3_credentials: dict[str, str]) -> Any:
    s = S3Storage(s3_root, **s3_credentials)
    s.initialize()
    yield s
    s.close()


def _pattern(n: int) -> bytes:
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def test_full_path_uri_and_fs(storage: S3Storage, s3_bucket: str) -> None:
    storage.write_bytes("a/b.bin", b"hello")
    assert storage.full_path("a/b.bin") == f"{s3_bucket}/repo/a/b.bin"
    assert storage.uri("a/b.bin") == f"s3://{s3_bucket}/repo/a/b.bin"
    assert storage.uri() == f"s3://{s3_bucket}/repo"
    assert storage.fs.cat_file(storage.full_path("a/b.bin")) == b"hello"
    with storage.fs.open(storage.full_path("a/b.bin"), "rb") as f:
        assert f.read(2) == b"he"


def test_invalid_keys_are_refused(storage: S3Storage) -> None:
    for key in ("", "/abs", "../up", "a/../../b", "a\\b", "a//b"):
        with pytest.raises(InvalidDataIdError):
            storage.full_path(key)


@pytest.mark.parametrize("root", ["s3://", "s3:///prefix", "s3://b/../x"])
def test_invalid_root(root: str) -> None:
    with pytest.raises(StorageError, match="invalid S3 root"):
        S3Storage(root)


def test_reader_block_cache_and_ranges(storage: S3Storage) -> None:
    data = _pattern(20 * MIB + 123)
    storage.write_bytes("big.bin", data)
    f = storage.open("big.bin", block_size=MIB)
    assert f.seekable() and f.readable()
    f.seek(10 * MIB + 5)
    assert f.read(100) == data[10 * MIB + 5 : 10 * MIB + 105]
    assert (f.requests, f.bytes_fetched) == (1, MIB)  # one block
    f.seek(10 * MIB + 1000)
    assert f.read(1000) == data[10 * MIB + 1000 : 10 * MIB + 2000]
    assert f.requests == 1  # served from the cache
    f.seek(2 * MIB + 7)
    assert f.read(3 * MIB) == data[2 * MIB + 7 : 5 * MIB + 7]  # large: exact range
    assert (f.requests, f.bytes_fetched) == (2, 4 * MIB)
    f.seek(-10, os.SEEK_END)
    assert f.read() == data[-10:]
    assert f.read(5) == b""
    assert f.tell() == len(data)
    f.close()
    with storage.open("big.bin") as whole:
        assert whole.read() == data
        assert whole.requests == 1


def test_sequential_small_reads_stream(storage: S3Storage) -> None:
    data = _pattern(12 * MIB + 17)
    storage.write_bytes("seq.bin", data)
    chunks = []
    with storage.open("seq.bin", block_size=MIB) as f:
        while chunk := f.read(256 * 1024 + 3):
            chunks.append(chunk)
        assert f.requests == 2  # first block, then one streamed GET for the rest
        assert f.bytes_fetched == len(data)
    assert b"".join(chunks) == data


def test_fsspec_cache_type_option(storage: S3Storage) -> None:
    data = _pattern(3 * MIB)
    storage.write_bytes("c.bin", data)
    for cache_type in ("readahead", "bytes", "none"):
        with storage.open("c.bin", cache_type=cache_type, block_size=MIB) as f:
            f.seek(MIB + 3)
            assert f.read(10) == data[MIB + 3 : MIB + 13]


def test_object_replaced_while_reading(storage: S3Storage) -> None:
    storage.write_bytes("r.bin", _pattern(3 * MIB))
    f = storage.open("r.bin", block_size=MIB)
    f.read(10)
    storage.write_bytes("r.bin", b"x" * (3 * MIB))
    f.seek(2 * MIB)
    with pytest.raises(StorageError, match="changed while being read"):
        f.read(10)
    f.close()


def test_progress_callbacks(storage: S3Storage) -> None:
    from fsspec.callbacks import Callback

    data = _pattern(12 * MIB)
    calls: list[tuple[int, int | None]] = []
    small = S3Storage(storage.root, **_options(storage), part_size=5 * MIB)
    with small.atomic_write("p.bin", progress=lambda d, t: calls.append((d, t))) as f:
        f.write(data)
    assert calls[-1] == (len(data), len(data))
    assert len(calls) == 3  # three parts
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    reads: list[tuple[int, int | None]] = []
    with storage.open("p.bin", progress=lambda d, t: reads.append((d, t))) as f:
        f.read(MIB)
        f.read()
    assert reads == [(MIB, len(data)), (len(data), len(data))]

    class Recorder(Callback):
        def call(self, *args: Any, **kwargs: Any) -> None:
            self.seen = (self.value, self.size)

    cb = Recorder()
    with storage.open("p.bin", progress=cb) as f:  # type: ignore[arg-type]
        f.read()
    assert cb.seen == (len(data), len(data))
    small.close()


def _options(storage: S3Storage) -> dict[str, Any]:
    return {
        "endpoint_url": storage.endpoint_url,
        "key": storage.fs.key,
        "secret": storage.fs.secret,
    }


def test_local_path_downloads_and_cleans_up(storage: S3Storage) -> None:
    data = _pattern(5 * MIB + 1)
    storage.write_bytes("l/file.fits", data)
    with storage.local_path("l/file.fits") as path:
        assert path.endswith(".fits")
        with open(path, "rb") as f:
            assert f.read() == data
    assert not os.path.exists(path)


def test_atomic_local_path(storage: S3Storage) -> None:
    writing = storage.atomic_local_path("w/out.h5", metadata={"format": "x"}, checksum=True)
    with writing as p, open(p, "wb") as f:
        f.write(b"local bytes")
    assert storage.read_bytes("w/out.h5") == b"local bytes"
    meta = storage.metadata("w/out.h5")
    assert meta["format"] == "x" and meta["size"] == 11 and len(meta["sha256"]) == 64
    assert not os.path.exists(p)


def test_list_excludes_policy_and_directory_markers(
    storage: S3Storage, boto_client: Any, s3_bucket: str
) -> None:
    storage.write_policy({"storage": "s3"})
    boto_client.put_object(Bucket=s3_bucket, Key="repo/dir/", Body=b"")
    boto_client.put_object(Bucket=s3_bucket, Key="repository-sibling/x", Body=b"")
    for key in ("b/2", "a/1", "b/10"):
        storage.write_bytes(key, b"x")
    assert list(storage.list()) == ["a/1", "b/10", "b/2"]
    assert list(storage.list("b/")) == ["b/10", "b/2"]
    assert list(storage.list("c")) == []


def test_endpoint_from_environment(
    s3_root: str, s3_credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_credentials["endpoint_url"])
    with Butler.create(s3_root) as b:  # endpoint and credentials from AWS_* variables
        b.register_dataset_type("cfg", dict, "json", dimensions=["n"])
        b.put({"a": 1}, "cfg", n="x")
    with Butler(s3_root) as again:
        assert again.get("cfg", n="x") == {"a": 1}


def test_profile_from_shared_credentials_file(
    s3_root: str,
    s3_credentials: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[moto]\naws_access_key_id = {s3_credentials['key']}\n"
        f"aws_secret_access_key = {s3_credentials['secret']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with Butler.create(s3_root, endpoint_url=s3_credentials["endpoint_url"], profile="moto") as b:
        assert b.storage.exists("butler.yaml")


def test_checksum_config_defaults(storage: S3Storage) -> None:
    storage.exists("x")  # connects
    config = storage.fs.s3.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"


def test_no_secret_in_policy_repr_or_options(
    s3_butler: Butler, s3_credentials: dict[str, str], boto_client: Any, s3_bucket: str
) -> None:
    secret = s3_credentials["secret"]
    s3_butler.register_dataset_type("cfg", dict, "json", dimensions=["n"])
    policy = boto_client.get_object(Bucket=s3_bucket, Key="repo/butler.yaml")["Body"].read()
    assert b"storage: s3" in policy
    for text in (policy.decode(), repr(s3_butler), repr(s3_butler.storage)):
        assert secret not in text
        assert s3_credentials["key"] not in text
    assert secret not in json.dumps(s3_butler.storage.options)


def test_get_makes_no_head_request(s3_root: str, s3_credentials: dict[str, str]) -> None:
    """Butler.get reads the metadata from a GET whose bytes the open then uses: no HEAD
    (tests/s3/test_requests.py counts the requests on the wire)."""
    from butler import Butler

    b = Butler.create(s3_root, **s3_credentials)
    b.register_dataset_type("j", dict, "json", dimensions=["n"])
    b.put({"x": 1}, "j", n="a")
    calls: list[str] = []
    real_call = b.storage._call

    def counting(method: str, **kwargs: Any) -> Any:
        calls.append(method)
        return real_call(method, **kwargs)

    b.storage._call = counting  # type: ignore[method-assign]
    assert b.get("j", n="a") == {"x": 1}
    assert calls.count("head_object") == 0
    # a later open (no fresh metadata read) asks the server again
    with b.storage.open(b.location("j", n="a").key) as f:
        assert f.read() == b'{"x": 1}'
    assert calls.count("head_object") == 1
