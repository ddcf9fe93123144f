"""Entry-point module of butler-db: declarations only, as ``"module:attribute"`` strings.

Nothing here imports SQLAlchemy, numpy, astropy or pandas: discovery stays cheap.
"""

from __future__ import annotations

from butler import FormatDescriptor, Serializer, StorageSpec, hookimpl

DISTRIBUTION = "butler-db"

#: URI schemes served; ``postgresql+psycopg`` and ``mysql+pymysql`` match through their base.
SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb")

#: Python types the ``sql-table`` format stores as a real SQL table.
TABLE_TYPES = ("astropy.table.Table", "numpy.ndarray", "pandas.DataFrame")


@hookimpl
def butler_storages() -> list[StorageSpec]:
    return [
        StorageSpec(
            "database",
            SCHEMES,
            "butler_db._storage:DatabaseStorage",
            "SQL database via SQLAlchemy (SQLite, PostgreSQL, MariaDB): chunked blobs",
            DISTRIBUTION,
        )
    ]


@hookimpl
def butler_formats() -> list[FormatDescriptor]:
    return [
        FormatDescriptor(
            "sql-table",
            (),
            description="Tables as real, typed SQL tables (database storage only)",
            distribution=DISTRIBUTION,
            # write: mode, key, round_times; read: columns, where (the serializer refuses
            # one role's parameters in the other: butler_db._sqltable)
            parameters=frozenset({"mode", "key", "round_times", "columns", "where"}),
            serializer_args=frozenset(),
            # {"mode": "append"/"upsert"} merges into an existing table.
            merging_parameters=frozenset({"mode"}),
        )
    ]


@hookimpl
def butler_serializers() -> list[Serializer]:
    return [
        Serializer(
            t,
            "database",
            "sql-table",
            "butler_db._sqltable:write",
            "butler_db._sqltable:read",
            distribution=DISTRIBUTION,
        )
        for t in TABLE_TYPES
    ]
