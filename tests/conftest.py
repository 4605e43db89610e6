"""Shared fixtures: settings on a fresh database (SQLite and PostgreSQL), Prefect, samples."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from kerani.core.settings import (
    BlobSettings,
    CoreSettings,
    CrowdSettings,
    DatabaseSettings,
    Settings,
)
from kerani.storage.database import close_engine
from kerani.storage.stores import Stores, open_stores

REPO = Path(__file__).resolve().parents[1]
SROIE = REPO.parent / "shared" / "data" / "sroie"
POSTGRES_ADMIN_URL = os.environ.get(
    "KERANI_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI") == "true"


def _postgres_reachable() -> bool:
    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except sa.exc.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    """PostgreSQL at 127.0.0.1:5432 answers; in CI its absence is a failure, not a skip."""
    ok = _postgres_reachable()
    if not ok and IN_CI:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}")
    return ok


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new schema in the PostgreSQL `test` db."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kerani.db'}"
        yield url
        close_engine(url)
        return
    if not request.getfixturevalue("postgres_available"):
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432 (outside CI)")
    schema = f"kerani_test_{secrets.token_hex(6)}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_ADMIN_URL}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        close_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings on a fresh database and a local blob folder in tmp_path.

    First answers are shown pre-filled (no random blind share) so that what a page shows
    is known; tests of blindness set `blind_share` themselves.
    """
    return Settings(
        core=CoreSettings(data_dir=tmp_path / "data"),
        database=DatabaseSettings(url=database_url),
        blobs=BlobSettings(url=str(tmp_path / "blobs")),
        crowd=CrowdSettings(blind_share=0.0, blind_follows_ocr=False),
    )


@pytest.fixture
def stores(settings: Settings) -> Stores:
    """The database and blob store of `settings`, migrated."""
    return open_stores(settings)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The data folder of `kerani` commands run in the test (SQLite and blobs in it)."""
    data = tmp_path / "kerani-data"
    monkeypatch.setenv("KERANI_DATA_DIR", str(data))
    monkeypatch.delenv("KERANI_DB_URL", raising=False)
    monkeypatch.delenv("KERANI_BLOB_URL", raising=False)
    return data


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's temporary local server, shared by the tests that run flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def sroie_dir() -> Path:
    """The shared SROIE receipts (../shared/data/sroie)."""
    if not SROIE.is_dir():
        pytest.fail(f"the shared SROIE data is missing at {SROIE}")
    return SROIE


def free_port_for_tests() -> int:
    """A loopback port that is free right now."""
    from kerani.review_ui.server import free_port

    return free_port("127.0.0.1")
