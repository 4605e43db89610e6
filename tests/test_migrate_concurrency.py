"""Migrations under concurrency: processes opening one fresh database at once all succeed.

Without a lock, two processes migrating a fresh PostgreSQL database both create the tables
and both insert into alembic_version (`UniqueViolation`). `migrate` holds an advisory lock
on PostgreSQL and a lock file beside a SQLite database for the whole upgrade. (On SQLite,
BEGIN IMMEDIATE already queues the writers, but only for busy_timeout; the lock file makes
a second process wait out a migration of any length.)
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from kerani.storage import database
from kerani.storage.database import (
    MIGRATION_LOCK_KEY,
    _create_engine,
    migrate,
    migration_lock_path,
)
from tests.conftest import REPO

OPEN = "import sys\nfrom kerani.storage.database import open_engine\nopen_engine(sys.argv[1])\n"


def _head(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_processes_migrating_a_fresh_database_at_once_all_succeed(database_url: str) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN, database_url],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    failed = []
    for p in processes:
        _, err = p.communicate(timeout=300)
        if p.returncode != 0:
            failed.append([line for line in err.splitlines() if "Error" in line][-1:])
    assert failed == []
    assert _head(database_url) == [_latest_revision()]


def _latest_revision() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(REPO / "storage" / "migrations"))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def _lock_is_free(url: str) -> bool:
    """Whether another process could take the migrations' lock right now."""
    engine = sa.create_engine(url)
    if engine.dialect.name == "postgresql":
        try:
            with engine.connect() as conn:
                took = conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY}
                ).scalar_one()
                if took:
                    conn.execute(
                        sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY}
                    )
                return bool(took)
        finally:
            engine.dispose()
    path = migration_lock_path(engine)
    engine.dispose()
    assert path is not None
    with path.open("a") as other:  # its own open file: flock locks it apart from migrate's
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(other, fcntl.LOCK_UN)
        return True


def test_the_migrations_lock_is_held_for_the_whole_upgrade(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    upgrade = database.command.upgrade

    def watched(cfg: Any, revision: str) -> None:
        seen.append(_lock_is_free(database_url))
        upgrade(cfg, revision)
        seen.append(_lock_is_free(database_url))

    monkeypatch.setattr(database.command, "upgrade", watched)
    engine = _create_engine(database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    assert seen == [False, False]
    assert _lock_is_free(database_url)  # and let go once the migration committed
