"""Configuration and access errors: clear `StorageError` messages, never the secret."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("butler_s3", reason="butler-s3 is not installed")

from butler import Butler, StorageError
from butler_s3 import S3Storage

SECRET = "wrong-secret-that-must-not-leak-42"


def test_missing_bucket(s3_credentials: dict[str, str]) -> None:
    with pytest.raises(StorageError) as info:
        Butler.create("s3://no-such-bucket-here/repo", **s3_credentials)
    message = str(info.value)
    assert message == (
        f"bucket 'no-such-bucket-here' does not exist at {s3_credentials['endpoint_url']}; "
        "create it first (butler never creates buckets)"
    )
    assert s3_credentials["secret"] not in message


def test_open_without_repository(s3_bucket: str, s3_credentials: dict[str, str]) -> None:
    with pytest.raises(StorageError, match=r"no butler repository at 's3://.*/nothing-here'"):
        Butler(f"s3://{s3_bucket}/nothing-here", **s3_credentials)


@pytest.mark.parametrize("which", ["unknown-key-id", "wrong-secret"])
def test_wrong_credentials(s3_auth_endpoint: tuple[str, str], which: str) -> None:
    url, real_key_id = s3_auth_endpoint
    key = "AKIANOTAKEYATALL000" if which == "unknown-key-id" else real_key_id
    with pytest.raises(StorageError) as info:
        Butler.create("s3://some-bucket/repo", endpoint_url=url, key=key, secret=SECRET)
    message = str(info.value)
    code = "InvalidAccessKeyId" if which == "unknown-key-id" else "SignatureDoesNotMatch"
    assert message.startswith("cannot reach bucket 's3://some-bucket': access denied (")
    assert code in message
    assert "check the credentials" in message
    assert SECRET not in message
    assert SECRET not in repr(info.value.__cause__ or "")


def test_wrong_credentials_on_dataset_access(s3_auth_endpoint: tuple[str, str]) -> None:
    url, _ = s3_auth_endpoint
    storage = S3Storage("s3://some-bucket/repo", endpoint_url=url, key="AKIAX", secret=SECRET)
    for action, call in (
        ("write", lambda: storage.write_bytes("k", b"x")),
        ("list", lambda: list(storage.list())),
        ("check", lambda: storage.exists("k")),
    ):
        with pytest.raises(StorageError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"cannot {action} 's3://some-bucket/repo")
        assert "access denied" in message
        assert SECRET not in message
    storage.close()


def test_no_credentials(
    s3_bucket: str, s3_credentials: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe instance metadata
    with pytest.raises(StorageError) as info:
        Butler.create(f"s3://{s3_bucket}/repo", endpoint_url=s3_credentials["endpoint_url"])
    assert str(info.value) == (
        f"cannot reach bucket 's3://{s3_bucket}': no usable AWS credentials; pass key=/secret= "
        "(and token=) or profile= to Butler, set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
        "AWS_PROFILE, or use anon=True for a public bucket"
    )


def test_unknown_profile(s3_bucket: str, s3_credentials: dict[str, str], tmp_path: Any) -> None:
    with pytest.raises(StorageError, match="nosuchprofile"):
        Butler.create(
            f"s3://{s3_bucket}/repo",
            endpoint_url=s3_credentials["endpoint_url"],
            profile="nosuchprofile",
        )


def test_unreachable_endpoint(s3_bucket: str, s3_credentials: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StorageError) as info:
        Butler.create(
            f"s3://{s3_bucket}/repo",
            endpoint_url=f"http://127.0.0.1:{port}",
            key=s3_credentials["key"],
            secret=SECRET,
            config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1},
        )
    message = str(info.value)
    assert message.startswith(
        f"cannot reach bucket 's3://{s3_bucket}': cannot reach the S3 endpoint"
    )
    assert SECRET not in message
