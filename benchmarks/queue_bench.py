"""`kerani bench queue`: claim+submit throughput and latency with many concurrent workers.

Each database gets a fresh schema seeded with open tasks; 64 client threads (by default)
each claim a task and submit an answer until the queue is empty, first through Kerani's
own claim_next/submit_answer, then through a bare SQL claim-and-submit loop on the same
database (the floor). The answers equal the OCR guess, so each task settles on one answer.
"""

from __future__ import annotations

import os
import re
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, insert

from kerani.core.settings import CrowdSettings
from kerani.core.vocabulary import (
    AnswerKind,
    BatchStatus,
    FieldStatus,
    PageStatus,
    Role,
    ScanStatus,
    Sensitivity,
    TaskKind,
    TaskStatus,
)
from kerani.ingest.batches import record_scan
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.microtasks.tasks import new_task_id
from kerani.ocr.preocr import Reading, store_fields
from kerani.people.workers import add_person, person_by_code
from kerani.storage import schema
from kerani.storage.database import close_engine, open_engine, utcnow

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class QueueRun:
    """One timed run: operations (claim + submit), wall time, latencies in ms."""

    ops: int
    seconds: float
    latencies_ms: list[float]

    @property
    def ops_per_s(self) -> float:
        """Claim+submit pairs per second."""
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile in ms (q from 0 to 100)."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


def seed_tasks(db: Engine, pages: int, fields_per_page: int) -> None:
    """Bulk-create one batch of pages whose fields each wait in an open task."""
    now = utcnow()
    batch_id = secrets.token_hex(16)
    with db.begin() as conn:
        conn.execute(
            insert(schema.batches).values(
                id=batch_id,
                template="receipt",
                source="bench",
                status=BatchStatus.INGESTED,
                created_at=now,
            )
        )
    scan_id = record_scan(
        db,
        batch_id,
        "bench",
        size=0,
        sha256=None,
        blob_key=None,
        status=ScanStatus.ACCEPTED,
        error=None,
    )
    with db.begin() as conn:
        conn.execute(
            insert(schema.pages),
            [
                {
                    "batch_id": batch_id,
                    "scan_id": scan_id,
                    "source_sha256": f"{batch_id}{i:08d}",
                    "page_index": 0,
                    "template": "receipt",
                    "image_key": "none",
                    "width": 1,
                    "height": 1,
                    "status": PageStatus.ROUTED,
                    "created_at": now,
                }
                for i in range(pages)
            ],
        )
        page_ids = conn.execute(sa.select(schema.pages.c.id)).scalars().all()
        slots = [(pid, j) for pid in page_ids for j in range(fields_per_page)]
        field_ids = store_fields(
            conn,
            [
                {
                    "page_id": pid,
                    "name": f"line_{j:03d}",
                    "kind": "line",
                    "x0": 0,
                    "y0": j,
                    "x1": 1,
                    "y1": j + 1,
                    "snippet_key": "none",
                    "status": FieldStatus.IN_REVIEW,
                    "answer_count": 0,
                    "sensitivity": Sensitivity.PERSONAL,
                }
                for pid, j in slots
            ],
            [Reading("bench", f"TOTAL {j}", 50.0) for _pid, j in slots],
        )
        conn.execute(
            insert(schema.tasks),
            [
                {
                    "id": new_task_id(),
                    "field_id": fid,
                    "status": TaskStatus.OPEN,
                    "created_at": now,
                    "kind": TaskKind.FIELD,
                    "escalated": False,
                    "restricted": False,
                }
                for fid in field_ids
            ],
        )


def seen_on_snippet(field_name: str) -> str:
    """What a bench field's snippet shows: the text its OCR guess holds (seed_tasks), read
    by the worker even when the lease is blind."""
    return f"TOTAL {int(field_name.removeprefix('line_'))}"


def _run_clients(
    clients: int, work: Callable[[int], float | None], worker_ids: list[int]
) -> QueueRun:
    latencies: list[float] = []
    lock = threading.Lock()

    def loop(worker_id: int) -> None:
        mine = []
        while (ms := work(worker_id)) is not None:
            mine.append(ms)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=loop, args=(w,)) for w in worker_ids[:clients]]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return QueueRun(len(latencies), time.perf_counter() - start, latencies)


def kerani_run(db: Engine, clients: int, rules: CrowdSettings) -> QueueRun:
    """64 (or `clients`) workers claim and answer through Kerani's queue until it is empty."""
    workers = [
        # Past probation: every answer is a vote, and settles its field with the OCR.
        person_by_code(
            db, add_person(db, f"bench-{i}", Role.WORKER, proven=True, practised=True)
        ).id
        for i in range(clients)
    ]

    def one(worker_id: int) -> float | None:
        t0 = time.perf_counter()
        task = claim_next(db, worker_id, rules)
        if task is None:
            return None
        submit_answer(
            db,
            task.task_id,
            worker_id,
            AnswerKind.VALUE,
            seen_on_snippet(task.field_name),
            secrets.token_urlsafe(12),
            rules,
        )
        return (time.perf_counter() - t0) * 1000

    return _run_clients(clients, one, workers)


def floor_run(db: Engine, clients: int, lease_seconds: int) -> QueueRun:
    """The same work as bare SQL: claim with one UPDATE, submit with one INSERT and UPDATE."""
    # Two constant statements: PostgreSQL skips rows other clients hold, SQLite serialises.
    # The claim order is Kerani's (ix_tasks_claim_order): another order would sort every
    # open task on each claim and make the floor slower than bare SQL needs to be.
    postgres = db.dialect.name == "postgresql"
    claim = (
        "UPDATE tasks SET lease_worker_id = :w, lease_expires_at = :exp WHERE id = "
        "(SELECT id FROM tasks WHERE status = 'open' AND kind = 'field' "
        "AND lease_worker_id IS NULL ORDER BY priority DESC, created_at, id LIMIT 1 "
        "FOR UPDATE SKIP LOCKED) RETURNING id"
        if postgres
        else "UPDATE tasks SET lease_worker_id = :w, lease_expires_at = :exp WHERE id = "
        "(SELECT id FROM tasks WHERE status = 'open' AND kind = 'field' "
        "AND lease_worker_id IS NULL ORDER BY priority DESC, created_at, id LIMIT 1) "
        "RETURNING id"
    )
    answer = (
        "INSERT INTO answers (task_id, worker_id, kind, value, idempotency_key, created_at) "
        "VALUES (:t, :w, 'value', 'x', :k, :now)"
    )
    settle = "UPDATE tasks SET status = 'settled', lease_worker_id = NULL WHERE id = :t"
    if postgres:
        # Straight to the driver as prepared statements, like Kerani's hot path: the floor
        # pays no more per statement in Python than Kerani does.
        claim, answer, settle = (re.sub(r":(\w+)", r"%(\1)s", q) for q in (claim, answer, settle))
    workers = [
        person_by_code(db, add_person(db, f"floor-{i}", Role.WORKER, practised=True)).id
        for i in range(clients)
    ]

    def execute(conn: sa.Connection, sql: str, params: dict[str, Any]) -> Any:
        cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        if postgres:
            cursor.execute(sql, params, prepare=True)
        else:
            cursor.execute(sql, params)
        return cursor

    def one(worker_id: int) -> float | None:
        t0 = time.perf_counter()
        now = utcnow()
        with db.begin() as conn:
            row = execute(
                conn, claim, {"w": worker_id, "exp": now + timedelta(seconds=lease_seconds)}
            ).fetchone()
        if row is None:
            return None
        with db.begin() as conn:
            key = secrets.token_urlsafe(12)
            execute(conn, answer, {"t": row[0], "w": worker_id, "k": key, "now": now})
            execute(conn, settle, {"t": row[0]})
        return (time.perf_counter() - t0) * 1000

    return _run_clients(clients, one, workers)


class _Scratch:
    """A fresh database for one run: a SQLite file, or a new schema in PostgreSQL."""

    def __init__(self, kind: str, postgres_url: str, clients: int) -> None:
        self.kind, self.postgres_url = kind, postgres_url
        if kind == "sqlite":
            self.dir = tempfile.mkdtemp(prefix="kerani-bench-")
            self.url = f"sqlite:///{Path(self.dir) / 'bench.db'}"
        else:
            self.schema = f"kerani_bench_{secrets.token_hex(5)}"
            admin = sa.create_engine(postgres_url)
            with admin.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            admin.dispose()
            self.url = f"{postgres_url}?options=-csearch_path%3D{self.schema}"
        self.db = open_engine(self.url, pool_size=clients + 4)

    def close(self) -> None:
        close_engine(self.url)
        if self.kind == "postgresql":
            admin = sa.create_engine(self.postgres_url)
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            admin.dispose()


def _one_run(
    name: str, kind: str, clients: int, pages: int, fields_per_page: int, postgres_url: str
) -> QueueRun:
    # Every look blind: an answer agreeing with the OCR settles the field, one per task.
    rules = CrowdSettings(gold_every=0, blind_share=1.0, max_fields_per_document=fields_per_page)
    scratch = _Scratch(kind, postgres_url, clients)
    try:
        seed_tasks(scratch.db, pages, fields_per_page)
        if name == "kerani":
            return kerani_run(scratch.db, clients, rules)
        return floor_run(scratch.db, clients, rules.lease_seconds)
    finally:
        scratch.close()


def bench_database(
    kind: str, clients: int, pages: int, fields_per_page: int, postgres_url: str, rounds: int = 1
) -> dict[str, Any]:
    """Kerani's queue and the bare SQL floor on one kind of database, same work each.

    With several rounds, Kerani and the floor take turns, and the figures are the medians
    of the rounds: a shared machine's slow spell then weighs on both sides alike.
    """
    pairs = [
        tuple(
            _one_run(n, kind, clients, pages, fields_per_page, postgres_url)
            for n in ("kerani", "floor")
        )
        for _ in range(rounds)
    ]
    ratios = [floor.ops_per_s / ours.ops_per_s for ours, floor in pairs if ours.ops_per_s]
    ours = sorted((p[0] for p in pairs), key=lambda r: r.ops_per_s)[len(pairs) // 2]
    floor = sorted((p[1] for p in pairs), key=lambda r: r.ops_per_s)[len(pairs) // 2]
    return {
        "ops": ours.ops,
        "ops_per_s": round(ours.ops_per_s, 1),
        "p50_ms": round(ours.percentile(50), 2),
        "p99_ms": round(ours.percentile(99), 2),
        "floor_ops_per_s": round(floor.ops_per_s, 1),
        "floor_p99_ms": round(floor.percentile(99), 2),
        "floor_ratio": round(statistics.median(ratios), 2) if ratios else None,
        "floor_ratios": [round(r, 2) for r in ratios],
        "mean_ms": round(statistics.fmean(ours.latencies_ms), 2) if ours.latencies_ms else 0,
    }


def run(
    clients: int = 64,
    pages: int = 150,
    fields_per_page: int = 20,
    postgres_url: str | None = None,
    rounds: int = 3,
) -> dict[str, Any]:
    """Run the queue benchmark on SQLite and PostgreSQL; return the figures."""
    pg = postgres_url or os.environ.get("KERANI_BENCH_POSTGRES_URL", DEFAULT_POSTGRES)
    sqlite = bench_database("sqlite", clients, pages, fields_per_page, pg, rounds)
    postgres = bench_database("postgresql", clients, pages, fields_per_page, pg, rounds)
    return {
        "clients": clients,
        "tasks": pages * fields_per_page,
        "sqlite_ops_per_s": sqlite["ops_per_s"],
        "sqlite_p99_ms": sqlite["p99_ms"],
        "sqlite_floor_ratio": sqlite["floor_ratio"],
        "postgres_ops_per_s": postgres["ops_per_s"],
        "postgres_p50_ms": postgres["p50_ms"],
        "postgres_p99_ms": postgres["p99_ms"],
        "postgres_floor_ops_per_s": postgres["floor_ops_per_s"],
        "postgres_floor_ratio": postgres["floor_ratio"],
        "rounds": rounds,
        "sqlite": sqlite,
        "postgres": postgres,
    }
