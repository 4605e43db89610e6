"""Statements built once per process and dialect, then run with bound parameters.

Building a SQLAlchemy statement (coercing every column and clause) costs several times
the CPU of running a built one, and the hot paths of the queue run thousands of times a
second across threads that share one interpreter, so they reuse built statements.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

_built: dict[tuple[str, Callable[[str], Any]], Any] = {}
_lock = threading.Lock()


def prepared(conn: Connection, build: Callable[[str], Any]) -> Any:
    """The statement `build(dialect_name)` returns, built on first use for this dialect."""
    key = (conn.dialect.name, build)
    stmt = _built.get(key)
    if stmt is None:
        with _lock:
            stmt = _built.setdefault(key, build(conn.dialect.name))
    return stmt


def dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """The dialect's insert(), which has ON CONFLICT (both PostgreSQL and SQLite)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert
