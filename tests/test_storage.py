"""Blob stores (local folder, S3 through a real S3-compatible server) and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.settings import BlobSettings, CoreSettings, Settings
from kerani.storage import schema
from kerani.storage.blobs import BlobStore, LocalBlobStore, open_blob_store
from kerani.storage.database import _create_engine, migrate, table_names
from kerani.storage.stores import Stores
from tests.conftest import free_port_for_tests


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on loopback, with a bucket `kerani-test`."""
    from moto.server import ThreadedMotoServer

    port = free_port_for_tests()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket="kerani-test")
    yield url
    server.stop()


@pytest.fixture(params=["local", "s3"])
def blobs(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> BlobStore:
    if request.param == "local":
        url = str(tmp_path / "blobs")
        endpoint = None
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        url = f"s3://kerani-test/run-{tmp_path.name}"
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    settings = Settings(
        core=CoreSettings(data_dir=tmp_path), blobs=BlobSettings(url=url, s3_endpoint_url=endpoint)
    )
    return open_blob_store(settings)


def test_blob_round_trip(blobs: BlobStore) -> None:
    blobs.put("pages/abc/0001.png", b"\x89PNG one")
    blobs.put("pages/abc/0002.png", b"two")
    blobs.put("exports/x.csv", b"a,b\n")
    assert blobs.get("pages/abc/0001.png") == b"\x89PNG one"
    assert blobs.exists("exports/x.csv") and not blobs.exists("exports/y.csv")
    assert blobs.list("pages/") == ["pages/abc/0001.png", "pages/abc/0002.png"]
    blobs.put("exports/x.csv", b"replaced")
    assert blobs.get("exports/x.csv") == b"replaced"
    with pytest.raises(NotFoundError):
        blobs.get("pages/missing.png")


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "", "a\\b"])
def test_unsafe_keys_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(BadInputError, match="not a safe relative path"):
        blobs.put(key, b"x")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "b")
    store.put("k/v.bin", b"data")
    assert sorted(p.name for p in (tmp_path / "b" / "k").iterdir()) == ["v.bin"]


def test_migrations_create_every_table(stores: Stores) -> None:
    assert {
        "batches",
        "scans",
        "pages",
        "fields",
        "tasks",
        "answers",
        "workers",
        "records",
        "audit_log",
        "sessions",
        "alembic_version",
    } <= set(table_names(stores.db))


def test_migrations_build_the_schema_the_code_declares(stores: Stores) -> None:
    # Queries are written against storage.schema; the database is built by the migrations.
    # Any column, index or key one has and the other lacks shows up as a difference.
    with stores.db.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert differences == []


def test_migrating_a_sqlite_database_that_holds_paid_answers(tmp_path: Path) -> None:
    # Migrations that rebuild a table (SQLite's batch mode) must work on a database in use:
    # answers that the ledger points at, tasks that answers point at, and so on.
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = _create_engine(url)
    migrate(engine, "0005")
    now = "2026-11-01 08:00:00.000000"
    with engine.begin() as conn:
        for sql in (
            "INSERT INTO workers (id, name, role, token_hash, created_at, trusted, cleared,"
            " quarantined, language) VALUES (1, 'ana', 'worker', 'h', :now, 0, 0, 0, 'en')",
            "INSERT INTO batches (id, template, source, status, created_at) VALUES"
            " ('b1', 'receipt', 'test', 'routed', :now)",
            "INSERT INTO scans (id, batch_id, filename, size, status, created_at) VALUES"
            " (1, 'b1', 'a.png', 1, 'accepted', :now)",
            "INSERT INTO pages (id, batch_id, scan_id, source_sha256, page_index, template,"
            " image_key, width, height, status, created_at) VALUES (1, 'b1', 1, 'x', 0,"
            " 'receipt', 'k', 1, 1, 'routed', :now)",
            "INSERT INTO fields (id, page_id, name, kind, x0, y0, x1, y1, ocr_text,"
            " ocr_confidence, ocr_engine, snippet_key, status, answer_count, sensitivity)"
            " VALUES (1, 1, 'line_000', 'line', 0, 0, 1, 1, 'X', 1, 't', 's', 'settled', 2,"
            " 'personal')",
            "INSERT INTO fields (id, page_id, name, kind, x0, y0, x1, y1, ocr_text,"
            " ocr_confidence, ocr_engine, snippet_key, status, answer_count, sensitivity)"
            " VALUES (2, 1, 'line_001', 'line', 0, 1, 1, 2, 'Y', 1, 't', 's', 'in_review', 0,"
            " 'personal')",
            "INSERT INTO tasks (id, field_id, status, created_at, kind, priority, escalated,"
            " restricted) VALUES ('t1', 1, 'settled', :now, 'field', 0, 0, 0)",
            "INSERT INTO tasks (id, field_id, status, created_at, kind, priority, escalated,"
            " restricted) VALUES ('t2', 2, 'open', :now, 'field', 0, 0, 0)",
            "INSERT INTO answers (id, task_id, worker_id, kind, value, idempotency_key,"
            " created_at) VALUES (1, 't1', 1, 'value', 'X', 'k1', :now)",
            "INSERT INTO answers (id, task_id, worker_id, kind, value, idempotency_key,"
            " created_at) VALUES (2, 't2', 1, 'skip', '', 'k2', :now)",
            "INSERT INTO ledger (worker_id, answer_id, task_kind, amount_sen, batch_id,"
            " created_at) VALUES (1, 1, 'field', 5, 'b1', :now)",
        ):
            conn.exec_driver_sql(sql, {"now": now})
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM ledger").scalar_one() == 1
        assert conn.exec_driver_sql("SELECT count(*) FROM answers").scalar_one() == 2
        # The new per-worker count is filled in from the answers there were (skips aside).
        done = conn.exec_driver_sql("SELECT answers_done FROM workers WHERE id = 1")
        assert done.scalar_one() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    engine.dispose()
