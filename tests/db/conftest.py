"""Fixtures of the butler-db suite: one fresh repository per test on each backend.

SQLite always (a real file under ``tmp_path``); PostgreSQL and MariaDB when
``BUTLER_TEST_POSTGRES_URL`` / ``BUTLER_TEST_MYSQL_URL`` are set. Each server test gets its
own schema (PostgreSQL, through ``search_path``) or database (MariaDB), dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

pytest.importorskip("butler_db", reason="butler-db is not installed")

import sqlalchemy as sa
from sqlalchemy.engine import make_url

BACKENDS = ["sqlite", "postgresql", "mysql"]


@pytest.fixture
def sqlite_root(tmp_path) -> str:  # type: ignore[no-untyped-def]
    """URL of a SQLite database file in a fresh directory."""
    return f"sqlite:///{tmp_path}/repo/butler.db"


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture
def postgresql_root(postgres_url: str) -> Iterator[str]:
    """URL of a fresh PostgreSQL schema (selected through ``search_path``), dropped after."""
    name = f"butler_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(postgres_url)
    with admin.connect() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    url = make_url(postgres_url).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()


@pytest.fixture
def mysql_root(mysql_url: str) -> Iterator[str]:
    """URL of a fresh MariaDB/MySQL database, dropped after."""
    name = f"butler_test_{uuid.uuid4().hex[:12]}"
    admin = _admin(mysql_url)
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")
    url = make_url(mysql_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
        admin.dispose()


@pytest.fixture(params=BACKENDS)
def db_root(request: pytest.FixtureRequest) -> str:
    """A fresh repository URL on each backend (server backends skip when not configured)."""
    return str(request.getfixturevalue(f"{request.param}_root"))


@pytest.fixture
def backend(db_root: str) -> str:
    """``sqlite``, ``postgresql`` or ``mysql`` for the current ``db_root``."""
    name = make_url(db_root).get_backend_name()
    return "mysql" if name == "mariadb" else name
