"""Secrets: S3 credentials and database passwords never appear where users or logs look.

Checked places: the stored policy (``butler.yaml`` read behind butler's back, or the
database's policy row and every dataset row), the logs (``caplog`` at DEBUG for ``butler``,
``butler_s3``, ``butler_db``, ``s3fs``, ``botocore``, ``sqlalchemy``), ``repr(butler)``,
``repr(storage)``, ``str`` / ``repr`` of locations, and the messages of errors (connection
failures, missing datasets, bad credentials).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butler import Butler, ButlerError, DatasetNotFoundError, StorageError

from .conftest import make_repo
from .helpers import S3_SECRET, Repo, boto_client, db_engine

pytestmark = pytest.mark.reliability

DB_PASSWORD = "pg-password-do-not-leak-7731"
LOGGERS = ["butler", "butler_s3", "butler_db", "s3fs", "botocore", "aiobotocore", "sqlalchemy"]
#: Loggers whose records must be clean (butler's own, and what it configures).
OWN = ("butler",)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exercise(b: Butler) -> list[str]:
    """Use a repository in every way; return every text butler showed along the way."""
    shown = [repr(b), repr(b.storage), b.storage.uri(), b.storage.uri("x/y.npy")]
    b.register_dataset_type("arr", np.ndarray, "npy", dimensions={"visit": int})
    location = b.put(np.arange(100), "arr", visit=1)
    shown += [str(location), repr(location), location.describe(), location.uri]
    assert np.array_equal(b.get("arr", visit=1), np.arange(100))
    shown.append(repr(b.location("arr", visit=1)))
    for action in (
        lambda: b.get("arr", visit=2),
        lambda: b.put(np.arange(3), "arr", visit=1),
        lambda: b.remove("arr", visit=3),
    ):
        with pytest.raises(ButlerError) as info:
            action()
        shown.append(str(info.value))
        shown.append(repr(info.value))
    shown.append(str(b.verify()))
    return shown


def _assert_clean(secret: str, texts: list[str], logs: pytest.LogCaptureFixture) -> None:
    for text in texts:
        assert secret not in text, text
    leaks = [r for r in logs.records if secret in r.getMessage()]
    own = [r for r in leaks if r.name.startswith(OWN)]
    assert not own, [r.getMessage() for r in own]
    # Third-party loggers at DEBUG: reported, and none is expected either.
    assert not leaks, sorted({r.name for r in leaks})


def test_s3_secret_never_shown(
    request: pytest.FixtureRequest, tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    gen = make_repo(request, "s3", tmp_path)
    repo = next(gen)
    try:
        assert repo.options["secret"] == S3_SECRET
        b = repo.create()
        shown = _exercise(b)
        b.close()
        policy = boto_client(repo.options).get_object(Bucket=repo.bucket, Key="repo/butler.yaml")
        stored = policy["Body"].read().decode()
        assert "arr" in stored
        shown.append(stored)
        head = boto_client(repo.options).head_object(Bucket=repo.bucket, Key="repo/arr/1.npy")
        shown.append(str(head.get("Metadata")))
        # Failures while connecting or authenticating, each with the secret in hand.
        bad = dict(repo.options, endpoint_url=f"http://127.0.0.1:{_closed_port()}")
        bad["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 1}
        for root, options in (
            (repo.root, bad),
            (f"s3://no-such-bucket-{os.getpid()}/x", repo.options),
        ):
            with pytest.raises(StorageError) as info:
                Butler.create(root, **options)
            shown += [str(info.value), repr(info.value)]
        with pytest.raises(StorageError) as info:
            Butler(f"s3://{repo.bucket}/not-a-repo", **repo.options)
        shown.append(str(info.value))
        _assert_clean(S3_SECRET, shown, debug_logs)
    finally:
        gen.close()


def _mysql_user_with_password(repo: Repo, request: pytest.FixtureRequest) -> str:
    """Create a MariaDB user identified by DB_PASSWORD with rights on the repository's
    database (dropped after the test); returns the repository URL for that user.

    Uses the driver directly: SQLAlchemy's own log records of this setup would (rightly)
    trip the test's log check.
    """
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(repo.root)
    user = f"butler_pw_{os.getpid()}"
    hosts = ("%", "localhost", "127.0.0.1")

    def admin(statements: list[str]) -> None:
        conn = pymysql.connect(
            host=url.host, port=url.port or 3306, user=url.username, password=url.password or ""
        )
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
            conn.commit()
        finally:
            conn.close()

    admin(
        [f"CREATE USER IF NOT EXISTS '{user}'@'{h}' IDENTIFIED BY '{DB_PASSWORD}'" for h in hosts]
        + [f"GRANT ALL ON `{url.database}`.* TO '{user}'@'{h}'" for h in hosts]
    )
    request.addfinalizer(lambda: admin([f"DROP USER IF EXISTS '{user}'@'{h}'" for h in hosts]))
    return url.set(username=user).render_as_string(hide_password=False)


def _db_texts(repo: Repo) -> list[str]:
    """Every text column of the repository tables, read behind butler's back."""
    import sqlalchemy as sa

    def select(table: str, *columns: str) -> sa.Select[Any]:
        # column() quotes per dialect: "key" is a reserved word on MariaDB
        return sa.select(*(sa.column(c) for c in columns)).select_from(sa.table(table))

    engine = db_engine(repo)
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(select("butler_repository", "name", "value")).all())
            rows += conn.execute(
                select("butler_datasets", "key", "dataset_type", "data_id", "python_type",
                       "metadata")
            ).all()  # fmt: skip
    finally:
        engine.dispose()
    return [str(v) for row in rows for v in row]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mysql"])
@pytest.mark.parametrize("how", ["option", "url"])
def test_database_password_never_shown(
    kind: str,
    how: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    from sqlalchemy.engine import make_url

    gen = make_repo(request, kind, tmp_path)
    repo = next(gen)
    try:
        # The test PostgreSQL trusts local connections, so any password connects; on
        # MariaDB a user with that password is created for the test.
        base = repo.root if kind != "mysql" else _mysql_user_with_password(repo, request)
        if how == "url" and kind != "sqlite":
            url = make_url(base).set(password=DB_PASSWORD)
            root, options = url.render_as_string(hide_password=False), {}
        else:
            root, options = base, {"password": DB_PASSWORD}
        if kind == "sqlite":  # SQLite has no passwords: refused, without showing it
            with pytest.raises(StorageError) as info:
                Butler.create(root, **options)
            _assert_clean(DB_PASSWORD, [str(info.value), repr(info.value)], debug_logs)
            return
        b = Butler.create(root, **options)
        shown = _exercise(b)
        b.close()
        shown += _db_texts(repo)
        _assert_clean(DB_PASSWORD, shown, debug_logs)
    finally:
        gen.close()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_database_connection_errors_hide_the_password(
    kind: str, request: pytest.FixtureRequest, debug_logs: pytest.LogCaptureFixture
) -> None:
    """Wrong ports and rejected passwords: StorageError naming the database, no password."""
    pytest.importorskip("butler_db", reason="butler-db is not installed")
    from sqlalchemy.engine import make_url

    base = make_url(request.getfixturevalue(f"{'postgres' if kind == 'postgresql' else kind}_url"))
    shown: list[str] = []
    attempts: list[tuple[str, dict[str, Any]]] = [
        (
            base.set(port=_closed_port()).render_as_string(hide_password=False),
            {"password": DB_PASSWORD},
        ),
        (
            base.set(port=_closed_port(), password=DB_PASSWORD).render_as_string(
                hide_password=False
            ),
            {},
        ),
    ]
    if kind == "mysql":  # the server rejects a password its account does not have
        attempts.append((base.render_as_string(hide_password=False), {"password": DB_PASSWORD}))
    for root, options in attempts:
        with pytest.raises(StorageError) as info:
            Butler.create(root, **options)
        shown += [str(info.value), repr(info.value)]
        assert "***" in str(info.value) or DB_PASSWORD not in root
    _assert_clean(DB_PASSWORD, shown, debug_logs)


def test_missing_dataset_messages_name_no_secret(storage_root: Repo) -> None:
    with storage_root.create() as b:
        b.register_dataset_type("cfg", dict, "json", dimensions={"visit": int})
        with pytest.raises(DatasetNotFoundError) as info:
            b.get("cfg", visit=1)
        message = str(info.value)
        assert "'cfg'" in message and "does not exist" in message
        for value in storage_root.options.values():
            if isinstance(value, str) and "secret" in value:
                assert value not in message
