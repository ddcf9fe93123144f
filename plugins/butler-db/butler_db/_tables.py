"""SQL tables of ``sql-table`` datasets: naming, type mapping, bulk writes and selections.

Every identifier goes through SQLAlchemy constructs (`sqlalchemy.Table`, `sqlalchemy.Column`)
or psycopg's `~psycopg.sql.Identifier` and is quoted by the dialect; values are bound
parameters, and only plain scalars are accepted as values. Table names are derived from the
dataset key (see `butler_db._schema.new_table_name`). Column names are the user's when they
are plain identifiers, else safe names of butler's own (``col_3``), recorded in the dataset
metadata: any string is a column name on every backend.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from butler import FormatError

from . import _times
from ._columns import Col

__all__ = [
    "check_spec",
    "define_table",
    "delete_keys",
    "insert_rows",
    "light_table",
    "physical_names",
    "select_columns",
    "where_clause",
]

# -- definitions ---------------------------------------------------------------------------

#: Hidden column keeping rows in insertion order (an auto-increment primary key).
ROW_COLUMN = "_butler_row"

#: Rows per bulk-insert batch.
BATCH_ROWS = 50_000

#: User column names used as they are for the SQL column: a plain identifier, short enough
#: for every backend (MariaDB: 64 characters), no quoting surprises (``%`` for pyformat).
_PLAIN_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,59}")


def physical_names(names: list[str]) -> list[str]:
    """The SQL column name of each user column name (unique ignoring case, never the
    hidden row column): the name itself when plain, else ``col_<position>``."""
    used = {ROW_COLUMN.lower()}
    out: list[str | None] = [None] * len(names)
    for i, name in enumerate(names):
        if _PLAIN_COLUMN.fullmatch(name) and name.lower() not in used:
            out[i] = name
            used.add(name.lower())
    for i, given in enumerate(out):
        if given is None:
            candidate = f"col_{i}"
            while candidate.lower() in used:
                candidate = f"_{candidate}"
            out[i] = candidate
            used.add(candidate.lower())
    return [n for n in out if n is not None]


#: numpy dtype kinds each column kind may declare.
_DTYPE_KINDS = {"bool": "b", "int": "iu", "float": "f", "str": "U", "bytes": "S", "datetime": "M"}


def check_spec(spec: Any) -> dict[str, Any]:
    """A column description read from the dataset metadata, checked (it is untrusted).

    Raises
    ------
    FormatError
        If it is not a column description butler-db wrote.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise FormatError(f"the stored column description {spec!r:.200} has no name")
    name, kind = spec["name"], spec.get("kind")
    column = spec.get("column", name)  # datasets written before column mapping: the name
    if not isinstance(column, str) or not 0 < len(column) <= 64 or column == ROW_COLUMN:
        raise FormatError(f"column {name!r}: stored SQL column name {column!r:.100} is invalid")
    if kind not in _DTYPE_KINDS:
        raise FormatError(f"column {name!r}: unknown stored kind {kind!r:.100}")
    try:
        dtype = np.dtype(spec.get("dtype"))
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in _DTYPE_KINDS[kind] or dtype.names or dtype.shape:
        raise FormatError(
            f"column {name!r}: stored dtype {spec.get('dtype')!r:.100} is not a {kind} dtype"
        )
    if kind == "datetime" and "time_scale" in spec:
        try:
            _times.check_time_info(name, dict(spec))
        except ValueError as e:
            raise FormatError(str(e)) from None
    return dict(spec)


def column_of(spec: Mapping[str, Any]) -> str:
    """The SQL column name of a (checked) column description."""
    return str(spec.get("column", spec["name"]))


def sql_type(col: Col) -> sa.types.TypeEngine[Any]:
    """The SQL type of a column: the narrowest integer, REAL/DOUBLE, VARCHAR/TEXT, BLOB,
    TIMESTAMP (``DATETIME(6)`` on MariaDB: microseconds, not its default whole seconds)."""
    if col.kind == "datetime":
        from sqlalchemy.dialects import mysql

        return sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
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


#: Longest column comment (MariaDB's limit is 1,024 characters).
MAX_COMMENT = 1024

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def column_comment(col: Col) -> str | None:
    """What SQL tools show for a column: ``description [unit]``, the time scale of a
    ``Time`` column, and the user's name when the SQL column has another (``col_3``).

    Control characters become spaces (PostgreSQL refuses NUL); longer comments are cut to
    `MAX_COMMENT` characters, ending in ``...``. The SQL text is rendered by SQLAlchemy as an
    escaped literal.
    """
    parts = []
    if col.column and col.column != col.name:
        parts.append(f"{col.name}:")
    if col.info.get("description"):
        parts.append(str(col.info["description"]))
    if col.info.get("unit"):
        parts.append(f"[{col.info['unit']}]")
    if col.info.get("time_scale"):
        parts.append(f"(time scale {str(col.info['time_scale']).upper()})")
    if not parts:
        return None
    text = _CONTROL.sub(" ", " ".join(parts)).strip()
    return text if len(text) <= MAX_COMMENT else text[: MAX_COMMENT - 3] + "..."


def define_table(
    name: str, cols: list[Col], unique: list[str] | None = None, comment: str | None = None
) -> sa.Table:
    """A `sqlalchemy.Table` for new columns (plus the hidden row-order key), with column
    comments (`column_comment`) and a table ``comment`` where the backend keeps them."""
    row = sa.Column(
        ROW_COLUMN,
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )
    columns = [
        sa.Column(c.column or c.name, sql_type(c), nullable=True, comment=column_comment(c))
        for c in cols
    ]
    args: list[Any] = [row, *columns]
    if unique:
        by_name = {c.name: c.column or c.name for c in cols}
        args.append(sa.UniqueConstraint(*[by_name[u] for u in unique], name=f"{name}_key"))
    if comment is not None:
        comment = _CONTROL.sub(" ", comment)[: MAX_COMMENT - 3]
    return sa.Table(name, sa.MetaData(), *args, mysql_charset="utf8mb4", comment=comment)


def light_table(name: str, names: list[str]) -> sa.Table:
    """An untyped `sqlalchemy.Table` naming existing SQL columns (for selects and inserts)."""
    return sa.Table(name, sa.MetaData(), *[sa.Column(n) for n in [ROW_COLUMN, *names]])


# -- inserts -------------------------------------------------------------------------------


def _python_lists(cols: list[Col], start: int, stop: int, dialect: str) -> list[list[Any]]:
    """Per-column Python values of rows ``start:stop``, NULL (None) where masked."""
    lists = []
    for col in cols:
        values = col.values[start:stop]
        nulls = None if col.mask is None else np.flatnonzero(col.mask[start:stop])
        if col.kind == "datetime":
            assert col.stamps is not None
            lists.append(_times.sql_values(col.stamps[start:stop], dialect))  # NaT is None
            if nulls is not None:
                for i in nulls.tolist():
                    lists[-1][i] = None
            continue
        py = values.tolist()
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
    """Bulk-insert columns into ``table`` (COPY on PostgreSQL, DB-API executemany of
    tuples elsewhere)."""
    n = len(cols[0].values) if cols else 0
    names = [c.column or c.name for c in cols]
    dialect = conn.dialect.name
    if n == 0:
        return 0
    dbapi = conn.connection.dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    try:
        if dialect == "postgresql" and hasattr(cursor, "copy"):
            from psycopg import sql as psql

            # psycopg composes identifiers itself: SQLAlchemy's quoting doubles "%" for
            # pyformat parameters, which a parameterless COPY would keep literally.
            statement = psql.SQL("COPY {} ({}) FROM STDIN").format(
                psql.Identifier(table.name),
                psql.SQL(", ").join(psql.Identifier(c) for c in names),
            )
            with cursor.copy(statement) as copy:
                for start in range(0, n, BATCH_ROWS):
                    lists = _python_lists(cols, start, min(n, start + BATCH_ROWS), dialect)
                    for row in zip(*lists, strict=True):
                        copy.write_row(row)
            return n
        if dialect in ("mysql", "mariadb"):
            # PyMySQL rewrites an executemany of "INSERT ... VALUES (%s, ...)" into
            # multi-row INSERTs: tuples straight to the driver, as for SQLite below
            # (SQLAlchemy's per-row dicts cost as much again). The dialect's quoting
            # doubles "%", which PyMySQL's interpolation turns back into one.
            quote = conn.dialect.identifier_preparer.quote
            insert = (
                f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in names)}) "
                f"VALUES ({', '.join(['%s'] * len(names))})"
            )
            for start in range(0, n, BATCH_ROWS):
                lists = _python_lists(cols, start, min(n, start + BATCH_ROWS), dialect)
                cursor.executemany(insert, list(zip(*lists, strict=True)))
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
    target = [table.c[by_name[k].column or k] for k in key]
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


#: What a ``where`` value may be: plain scalars, always sent as bound parameters. Anything
#: else (a SQLAlchemy ``text()``, any ``ClauseElement`` or object with
#: ``__clause_element__``) would be rendered into the SQL by SQLAlchemy.
_SCALARS = (bool, int, float, str, bytes, datetime.datetime)


def _scalar(name: str, value: Any, what: str) -> Any:
    value = _plain(value)
    if value is not None and not isinstance(value, _SCALARS):
        raise FormatError(
            f"'where' {what} for column {name!r} must be a plain value (bool, int, float, "
            f"str, bytes or None), not a {type(value).__name__!r}: values are only ever sent "
            f"as bound parameters, never as SQL"
        )
    return value  # a plain scalar: SQLAlchemy binds it (coerced to the column's type)


def _stamps(name: str, value: Any, spec: Mapping[str, Any], dialect: str) -> Any:
    """``where`` values of a timestamp column as the driver takes them (tuple, list or one)."""
    info = dict(spec)
    try:
        if isinstance(value, tuple):
            return tuple(_times.where_value(name, v, info, dialect) for v in value)
        if isinstance(value, list | set | frozenset | np.ndarray):
            return [_times.where_value(name, v, info, dialect) for v in value]
        return _times.where_value(name, value, info, dialect)
    except (TypeError, ValueError) as e:
        raise FormatError(str(e)) from None


def where_clause(
    table: sa.Table, where: Any, specs: Mapping[str, Mapping[str, Any]], dialect: str
) -> list[Any]:
    """Conditions from ``{column: value | (low, high) | [values] | None}`` (bound parameters).

    ``(low, high)`` is inclusive; either end may be ``None`` (open). ``specs`` maps the
    user's column names to their checked descriptions; ``dialect`` decides how timestamps
    are sent.

    Raises
    ------
    FormatError
        For an unknown column or a value that is not a plain scalar (naming the column).
    """
    if not isinstance(where, Mapping):
        raise FormatError(
            f"'where' must be a mapping of column to value or range, not {where!r:.200}"
        )
    conditions: list[Any] = []
    for name, value in where.items():
        if not isinstance(name, str) or name not in specs:
            raise FormatError(f"'where' names unknown column {name!r}; the table has {list(specs)}")
        column = table.c[column_of(specs[name])]
        if specs[name]["kind"] == "datetime":
            value = _stamps(name, value, specs[name], dialect)
        if value is None:
            conditions.append(column.is_(None))
        elif isinstance(value, tuple):
            if len(value) != 2:
                raise FormatError(
                    f"the 'where' range for {name!r} must be (low, high), not {value!r:.200}"
                )
            low, high = (_scalar(name, v, "range end") for v in value)
            if low is not None:
                conditions.append(column >= low)
            if high is not None:
                conditions.append(column <= high)
        elif isinstance(value, list | set | frozenset) or (
            isinstance(value, np.ndarray) and value.ndim == 1
        ):
            items = [_scalar(name, v, "list item") for v in value]
            conditions.append(column.in_([v for v in items if v is not None]))
            if any(v is None for v in items):
                conditions[-1] = sa.or_(conditions[-1], column.is_(None))
        else:
            conditions.append(column == _scalar(name, value, "value"))
    return conditions


def select_columns(
    conn: sa.Connection,
    table: sa.Table,
    specs: list[dict[str, Any]],
    conditions: list[Any],
    check_size: Callable[[int], None],
) -> list[Col]:
    """Run the selection and build columns restored to their recorded dtypes.

    ``check_size(nbytes)`` is called with what the recorded dtypes make the rows occupy,
    before any of it is allocated (a tampered dtype may declare gigabytes per value).
    """
    query = sa.select(*[table.c[column_of(s)] for s in specs]).order_by(table.c[ROW_COLUMN])
    if conditions:
        query = query.where(*conditions)
    rows = conn.execute(query).all()
    n = len(rows)
    check_size(n * sum(np.dtype(s["dtype"]).itemsize for s in specs))
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in specs]
    return [_restore(spec, values, n) for spec, values in zip(specs, columns, strict=True)]


_FILL = {"bool": False, "int": 0, "float": np.nan, "str": "", "bytes": b"", "datetime": None}


def _restore(spec: dict[str, Any], values: tuple[Any, ...], n: int) -> Col:
    kind = spec["kind"]
    dtype = np.dtype(spec["dtype"])
    mask = np.fromiter((v is None for v in values), bool, count=n)
    has_null = bool(mask.any())
    if has_null:
        fill = _FILL[kind]
        values = tuple(fill if v is None else v for v in values)
    if kind == "datetime":
        try:
            arr = _times.restore(spec["name"], list(values), dtype)
        except ValueError as e:
            raise FormatError(str(e)) from None
    elif kind in ("str", "bytes"):
        arr = np.array(values, dtype=dtype.kind) if n else np.array([], dtype=dtype)
        if arr.dtype.itemsize < dtype.itemsize:
            arr = arr.astype(dtype)
    elif kind == "bool":
        arr = np.array(values, dtype=bool) if n else np.array([], dtype=dtype)
    else:
        arr = np.array(values, dtype=dtype) if n else np.array([], dtype=dtype)
    info = {k: v for k, v in spec.items() if k not in ("name", "column", "kind", "dtype", "masked")}
    # NULL in an unmasked float/timestamp column is NaN/NaT, not a mask
    keep_mask = has_null and (spec.get("masked") or kind not in ("float", "datetime"))
    return Col(
        spec["name"],
        kind,
        arr.dtype.str,
        arr,
        mask if keep_mask else (np.zeros(n, bool) if spec.get("masked") else None),
        info,
        column_of(spec),
    )
