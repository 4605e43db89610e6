"""Nothing settled is ever without its record: the settle outbox, its publisher and flows.

The answer that settles a document's last field writes its outbox row in the same
transaction. In event mode a publisher sends the open rows to Prefect in one event per
window (one flow run for all of them); when Prefect cannot be reached, the app reassembles
them itself; rows whose run never came are taken back by the next publication or by the
reconcile flow, which says what it did in Prefect's logs and artifacts (no field values).
Batch ids are taken by any unique prefix, by the flows as by the CLI.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

import kerani.flows.triggers as triggers
import kerani.microtasks.settling as settling
from kerani.core.errors import BadInputError, NotFoundError
from kerani.core.settings import Settings, using_settings
from kerani.core.vocabulary import BatchStatus
from kerani.flows.digitise import finish_batch
from kerani.flows.documents import finish_settled
from kerani.flows.reassembly import reassemble_settled, reconcile_records
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.people.workers import add_person, person_by_code
from kerani.records.progress import resolve_batch_id
from kerani.review_ui.app import create_app
from kerani.storage import outbox, schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.conftest import REPO, free_port_for_tests
from tests.factories import batch_of, seed_page

# A doubtful city: two proven workers who agree settle it, and with it the document.
DOUBTFUL = [("city", "text", "SHAH ALAM", 40.0)]
VALUE = "SHAH ALAM"
# The OCR sure of it: settled at once, the document ready for reassembly.
SURE = [("city", "text", VALUE, 99.0)]
BIN = Path(sys.executable).parent


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No publication left waiting for its window once the test is over."""
    yield
    monkeypatch.setattr(triggers, "send_event", lambda *a, **k: None)
    triggers.flush_publications()


def workers(stores: Stores, count: int = 2) -> list[str]:
    """Access codes of proven workers, whose answers are votes."""
    return [
        add_person(stores.db, f"w{i}-{secrets.token_hex(3)}", "worker", proven=True, practised=True)
        for i in range(count)
    ]


def answer_over_http(client: TestClient, codes: list[str]) -> int:
    """Each worker answers every task offered through the API; return answers given."""
    given = 0
    for code in codes:
        auth = {"Authorization": f"Bearer {code}"}
        while (claim := client.post("/api/tasks/claim", headers=auth)).status_code == 200:
            body = {"kind": "value", "value": VALUE, "idempotency_key": secrets.token_hex(8)}
            task_id = claim.json()["task_id"]
            reply = client.post(f"/api/tasks/{task_id}/answer", json=body, headers=auth)
            assert reply.status_code == 200, reply.text
            given += 1
        assert claim.status_code == 204, claim.text
    return given


def records_of(stores: Stores, page_ids: list[int]) -> int:
    r = schema.records
    with stores.db.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(r).where(r.c.page_id.in_(page_ids))
            ).scalar_one()
        )


def outcomes(stores: Stores, page_ids: list[int]) -> list[str | None]:
    """The outcome of each outbox row of these pages (None: still open)."""
    o = schema.settle_outbox
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(o.c.outcome).where(o.c.page_id.in_(page_ids)).order_by(o.c.id)
        ).scalars()
        return list(rows)


def test_the_answer_that_settles_a_page_writes_its_outbox_row_in_its_transaction(
    settings: Settings, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = settings.crowd
    page_id = seed_page(stores, DOUBTFUL)
    ana, ben = (person_by_code(stores.db, c).id for c in workers(stores))

    def answer(worker: int) -> Any:
        task = claim_next(stores.db, worker, rules)
        assert task is not None
        return submit_answer(
            stores.db, task.task_id, worker, "value", VALUE, secrets.token_hex(8), rules
        )

    assert answer(ana).completed_page_id is None
    assert outbox.open_rows(stores.db) == []  # one vote settles nothing

    # The settle fails after the field is written: all of it is undone, field and row alike.
    def broken(*args: Any) -> None:
        raise RuntimeError("the process died here")

    monkeypatch.setattr(settling, "record_settled", broken)
    with pytest.raises(RuntimeError):
        answer(ben)
    with stores.db.connect() as conn:
        status = conn.execute(
            select(schema.fields.c.status).where(schema.fields.c.page_id == page_id)
        ).scalar_one()
    assert status == "in_review" and outbox.open_rows(stores.db) == []

    # Nobody calls a trigger here (the process could die right after the commit), yet the
    # settled document is in the outbox.
    monkeypatch.undo()
    assert answer(ben).completed_page_id == page_id
    assert [r.page_id for r in outbox.open_rows(stores.db)] == [page_id]
    assert records_of(stores, [page_id]) == 0


def test_with_prefect_unreachable_for_good_every_settled_document_gets_its_record(
    settings: Settings, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setenv(triggers.TRIGGER_ENV, "event")
    monkeypatch.setenv(triggers.WINDOW_ENV, "0")  # publish at each settle
    pages = [seed_page(stores, DOUBTFUL) for _ in range(3)]
    client = TestClient(create_app(settings, stores))
    dead = f"http://127.0.0.1:{free_port_for_tests()}/api"  # a Prefect server that is gone
    with temporary_settings({PREFECT_API_URL: dead}):
        assert answer_over_http(client, workers(stores)) == 6
    # Emitting an event would have "worked" (Prefect's events worker drops it later): the
    # publisher knew the server did not take it, and reassembled them itself.
    assert records_of(stores, pages) == 3
    assert outcomes(stores, pages) == ["assembled"] * 3
    assert outbox.backlog(stores.db) == (0, None)


def test_a_window_of_settles_travels_in_one_event(
    settings: Settings, stores: Stores, monkeypatch: pytest.MonkeyPatch, publisher: None
) -> None:
    sent: list[dict[str, Any]] = []

    def fake_send(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        sent.append({"event": event, "resource": resource, "payload": payload})

    monkeypatch.setattr(triggers, "send_event", fake_send)
    monkeypatch.setenv(triggers.TRIGGER_ENV, "event")
    monkeypatch.setenv(triggers.WINDOW_ENV, "60")
    pages = [seed_page(stores, DOUBTFUL) for _ in range(4)]
    client = TestClient(create_app(settings, stores))
    answer_over_http(client, workers(stores))
    assert sent == [] and records_of(stores, pages) == 0  # waiting for the window to close

    triggers.flush_publications()  # the window closes
    (event,) = sent
    assert event["event"] == triggers.SETTLED_EVENT and event["payload"]["pages"] == 4
    publication = event["payload"]["publication"]
    assert event["resource"]["prefect.resource.id"] == f"kerani.outbox.{publication}"
    carried = outbox.rows_of(stores.db, publication)
    assert sorted(r.page_id for r in carried) == pages

    # What the one triggered run does (reassemble-settled): all four, rows closed.
    done = finish_settled(stores.db, carried)
    assert [d.status for d in done] == ["assembled"] * 4
    assert records_of(stores, pages) == 4 and outbox.backlog(stores.db) == (0, None)
    triggers.flush_publications()
    assert len(sent) == 1  # nothing more to publish


def test_a_publication_whose_run_never_came_is_reassembled_by_the_next(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(
        triggers, "send_event", lambda e, r, payload: sent.append(payload["publication"])
    )
    lost = seed_page(stores, SURE)
    assert triggers.document_settled(stores.db, lost, mode="event", window=0) == "event"
    # Prefect took the event, but no worker ever ran it.
    o = schema.settle_outbox
    with stores.db.begin() as conn:
        conn.execute(o.update().values(published_at=utcnow() - timedelta(minutes=10)))
    fresh = seed_page(stores, SURE)
    assert triggers.document_settled(stores.db, fresh, mode="event", window=0) == "event"
    assert records_of(stores, [lost]) == 1 and outcomes(stores, [lost]) == ["assembled"]
    assert records_of(stores, [fresh]) == 0 and outcomes(stores, [fresh]) == [None]
    assert [r.page_id for r in outbox.rows_of(stores.db, sent[-1])] == [fresh]


def test_publishers_at_once_never_take_one_row_twice(stores: Stores) -> None:
    pages = [seed_page(stores, SURE) for _ in range(3)]
    with stores.db.begin() as conn:
        for i in range(60):
            outbox.record_settled(conn, pages[i % 3])
    taken: list[list[int]] = []
    start = threading.Barrier(4)

    def publish() -> None:
        start.wait()
        for _ in range(5):
            rows = outbox.take(stores.db, outbox.new_publication("event"), unpublished=True)
            taken.append([r.id for r in rows])

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [row for rows in taken for row in rows]
    assert len(every) == 60 and len(set(every)) == 60


def test_batch_ids_by_any_unique_prefix_else_one_clear_line(stores: Stores) -> None:
    now = utcnow()
    with stores.db.begin() as conn:
        for batch_id in ("ab12" + "0" * 28, "ab13" + "0" * 28):
            conn.execute(
                insert(schema.batches).values(
                    id=batch_id,
                    template="bantuan_form",
                    source="test",
                    status=BatchStatus.INGESTED,
                    created_at=now,
                )
            )
    full = "ab12" + "0" * 28
    for prefix in (full, full[:12], "AB12", " ab12 "):  # as `kerani status` prints, or typed
        assert resolve_batch_id(stores.db, prefix) == full
    with pytest.raises(BadInputError, match="'ab1' names more than one batch"):
        resolve_batch_id(stores.db, "ab1")
    with pytest.raises(NotFoundError, match="no batch 'ffff'"):
        resolve_batch_id(stores.db, "ffff")
    with pytest.raises(BadInputError, match="'ab-12' is not a batch id"):
        resolve_batch_id(stores.db, "ab-12")


def _run_logs(flow_run_id: Any) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # send the log lines still queued, and wait for them
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(log.message for log in logs)


@pytest.mark.slow
def test_flows_reassemble_a_publication_in_one_run_and_reconcile_says_what_it_did(
    settings: Settings,
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
    prefect_server: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from prefect.artifacts import Artifact

    # What the run logger says at INFO reaches Prefect (`kerani` commands run in this
    # process before may have quietened Prefect's loggers).
    caplog.set_level(logging.INFO, logger="prefect")

    sent: list[str] = []
    monkeypatch.setattr(
        triggers, "send_event", lambda e, r, payload: sent.append(payload["publication"])
    )
    # One publication of three settled documents: one run of reassemble-settled does them.
    pages = [seed_page(stores, SURE) for _ in range(3)]
    for page_id in pages:
        assert triggers.document_settled(stores.db, page_id, mode="event", window=60) == "queued"
    triggers.flush_publications()
    (publication,) = sent
    with using_settings(settings):
        state: Any = reassemble_settled(publication, return_state=True)
    result = state.result()
    assert result["pages"] == 3 and result["assembled"] == 3
    assert records_of(stores, pages) == 3 and outbox.backlog(stores.db) == (0, None)
    assert "3 documents, 3 records built" in _run_logs(state.state_details.flow_run_id)

    # Reconcile: a row whose publication was lost long ago, a settled page with no row, one
    # whose row is on its way, and one document not settled yet. One batch, by a prefix.
    stale = seed_page(stores, SURE)
    batch_id = batch_of(stores, stale)
    outbox.ensure_settled(stores.db, stale)
    o = schema.settle_outbox
    with stores.db.begin() as conn:
        conn.execute(
            o.update()
            .where(o.c.page_id == stale)
            .values(settled_at=utcnow() - timedelta(minutes=30), publication="event-lost")
        )
    unrecorded = seed_page(stores, [("full_name", "text", "SITI AMINAH", 99.0)])
    in_flight = seed_page(stores, SURE)  # settled a moment ago: its publication will do it
    outbox.ensure_settled(stores.db, in_flight)
    with stores.db.begin() as conn:  # into the same batch
        conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id.in_([unrecorded, in_flight]))
            .values(batch_id=batch_id)
        )
    waiting = seed_page(stores, DOUBTFUL)
    with using_settings(settings):
        state = reconcile_records(batch_id[:12].upper(), return_state=True)
        others: Any = reconcile_records(batch_of(stores, waiting)[:12])
    result = state.result()
    assert result["pages"] == 2 and result["assembled"] == 2 and result["from_outbox"] == 1
    assert records_of(stores, [stale, unrecorded]) == 2 and outcomes(stores, [stale]) == [
        "assembled"
    ]
    assert records_of(stores, [in_flight]) == 0 and outcomes(stores, [in_flight]) == [None]
    assert others["pages"] == 0
    logged = _run_logs(state.state_details.flow_run_id)
    assert "reconciled 2 documents (1 from the outbox, 1 settled without a record)" in logged

    markdown: Any = Artifact.get(key="reconcile-records")
    table: Any = Artifact.get(key="reconcile-records-documents")
    assert markdown is not None and table is not None
    # The last run (of the other batch) did nothing, and says so; the table is the batch's.
    assert "Nothing to do" in str(markdown.data)
    shown = json.loads(table.data)
    assert {(r["page"], r["found"], r["outcome"]) for r in shown} == {
        (stale, "outbox", "assembled"),
        (unrecorded, "unrecorded", "assembled"),
    }
    for artifact in (markdown, table):
        # Ids, outcomes and field names: never what a field holds.
        assert "SHAH" not in str(artifact.data) and "SITI" not in str(artifact.data)

    with pytest.raises(NotFoundError, match="no batch 'ffff'"), using_settings(settings):
        reconcile_records("ffff")

    # finish-batch takes the 12 characters `kerani status` prints, as the CLI does.
    with using_settings(settings):
        finished = finish_batch(batch_id[:12])
    # It built the one on its way too, and closed its row: its publication has nothing to do.
    assert finished["report"]["batch_id"] == batch_id and finished["report"]["records"] == 3
    assert outcomes(stores, [in_flight]) == ["assembled"]


@pytest.fixture
def real_prefect(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """`prefect server start` on loopback, with the work pool and the reassemble-settled
    deployment (its event trigger too) made from prefect.yaml as its header says."""
    from tests.test_prefect_deployment import prefect_server_with

    home = tmp_path / "prefect-home"
    with prefect_server_with(home, ("reassemble-settled",)) as (api, server):
        yield api, home, server


@pytest.mark.slow
def test_on_a_real_prefect_server_one_triggered_run_builds_them_all_and_none_is_lost_when_it_stops(
    settings: Settings,
    stores: Stores,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    real_prefect: tuple[str, Path, subprocess.Popen[bytes]],
    publisher: None,
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.test_prefect_deployment import api_call, kill_tree, prefect_env, start_worker

    api, home, server = real_prefect
    worker = start_worker(
        prefect_env(home, api)
        | {
            "KERANI_SOURCE_DIR": str(REPO),
            "KERANI_DATA_DIR": str(settings.core.data_dir),
            "KERANI_DB_URL": database_url,
            "KERANI_BLOB_URL": settings.blob_url,
        }
    )
    monkeypatch.setenv(triggers.TRIGGER_ENV, "event")
    monkeypatch.setenv(triggers.WINDOW_ENV, "60")
    client = TestClient(create_app(settings, stores))
    codes = workers(stores)
    try:
        pages = [seed_page(stores, DOUBTFUL) for _ in range(6)]
        with temporary_settings({PREFECT_API_URL: api}):
            answer_over_http(client, codes)
            triggers.flush_publications()  # the minute is over: one event for the six
        deadline = time.monotonic() + 240
        while records_of(stores, pages) < len(pages):
            assert time.monotonic() < deadline, "the triggered run built no records in 240 s"
            time.sleep(1)
        runs = api_call(
            "POST",
            f"{api}/flow_runs/filter",
            json={"deployments": {"name": {"any_": ["reassemble-settled"]}}},
        )
        assert len(runs) == 1 and set(runs[0]["parameters"]) == {"publication"}
        assert outcomes(stores, pages) == ["assembled"] * len(pages)
    finally:
        kill_tree(worker.pid)

    # The server stops for good: the settles of the next minute still get their records.
    kill_tree(server.pid)
    later = [seed_page(stores, DOUBTFUL) for _ in range(3)]
    with temporary_settings({PREFECT_API_URL: api}):
        answer_over_http(client, codes)
        triggers.flush_publications()
    assert records_of(stores, later) == 3 and outcomes(stores, later) == ["assembled"] * 3
