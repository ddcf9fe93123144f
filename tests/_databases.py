"""Fresh, isolated places on the test database servers, removed afterwards.

Shared by the butler-db suite and the reliability suites. SQLAlchemy is imported inside
the functions so that importing this module costs nothing where butler-db is absent.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any


def _admin(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextlib.contextmanager
def fresh_postgres_schema(base_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """Yield ``(url, schema)``: a new schema, selected through ``search_path``, dropped after."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin(base_url)
    with admin.connect() as conn:
        conn.execute(sa.schema.CreateSchema(name))
    url = make_url(base_url).update_query_dict({"options": f"-csearch_path={name}"})
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.schema.DropSchema(name, cascade=True))
        admin.dispose()


@contextlib.contextmanager
def fresh_mysql_database(base_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """Yield ``(url, database)``: a new MariaDB/MySQL database, dropped after."""
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = _admin(base_url)
    quoted = admin.dialect.identifier_preparer.quote(name)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4")
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False), name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}")
        admin.dispose()
