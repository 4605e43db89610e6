"""Database engines (SQLite with WAL by default, PostgreSQL at scale) and schema migrations."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect

from kerani.core.errors import ConflictError

_MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def utcnow() -> datetime:
    """Now, timezone-aware, in UTC; every timestamp in the database is one of these."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive: read them as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout waits for it instead of failing.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit is on disk when it returns, so an acknowledged answer or scan survives
    # a power cut (NORMAL in WAL mode may lose the last commits). It costs one more fsync
    # per commit, of the WAL file; PostgreSQL at scale makes the same promise by default.
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _create_engine(url: str, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        # Take the write lock at BEGIN so two writers never deadlock on lock upgrades.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    # Enough connections for a busy app process; benchmarks with many clients ask for more.
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=20)


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to the newest migration (or to `revision`)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table: copy, DROP, rename. With foreign keys on,
            # SQLite refuses the DROP while other tables' rows point at it, so they are off
            # for the migration (SQLite only allows that outside a transaction) and checked
            # in full before it commits.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise ConflictError(
                            f"migrating the database left {len(broken)} rows whose "
                            f"foreign keys point nowhere, first: {tuple(broken[0])}"
                        )
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def open_engine(url: str, pool_size: int = 10) -> Engine:
    """Return the process's engine for `url`, creating it and migrating the schema once."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url, pool_size)
            migrate(engine)
            _engines[url] = engine
        return engine


def table_names(engine: Engine) -> list[str]:
    """Names of the tables in the database (for checks and tests)."""
    return sorted(inspect(engine).get_table_names())


def close_engine(url: str) -> None:
    """Dispose of the process's engine for `url` (tests use a fresh database each time)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()
