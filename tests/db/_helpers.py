"""Helpers shared by the butler-db tests (worker functions must be importable for spawn)."""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa

from butler import Butler, DatasetExistsError


def raw_engine(root: str) -> sa.Engine:
    """A plain engine on a repository's database (the storage's own URL normalisation)."""
    from butler_db._engine import normalise_url

    return sa.create_engine(normalise_url(root), poolclass=sa.pool.NullPool)


def count_rows(root: str, table: str) -> int:
    engine = raw_engine(root)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()
            )
    finally:
        engine.dispose()


def table_names(root: str) -> list[str]:
    engine = raw_engine(root)
    try:
        with engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def write_many(root: str, worker: int, count: int) -> list[int]:
    """Put ``count`` datasets with distinct data IDs from one process."""
    done = []
    with Butler(root) as b:
        for i in range(count):
            visit = worker * 1000 + i
            b.put({"worker": worker, "i": i, "pad": "x" * 5000}, "cfg", visit=visit)
            done.append(visit)
    return done


def race_create(root: str, worker: int, start_at: float) -> str:
    """Try to create the same dataset as the other racers; report who won."""
    with Butler(root) as b:
        payload = bytes([worker]) * (3 * 1024 * 1024)
        while time.time() < start_at:
            time.sleep(0.001)
        try:
            b.put({"worker": worker, "blob": payload.hex()[:100]}, "cfg", visit=1)
        except DatasetExistsError as e:
            return f"exists: {e}"
        return f"won {worker}"


def slow_put(root: str, ready_path: str) -> None:
    """Start a put that streams chunks, signal, then hang (the parent SIGKILLs us)."""
    with Butler(root) as b:
        location = b.location("blob", visit=7)
        with location.open_write() as f:
            for _ in range(4):
                f.write(b"\x01" * (1024 * 1024))
            with open(ready_path, "w") as flag:
                flag.write(str(os.getpid()))
            time.sleep(120)


def any_value(x: Any) -> Any:
    return x
