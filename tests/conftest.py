"""Fixtures shared by every suite: real servers, never mocks.

* ``s3_endpoint``: moto's S3 server started as a separate process on a free loopback port
  (as s3fs's own test-suite does), for the whole session.
* ``s3_bucket``: a fresh bucket on it for one test.
* ``butler_repo``: ``butler_repo(kind, **options)`` creates a fresh repository on
  ``posix``, ``memory``, ``sqlite`` or ``s3``; every repository it made is closed and its data
  removed after the test, in one place. Suites parametrize their own ``repo`` fixtures over it.
* ``postgres_url`` / ``mysql_url``: from ``BUTLER_TEST_POSTGRES_URL`` /
  ``BUTLER_TEST_MYSQL_URL``; tests using them skip when the variable is unset or the URL's
  driver (psycopg, PyMySQL) is not installed.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from butler import Butler

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
def s3_bucket(boto_client: Any) -> str:
    """Name of a fresh, empty bucket on the moto server."""
    name = f"butler-{uuid.uuid4().hex[:12]}"
    boto_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def boto_client(s3_credentials: dict[str, str]) -> Any:
    """A plain boto3 client on the moto server, to look (and plant) behind butler's back."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_credentials["endpoint_url"],
        aws_access_key_id=s3_credentials["key"],
        aws_secret_access_key=s3_credentials["secret"],
        region_name="us-east-1",
    )


#: The storages `butler_repo` creates repositories on.
REPO_KINDS = ("posix", "memory", "sqlite", "s3")


@contextlib.contextmanager
def repo_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Butler]]:
    """The body of `butler_repo`: yields ``create(kind="posix", **options)``; on exit, closes
    every repository it made and drops its memory repositories from the process-wide store."""
    from butler import Butler

    with contextlib.ExitStack() as cleanup:
        count = 0

        def create(kind: str = "posix", **options: Any) -> Butler:
            nonlocal count
            directory = tmp_path / ("repo" if count == 0 else f"repo-{count}")
            count += 1
            if kind == "posix":
                root = str(directory)
            elif kind == "memory":
                from butler.storages.memory import MemoryStorage

                name = f"test-{uuid.uuid4().hex}"
                root = f"memory://{name}"
                cleanup.callback(MemoryStorage.clear, name)
            elif kind == "sqlite":
                pytest.importorskip("butler_db", reason="butler-db is not installed")
                root = f"sqlite:///{directory}/butler.db"
            elif kind == "s3":
                pytest.importorskip("butler_s3", reason="butler-s3 is not installed")
                bucket = request.getfixturevalue("s3_bucket")
                options = {**request.getfixturevalue("s3_credentials"), **options}
                root = f"s3://{bucket}/{directory.name}"
            else:
                raise ValueError(f"butler_repo: unknown kind {kind!r}; use one of {REPO_KINDS}")
            butler = Butler.create(root, **options)
            cleanup.callback(butler.close)
            return butler

        yield create


@pytest.fixture
def butler_repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Butler]]:
    """``butler_repo(kind="posix", **options)``: a new repository on one storage.

    ``kind`` is one of `REPO_KINDS`; ``options`` go to `Butler.create`. The first posix
    repository of a test is ``tmp_path / "repo"`` (later ones ``repo-1``, ``repo-2``...), a
    SQLite one is ``butler.db`` in such a directory, a memory one has a unique name and an S3 one
    lives in the test's fresh bucket on the moto server. ``sqlite`` and ``s3`` skip with a
    reason when their plugin (or moto) is not installed.

    After the test every repository made is closed, and memory repositories are dropped from
    the process-wide store (files under ``tmp_path`` and buckets are per test already). Suites
    parametrize thin ``repo`` fixtures over it::

        @pytest.fixture(params=["posix", "memory"])
        def repo(request, butler_repo):
            return butler_repo(request.param)
    """
    with repo_factory(request, tmp_path) as create:
        yield create


@pytest.fixture
def s3_repo(butler_repo: Callable[..., Butler]) -> Butler:
    """A new butler repository at ``s3://<fresh bucket>/repo`` on the moto server."""
    return butler_repo("s3")


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


#: The module each SQLAlchemy driver name imports (bare dialects: butler-db's default driver).
_DRIVER_MODULES = {
    "postgresql": "psycopg",
    "psycopg": "psycopg",
    "psycopg2": "psycopg2",
    "mysql": "pymysql",
    "mariadb": "pymysql",
    "pymysql": "pymysql",
    "mysqldb": "MySQLdb",
}


def _server_url(variable: str) -> str:
    """The URL in ``variable``; skips when it is unset or its driver is not installed."""
    url = os.environ.get(variable)
    if not url:
        pytest.skip(f"{variable} is not set")
    dialect, _, driver = url.split("://", 1)[0].partition("+")
    module = _DRIVER_MODULES.get(driver or dialect, driver or dialect)
    if not have(module):
        pytest.skip(f"{variable} needs the {module!r} driver, which is not installed")
    return url


@pytest.fixture
def postgres_url() -> str:
    """PostgreSQL URL from BUTLER_TEST_POSTGRES_URL (skips when unset or without a driver)."""
    return _server_url("BUTLER_TEST_POSTGRES_URL")


@pytest.fixture
def mysql_url() -> str:
    """MariaDB/MySQL URL from BUTLER_TEST_MYSQL_URL (skips when unset or without a driver)."""
    return _server_url("BUTLER_TEST_MYSQL_URL")
