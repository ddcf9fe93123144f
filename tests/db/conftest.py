"""Fixtures of the butler-db suite: one fresh repository per test on each backend.

SQLite always (a real file under ``tmp_path``); PostgreSQL and MariaDB when
``BUTLER_TEST_POSTGRES_URL`` / ``BUTLER_TEST_MYSQL_URL`` are set. Each server test gets its
own schema (PostgreSQL, through ``search_path``) or database (MariaDB), dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

from sqlalchemy.engine import make_url

from .._databases import fresh_mysql_database, fresh_postgres_schema

BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture
def sqlite_root(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """URL of a SQLite database file in a fresh directory."""
    return f"sqlite:///{tmp_path}/repo/butler.db"


@pytest.fixture
def postgresql_root(postgres_url: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL schema (selected through ``search_path``), dropped after."""
    with fresh_postgres_schema(postgres_url, "butler_test") as (url, _):
        yield url


@pytest.fixture
def mysql_root(mysql_url: str) -> Iterator[str]:
    """URL of a fresh MariaDB/MySQL database, dropped after."""
    with fresh_mysql_database(mysql_url, "butler_test") as (url, _):
        yield url


@pytest.fixture(params=BACKENDS)
def db_root(request: pytest.FixtureRequest) -> str:
    """A fresh repository URL on each backend (server backends skip when not configured)."""
    return str(request.getfixturevalue(f"{request.param}_root"))


@pytest.fixture
def backend(db_root: str) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` for the current ``db_root``."""
    name = make_url(db_root).get_backend_name()
    return "mysql" if name == "mariadb" else name
