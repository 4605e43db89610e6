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

_built: dict[tuple[Any, ...], Any] = {}
_lock = threading.Lock()


def prepared(conn: Connection, build: Callable[..., Any], *variant: Any) -> Any:
    """The statement `build(dialect_name, *variant)` returns, built once per dialect and variant.

    `variant` holds the few hashable choices that change a statement's shape (such as a
    worker's flags); values that change from call to call are bound parameters instead.
    """
    key = (conn.dialect.name, build, *variant)
    stmt = _built.get(key)
    if stmt is None:
        with _lock:
            stmt = _built.setdefault(key, build(conn.dialect.name, *variant))
    return stmt


def dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """The dialect's insert(), which has ON CONFLICT (both PostgreSQL and SQLite)."""
    return pg_insert if dialect == "postgresql" else sqlite_insert
