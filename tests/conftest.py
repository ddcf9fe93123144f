"""Fixtures shared by every suite: real servers, never mocks.

* ``s3_endpoint``: moto's S3 server started as a separate process on a free loopback port
  (as s3fs's own test-suite does), for the whole session.
* ``s3_bucket``: a fresh bucket on it for one test.
* ``postgres_url`` / ``mysql_url``: from ``BUTLER_TEST_POSTGRES_URL`` /
  ``BUTLER_TEST_MYSQL_URL``; tests using them skip when the variable is unset.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from typing import Any

import pytest

S3_KEY = "butler-test-key"
S3_SECRET = "butler-test-secret-do-not-leak"


def have(module: str) -> bool:
    """True when ``module`` is importable (checked without importing it)."""
    return find_spec(module) is not None


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """URL of a moto S3 server running in its own process on loopback."""
    if not have("moto") or not have("flask"):
        pytest.skip("moto[server] is not installed")
    from butler.testing import moto_server

    with moto_server({"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}) as url:
        yield url


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> dict[str, str]:
    """Storage options for the moto server (also exported as AWS_* variables)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return {"endpoint_url": s3_endpoint, "key": S3_KEY, "secret": S3_SECRET}


@pytest.fixture
def s3_bucket(s3_credentials: dict[str, str]) -> str:
    """Name of a fresh, empty bucket on the moto server."""
    import boto3

    name = f"butler-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_credentials["endpoint_url"],
        aws_access_key_id=S3_KEY,
        aws_secret_access_key=S3_SECRET,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_repo(s3_bucket: str, s3_credentials: dict[str, str]) -> Iterator[Any]:
    """A new butler repository at ``s3://<fresh bucket>/repo`` on the moto server."""
    from butler import Butler

    butler = Butler.create(f"s3://{s3_bucket}/repo", **s3_credentials)
    yield butler
    butler.close()


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch, s3_repo: Any) -> list[tuple[dict[str, Any], Any]]:
    """Every file object ``s3_repo``'s storage opens, with its options (to measure traffic)."""
    files: list[tuple[dict[str, Any], Any]] = []
    storage = s3_repo.storage
    real = storage.open

    def spy(*args: Any, **kwargs: Any) -> Any:
        f = real(*args, **kwargs)
        files.append((kwargs, f))
        return f

    monkeypatch.setattr(storage, "open", spy)
    return files


@pytest.fixture
def postgres_url() -> str:
    """PostgreSQL URL from BUTLER_TEST_POSTGRES_URL (skips when unset)."""
    url = os.environ.get("BUTLER_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("BUTLER_TEST_POSTGRES_URL is not set")
    return url


@pytest.fixture
def mysql_url() -> str:
    """MariaDB/MySQL URL from BUTLER_TEST_MYSQL_URL (skips when unset)."""
    url = os.environ.get("BUTLER_TEST_MYSQL_URL")
    if not url:
        pytest.skip("BUTLER_TEST_MYSQL_URL is not set")
    return url
