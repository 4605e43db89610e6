"""Serving many workers: the web processes' settings and pools, and the hot path's reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from kerani.core.errors import ForbiddenError
from kerani.core.settings import CrowdSettings, Settings
from kerani.core.vocabulary import Role
from kerani.microtasks.leases import _gold_pick, claim_next, leased_task, view_leased_task
from kerani.people.workers import add_person, person_by_code
from kerani.storage import schema
from kerani.storage.database import (
    RESERVED_CONNECTIONS,
    close_engine,
    open_engine,
    pool_for_processes,
    reading,
)
from kerani.storage.stores import Stores
from tests.factories import seed_page


@pytest.mark.parametrize(("processes", "budget"), [(1, 60), (2, 60), (4, 60), (4, 500), (3, 7)])
def test_the_web_processes_together_stay_within_max_connections(
    processes: int, budget: int
) -> None:
    pool = pool_for_processes(processes, budget, max_connections=100)
    assert pool.most >= 1
    assert processes * pool.most <= max(processes, min(budget, 100 - RESERVED_CONNECTIONS))
    # A burst past the pool would open and close PostgreSQL backends: none overflow.
    assert pool.max_overflow == 0


def test_serve_hands_its_settings_down_through_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    from kerani.cli import _prepare_serving
    from kerani.review_ui.app import app_from_env

    monkeypatch.setenv("KERANI_DB_URL", database_url)
    for name in ("KERANI_DATA_DIR", "KERANI_SERVE_PROCESSES", "KERANI_SERVE_DB_CONNECTIONS"):
        # Recorded first, so that what _prepare_serving sets is undone after the test.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    settings = Settings.load(tmp_path / "data")
    each = _prepare_serving(settings, processes=3)
    close_engine(database_url)
    # What a serving process builds at its entry point, from the environment alone.
    app = app_from_env()
    built: Settings = app.state.settings
    assert built.core.data_dir == tmp_path / "data"
    assert built.database_url == database_url
    assert built.serve.processes == 3
    db = app.state.stores.db
    if db.dialect.name == "postgresql":
        assert each is not None and db.pool.size() == each
        assert 3 * each <= 100 - RESERVED_CONNECTIONS
    else:
        assert each is None
    close_engine(database_url)


def test_a_gold_claim_reads_only_the_gold_fields(stores: Stores) -> None:
    # Without an index of the gold fields, each gold claim scanned every field there is.
    seed_page(stores, [("nama", "text", "SITI", 50.0)])
    rules = CrowdSettings()
    with stores.db.connect() as conn:
        query = _gold_pick(1, rules, "text").compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
        if conn.dialect.name == "postgresql":
            # On a table this small a scan is cheapest: forbid it, so that the plan shows
            # whether an index can serve the query at all.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {query}"))
        else:
            plan = "\n".join(r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))
    assert "ix_fields_gold" in plan, plan


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_read_leaves_the_connection_its_prepared_statements(database_url: str) -> None:
    # psycopg forgets every prepared statement of a connection on ROLLBACK: a read that
    # ended with one made the next claim parse and plan its statements all over again.
    db = open_engine(database_url, pool_size=1)  # one connection: each call gets it back
    code = add_person(db, "Siti", Role.WORKER, proven=True, practised=True)
    worker = person_by_code(db, code).id
    claim_next(db, worker, CrowdSettings())  # prepares the claim's statements
    # Counted in transactions that commit: a COMMIT leaves prepared statements alone.
    with db.begin() as conn:
        before = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
    assert before
    person_by_code(db, code)
    with pytest.raises(Exception, match="not leased"):
        leased_task(db, "no-such-task", worker)
    with db.begin() as conn:
        after = conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar()
    assert after >= before  # none forgotten (the read may have prepared one more)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # SQLite's own locks
def test_a_read_on_sqlite_takes_no_write_lock(stores: Stores, database_url: str) -> None:
    path = database_url.split("///", 1)[1]
    with reading(stores.db) as conn:
        conn.execute(sa.text("SELECT count(*) FROM workers")).scalar()
        # Another writer may begin while the read is open (timeout 0: no waiting).
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
        finally:
            other.close()


def test_a_snippet_view_is_logged_only_for_the_lease_holder(stores: Stores) -> None:
    # On PostgreSQL the lease check and the audit row are one statement: a task that is
    # not the worker's must write no view.
    seed_page(stores, [("nama", "text", "SITI", 50.0)])
    ana = person_by_code(
        stores.db, add_person(stores.db, "Ana", Role.WORKER, proven=True, practised=True)
    ).id
    eve = person_by_code(
        stores.db, add_person(stores.db, "Eve", Role.WORKER, proven=True, practised=True)
    ).id
    task = claim_next(stores.db, ana, CrowdSettings())
    assert task is not None
    assert view_leased_task(stores.db, task.task_id, ana) == leased_task(
        stores.db, task.task_id, ana
    )
    for who, task_id in ((eve, task.task_id), (ana, "no-such-task")):
        with pytest.raises(ForbiddenError):
            view_leased_task(stores.db, task_id, who)
    log = schema.audit_log
    with stores.db.connect() as conn:
        views = conn.execute(
            sa.select(log.c.worker_id, log.c.task_id, log.c.field_id).where(log.c.action == "view")
        ).all()
    assert [tuple(v) for v in views] == [(ana, task.task_id, task.field_id)]


def test_the_api_routes_take_no_trip_through_the_thread_pool_for_the_caller() -> None:
    # A sync dependency runs in a thread of its own: a second trip through the pool, on
    # every request of every worker. The routes read their caller in their own thread.
    from fastapi.routing import APIRoute

    from kerani.review_ui import api, worker_pages

    busiest = {("GET", "/review"), ("POST", "/review/{task_id}"), ("GET", "/snippets/{task_id}")}
    routes = [r for r in api.router.routes if isinstance(r, APIRoute)] + [
        r
        for r in worker_pages.router.routes
        if isinstance(r, APIRoute) and {(m, r.path) for m in r.methods} & busiest
    ]
    assert len(routes) == 4 + len(busiest)
    for route in routes:
        assert [d.call for d in route.dependant.dependencies] == [], route.path


def test_an_answer_s_body_is_checked_after_its_caller(settings: Settings, stores: Stores) -> None:
    from fastapi.testclient import TestClient

    from kerani.review_ui.app import create_app

    client = TestClient(create_app(settings, stores))
    code = add_person(stores.db, "Siti", Role.WORKER, proven=True, practised=True)
    path = "/api/tasks/no-such-task/answer"
    # Anonymous: refused, whatever the body; the API's fields are not told.
    assert client.post(path, json={}).status_code == 403
    # Signed in: FastAPI's own 422 for a body that will not do, naming the field.
    bad = client.post(path, json={"kind": "value"}, headers={"Authorization": f"Bearer {code}"})
    assert bad.status_code == 422
    assert [e["loc"] for e in bad.json()["detail"]] == [["body", "idempotency_key"]]
    good = client.post(
        path, json={"idempotency_key": "k" * 12}, headers={"Authorization": f"Bearer {code}"}
    )
    assert good.status_code == 404  # a task that is not there
    staff = {"Authorization": f"Bearer {add_person(stores.db, 'olivia', 'operator')}"}
    described = client.get("/api/openapi.json", headers=staff).json()
    answer = described["paths"]["/api/tasks/{task_id}/answer"]["post"]
    schema = answer["requestBody"]["content"]["application/json"]["schema"]
    assert "idempotency_key" in schema["required"]


def test_the_review_form_is_checked_after_the_session(settings: Settings, stores: Stores) -> None:
    from fastapi.testclient import TestClient

    from kerani.review_ui.app import create_app
    from tests.test_review_routes import signed_in_worker

    client = TestClient(create_app(settings, stores), follow_redirects=False)
    anonymous = client.post("/review/no-such-task", data={})
    assert (anonymous.status_code, anonymous.headers["location"]) == (303, "/signin")
    signed_in_worker(client, stores)
    # An empty field counts as not sent, as FastAPI reads forms.
    bad = client.post("/review/no-such-task", data={"csrf": "", "value": "x"})
    assert bad.status_code == 422
    assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {
        ("body", "csrf"),
        ("body", "idempotency_key"),
    }


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_hot_statements_are_parsed_once_by_the_driver(stores: Stores) -> None:
    # psycopg keeps the parse of queries up to a length only: the claim's and the answer's
    # statements were parsed afresh on every execute.
    from psycopg import _queries

    from kerani.microtasks.answers import submit_answer
    from kerani.storage import statements

    db = stores.db
    seed_page(stores, [("nama", "text", "SITI", 50.0), ("alamat", "text", "JALAN 1", 50.0)])
    worker = person_by_code(db, add_person(db, "Siti", Role.WORKER, proven=True, practised=True)).id
    rules = CrowdSettings()
    for _ in range(2):
        task = claim_next(db, worker, rules)
        assert task is not None
        submit_answer(db, task.task_id, worker, "value", "x", task.task_id, rules)
    hot = [s.sql for s in statements._built.values() if isinstance(s, statements._DriverStatement)]
    longest = max(len(sql.encode()) for sql in hot)
    assert longest > 4096  # what the driver's own limit left out
    assert longest <= _queries.MAX_CACHED_STATEMENT_LENGTH
