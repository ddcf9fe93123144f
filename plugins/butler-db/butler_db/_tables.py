"""SQL tables of ``sql-table`` datasets: naming, type mapping, bulk writes and selections.

Every identifier goes through SQLAlchemy constructs (`sqlalchemy.Table`, `sqlalchemy.Column`)
and is quoted by the dialect; values are bound parameters. Table names are derived from
the dataset key, sanitised to ``[a-z0-9_]`` and made unique with a random suffix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from ._columns import Col

__all__ = ["define_table", "delete_keys", "insert_rows", "light_table", "select_columns"]

# -- definitions ---------------------------------------------------------------------------

#: Hidden column keeping rows in insertion order (an auto-increment primary key).
ROW_COLUMN = "_butler_row"

#: Rows per bulk-insert batch.
BATCH_ROWS = 50_000


def sql_type(col: Col) -> sa.types.TypeEngine[Any]:
    """The SQL type of a column: the narrowest integer, REAL/DOUBLE, VARCHAR/TEXT, BLOB."""
    itemsize = np.dtype(col.dtype).itemsize
    if col.kind == "bool":
        return sa.Boolean(create_constraint=False)
    if col.kind == "int":
        signed = np.dtype(col.dtype).kind == "i"
        if itemsize == 1 or (itemsize == 2 and signed):
            return sa.SmallInteger()
        if itemsize == 2 or (itemsize == 4 and signed):
            return sa.Integer()
        return sa.BigInteger()
    if col.kind == "float":
        return sa.Float(precision=24) if itemsize <= 4 else sa.Double()
    if col.kind == "str":
        width = itemsize // 4
        return sa.Unicode(255) if width <= 255 else sa.UnicodeText()
    return sa.LargeBinary()


def define_table(name: str, cols: list[Col], unique: list[str] | None = None) -> sa.Table:
    """A `sqlalchemy.Table` for new columns (plus the hidden row-order key)."""
    row = sa.Column(
        ROW_COLUMN,
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    columns = [sa.Column(c.name, sql_type(c), nullable=True) for c in cols]
    args: list[Any] = [row, *columns]
    if unique:
        args.append(sa.UniqueConstraint(*unique, name=f"{name}_key"))
    return sa.Table(name, sa.MetaData(), *args, mysql_charset="utf8mb4")


def light_table(name: str, names: list[str]) -> sa.Table:
    """An untyped `sqlalchemy.Table` naming existing columns (for selects and inserts)."""
    return sa.Table(name, sa.MetaData(), *[sa.Column(n) for n in [ROW_COLUMN, *names]])


# -- inserts -------------------------------------------------------------------------------


def _python_lists(cols: list[Col], start: int, stop: int, dialect: str) -> list[list[Any]]:
    """Per-column Python values of rows ``start:stop``, NULL (None) where masked."""
    lists = []
    for col in cols:
        values = col.values[start:stop]
        py = values.tolist()
        nulls = None if col.mask is None else np.flatnonzero(col.mask[start:stop])
        if col.kind == "float" and dialect != "postgresql":
            # SQLite stores NaN as NULL anyway; MySQL/MariaDB reject NaN and infinities.
            nan = np.isnan(values)
            if dialect in ("mysql", "mariadb") and np.isinf(values).any():
                raise ValueError(
                    f"column {col.name!r} holds infinities, which {dialect} cannot store"
                )
            if nan.any():
                extra = np.flatnonzero(nan)
                nulls = extra if nulls is None else np.union1d(nulls, extra)
        if nulls is not None:
            for i in nulls.tolist():
                py[i] = None
        lists.append(py)
    return lists


def insert_rows(conn: sa.Connection, table: sa.Table, cols: list[Col]) -> int:
    """Bulk-insert columns into ``table`` (COPY on PostgreSQL, executemany elsewhere)."""
    n = len(cols[0].values) if cols else 0
    names = [c.name for c in cols]
    dialect = conn.dialect.name
    if n == 0:
        return 0
    prep = conn.dialect.identifier_preparer
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        if dialect == "postgresql" and hasattr(cursor, "copy"):
            sql = (
                f"COPY {prep.format_table(table)} ({', '.join(prep.quote(c) for c in names)}) "
                f"FROM STDIN"
            )
            with cursor.copy(sql) as copy:
                for start in range(0, n, BATCH_ROWS):
                    lists = _python_lists(cols, start, min(n, start + BATCH_ROWS), dialect)
                    for row in zip(*lists, strict=True):
                        copy.write_row(row)
            return n
        compiled = table.insert().compile(dialect=conn.dialect, column_keys=names)
        if compiled.positional:
            order = [names.index(k) for k in compiled.positiontup or []]
            for start in range(0, n, BATCH_ROWS):
                lists = _python_lists(cols, start, min(n, start + BATCH_ROWS), dialect)
                rows = list(zip(*[lists[i] for i in order], strict=True))
                cursor.executemany(compiled.string, rows)
        else:
            for start in range(0, n, BATCH_ROWS):
                lists = _python_lists(cols, start, min(n, start + BATCH_ROWS), dialect)
                dicts = [dict(zip(names, r, strict=True)) for r in zip(*lists, strict=True)]
                conn.execute(table.insert(), dicts)
    finally:
        cursor.close()
    return n


def delete_keys(conn: sa.Connection, table: sa.Table, cols: list[Col], key: list[str]) -> None:
    """Delete the rows whose ``key`` columns match any incoming row (for upserts)."""
    by_name = {c.name: c for c in cols}
    lists = _python_lists([by_name[k] for k in key], 0, len(cols[0].values), conn.dialect.name)
    tuples = sorted(set(zip(*lists, strict=True)), key=repr)
    target = [table.c[k] for k in key]
    for start in range(0, len(tuples), 500):
        batch = tuples[start : start + 500]
        if len(key) == 1:
            cond = target[0].in_([t[0] for t in batch])
        else:
            cond = sa.tuple_(*target).in_(batch)
        conn.execute(table.delete().where(cond))


# -- selections ----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) and getattr(value, "ndim", 1) == 0 else value


def where_clause(table: sa.Table, where: Mapping[str, Any]) -> list[Any]:
    """Conditions from ``{column: value | (low, high) | [values] | None}`` (bound parameters).

    ``(low, high)`` is inclusive; either end may be ``None`` (open).
    """
    if not isinstance(where, Mapping):
        raise TypeError(f"'where' must be a mapping of column to value or range, not {where!r}")
    conditions = []
    for name, value in where.items():
        if name not in table.c or name == ROW_COLUMN:
            raise KeyError(name)
        column = table.c[name]
        if value is None:
            conditions.append(column.is_(None))
        elif isinstance(value, tuple):
            if len(value) != 2:
                raise TypeError(f"the range for {name!r} must be (low, high), not {value!r}")
            low, high = (_plain(v) for v in value)
            if low is not None:
                conditions.append(column >= low)
            if high is not None:
                conditions.append(column <= high)
        elif isinstance(value, list | set | frozenset) or (
            hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1
        ):
            conditions.append(column.in_([_plain(v) for v in value]))
        else:
            conditions.append(column == _plain(value))
    return conditions


def select_columns(
    conn: sa.Connection, table: sa.Table, specs: list[dict[str, Any]], where: Any
) -> list[Col]:
    """Run the selection and build columns restored to their recorded dtypes."""
    query = sa.select(*[table.c[s["name"]] for s in specs]).order_by(table.c[ROW_COLUMN])
    if where:
        query = query.where(*where_clause(table, where))
    rows = conn.execute(query).all()
    n = len(rows)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in specs]
    return [_restore(spec, values, n) for spec, values in zip(specs, columns, strict=True)]


_FILL = {"bool": False, "int": 0, "float": np.nan, "str": "", "bytes": b""}


def _restore(spec: dict[str, Any], values: tuple[Any, ...], n: int) -> Col:
    kind = spec["kind"]
    dtype = np.dtype(spec["dtype"])
    mask = np.fromiter((v is None for v in values), bool, count=n)
    has_null = bool(mask.any())
    if has_null:
        fill = _FILL[kind]
        values = tuple(fill if v is None else v for v in values)
    if kind in ("str", "bytes"):
        arr = np.array(values, dtype=dtype.kind) if n else np.array([], dtype=dtype)
        if arr.dtype.itemsize < dtype.itemsize:
            arr = arr.astype(dtype)
    elif kind == "bool":
        arr = np.array(values, dtype=bool) if n else np.array([], dtype=dtype)
    else:
        arr = np.array(values, dtype=dtype) if n else np.array([], dtype=dtype)
    info = {k: v for k, v in spec.items() if k not in ("name", "kind", "dtype", "masked")}
    keep_mask = has_null and (spec.get("masked") or kind != "float")
    return Col(
        spec["name"],
        kind,
        arr.dtype.str,
        arr,
        mask if keep_mask else (np.zeros(n, bool) if spec.get("masked") else None),
        info,
    )
