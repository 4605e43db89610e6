"""Blob stores (local folder, S3 through a real S3-compatible server) and migrations."""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex

from kerani.core import vocabulary
from kerani.core.errors import BadInputError, ConflictError, NotFoundError
from kerani.core.settings import BlobSettings, CoreSettings, Settings
from kerani.core.vocabulary import AnswerKind, AuditAction, PayKind, Role
from kerani.people.workers import add_person
from kerani.storage import schema
from kerani.storage.blobs import BlobStore, LocalBlobStore, open_blob_store
from kerani.storage.database import _create_engine, migrate, table_names, utcnow
from kerani.storage.stores import Stores
from tests.conftest import free_port_for_tests
from tests.factories import seed_page


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
            " ('b1', 'receipt', 'test', 'ingested', :now)",
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


def test_rebuilding_sqlite_tables_keeps_the_indexes_as_declared(tmp_path: Path) -> None:
    # Migrations rebuild SQLite tables, and alembic recreates their indexes from reflection,
    # which drops `priority DESC` of the claim order; compare_metadata does not see that.
    engine = _create_engine(f"sqlite:///{tmp_path / 'k.db'}")
    migrate(engine)
    with engine.connect() as conn:
        created = dict(
            conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            ).all()
        )
    engine.dispose()
    declared = {
        index.name: str(CreateIndex(index).compile(dialect=sqlite.dialect())).strip()
        for table in schema.metadata.sorted_tables
        for index in table.indexes
    }
    assert created == declared


def _vocabulary_checks() -> list[tuple[sa.Table, str, set[str]]]:
    """Each column of schema.py that holds a vocabulary: (table, column, its values)."""
    return [
        (table, c.info["column"], {str(m) for m in c.info["vocabulary"]})
        for table in schema.metadata.sorted_tables
        for c in table.constraints
        if isinstance(c, sa.CheckConstraint) and "vocabulary" in c.info
    ]


def _a_row_in_every_table(stores: Stores) -> None:
    """A worker, a batch with a scan and a routed page whose field has a task, answered and
    paid, a practice answer, an upload to the batch and a confirmed rate."""
    seed_page(stores, [("city", "text", "KLANG", 40.0)])
    add_person(stores.db, "ana", Role.WORKER)
    with stores.db.begin() as conn:
        task_id = conn.execute(sa.select(schema.tasks.c.id)).scalar_one()
        worker_id = conn.execute(sa.select(schema.workers.c.id)).scalar_one()
        answer_id = conn.execute(
            sa.insert(schema.answers)
            .values(
                task_id=task_id,
                worker_id=worker_id,
                kind=AnswerKind.VALUE,
                value="KLANG",
                idempotency_key="k1",
                created_at=utcnow(),
            )
            .returning(schema.answers.c.id)
        ).scalar_one()
        conn.execute(
            sa.insert(schema.ledger).values(
                worker_id=worker_id,
                answer_id=answer_id,
                task_kind=PayKind.FIELD,
                amount_sen=5,
                created_at=utcnow(),
            )
        )
        conn.execute(
            sa.insert(schema.audit_log).values(
                at=utcnow(), worker_id=worker_id, action=AuditAction.ANSWER, task_id=task_id
            )
        )
        conn.execute(
            sa.insert(schema.practice_answers).values(
                worker_id=worker_id,
                round=1,
                item="amount-total-020",
                kind=AnswerKind.VALUE,
                value="54.50",
                correct=True,
                answered_at=utcnow(),
            )
        )
        batch_id = conn.execute(sa.select(schema.batches.c.id)).scalar_one()
        conn.execute(
            sa.insert(schema.uploads).values(
                id="u1",
                batch_id=batch_id,
                filename="a.png",
                size=1,
                received=0,
                status="receiving",
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
        conn.execute(
            sa.insert(schema.pay_rates).values(
                field_type="text", pay_kind=PayKind.FIELD, rate_sen=2, effective_from=utcnow()
            )
        )


def test_migrated_database_has_the_vocabulary_checks_schema_declares(stores: Stores) -> None:
    # compare_metadata leaves CHECK constraints out: compare their names here.
    inspector = sa.inspect(stores.db)
    declared = {f"ck_{t.name}_{column}" for t, column, _ in _vocabulary_checks()}
    migrated = {
        c["name"]
        for name in schema.metadata.tables
        for c in inspector.get_check_constraints(name)
        if c["name"] and c["name"].startswith("ck_")
    }
    assert declared == migrated
    assert "ck_tasks_status" in declared


def test_vocabulary_columns_take_their_members_and_refuse_anything_else(stores: Stores) -> None:
    # Each column is offered every value of every vocabulary and a misspelling: it must take
    # exactly its own (so the migration's value lists match the enums, both ways).
    _a_row_in_every_table(stores)
    vocabularies = [
        v for v in vars(vocabulary).values() if isinstance(v, type) and issubclass(v, StrEnum)
    ]
    offered = {str(m) for v in vocabularies for m in v} | {"bogus", "Open"}
    with stores.db.connect() as conn:
        for table, column, members in _vocabulary_checks():
            taken = set()
            # Values too long for the column (language is VARCHAR(5)) PostgreSQL refuses anyway.
            fitting = {v for v in offered if len(v) <= table.c[column].type.length}
            for value in sorted(fitting):
                with conn.begin():
                    savepoint = conn.begin_nested()
                    try:
                        conn.execute(table.update().values({column: value}))
                        taken.add(value)
                    except sa.exc.IntegrityError:
                        pass
                    savepoint.rollback()
            assert taken == members, f"{table.name}.{column}"


def test_a_task_with_an_unknown_status_is_refused(stores: Stores) -> None:
    with stores.db.begin() as conn, pytest.raises(sa.exc.IntegrityError, match="ck_tasks_status"):
        conn.execute(sa.insert(schema.tasks).values(id="t1", status="bogus", created_at=utcnow()))


def test_migrating_a_database_that_holds_values_outside_a_vocabulary_is_refused(
    database_url: str,
) -> None:
    engine = _create_engine(database_url)
    try:
        migrate(engine, "0009")
        now = utcnow()
        with engine.begin() as conn:
            for n, status in enumerate(("done", "done", "ingested")):
                conn.execute(
                    sa.text(
                        "INSERT INTO batches (id, template, source, status, created_at)"
                        " VALUES (:id, 'receipt', 'test', :status, :now)"
                    ),
                    {"id": f"b{n}", "status": status, "now": now},
                )
            conn.execute(
                sa.text(
                    "INSERT INTO workers (name, role, token_hash, created_at, trusted, cleared,"
                    " quarantined, language) VALUES ('ana', 'admin', 'h', :now, false, false,"
                    " false, 'en')"
                ),
                {"now": now},
            )
        with pytest.raises(ConflictError) as refused:
            migrate(engine)
        assert "batches.status holds 'done' (2 rows)" in str(refused.value)
        assert "workers.role holds 'admin' (1 row)" in str(refused.value)
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == "0009"
    finally:
        engine.dispose()
