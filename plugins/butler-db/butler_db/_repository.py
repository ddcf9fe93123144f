"""The repository inside a database: butler's tables (created, versioned), the policy row
(changed under a row lock), and databases without a repository yet.

A mixin of `DatabaseStorage`, which provides the engine, the URL and the connection and
transaction helpers declared below.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc

from butler import DatasetExistsError, DatasetNotFoundError, FormatError, StorageError

from . import _schema as schema
from ._engine import is_retryable

__all__ = ["RepositoryMixin"]

#: Attempts at a policy change the server aborted (deadlock, serialization failure).
_POLICY_ATTEMPTS = 20


class RepositoryMixin:
    """Schema, policy and first-write handling of `DatabaseStorage`."""

    root: str
    backend: str
    engine: sa.Engine
    _url: sa.URL
    _schema_checked: bool

    if TYPE_CHECKING:

        def _write_transaction(
            self, action: str, key: str = "", **kw: Any
        ) -> contextlib.AbstractContextManager[sa.Connection]: ...

        def _read(
            self, action: str, key: str = ""
        ) -> contextlib.AbstractContextManager[sa.Connection]: ...

        def _translate(self, action: str, key: str = "", **kw: Any) -> Any: ...

        def _connect(self, key: str = "") -> sa.Connection: ...

        def not_found(self, key: str) -> DatasetNotFoundError: ...

    def _require_schema(self, key: str) -> None:
        """Refuse to look into a database without butler's tables (and never create a
        SQLite file just by looking)."""
        if not self._check_schema():
            raise self.not_found(key)

    @contextlib.contextmanager
    def creating(self) -> Iterator[None]:
        """Around a write: a database without butler's tables (a standalone
        `butler.write_file` or ``butler convert`` to ``sqlite:///dir/new.db/key``) gets them
        first, and a SQLite file (and directories) this write created are removed again if
        the write fails: a failed write leaves no empty database behind."""
        if self._schema_checked:
            yield
            return
        path = os.path.abspath(self._url.database or "") if self.backend == "sqlite" else ""
        made: list[str] = []
        if path and not os.path.exists(path):
            parent = os.path.dirname(path)
            while parent and not os.path.exists(parent):
                made.append(parent)
                parent = os.path.dirname(parent)
        fresh = bool(path) and not os.path.exists(path)
        try:
            if not self._check_schema():
                self.initialize()
            yield
        except BaseException:
            if fresh:
                self._remove_new_database(path, made)
            raise

    def _remove_new_database(self, path: str, made: list[str]) -> None:
        """Remove the SQLite file a failed write created, unless a dataset got into it
        meanwhile (another process writing the same new file)."""
        try:
            with self._read("clean up") as conn:
                if conn.execute(sa.select(sa.func.count()).select_from(schema.datasets)).scalar():
                    return
        except StorageError:
            pass  # no tables yet: the file is butler's empty creation
        self.engine.dispose()
        self._schema_checked = False
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)
        for directory in made:  # deepest first; a directory someone else filled stays
            with contextlib.suppress(OSError):
                os.rmdir(directory)

    def initialize(self) -> None:
        """Create the schema (idempotent, safe against concurrent creators) and record its
        version."""
        if self.backend == "sqlite":
            directory = os.path.dirname(self._url.database or "")
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as e:
                raise StorageError(f"cannot create {directory!r} for {self.root!r}: {e}") from e
        for attempt in range(3):
            try:
                with self._write_transaction("create the schema of") as conn:
                    schema.metadata.create_all(conn, checkfirst=True)
                break
            except StorageError:
                if attempt == 2:  # another process creating the same tables: check again
                    raise
                time.sleep(0.2)
        with (
            contextlib.suppress(DatasetExistsError),
            self._write_transaction("record the schema version of", exists="") as conn,
        ):
            if self._get_value(conn, "schema_version") is None:
                conn.execute(
                    schema.repository.insert(),
                    {"name": "schema_version", "value": str(schema.SCHEMA_VERSION)},
                )
        self._check_schema()

    def _check_schema(self) -> bool:
        """True when the repository tables exist; refuses a newer schema version."""
        if self._schema_checked:
            return True
        if self.backend == "sqlite" and not os.path.exists(self._url.database or ""):
            return False  # do not create an empty database file just by looking
        with self._read("open") as conn:
            if not sa.inspect(conn).has_table(schema.repository.name):
                return False
            version = self._get_value(conn, "schema_version")
        if version is not None and int(version) > schema.SCHEMA_VERSION:
            raise StorageError(
                f"the repository {self.root!r} has schema version {version}, newer than this "
                f"butler-db understands ({schema.SCHEMA_VERSION}); upgrade butler-db"
            )
        # Indexes added since the first schema (repositories written by butler-db < 0.3).
        with self._translate("open"), self._connect() as conn:
            schema.ensure_indexes(conn)
        self._schema_checked = True
        return True

    @staticmethod
    def _get_value(conn: sa.Connection, name: str) -> str | None:
        return conn.execute(
            sa.select(schema.repository.c.value).where(schema.repository.c.name == name)
        ).scalar()

    def close(self) -> None:
        self.engine.dispose()

    def read_policy(self) -> dict[str, Any] | None:
        if not self._check_schema():
            return None
        with self._read("read the policy of") as conn:
            text = self._get_value(conn, "policy")
        return self._parse_policy(text)

    def _parse_policy(self, text: str | None) -> dict[str, Any] | None:
        if text is None:
            return None
        try:
            data = json.loads(text)
        except ValueError as e:
            raise FormatError(f"repository policy in {self.root!r} is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise FormatError(f"repository policy in {self.root!r} is not a mapping")
        return data

    def write_policy(self, policy: Mapping[str, Any]) -> None:
        self.update_policy(lambda _current: policy)

    def update_policy(
        self, change: Callable[[dict[str, Any] | None], Mapping[str, Any] | None]
    ) -> dict[str, Any] | None:
        """Read-modify-write the policy in one transaction holding the policy row's lock.

        PostgreSQL and MariaDB lock the row with ``SELECT ... FOR UPDATE``, SQLite takes the
        database write lock up front (``BEGIN IMMEDIATE``): a concurrent change waits, then
        reads what this one wrote, so no definition is ever lost. A transaction the server
        aborts (deadlock, serialization failure, two first writes of the policy) is retried
        with ``change`` called afresh.
        """
        if not self._check_schema():
            raise StorageError(
                f"no butler repository at {self.root!r}: create one with "
                f"Butler.create({self.root!r}) or 'butler init'"
            )
        table = schema.repository
        query = sa.select(table.c.value).where(table.c.name == "policy")
        if self.backend != "sqlite":
            query = query.with_for_update()
        with self._translate("change the policy of"):
            for attempt in range(_POLICY_ATTEMPTS):
                try:
                    with self._connect() as conn:
                        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                        with conn.begin():
                            text = conn.execute(query).scalar()
                            current = self._parse_policy(text)
                            new = change(current)
                            if new is None:
                                return current
                            value = json.dumps(dict(new), sort_keys=False)
                            if text is None:
                                conn.execute(table.insert(), {"name": "policy", "value": value})
                            else:
                                conn.execute(
                                    table.update().where(table.c.name == "policy"),
                                    {"value": value},
                                )
                            return dict(new)
                except exc.DBAPIError as e:
                    if not is_retryable(e) or attempt == _POLICY_ATTEMPTS - 1:
                        raise
                # jittered backoff: retrying writers must not collide again in lock-step
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover
