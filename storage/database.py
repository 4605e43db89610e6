"""Database engines (SQLite with WAL by default, PostgreSQL at scale) and schema migrations."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, inspect

from kerani.core.errors import ConflictError

_MIGRATIONS = Path(__file__).parent / "migrations"
_engines: dict[str, Engine] = {}
_lock = threading.Lock()
# The key of the PostgreSQL advisory lock that migrations hold ("kerani" in ASCII): every
# process migrating the same database waits on it, whatever schema it migrates.
MIGRATION_LOCK_KEY = 0x6B6572616E69


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


# PostgreSQL keeps superuser_reserved_connections (3 by default) for its superusers, and a
# migration, a flow or an operator's psql needs a few more beside the web processes.
RESERVED_CONNECTIONS = 10


@dataclass(frozen=True)
class PoolSize:
    """How many connections one process's engine keeps (pool_size) and may add
    (max_overflow), and whether each is tested with a round trip before use (pre_ping)."""

    pool_size: int = 10
    max_overflow: int = 20
    pre_ping: bool = True

    @property
    def most(self) -> int:
        """The most connections the process may hold at once."""
        return self.pool_size + self.max_overflow


def pool_for_processes(processes: int, budget: int, max_connections: int | None = None) -> PoolSize:
    """Each of `processes` web processes' share of `budget` connections, kept within the
    server's `max_connections` (less RESERVED_CONNECTIONS) when it is known.

    Every connection of the share is pooled, none overflow: a connection opened per burst
    and closed after it costs a PostgreSQL backend's start-up each time. No pre-ping: a
    web process's connections are in constant use, and a ping is one more round trip
    before every statement group of every request. A connection that died meanwhile (a
    PostgreSQL restart) fails the one request that meets it; SQLAlchemy then sees the
    disconnect and replaces every connection of the pool (a page's outbox resends an
    answer under its idempotency key).
    """
    if max_connections is not None:
        budget = min(budget, max_connections - RESERVED_CONNECTIONS)
    share = max(1, budget // max(1, processes))
    return PoolSize(pool_size=share, max_overflow=0, pre_ping=False)


READ_ONLY = "kerani_read_only"


def _sqlite_begin(conn: Connection) -> None:
    # Take the write lock at BEGIN so two writers never deadlock on lock upgrades; a
    # connection that only reads (`reading`) takes none, and WAL lets it run beside a writer.
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def reading(db: Engine) -> Iterator[Connection]:
    """A connection for reads only, which costs no transaction round trips.

    PostgreSQL: autocommit, so no BEGIN before the first statement and no ROLLBACK after
    the last. That ROLLBACK cost more than its round trip: psycopg forgets every prepared
    statement of the connection on a rollback, so that the queue's hot statements, which
    storage.statements prepares once, were parsed and planned again after every read.
    SQLite: a deferred transaction, which takes no write lock. Never write through it.
    """
    with db.connect() as conn:
        if conn.dialect.name == "postgresql":
            yield conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            yield conn.execution_options(**{READ_ONLY: True})


@contextmanager
def one_statement(db: Engine) -> Iterator[Connection]:
    """A connection for a write that is one statement, committed as it returns.

    PostgreSQL: autocommit (a statement is atomic alone, and durable once it returns), so
    no BEGIN and COMMIT round trips around it. SQLite: a write transaction.
    """
    if db.dialect.name != "postgresql":
        with db.begin() as conn:
            yield conn
        return
    with db.connect() as conn:
        yield conn.execution_options(isolation_level="AUTOCOMMIT")


# The longest query whose placeholders psycopg parses once and keeps (its own is 4 KB).
QUERY_CACHE_BYTES = 32 * 1024


def _cache_long_queries() -> None:
    # psycopg parses a query's placeholders on every execute unless the query is at most
    # 4 KB, and the queue's hot statements (the claim, the answer, the settle) are longer:
    # each claim and submit parsed 5 KB of SQL again. A few such statements, all built
    # once per process (storage.statements), fit its cache of 128 queries.
    from psycopg import _queries

    limit = getattr(_queries, "MAX_CACHED_STATEMENT_LENGTH", None)
    if isinstance(limit, int) and limit < QUERY_CACHE_BYTES:
        _queries.MAX_CACHED_STATEMENT_LENGTH = QUERY_CACHE_BYTES


def _create_engine(url: str, pool: PoolSize | None = None) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)

        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        return engine
    _cache_long_queries()
    # Enough connections for a busy app process (the web processes ask for their share of
    # the server's connections, pool_for_processes); benchmarks with many clients ask more.
    pool = pool or PoolSize()
    return create_engine(
        url,
        pool_pre_ping=pool.pre_ping,
        pool_size=pool.pool_size,
        max_overflow=pool.max_overflow,
    )


def migration_lock_path(engine: Engine) -> Path | None:
    """The file a SQLite database's migrations lock (None: in memory, nothing to share)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + ".migrate.lock")


@contextmanager
def _sqlite_migration_lock(engine: Engine) -> Iterator[None]:
    # SQLite's BEGIN IMMEDIATE already queues writers, but only for busy_timeout: a lock
    # file makes a second process wait for the whole of a long migration, not fail.
    path = migration_lock_path(engine)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _lock_postgresql(conn: Connection) -> None:
    # Held to the end of the migration's transaction: a second process opening the same
    # fresh database waits here, then finds the schema at head (no duplicate alembic_version).
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")


def _at_head(engine: Engine, cfg: Config) -> bool:
    """Whether the database is at the newest migration already (read without a lock)."""
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads()) == heads


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to the newest migration (or to `revision`), one process at a time
    (an advisory lock on PostgreSQL, a lock file beside a SQLite database)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    if revision == "head" and _at_head(engine, cfg):
        return  # the usual case: no lock, so processes starting together do not queue
    with _sqlite_migration_lock(engine), engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            # A batch migration rebuilds a table: copy, DROP, rename. With foreign keys on,
            # SQLite refuses the DROP while other tables' rows point at it, so they are off
            # for the migration (SQLite only allows that outside a transaction) and checked
            # in full before it commits.
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    _lock_postgresql(conn)
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


def open_engine(url: str, pool_size: int | None = None, pool: PoolSize | None = None) -> Engine:
    """Return the process's engine for `url`, creating it and migrating the schema once.

    `pool` (or `pool_size` connections and 20 more in overflow) sizes a PostgreSQL engine's
    pool; the first call in a process decides. SQLite keeps SQLAlchemy's own pool.
    """
    if pool is None:
        pool = PoolSize() if pool_size is None else PoolSize(pool_size=pool_size)
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url, pool)
            migrate(engine)
            _engines[url] = engine
        return engine


def server_max_connections(engine: Engine) -> int | None:
    """PostgreSQL's max_connections (None for SQLite, which has no such limit)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("SHOW max_connections").scalar_one())


def table_names(engine: Engine) -> list[str]:
    """Names of the tables in the database (for checks and tests)."""
    return sorted(inspect(engine).get_table_names())


def close_engine(url: str) -> None:
    """Dispose of the process's engine for `url` (tests use a fresh database each time)."""
    with _lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()
