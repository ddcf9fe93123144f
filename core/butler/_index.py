"""The dataset index: one row per stored dataset, queried by data ID.

The bytes and the metadata committed with them stay the truth; the index is a copy that
makes queries fast and can always be rebuilt from storage alone (`Butler.reindex`). The
consistency rule is one-directional: a put commits the bytes, *then* the row; a remove
deletes the row, *then* the bytes. A crash in between leaves at most a dataset the index
does not know (found by `Butler.verify`, repaired by `Butler.reindex`), never a row for bytes
that are not there.

`SqlIndex` holds the SQL, written once with named bound parameters (``:p0``) and quoted
identifiers derived from validated names only; subclasses run it: `SqliteIndex` (the
standard library's ``sqlite3``: the embedded default of posix and memory repositories) and
butler-db's SQLAlchemy index (PostgreSQL, MariaDB, SQLite through a URL).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ._errors import FormatError, StorageError
from ._json import dumps_compact, dumps_sorted
from ._policy import DatasetType
from ._runs import DEFAULT_RUN

if TYPE_CHECKING:
    import sqlite3

    from ._query import Predicate

__all__ = ["INDEX_NAME", "Index", "IndexEntry", "SqlIndex", "SqliteIndex", "memory_index"]

#: File name of the embedded index in a posix repository's reserved area (``.butler/``).
INDEX_NAME = "index.sqlite3"

#: Version of the index's table layout (recorded in the catalog; a newer one is refused).
SCHEMA_VERSION = 2

#: Table listing, per repository, the dataset types indexed and their tables.
CATALOG = "butler_index_catalog"

#: The only table names the index uses (and trusts from its catalog).
_TABLE = re.compile(r"bidx_[0-9a-f]{20}")

#: A process refreshes a table's planner statistics after adding this many rows to it, then
#: at each doubling: queries are planned from real selectivities, not guesses.
ANALYZE_FIRST = 1000

#: Rows written per statement batch (bulk adds and reindexing).
BATCH = 500

#: Integers the index stores exactly (64-bit, as SQLite, PostgreSQL BIGINT, MariaDB BIGINT).
INT_RANGE = (-(2**63), 2**63 - 1)

#: Columns every dataset type's table has besides one ``d_<dimension>`` per dimension.
#: They start with ``_`` so no dimension column (``d_...``) can take their name.
FIXED_COLUMNS = (
    "_id",
    "_key",
    "_format",
    "_python_type",
    "_size",
    "_checksum",
    "_created",
    "_run",
    "_did",
    "_provenance",
)


@dataclass(frozen=True)
class IndexEntry:
    """What the index records about one stored dataset.

    Attributes
    ----------
    data_id
        The normalised data ID (values typed as the dataset type's dimensions).
    key
        The storage key.
    format, python_type
        The format it was written in and the concrete class written.
    size, checksum, created
        Bytes stored, sha256 when the repository keeps checksums, and the UNIX time of the
        commit, as recorded in the dataset's metadata.
    run
        The run holding it.
    provenance
        The provenance recorded with it (`butler._provenance`), if any.
    """

    data_id: Mapping[str, Any]
    key: str
    format: str
    python_type: str
    size: int | None = None
    checksum: str | None = None
    created: float | None = None
    run: str = DEFAULT_RUN
    provenance: Mapping[str, Any] | None = None

    @classmethod
    def from_metadata(
        cls,
        dt: DatasetType,
        key: str,
        data_id: Mapping[str, Any],
        meta: Mapping[str, Any],
        run: str = DEFAULT_RUN,
    ) -> IndexEntry:
        """The entry for a dataset from the metadata stored with it (untrusted: fields of
        the wrong type are dropped, never trusted)."""

        def text(name: str, default: str) -> str:
            value = meta.get(name)
            return value if isinstance(value, str) and len(value) <= 1024 else default

        size, created, checksum = meta.get("size"), meta.get("created"), meta.get("sha256")
        return cls(
            data_id=dict(data_id),
            key=key,
            format=text("format", dt.format),
            python_type=text("python_type", dt.python_type),
            size=size if isinstance(size, int) and not isinstance(size, bool) else None,
            checksum=checksum if isinstance(checksum, str) and len(checksum) == 64 else None,
            created=_finite(created),
            run=run,
            provenance=meta["provenance"] if isinstance(meta.get("provenance"), dict) else None,
        )


class Index(abc.ABC):
    """Interface of dataset indexes (what `Butler` calls)."""

    #: One line for ``butler info``: where the index lives.
    description: str = ""

    @abc.abstractmethod
    def add(self, dt: DatasetType, entries: Sequence[IndexEntry]) -> None:
        """Record datasets (replacing the rows of the same data IDs)."""

    @abc.abstractmethod
    def discard(
        self, dt: DatasetType, data_ids: Sequence[Mapping[str, Any]], run: str = DEFAULT_RUN
    ) -> None:
        """Forget datasets of one run (absent ones are ignored)."""

    @abc.abstractmethod
    def query(
        self,
        dt: DatasetType,
        predicate: Predicate,
        order: Sequence[tuple[str, bool]],
        limit: int | None,
        runs: Sequence[str] = (DEFAULT_RUN,),
    ) -> list[tuple[dict[str, Any], str]]:
        """(data ID, run) of the datasets matching ``predicate`` in any of ``runs``; a data
        ID held by several of them comes once, with the first of ``runs`` holding it;
        ordered by ``order`` ((dimension, descending) pairs covering every dimension), at
        most ``limit``."""

    @abc.abstractmethod
    def count(
        self, dt: DatasetType, predicate: Predicate, runs: Sequence[str] = (DEFAULT_RUN,)
    ) -> int:
        """How many data IDs match ``predicate`` in any of ``runs``."""

    @abc.abstractmethod
    def history(self, dt: DatasetType, data_id: Mapping[str, Any]) -> list[IndexEntry]:
        """Every run's entry for one data ID, oldest first."""

    @abc.abstractmethod
    def runs(self) -> dict[str, int]:
        """Datasets per run, over every dataset type."""

    @abc.abstractmethod
    def discard_ids(self, dt: DatasetType, ids: Sequence[str]) -> None:
        """Forget rows by their id (`entry_id`), e.g. rows too corrupt to name a data ID."""

    @abc.abstractmethod
    def entries(self, dt: DatasetType, *, corrupt: list[str] | None = None) -> Iterator[IndexEntry]:
        """Every entry of a dataset type (for `Butler.verify` and reindexing).

        A row whose values do not fit the dataset type raises `FormatError`, or, with a
        ``corrupt`` list, has its id appended there and is skipped (reindex drops them).
        """

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Datasets per dataset type name."""

    @abc.abstractmethod
    def checkpoint(self, dt: DatasetType, key: str | None = None, *, clear: bool = False) -> str:
        """Reindexing progress: store ``key`` as the last key done (or ``clear`` it); return
        the stored one (``""`` if none)."""

    def state(self) -> str | None:
        """``"complete"`` (the index holds every stored dataset), ``"incomplete"`` (it was
        lost and started again, or a reindex did not finish: queries must list the
        storage), or ``None``: never recorded (a new index, or one from before states).
        An index that keeps no state says ``"complete"``."""
        return "complete"

    def mark(self, complete: bool) -> None:  # noqa: B027 - optional hook
        """Record whether the index is complete (see `state`)."""

    def has_tables(self) -> bool:
        """Whether the index holds any dataset type's table for this repository."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


# -- the SQL, once -----------------------------------------------------------------------


def table_name(repository: str, dt: DatasetType) -> str:
    """The table of a dataset type: bound to the repository and to the dimensions (a
    redefinition with other dimensions gets a new table), never built from user text."""
    dims = json.dumps(dict(dt.dimensions), sort_keys=False)
    seed = f"{repository}\0{dt.name}\0{dims}\0{SCHEMA_VERSION}"
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"bidx_{digest[:20]}"


def dimension_column(dimension: str) -> str:
    """Column of a dimension: ``d_<name>``, shortened with a hash beyond 60 characters
    (identifiers are at most 63-64 characters in PostgreSQL and MariaDB) and for names with
    capitals."""
    column = f"d_{dimension}"
    # Databases compare identifiers case-insensitively (SQLite, MariaDB): names with capitals
    # get a hash, so "Band" and "band" never share a column.
    if len(column) <= 60 and dimension == dimension.lower():
        return column
    return f"d_{dimension[:40].lower()}_{hashlib.sha256(dimension.encode()).hexdigest()[:12]}"


def data_id_digest(data_id: Mapping[str, Any]) -> str:
    """A digest of the canonical data ID (fixed width, so databases that limit index sizes
    can index it, however long the values): the ``_did`` column."""
    canonical = dumps_compact([[k, data_id[k]] for k in sorted(data_id)])
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def entry_id(data_id: Mapping[str, Any], run: str = DEFAULT_RUN) -> str:
    """The row's primary key: one row per (run, data ID)."""
    if run == DEFAULT_RUN:
        return data_id_digest(data_id)
    return _run_entry_id(run, data_id_digest(data_id))


def _run_entry_id(run: str, digest: str) -> str:
    """`entry_id` of a data ID of digest ``digest`` in a run other than the default."""
    canonical = dumps_compact([run, digest])
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


class SqlIndex(Index):
    """The index's SQL, for any database with standard SQL; subclasses run it.

    Every value reaches the database as a bound parameter; identifiers are built from a
    digest (tables) or from validated dimension names (columns) and quoted.

    Subclasses implement `_execute`, `_executemany`, `_iterate` and may override the type
    names, `quote`, `upsert_sql` (MariaDB's ``ON DUPLICATE KEY UPDATE``), `_ddl` (retries)
    and `combined_index_columns`.
    """

    #: Column types.
    int_type = "BIGINT"
    str_type = "VARCHAR(200)"
    text_type = "TEXT"
    float_type = "DOUBLE PRECISION"
    id_type = "CHAR(32)"

    def __init__(self, repository: str) -> None:
        self.repository = repository
        self._ready: set[str] = set()
        # The table of the last dataset types seen, by identity (`DatasetType` is frozen):
        # naming one hashes the repository, name and dimensions.
        self._names: dict[int, tuple[DatasetType, str]] = {}
        self._upserts: dict[str, str] = {}
        self._added: dict[str, int] = {}
        self._ready_lock = threading.Lock()

    # -- what subclasses run ---------------------------------------------------------

    @abc.abstractmethod
    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement in its own transaction (committed); return its rows."""

    @abc.abstractmethod
    def _executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run one statement for many parameter sets, in one committed transaction."""

    @abc.abstractmethod
    def _iterate(self, sql: str, params: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        """Stream the rows of a query."""

    def quote(self, identifier: str) -> str:
        """Quote an identifier (only ever a table or column name built here)."""
        return f'"{identifier}"'

    def upsert_sql(self, table: str, columns: Sequence[str]) -> str:
        """Insert-or-replace by ``_id`` (standard ``ON CONFLICT``: SQLite, PostgreSQL)."""
        q = self.quote
        names = ", ".join(q(c) for c in columns)
        values = ", ".join(f":{c}" for c in columns)
        updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in columns if c != "_id")
        return (
            f"INSERT INTO {q(table)} ({names}) VALUES ({values}) "
            f"ON CONFLICT ({q('_id')}) DO UPDATE SET {updates}"
        )

    def create_statements(self, table: str, dt: DatasetType) -> list[str]:
        """DDL of a dataset type's table and its indexes (idempotent: IF NOT EXISTS)."""
        q = self.quote
        dims = [
            f"{q(dimension_column(d))} {self.int_type if k == 'int' else self.str_type} NOT NULL"
            for d, k in dt.dimensions.items()
        ]
        fixed = [
            f"{q('_id')} {self.id_type} NOT NULL PRIMARY KEY",
            f"{q('_key')} {self.text_type} NOT NULL",
            f"{q('_format')} {self.text_type}",
            f"{q('_python_type')} {self.text_type}",
            f"{q('_size')} {self.int_type}",
            f"{q('_checksum')} {self.text_type}",
            f"{q('_created')} {self.float_type}",
            f"{q('_run')} {self.str_type} NOT NULL",
            f"{q('_did')} {self.id_type} NOT NULL",
            f"{q('_provenance')} {self.text_type}",
        ]
        statements = [f"CREATE TABLE IF NOT EXISTS {q(table)} ({', '.join(fixed + dims)})"]
        columns = [dimension_column(d) for d in dt.dimensions]
        # One index per dimension, with the run (ranges and IN on any dimension, within the
        # runs searched), one over all dimensions in order (prefix queries and the default
        # ORDER BY), and one on the data ID digest (a data ID's history across runs). No
        # index on the run alone: a planner without statistics would prefer it.
        for i, column in enumerate(columns):
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {q(f'{table}_{i}')} ON {q(table)} "
                f"({q(column)}, {q('_run')})"
            )
        statements.append(
            f"CREATE INDEX IF NOT EXISTS {q(f'{table}_did')} ON {q(table)} ({q('_did')})"
        )
        combined = self.combined_index_columns(dt)
        if len(combined) > 1:
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {q(f'{table}_all')} ON {q(table)} "
                f"({', '.join(q(c) for c in combined)})"
            )
        return statements

    def combined_index_columns(self, dt: DatasetType) -> list[str]:
        """Columns of the index over the dimensions in declared order: all of them here; a
        database limiting an index's size (MariaDB: 3072 bytes) keeps a leading part."""
        return [dimension_column(d) for d in dt.dimensions]

    def catalog_statements(self) -> list[str]:
        """DDL of the catalog (which tables belong to which repository and dataset type)."""
        q = self.quote
        return [
            f"CREATE TABLE IF NOT EXISTS {q(CATALOG)} ("
            f"{q('repository')} VARCHAR(64) NOT NULL, {q('dataset_type')} VARCHAR(128) NOT NULL, "
            f"{q('table_name')} VARCHAR(64) NOT NULL, {q('dimensions')} {self.text_type} NOT NULL, "
            f"{q('schema_version')} INTEGER NOT NULL, {q('checkpoint')} {self.text_type}, "
            f"PRIMARY KEY ({q('repository')}, {q('table_name')}))"
        ]

    # -- tables ----------------------------------------------------------------------

    def _table(self, dt: DatasetType, *, create: bool) -> str | None:
        """The table of ``dt``, created (with its catalog row) on first use when
        ``create``; ``None`` if it does not exist and ``create`` is false."""
        named = self._names.get(id(dt))
        if named is not None and named[0] is dt:
            table = named[1]
        else:
            table = table_name(self.repository, dt)
            if len(self._names) >= 256:
                self._names.clear()
            self._names[id(dt)] = (dt, table)
        if table in self._ready:
            return table
        with self._ready_lock:
            if table in self._ready:
                return table
            rows = self._catalog_row(table)
            if not rows and not create:
                return None
            if rows and rows[0][1] > SCHEMA_VERSION:
                raise StorageError(
                    f"the index {self.description} has layout version {rows[0][1]}, newer than "
                    f"this butler understands ({SCHEMA_VERSION}); upgrade butler-core"
                )
            if create:
                # Idempotent (IF NOT EXISTS), and run even when the catalog names the table:
                # a table dropped behind butler's back is recreated (reindex repairs it).
                for statement in self.create_statements(table, dt):
                    self._ddl(statement)
                if not rows:
                    self._insert_catalog(table, dt)
            else:
                self._first_use(table)
            self._ready.add(table)
        return table

    def _ddl(self, statement: str) -> None:
        self._execute(statement)

    def _catalog_row(self, table: str) -> list[tuple[Any, ...]]:
        for statement in self.catalog_statements():
            if CATALOG not in self._ready:
                self._ddl(statement)
        self._ready.add(CATALOG)
        q = self.quote
        return self._execute(
            f"SELECT {q('table_name')}, {q('schema_version')} FROM {q(CATALOG)} "
            f"WHERE {q('repository')} = :repository AND {q('table_name')} = :table_name",
            {"repository": self.repository, "table_name": table},
        )

    def _insert_catalog(self, table: str, dt: DatasetType) -> None:
        q = self.quote
        try:
            self._execute(
                f"INSERT INTO {q(CATALOG)} ({q('repository')}, {q('dataset_type')}, "
                f"{q('table_name')}, {q('dimensions')}, {q('schema_version')}) VALUES "
                f"(:repository, :dataset_type, :table_name, :dimensions, :schema_version)",
                {
                    "repository": self.repository,
                    "dataset_type": dt.name,
                    "table_name": table,
                    "dimensions": json.dumps(dict(dt.dimensions)),
                    "schema_version": SCHEMA_VERSION,
                },
            )
        except Exception:
            # Another writer registered it first; the row is what we would have written.
            if not self._catalog_row(table):
                raise

    # -- Index -----------------------------------------------------------------------

    def add(self, dt: DatasetType, entries: Sequence[IndexEntry]) -> None:
        if not entries:
            return
        table = self._table(dt, create=True)
        assert table is not None
        rows = [self._row(dt, e) for e in entries]
        sql = self._upserts.get(table)
        if sql is None:  # built once per table: a put's row costs one statement
            columns = [*FIXED_COLUMNS, *(dimension_column(d) for d in dt.dimensions)]
            sql = self._upserts[table] = self.upsert_sql(table, columns)
        if len(rows) == 1:
            self._execute(sql, rows[0])
        else:
            for start in range(0, len(rows), BATCH):
                self._executemany(sql, rows[start : start + BATCH])
        before = self._added.get(table, 0)
        self._added[table] = after = before + len(rows)
        if (
            after >= ANALYZE_FIRST
            and after.bit_length() > max(before, ANALYZE_FIRST - 1).bit_length()
        ):
            self.analyze(table)

    def analyze(self, table: str) -> None:
        """Refresh the query planner's statistics of a table. Nothing here: PostgreSQL's
        autovacuum and InnoDB keep them; SQLite (`SqliteIndex`) has to be told."""

    def _first_use(self, table: str) -> None:
        """Called when a process first queries a table."""

    def _row(self, dt: DatasetType, entry: IndexEntry) -> dict[str, Any]:
        did = data_id_digest(entry.data_id)
        row: dict[str, Any] = {
            "_id": did if entry.run == DEFAULT_RUN else _run_entry_id(entry.run, did),
            "_key": entry.key,
            "_format": entry.format,
            "_python_type": entry.python_type,
            "_size": entry.size,
            "_checksum": entry.checksum,
            "_created": entry.created,
            "_run": entry.run,
            "_did": did,
            "_provenance": None if entry.provenance is None else dumps_sorted(entry.provenance),
        }
        for d, kind in dt.dimensions.items():
            value = entry.data_id[d]
            if kind == "int" and not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise StorageError(
                    f"the index keeps integers in 64 bits; data ID value {d}={value} of "
                    f"dataset type {dt.name!r} does not fit"
                )
            row[dimension_column(d)] = value
        return row

    def discard(
        self, dt: DatasetType, data_ids: Sequence[Mapping[str, Any]], run: str = DEFAULT_RUN
    ) -> None:
        self.discard_ids(dt, [entry_id(d, run) for d in data_ids])

    def discard_ids(self, dt: DatasetType, ids: Sequence[str]) -> None:
        table = self._table(dt, create=False)
        if table is None or not ids:
            return
        sql = f"DELETE FROM {self.quote(table)} WHERE {self.quote('_id')} = :_id"
        rows = [{"_id": i} for i in ids]
        if len(rows) == 1:
            self._execute(sql, rows[0])
        else:
            self._executemany(sql, rows)

    def _where(
        self, dt: DatasetType, predicate: Predicate, runs: Sequence[str]
    ) -> tuple[str, dict[str, Any]]:
        """The WHERE clause: the predicate, within ``runs`` (bound, never formatted)."""
        params: dict[str, Any] = {}
        columns = {d: self.quote(dimension_column(d)) for d in dt.dimensions}
        where = predicate.to_sql(columns.__getitem__, params)
        names = []
        for i, run in enumerate(runs):
            params[f"r{i}"] = run
            names.append(f":r{i}")
        if not names:
            return "1=0", params
        run_col = self.quote("_run")
        within = (
            f"{run_col} = {names[0]}" if len(names) == 1 else f"{run_col} IN ({', '.join(names)})"
        )
        return f"{within} AND ({where})", params

    def query(
        self,
        dt: DatasetType,
        predicate: Predicate,
        order: Sequence[tuple[str, bool]],
        limit: int | None,
        runs: Sequence[str] = (DEFAULT_RUN,),
    ) -> list[tuple[dict[str, Any], str]]:
        table = self._table(dt, create=False)
        if table is None or not runs:
            return []
        where, params = self._where(dt, predicate, runs)
        dims = list(dt.dimensions)
        if not dims:  # one data ID, {}: in the first run holding it
            rows = self._execute(
                f"SELECT {self.quote('_run')} FROM {self.quote(table)} WHERE {where}", params
            )
            held = {row[0] for row in rows}
            empty: dict[str, Any] = {}
            found = [(empty, run) for run in runs if run in held][:1]
            return found if limit is None else found[:limit]
        select = ", ".join(self.quote(dimension_column(d)) for d in dims)
        ordering = ", ".join(
            f"{self.quote(dimension_column(d))}{' DESC' if desc else ''}" for d, desc in order
        )
        if len(runs) == 1:
            sql = f"SELECT {select} FROM {self.quote(table)} WHERE {where}"
        else:
            # One row per data ID, with the rank of the first run (in search order) holding it.
            rank = " ".join(f"WHEN :r{i} THEN {i}" for i in range(len(runs)))
            sql = (
                f"SELECT {select}, MIN(CASE {self.quote('_run')} {rank} END) "
                f"FROM {self.quote(table)} WHERE {where} GROUP BY {select}"
            )
        if ordering:
            sql += f" ORDER BY {ordering}"
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        kinds = [dt.dimensions[d] for d in dims]
        result = []
        for row in self._execute(sql, params):
            run = runs[0] if len(runs) == 1 else runs[_rank(row[len(dims)], len(runs))]
            result.append((_data_id(dt, dims, kinds, row[: len(dims)]), run))
        return result

    def count(
        self, dt: DatasetType, predicate: Predicate, runs: Sequence[str] = (DEFAULT_RUN,)
    ) -> int:
        table = self._table(dt, create=False)
        if table is None or not runs:
            return 0
        where, params = self._where(dt, predicate, runs)
        what = "COUNT(*)" if len(runs) == 1 else f"COUNT(DISTINCT {self.quote('_did')})"
        rows = self._execute(f"SELECT {what} FROM {self.quote(table)} WHERE {where}", params)
        return int(rows[0][0])

    def history(self, dt: DatasetType, data_id: Mapping[str, Any]) -> list[IndexEntry]:
        found = self._entries(
            dt, f"WHERE {self.quote('_did')} = :did", {"did": data_id_digest(data_id)}, None
        )
        return sorted(found, key=lambda e: (e.created or 0.0, e.run))

    def runs(self) -> dict[str, int]:
        result: dict[str, int] = {}
        run = self.quote("_run")
        for table in self._tables():
            for name, n in self._execute(
                f"SELECT {run}, COUNT(*) FROM {self.quote(table)} GROUP BY {run}"
            ):
                result[str(name)] = result.get(str(name), 0) + int(n)
        return dict(sorted(result.items()))

    def entries(self, dt: DatasetType, *, corrupt: list[str] | None = None) -> Iterator[IndexEntry]:
        return self._entries(dt, "", {}, corrupt)

    def _entries(
        self,
        dt: DatasetType,
        where: str,
        params: Mapping[str, Any],
        corrupt: list[str] | None,
    ) -> Iterator[IndexEntry]:
        table = self._table(dt, create=False)
        if table is None:
            return
        dims = list(dt.dimensions)
        kinds = [dt.dimensions[d] for d in dims]
        columns = [*FIXED_COLUMNS, *(dimension_column(d) for d in dims)]
        sql = f"SELECT {', '.join(self.quote(c) for c in columns)} FROM {self.quote(table)}"
        n = len(FIXED_COLUMNS)
        for row in self._iterate(f"{sql} {where}", params):
            ident, key, fmt, python_type, size, checksum, created, run, _did, prov = row[:n]
            try:
                data_id = _data_id(dt, dims, kinds, row[n:])
                if not isinstance(key, str):
                    raise _corrupt(dt, "_key", key)
                if not isinstance(run, str):
                    raise _corrupt(dt, "_run", run)
                provenance = _provenance(prov)
                for name, value in (("_format", fmt), ("_python_type", python_type)):
                    if value is not None and not isinstance(value, str):
                        raise _corrupt(dt, name, value)
                if checksum is not None and not isinstance(checksum, str):
                    raise _corrupt(dt, "_checksum", checksum)
                size = _whole(dt, "_size", size)
                if created is not None:
                    number = _finite(float(created) if isinstance(created, Decimal) else created)
                    if number is None:
                        raise _corrupt(dt, "_created", created)
                    created = number
            except FormatError:
                if corrupt is None:
                    raise
                corrupt.append(str(ident))
                continue
            yield IndexEntry(
                data_id=data_id,
                key=key,
                format=fmt,
                python_type=python_type,
                size=size,
                checksum=checksum,
                created=created,
                run=run,
                provenance=provenance,
            )

    def _catalog(self) -> list[tuple[str, str]]:
        """(dataset type, table) of this repository. The catalog is untrusted: only table
        names of the shape this module makes are used."""
        q = self.quote
        self._catalog_row("")  # creates the catalog if needed
        # Only tables of this layout: an older butler's tables stay in the catalog after an
        # upgrade (their rows were indexed again in the new ones, and they lack columns).
        rows = self._execute(
            f"SELECT {q('dataset_type')}, {q('table_name')} FROM {q(CATALOG)} "
            f"WHERE {q('repository')} = :repository AND {q('schema_version')} = :version",
            {"repository": self.repository, "version": SCHEMA_VERSION},
        )
        return [
            (str(name), table)
            for name, table in rows
            if isinstance(table, str) and _TABLE.fullmatch(table)
        ]

    def _tables(self) -> list[str]:
        return [table for _, table in self._catalog()]

    # The state is the catalog row of table name "" (no table is named so; `_catalog`
    # yields only names of the shape `table_name` makes): its checkpoint column holds
    # "incomplete", or NULL for complete.

    def state(self) -> str | None:
        self._catalog_row("")  # creates the catalog if needed
        q = self.quote
        rows = self._execute(
            f"SELECT {q('checkpoint')} FROM {q(CATALOG)} "
            f"WHERE {q('repository')} = :repository AND {q('table_name')} = ''",
            {"repository": self.repository},
        )
        if not rows:
            return None
        return "complete" if rows[0][0] is None else "incomplete"

    def mark(self, complete: bool) -> None:
        q = self.quote
        value = None if complete else "incomplete"
        params = {"repository": self.repository, "checkpoint": value}
        if self.state() is None:
            with contextlib.suppress(StorageError):  # another writer recorded it first
                self._execute(
                    f"INSERT INTO {q(CATALOG)} ({q('repository')}, {q('dataset_type')}, "
                    f"{q('table_name')}, {q('dimensions')}, {q('schema_version')}, "
                    f"{q('checkpoint')}) VALUES (:repository, '', '', '{{}}', "
                    f"{SCHEMA_VERSION}, :checkpoint)",
                    params,
                )
                return
        self._execute(
            f"UPDATE {q(CATALOG)} SET {q('checkpoint')} = :checkpoint "
            f"WHERE {q('repository')} = :repository AND {q('table_name')} = ''",
            params,
        )

    def has_tables(self) -> bool:
        return bool(self._catalog())

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for name, table in self._catalog():
            rows = self._execute(f"SELECT COUNT(*) FROM {self.quote(table)}")
            result[name] = result.get(name, 0) + int(rows[0][0])
        return result

    def checkpoint(self, dt: DatasetType, key: str | None = None, *, clear: bool = False) -> str:
        table = self._table(dt, create=True)
        q = self.quote
        where = f"WHERE {q('repository')} = :repository AND {q('table_name')} = :table_name"
        params: dict[str, Any] = {"repository": self.repository, "table_name": table}
        if clear or key is not None:
            self._execute(
                f"UPDATE {q(CATALOG)} SET {q('checkpoint')} = :checkpoint {where}",
                {**params, "checkpoint": None if clear else key},
            )
        rows = self._execute(f"SELECT {q('checkpoint')} FROM {q(CATALOG)} {where}", params)
        return str(rows[0][0]) if rows and rows[0][0] else ""


def _data_id(
    dt: DatasetType, dims: Sequence[str], kinds: Sequence[str], row: Sequence[Any]
) -> dict[str, Any]:
    """A data ID from an index row. The index is as untrusted as the repository: values
    of the wrong type are a `FormatError` (rebuild it with ``butler reindex``)."""
    data_id = {}
    for d, kind, value in zip(dims, kinds, row, strict=True):
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                # Decimal from some drivers, when integral; never a float or a text.
                if not isinstance(value, Decimal) or value != value.to_integral_value():
                    raise _corrupt(dt, d, value)
                value = int(value)
        elif not isinstance(value, str):
            raise _corrupt(dt, d, value)
        data_id[d] = value
    return data_id


def _whole(dt: DatasetType, column: str, value: Any) -> int | None:
    """An integer column of an index row (``None`` stays), or `FormatError`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise _corrupt(dt, column, value)
    if isinstance(value, Decimal) and (not value.is_finite() or value != value.to_integral_value()):
        raise _corrupt(dt, column, value)
    return int(value)


def _finite(value: Any) -> float | None:
    """An untrusted number as a finite float (a UNIX time); ``None`` for anything else
    (text, a bool, NaN, infinities, an integer beyond any float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _rank(value: Any, n: int) -> int:
    """The run rank a multi-run query computed (an int below ``n``, from the database)."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal) or not 0 <= value < n:
        raise FormatError(f"the dataset index returned run rank {value!r}; expected 0..{n - 1}")
    return int(value)


def _provenance(value: Any) -> dict[str, Any] | None:
    """The provenance JSON of an index row (``None`` if absent), or `FormatError`."""
    if value is None:
        return None
    try:
        parsed = json.loads(value) if isinstance(value, str) and len(value) < 2**22 else None
    except (ValueError, RecursionError):
        parsed = None
    if not isinstance(parsed, dict):
        raise FormatError(
            "the dataset index holds unreadable provenance; rebuild it with 'butler reindex'"
        )
    return parsed


def _corrupt(dt: DatasetType, dimension: str, value: Any) -> FormatError:
    return FormatError(
        f"the dataset index holds {type(value).__name__} {str(value)[:40]!r} for "
        f"{'column' if dimension.startswith('_') else 'dimension'} {dimension!r} of dataset "
        f"type {dt.name!r}; it is corrupt or was written by another "
        f"tool: rebuild it with 'butler reindex'"
    )


class SqliteIndex(SqlIndex):
    """The index in a SQLite database through the standard library (no SQLAlchemy).

    Parameters
    ----------
    path
        Database file (``":memory:"`` for an in-process index).
    repository
        The repository's id (one database may index several repositories).
    description
        What ``butler info`` shows.
    opener
        Called before each new connection (posix checks the files are not links).
    on_close
        Called once by `close` (posix closes its descriptor of ``.butler``).

    Notes
    -----
    WAL mode with ``synchronous=NORMAL``: a put's row costs no fsync (the index is
    rebuildable, the bytes are not), readers never block writers, and each write holds
    SQLite's lock for one statement. Connections are per thread.
    """

    int_type = "INTEGER"
    str_type = "TEXT"
    float_type = "REAL"
    id_type = "TEXT"
    #: True once a connection could only be opened read-only.
    read_only = False

    def quote(self, identifier: str) -> str:
        """Grave accents: SQLite reads a double-quoted name that is no column as a string
        literal (``"d_visit" = 1`` on a table without it is silently false); a name in
        grave accents is always an identifier, and a missing one an error."""
        return f"`{identifier}`"

    def __init__(
        self,
        path: str,
        repository: str,
        *,
        description: str = "",
        opener: Callable[[], None] | None = None,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(repository)
        self.path = path
        self.description = description or f"SQLite {path}"
        self._local = threading.local()
        self._shared: sqlite3.Connection | None = None
        self._shared_lock = threading.RLock()
        self._opener = opener
        self._on_close = on_close
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        if path == ":memory:":
            self._shared = self._connect()

    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        if self._opener is not None:
            self._opener()  # re-checks the file before SQLite opens it by path
        try:
            conn = self._open_connection()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the dataset index {self.description}: {exc}") from exc
        self._connections.append(conn)
        return conn

    @staticmethod
    def _wal(conn: sqlite3.Connection) -> None:
        """Put the database in WAL mode (once: later connections find it so). Switching
        needs a moment without other writers, which the busy timeout does not wait for:
        retried while another process holds the lock."""
        import sqlite3

        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
            return
        for attempt in range(200):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or attempt == 199:
                    raise
                time.sleep(min(0.001 * 2**attempt, 0.2))

    def _open_connection(self) -> sqlite3.Connection:
        import sqlite3  # here: ``import butler`` does not load it

        def connect(target: str, uri: bool = False) -> sqlite3.Connection:
            return sqlite3.connect(
                target, timeout=60.0, isolation_level=None, check_same_thread=False, uri=uri
            )

        if self.path == ":memory:":
            return connect(self.path)
        try:
            conn = connect(self.path)
            self._wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            return conn
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) and "readonly" not in str(exc):
                raise
        # A reader of a repository it cannot write (read-only mount, another user's
        # files): read-only, and on read-only media "immutable" (nothing can change it).
        quoted = self.path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")
        for mode in ("mode=ro", "immutable=1"):
            try:
                conn = connect(f"file:{quoted}?{mode}", uri=True)
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                self.read_only = True
                return conn
            except sqlite3.OperationalError:
                continue
        return connect(f"file:{quoted}?mode=ro", uri=True)  # raises the real error

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise StorageError(f"the dataset index {self.description} is closed")
        if self._shared is not None:
            with self._shared_lock:
                yield self._shared
            return
        yield self._thread_conn()

    def _thread_conn(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is None or getattr(local, "pid", None) != os.getpid():
            conn = local.conn = self._connect()
            local.pid = os.getpid()
        return conn

    def _run(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        import sqlite3

        # SQLite's busy timeout covers most contention; a writer that still finds the
        # database locked (a WAL checkpoint, a long reader) retries briefly.
        for attempt in range(50):
            try:
                if self._shared is None and not self._closed:
                    # `_conn` without entering a context manager: the common case of
                    # every put's row.
                    return action(self._thread_conn())
                with self._conn() as conn:
                    return action(conn)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise StorageError(f"dataset index {self.description}: {exc}") from exc
                time.sleep(min(0.001 * 2**attempt, 0.2))
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"dataset index {self.description}: {exc}") from exc
        raise StorageError(f"dataset index {self.description} stayed locked for too long")

    def _execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self._run(lambda conn: conn.execute(sql, params or {}).fetchall())

    def _executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        def many(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        self._run(many)

    def analyze(self, table: str) -> None:
        """``ANALYZE`` the table. Without statistics SQLite guesses that an ``IN`` list is
        more selective than a range and may scan a third of the table (and sampled
        statistics, ``analysis_limit``, misjudge it the same way). A full pass costs about
        0.7 s at a million rows; at each doubling that is ~2 us per put amortized, paid by
        the put that crosses it. A reader that cannot write skips it."""
        if self.read_only:
            return

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(f"ANALYZE {self.quote(table)}")

        with contextlib.suppress(StorageError):
            self._run(run)

    def _first_use(self, table: str) -> None:
        """Analyze a table that has no statistics yet (filled by another process, or by
        fewer than `ANALYZE_FIRST` rows before): once per process, cheap when present."""
        has_stats = self._execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
        )
        if has_stats and self._execute(
            "SELECT 1 FROM sqlite_stat1 WHERE tbl = :table LIMIT 1", {"table": table}
        ):
            return
        self.analyze(table)

    def _iterate(self, sql: str, params: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
        import sqlite3

        with self._conn() as conn:
            try:
                cursor = conn.execute(sql, params)
                while rows := cursor.fetchmany(BATCH):
                    yield from rows
            except sqlite3.Error as exc:
                raise StorageError(f"dataset index {self.description}: {exc}") from exc

    def close(self) -> None:
        if self._shared is not None:
            return  # an in-process index outlives the Butlers using it, like memory bytes
        self._closed = True
        for conn in self._connections:
            with contextlib.suppress(Exception):
                conn.close()
        self._connections.clear()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            with contextlib.suppress(OSError):
                on_close()


# In-process indexes of memory repositories, one per repository id (like their bytes).
_MEMORY_INDEXES: dict[str, SqliteIndex] = {}
_MEMORY_LOCK = threading.Lock()


def memory_index(repository: str, name: str) -> SqliteIndex:
    """The in-process index shared by every Butler on one memory repository."""
    with _MEMORY_LOCK:
        index = _MEMORY_INDEXES.get(repository)
        if index is None or index._closed:
            index = SqliteIndex(":memory:", repository, description=f"in-process ({name})")
            _MEMORY_INDEXES[repository] = index
        return index


def iter_batches(items: Iterable[Any], size: int = BATCH) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size``."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
