"""Fixtures of the reliability suites: one fresh repository per test on every storage.

``storage_root`` is parametrized over ``posix``, ``memory``, ``sqlite``, ``s3`` (moto server),
``postgresql`` and ``mysql``. A storage whose plugin is not installed, or whose server is not
configured (``BUTLER_TEST_POSTGRES_URL`` / ``BUTLER_TEST_MYSQL_URL``), skips with a reason.
Server databases get their own schema (PostgreSQL, via ``search_path``) or database (MariaDB),
dropped afterwards, as in ``tests/db``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from .._databases import fresh_mysql_database, fresh_postgres_schema
from .helpers import Repo

ALL_STORAGES = ["posix", "memory", "sqlite", "s3", "postgresql", "mysql"]
#: Storages shared between processes (memory lives inside one process).
PROCESS_STORAGES = ["posix", "sqlite", "s3", "postgresql", "mysql"]


def _need(module: str, distribution: str) -> None:
    if find_spec(module) is None:
        pytest.skip(f"{distribution} is not installed")


def _postgresql(request: pytest.FixtureRequest) -> Iterator[Repo]:
    _need("butler_db", "butler-db")
    base = request.getfixturevalue("postgres_url")
    with fresh_postgres_schema(base, "butler_rel") as (url, name):
        yield Repo("postgresql", url, {}, schema=name)


def _mysql(request: pytest.FixtureRequest) -> Iterator[Repo]:
    _need("butler_db", "butler-db")
    base = request.getfixturevalue("mysql_url")
    with fresh_mysql_database(base, "butler_rel") as (url, name):
        yield Repo("mysql", url, {}, schema=name)


def make_repo(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Iterator[Repo]:
    """Yield a fresh (not yet created) repository of one storage kind."""
    if kind == "posix":
        yield Repo("posix", str(tmp_path / "repo"), {})
    elif kind == "posix-sidecar":  # metadata in hidden sidecar files, as without xattrs
        yield Repo("posix-sidecar", str(tmp_path / "repo"), {"xattrs": False})
    elif kind == "memory":
        from butler.storages.memory import MemoryStorage

        name = f"rel-{uuid.uuid4().hex}"
        yield Repo("memory", f"memory://{name}", {})
        MemoryStorage.clear(name)
    elif kind == "sqlite":
        _need("butler_db", "butler-db")
        yield Repo("sqlite", f"sqlite:///{tmp_path}/repo/butler.db", {})
    elif kind == "s3":
        _need("butler_s3", "butler-s3")
        bucket = request.getfixturevalue("s3_bucket")
        options = dict(request.getfixturevalue("s3_credentials"))
        yield Repo("s3", f"s3://{bucket}/repo", options, bucket=bucket)
    elif kind == "postgresql":
        yield from _postgresql(request)
    elif kind == "mysql":
        yield from _mysql(request)
    else:  # pragma: no cover
        raise ValueError(kind)


@pytest.fixture(params=ALL_STORAGES)
def storage_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """A fresh repository root and storage options on each available storage."""
    yield from make_repo(request, request.param, tmp_path)


@pytest.fixture(params=PROCESS_STORAGES)
def shared_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Repo]:
    """Like `storage_root`, for storages several processes can share (not ``memory``)."""
    yield from make_repo(request, request.param, tmp_path)
