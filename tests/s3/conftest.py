"""Fixtures of the butler-s3 suite (on top of the shared moto server in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.util import find_spec
from typing import Any

import pytest


@pytest.fixture
def s3_root(s3_bucket: str) -> str:
    """``s3://<fresh bucket>/repo``."""
    return f"s3://{s3_bucket}/repo"


@pytest.fixture
def s3_butler(s3_repo: Any) -> Any:
    """A new repository in a fresh bucket (the shared ``s3_repo``)."""
    return s3_repo


@pytest.fixture(scope="session")
def s3_auth_endpoint() -> Iterator[tuple[str, str]]:
    """A second moto server that checks credentials (IAM auth on after two actions).

    Yields its URL and the id of a real access key created on it, so tests can present a
    valid key id with a wrong secret as well as an unknown key id.
    """
    if find_spec("moto") is None or find_spec("flask") is None:
        pytest.skip("moto[server] is not installed")
    import boto3

    from butler.testing import moto_server

    env = {
        "AWS_ACCESS_KEY_ID": "admin",
        "AWS_SECRET_ACCESS_KEY": "admin-secret",
        "INITIAL_NO_AUTH_ACTION_COUNT": "2",
    }
    with moto_server(env) as url:
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="admin",
            aws_secret_access_key="admin-secret",
        )
        iam.create_user(UserName="butler")
        key_id = iam.create_access_key(UserName="butler")["AccessKey"]["AccessKeyId"]
        yield url, key_id
