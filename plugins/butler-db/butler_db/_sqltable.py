"""The ``sql-table`` format: tables stored as real, typed SQL tables (database storage only).

Write ``parameters``
    ``mode``: ``"create"`` (default; fails if the dataset exists), ``"replace"`` (also
    chosen by ``overwrite=True``), ``"append"`` (add rows; creates the dataset if absent) or
    ``"upsert"`` (replace rows whose ``key`` columns match, add the others); ``key``: the
    key columns of an upsert; ``round_times``: round timestamps with a sub-microsecond part
    to the nearest microsecond (they are refused otherwise). Every write is one transaction.
Read ``parameters``
    ``columns``: names to read; ``where``: ``{column: value | (low, high) | [values] |
    None}`` rendered with bound parameters (ranges are inclusive, ``None`` ends are open);
    values are plain scalars only, never SQL.

A dataset's row in ``butler_datasets`` and its metadata are untrusted: the table it names
must be one butler-db made for that key (`DatabaseStorage.dataset_table`) and the column
descriptions are checked (`_tables.check_spec`) before anything is read or allocated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from butler import ButlerLocation, DatasetExistsError, FormatError, ParameterError

from . import _schema as schema
from ._columns import Col, from_columns, to_columns
from ._storage import DatabaseStorage
from ._tables import (
    check_spec,
    column_of,
    define_table,
    delete_keys,
    insert_rows,
    light_table,
    physical_names,
    select_columns,
    where_clause,
)

__all__ = ["read", "write"]

MODES = ("create", "replace", "append", "upsert")

#: Parameters of a write and of a read (the format declares their union, see `_plugin`).
WRITE_PARAMETERS = frozenset({"mode", "key", "round_times"})
READ_PARAMETERS = frozenset({"columns", "where"})


def _check_role(location: ButlerLocation, accepted: frozenset[str], action: str) -> None:
    """Refuse read parameters given to a write and write parameters given to a read: they
    would be ignored in silence."""
    wrong = sorted(set(location.parameters) - accepted)
    if wrong:
        raise ParameterError(
            f"{location.describe()}: parameter(s) {wrong} do not apply when you {action} a "
            f"sql-table dataset; {action} parameters: {sorted(accepted)}"
        )


def _storage(location: ButlerLocation) -> DatabaseStorage:
    storage = location.storage
    if not isinstance(storage, DatabaseStorage):
        raise location.format_error(
            f"the sql-table format needs the 'database' storage, not {storage.type_name!r}"
        )
    return storage


def write(obj: Any, location: ButlerLocation, **_: Any) -> None:
    """Store ``obj`` as a SQL table (see the module docstring for ``parameters``)."""
    storage = _storage(location)
    _check_role(location, WRITE_PARAMETERS, "write")
    params = location.parameters
    mode = params.get("mode", "replace" if location.overwrite else "create")
    if mode not in MODES:
        raise location.format_error(f"unknown sql-table write mode {mode!r}; use one of {MODES}")
    key_columns = params.get("key")
    if isinstance(key_columns, str):
        key_columns = [key_columns]
    round_times = params.get("round_times", False)
    if not isinstance(round_times, bool):
        raise ParameterError(f"'round_times' must be True or False, not {round_times!r:.100}")
    try:
        cols, table_meta = to_columns(obj, round_times)
    except TypeError as e:
        raise location.format_error(str(e)) from None
    names = [c.name for c in cols]
    if not cols:
        raise location.format_error("a table without columns cannot be stored")
    if len(set(names)) != len(names):
        raise location.format_error(f"column names {names} are not unique")
    for col, column in zip(cols, physical_names(names), strict=True):
        col.column = column
    if mode == "upsert":
        if not key_columns or not all(isinstance(k, str) for k in key_columns):
            raise location.format_error("mode 'upsert' needs parameters={'key': [column, ...]}")
        missing = [k for k in key_columns if k not in names]
        if missing:
            raise location.format_error(f"upsert key columns {missing} are not in {names}")
    elif key_columns is not None:
        raise location.format_error("'key' is only meaningful with mode 'upsert'")
    meta: dict[str, Any] = location.write_metadata()
    with storage.creating():
        for _attempt in range(3):
            if mode in ("append", "upsert") and _merge(storage, location, cols, mode, key_columns):
                return
            try:
                _create(storage, location, cols, table_meta, meta, mode, key_columns)
                return
            except DatasetExistsError:
                if mode not in ("append", "upsert"):
                    raise
                # another writer created it meanwhile: merge into theirs
    raise location.format_error("could not write: the dataset keeps being recreated")


def _table_metadata(
    cols: list[Col], table_meta: Mapping[str, Any], key: list[str] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"columns": [c.describe() for c in cols], **table_meta}
    if key:
        out["key"] = list(key)
    return out


def _create(
    storage: DatabaseStorage,
    location: ButlerLocation,
    cols: list[Col],
    table_meta: Mapping[str, Any],
    meta: dict[str, Any],
    mode: str,
    key: list[str] | None,
) -> None:
    name = schema.new_table_name(location.key)
    comment = f"butler dataset {location.dataset_type} {location.data_id} ({location.key})"
    table = define_table(name, cols, key if mode == "upsert" else None, comment)
    if key:
        cols = _dedupe(cols, key)
    meta = dict(meta, table=_table_metadata(cols, table_meta, key))
    created = False
    try:
        with storage._write_transaction("write", location.key) as conn:
            table.create(conn)
            created = True
            n = insert_rows(conn, table, cols)
            meta["size"] = n
            values = {"blob_id": None, "chunk_size": None, "table_name": name}
            storage.commit_dataset(conn, location.key, meta, values, overwrite=mode == "replace")
    except BaseException:
        if created and storage.backend in ("mysql", "mariadb"):  # DDL is not transactional
            with storage.engine.connect() as conn:
                schema.drop_table_now(conn, name)
        raise


def _merge(
    storage: DatabaseStorage,
    location: ButlerLocation,
    cols: list[Col],
    mode: str,
    key: list[str] | None,
) -> bool:
    """Append or upsert into an existing dataset; False if there is none."""
    from ._storage import _dataset_values, _row_metadata

    with storage._write_transaction("write", location.key) as conn:
        row = storage._row(conn, location.key, lock=True)
        if row is None:
            return False
        table_name = storage.dataset_table(location.key, row)
        if table_name is None:
            raise location.format_error(
                f"holds {row.format!r} bytes, not a SQL table; cannot {mode} rows to it"
            )
        stored = _row_metadata(row, storage.uri(location.key))
        size = stored["size"]
        info = _table_info(location, stored)
        specs = {s["name"]: s for s in info["columns"]}
        incoming = {c.name: c for c in cols}
        if set(specs) != set(incoming):
            raise location.format_error(
                f"cannot {mode} columns {sorted(incoming)} to a table with columns {sorted(specs)}"
            )
        for name, spec in specs.items():
            if spec["kind"] != incoming[name].kind:
                raise location.format_error(
                    f"column {name!r} holds {spec['kind']} values; cannot {mode} "
                    f"{incoming[name].kind} values"
                )
            scale = incoming[name].info.get("time_scale")
            if spec.get("time_scale") != scale:
                raise location.format_error(
                    f"column {name!r} holds times in scale {spec.get('time_scale')!r}; cannot "
                    f"{mode} times in scale {scale!r} (convert them first)"
                )
        for spec in info["columns"]:
            incoming[spec["name"]].column = column_of(spec)
        cols = [incoming[s["name"]] for s in info["columns"]]
        table = light_table(table_name, [c.column for c in cols])
        if mode == "upsert":
            assert key is not None
            cols = _dedupe(cols, key)
            before = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            delete_keys(conn, table, cols, key)
            after = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            size -= before - after
        size += insert_rows(conn, table, cols)
        for spec in info["columns"]:
            col = incoming[spec["name"]]
            if col.mask is not None and col.mask.any():
                spec["masked"] = True
            wider = col.values.dtype.itemsize > np.dtype(spec["dtype"]).itemsize
            if col.kind in ("str", "bytes") and wider:
                spec["dtype"] = col.values.dtype.str
        new_meta = dict(stored, table=info, size=size)
        values = _dataset_values(location.key, new_meta)
        values.pop("created")
        conn.execute(
            schema.datasets.update().where(schema.datasets.c.id == row.id).values(**values)
        )
    return True


def _dedupe(cols: list[Col], key: list[str]) -> list[Col]:
    """Keep the last of rows sharing a key (an upsert batch may repeat keys)."""
    by_name = {c.name: c for c in cols}
    n = len(cols[0].values)
    keys = list(zip(*[by_name[k].values.tolist() for k in key], strict=True))
    last = {k: i for i, k in enumerate(keys)}
    if len(last) == n:
        return cols
    keep = np.array(sorted(last.values()))
    return [
        Col(
            c.name,
            c.kind,
            c.dtype,
            c.values[keep],
            None if c.mask is None else c.mask[keep],
            c.info,
            c.column,
            None if c.stamps is None else c.stamps[keep],
        )
        for c in cols
    ]


def _table_info(location: ButlerLocation, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``table`` entry of a dataset's metadata, its column descriptions checked."""
    info = meta.get("table")
    if not isinstance(info, Mapping) or not isinstance(info.get("columns"), list):
        raise location.format_error("the stored metadata has no column descriptions")
    try:
        columns = [check_spec(spec) for spec in info["columns"]]
    except FormatError as e:
        raise location.format_error(str(e)) from None
    names = [s["name"] for s in columns]
    physical = [column_of(s).lower() for s in columns]
    if len(set(names)) != len(names) or len(set(physical)) != len(physical):
        raise location.format_error(f"the stored column descriptions repeat names: {names}")
    return dict(info, columns=columns)


def read(location: ButlerLocation, **_: Any) -> Any:
    """Read the table (``columns`` and ``where`` select inside the database)."""
    storage = _storage(location)
    _check_role(location, READ_PARAMETERS, "read")
    cls = location.read_type()
    params = location.parameters
    wanted = params.get("columns")
    if isinstance(wanted, str):
        wanted = [wanted]
    if wanted is not None and not (
        isinstance(wanted, list | tuple) and all(isinstance(c, str) for c in wanted)
    ):
        raise location.format_error(f"'columns' must be a list of names, not {wanted!r:.200}")
    storage._require_schema(location.key)
    with storage._read("read", location.key) as conn, conn.begin():
        row = storage._require(conn, location.key)
        table_name = storage.dataset_table(location.key, row)
        if table_name is None:
            raise location.format_error(f"holds {row.format!r} bytes, not a SQL table")
        from ._storage import _row_metadata

        info = _table_info(location, _row_metadata(row, storage.uri(location.key)))
        by_name = {s["name"]: s for s in info["columns"]}
        specs = list(info["columns"])
        if wanted is not None:
            unknown = [c for c in wanted if c not in by_name]
            if unknown:
                raise location.format_error(
                    f"unknown columns {unknown}; the table has {list(by_name)}"
                )
            specs = [by_name[c] for c in wanted]
        table = light_table(table_name, [column_of(s) for s in info["columns"]])
        where = params.get("where")
        try:
            conditions = where_clause(table, where, by_name, conn.dialect.name) if where else []
        except FormatError as e:
            raise location.format_error(str(e)) from None
        cols = select_columns(
            conn,
            table,
            specs,
            conditions,
            lambda nbytes: location.check_read_size(nbytes, "the table's recorded dtypes"),
        )
    meta = {k: v for k, v in info.items() if k != "columns"}
    if wanted is not None and meta.get("index"):
        meta = {k: v for k, v in meta.items() if k not in ("index", "index_names")}
    return from_columns(cls, cols, meta)
