"""What a database storage sends: SQLAlchemy's statements and the driver's own messages.

`Recorder` counts, on one engine, the statements SQLAlchemy executes
(``before_cursor_execute``), the pool checkouts and commits, and what the driver really
sends to the server, below SQLAlchemy (so that a BEGIN, ROLLBACK or ping the driver or the
pool adds on its own is counted too):

* SQLite: every statement SQLite runs (``sqlite3.Connection.set_trace_callback``);
* PostgreSQL: every round trip (libpq's protocol trace: one ``ReadyForQuery`` per round
  trip) and the text of each query;
* MariaDB: every command PyMySQL sends (``COM_QUERY`` text, ``COM_PING``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

__all__ = ["Recorder"]

_COM_PING = 14


class Recorder:
    """Record what ``engine`` sends from now on (its pool is emptied first: the driver
    hooks are installed on new connections)."""

    def __init__(self, engine: sa.Engine, tmp: str) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._tmp = tmp
        self._traces: list[str] = []
        self._pg: list[tuple[Any, str]] = []  # (psycopg connection, its trace file)
        self._marks: dict[str, int] = {}
        self.statements: list[str] = []
        self.checkouts = 0
        self.commits = 0
        self._wire: list[str] = []
        engine.dispose()
        event.listen(engine, "connect", self._connect)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "checkout", self._checkout)
        event.listen(engine, "commit", self._commit)

    def _statement(self, _c: Any, _cur: Any, statement: str, *_: Any) -> None:
        self.statements.append(" ".join(statement.split()))

    def _checkout(self, *_: Any) -> None:
        self.checkouts += 1

    def _commit(self, *_: Any) -> None:
        self.commits += 1

    def _connect(self, dbapi: Any, _record: Any) -> None:
        if self.dialect == "sqlite":
            dbapi.set_trace_callback(lambda s: self._wire.append(" ".join(s.split())))
        elif self.dialect == "postgresql":
            path = os.path.join(self._tmp, f"libpq-{len(self._traces)}.trace")
            self._traces.append(path)
            self._pg.append((dbapi, path))
            self._trace(dbapi, path)
        else:
            send = dbapi._execute_command

            def counted(command: int, sql: Any) -> Any:
                text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
                self._wire.append("PING" if command == _COM_PING else " ".join(text.split()))
                return send(command, sql)

            dbapi._execute_command = counted

    @staticmethod
    def _trace(dbapi: Any, path: str) -> None:
        import psycopg

        with open(path, "a") as handle:  # libpq duplicates nothing: keep the fd open
            fd = os.dup(handle.fileno())
        dbapi.pgconn.trace(fd)
        dbapi.pgconn.set_trace_flags(
            psycopg.pq.Trace.SUPPRESS_TIMESTAMPS | psycopg.pq.Trace.REGRESS_MODE
        )

    def _flush(self) -> None:
        """libpq buffers its trace: stop and restart it (PQuntrace flushes)."""
        for dbapi, path in self._pg:
            if not dbapi.closed:
                dbapi.pgconn.untrace()
                self._trace(dbapi, path)

    def reset(self) -> None:
        """Forget what was recorded so far."""
        self._flush()
        self.statements.clear()
        self._wire.clear()
        self.checkouts = self.commits = 0
        self._marks = {p: os.path.getsize(p) for p in self._traces}

    @property
    def wire(self) -> list[str]:
        """What the driver sent since `reset`: statements (SQLite), queries (PostgreSQL: one
        entry per round trip), commands (MariaDB: ``PING`` for a ping)."""
        if self.dialect != "postgresql":
            return list(self._wire)
        self._flush()
        sent: list[str] = []
        for path in self._traces:
            with open(path) as f:
                f.seek(self._marks.get(path, 0))
                text = f.read()
            query = ""
            # one message per "F\t" or "B\t" line; a statement's own newlines stay in it
            for message in re.split(r"\n(?=[FB]\t)", text):
                parts = message.split("\t", 3)
                if len(parts) < 3:
                    continue
                direction, kind = parts[0], parts[2].strip()
                body = parts[3] if len(parts) > 3 else ""
                if direction == "F" and kind == "Query" and not query:
                    query = body.strip().strip('"')
                elif direction == "F" and kind == "Parse" and not query:
                    found = re.match(r'\s*"[^"]*" "(.*)" \d+', body, re.DOTALL)
                    query = found.group(1) if found else body
                elif direction == "B" and kind == "ReadyForQuery":
                    sent.append(" ".join(query.split()))
                    query = ""
        return sent
