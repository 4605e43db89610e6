"""Reassembly: rules send failing fields back, a trusted worker corrects them, records are right.

Also the triggers: a settled document is reassembled inline, or its outbox row goes to
Prefect in an event or a deployment run, and the reconcile flow picks up documents whose
trigger was lost (tests/test_settle_outbox.py tests the outbox itself).
"""

from __future__ import annotations

import importlib
import io
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from prefect import Flow
from prefect.artifacts import Artifact
from sqlalchemy import func, select

import kerani.flows.triggers as triggers
from kerani.core.settings import Settings, using_settings
from kerani.flows.digitise import finish_batch
from kerani.flows.documents import finish_document, finish_ready_documents
from kerani.flows.reassembly import reassemble_settled, reconcile_records
from kerani.flows.triggers import SETTLED_EVENT, document_settled
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.people.workers import add_person, person_by_code
from kerani.records.assembly import pages_to_reassemble
from kerani.records.exports import export_batch, read_export
from kerani.review_ui.app import create_app
from kerani.storage import outbox, schema
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page, sign_in_with_code

REPO = Path(__file__).resolve().parents[1]

# The OCR read the IC number and the date of birth confidently and each is valid on its
# own, so both were auto-accepted; but the IC says 12 March 1990 and the date says 13 March.
MISMATCH = [
    ("full_name", "text", "SITI AMINAH BINTI AHMAD", 99.0),
    ("ic_number", "ic_number", "900312-14-5568", 99.0),
    ("date_of_birth", "date", "13/03/1990", 99.0),
    ("city", "text", "SHAH ALAM", 40.0),  # doubtful: goes to people
]
TRUTH = {
    "full_name": "SITI AMINAH BINTI AHMAD",
    "ic_number": "900312-14-5568",
    "date_of_birth": "12/03/1990",
    "city": "SHAH ALAM",
}


def make_trusted(stores: Stores, name: str) -> str:
    code = add_person(stores.db, name, "worker", proven=True, practised=True)
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update()
            .where(schema.workers.c.name == name)
            .values(trusted=True, cleared=True)
        )
    return code


def answer_all(client: TestClient, code: str, truth: dict[str, str]) -> list[str]:
    """Claim and answer through the HTTP API until nothing is offered; return fields answered."""
    auth = {"Authorization": f"Bearer {code}"}
    answered: list[str] = []
    for _ in range(50):
        claim = client.post("/api/tasks/claim", headers=auth)
        assert claim.status_code in (200, 204), claim.text
        if claim.status_code == 204:
            return answered
        task = claim.json()
        body = {
            "kind": "value",
            "value": truth[task["field"]],
            "idempotency_key": secrets.token_urlsafe(12),
        }
        reply = client.post(f"/api/tasks/{task['task_id']}/answer", json=body, headers=auth)
        assert reply.status_code == 200, reply.text
        answered.append(task["field"])
    raise AssertionError("the queue never ran dry")


def field_rows(stores: Stores, page_id: int) -> dict[str, Any]:
    f, t = schema.fields, schema.tasks
    with stores.db.connect() as conn:
        rows = conn.execute(
            select(f, t.c.status.label("task_status"), t.c.escalated, t.c.note)
            .outerjoin(t, t.c.field_id == f.c.id)
            .where(f.c.page_id == page_id)
        ).all()
    return {r.name: r for r in rows}


def record_count(stores: Stores, page_id: int) -> int:
    with stores.db.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(schema.records)
                .where(schema.records.c.page_id == page_id)
            ).scalar_one()
        )


def test_ic_and_birth_date_mismatch_is_sent_back_corrected_and_exported(
    settings: Settings, stores: Stores
) -> None:
    page_id = seed_page(stores, MISMATCH)
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    ana = add_person(stores.db, "ana", "worker", proven=True, practised=True)
    ben = add_person(stores.db, "ben", "worker", proven=True, practised=True)

    # Ordinary workers settle the doubtful field; its page is then complete, and the app's
    # trigger reassembles it: the rule fails, so both fields go back instead of a record.
    answered = answer_all(client, ana, TRUTH) + answer_all(client, ben, TRUTH)
    assert "city" in answered and "date_of_birth" not in answered
    rows = field_rows(stores, page_id)
    assert record_count(stores, page_id) == 0
    for name in ("ic_number", "date_of_birth"):
        r = rows[name]
        assert r.status == "in_review" and r.task_status == "open" and r.escalated
        assert r.note.startswith("ic_matches_birth_date: the birth date in ic_number")
        assert "13/03/1990" in r.note
    assert rows["full_name"].status == "auto_accepted" and rows["full_name"].task_status is None
    # Disputes are for trusted workers only: the ordinary ones are offered nothing.
    assert answer_all(client, ana, TRUTH) == []

    # The trusted worker sees the rule on the review page, then answers through the API.
    tina = make_trusted(stores, "tina")
    assert sign_in_with_code(client, tina).status_code == 303
    page = client.get("/review")
    assert page.status_code == 200
    assert "Please check again: ic_matches_birth_date" in page.text
    assert sorted(answer_all(client, tina, TRUTH)) == ["date_of_birth", "ic_number"]

    rows = field_rows(stores, page_id)
    assert rows["date_of_birth"].value == "12/03/1990"
    assert rows["date_of_birth"].source == "arbitrated"
    assert record_count(stores, page_id) == 1
    with stores.db.connect() as conn:
        status = conn.execute(
            select(schema.pages.c.status).where(schema.pages.c.id == page_id)
        ).scalar_one()
    assert status == "complete"

    result = export_batch(stores.db, stores.blobs, batch_of(stores, page_id))
    for fmt in ("csv", "parquet"):
        frame = read_export(stores.blobs.get(result.keys[fmt]), fmt)
        row = frame.iloc[0]
        assert row["date_of_birth"] == "12/03/1990"
        assert row["date_of_birth__source"] == "arbitrated"
        assert row["ic_number"] == "900312-14-5568"
        assert row["full_name__source"] == "ocr" and row["full_name__people"] == 0
        assert row["city__source"] == "human" and row["city__people"] >= 1
        assert bool(row["valid"]) and pd.isna(row["problems"])
    plain = pd.read_csv(io.BytesIO(stores.blobs.get(result.keys["csv"])), dtype=str)
    assert plain.loc[0, "date_of_birth"] == "12/03/1990"


def test_a_field_already_arbitrated_is_kept_flagged_not_sent_back_again(stores: Stores) -> None:
    page_id = seed_page(stores, MISMATCH[1:3])  # both auto-accepted, they disagree
    first = finish_document(stores.db, page_id)
    assert first.status == "sent_back"
    assert set(first.sent_back) == {"ic_number", "date_of_birth"}
    tina = person_by_code(stores.db, make_trusted(stores, "tina")).id
    rules = Settings().crowd
    # The trusted worker confirms what the paper says: the form itself is inconsistent.
    for _ in range(2):
        task = claim_next(stores.db, tina, rules)
        assert task is not None
        value = {"ic_number": "900312-14-5568", "date_of_birth": "13/03/1990"}[task.field_name]
        submit_answer(stores.db, task.task_id, tina, "value", value, secrets.token_hex(8), rules)
    second = finish_document(stores.db, page_id)
    assert second.status == "assembled"
    assert {p.field for p in second.flagged} == {"ic_number", "date_of_birth"}
    assert record_count(stores, page_id) == 1
    frame = read_export(
        stores.blobs.get(
            export_batch(stores.db, stores.blobs, batch_of(stores, page_id)).keys["csv"]
        ),
        "csv",
    )
    assert not bool(frame.loc[0, "valid"])
    assert "ic_matches_birth_date" in str(frame.loc[0, "problems"])


def test_field_validators_send_back_auto_accepted_values(stores: Stores) -> None:
    # Valid as a number, so routing trusted it; but the template's range says 1 to 40.
    page_id = seed_page(stores, [("household_size", "number", "400", 99.0)])
    outcome = finish_document(stores.db, page_id)
    assert outcome.status == "sent_back"
    assert outcome.sent_back["household_size"].startswith("household_size.range: 400 is outside")
    assert finish_document(stores.db, page_id).status == "not_ready"


def test_receipt_total_must_be_the_sum_of_its_items(stores: Stores, tmp_path: Path) -> None:
    template = tmp_path / "cash_receipt.yaml"
    template.write_text(
        """
name: cash_receipt
title: {en: Receipt, ms: Resit}
kind: form
page_size: [600, 800]
fields:
  - {name: item_1, label: {en: Item 1, ms: Item 1}, type: amount, region: [10, 10, 200, 40]}
  - {name: item_2, label: {en: Item 2, ms: Item 2}, type: amount, region: [10, 50, 200, 80],
     required: false}
  - {name: total, label: {en: Total, ms: Jumlah}, type: amount, region: [10, 90, 200, 120]}
rules:
  - {name: total_is_sum_of_items, check: sum, total: total, items: [item_1, item_2]}
""",
        encoding="utf-8",
    )
    good = seed_page(
        stores,
        [
            ("item_1", "amount", "3.50", 99.0),
            ("item_2", "amount", "8.50", 99.0),
            ("total", "amount", "12.00", 99.0),
        ],
        template=str(template),
    )
    bad = seed_page(
        stores,
        [
            ("item_1", "amount", "3.50", 99.0),
            ("item_2", "amount", "8.50", 99.0),
            ("total", "amount", "13.00", 99.0),
        ],
        template=str(template),
    )
    assert finish_document(stores.db, good).status == "assembled"
    outcome = finish_document(stores.db, bad)
    assert outcome.status == "sent_back" and set(outcome.sent_back) == {"item_1", "item_2", "total"}
    assert "total (13.00) is not the sum of item_1, item_2 (12.00)" in outcome.sent_back["total"]


# ------------------------------------------------------------------------------ triggers


def test_event_trigger_sends_the_event_the_deployment_trigger_expects(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    page_id = seed_page(stores, MISMATCH[:1])  # auto-accepted: settled at once
    sent: list[dict[str, Any]] = []

    def fake_send(event: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        sent.append({"event": event, "resource": resource, "payload": payload})

    monkeypatch.setattr(triggers, "send_event", fake_send)
    assert document_settled(stores.db, page_id, mode="event", window=0) == "event"
    assert record_count(stores, page_id) == 0  # the deployment does the work, not the app
    (event,) = sent
    assert event["event"] == SETTLED_EVENT
    publication = event["payload"]["publication"]
    assert [r.page_id for r in outbox.rows_of(stores.db, publication)] == [page_id]

    # prefect.yaml's trigger matches this event and renders the flow's publication from it.
    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    by_name = {d["name"]: d for d in deployments}
    (trigger,) = by_name["reassemble-settled"]["triggers"]
    assert trigger["expect"] == [SETTLED_EVENT]
    pattern = trigger["match"]["prefect.resource.id"]
    assert event["resource"]["prefect.resource.id"].startswith(pattern.rstrip("*"))
    rendered = jinja2.Template(trigger["parameters"]["publication"]).render(event=event)
    assert rendered == publication

    # With no Prefect server to take the event, the app does the work itself.
    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("All connection attempts failed")

    monkeypatch.setattr(triggers, "send_event", unreachable)
    other = seed_page(stores, MISMATCH[:1])
    assert document_settled(stores.db, other, mode="event", window=0) == "inline"
    assert record_count(stores, other) == 1


def test_deployment_trigger_falls_back_to_inline(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    page_id = seed_page(stores, MISMATCH[:1])
    calls: list[dict[str, Any]] = []

    def fake_run(name: str, parameters: dict[str, Any], timeout: float) -> None:
        calls.append({"name": name, "parameters": parameters, "timeout": timeout})

    monkeypatch.setattr(triggers, "run_deployment", fake_run)
    assert document_settled(stores.db, page_id, mode="deployment", window=0) == "deployment"
    (call,) = calls
    assert call["name"] == "reassemble-settled/reassemble-settled" and call["timeout"] == 0
    rows = outbox.rows_of(stores.db, call["parameters"]["publication"])
    assert [r.page_id for r in rows] == [page_id]

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no deployment called reassemble-settled")

    monkeypatch.setattr(triggers, "run_deployment", unreachable)
    other = seed_page(stores, MISMATCH[:1])
    assert document_settled(stores.db, other, mode="deployment", window=0) == "inline"
    assert record_count(stores, other) == 1


def test_prefect_yaml_declares_trigger_and_reconcile_schedule() -> None:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events.schemas.deployment_triggers import DeploymentTriggerTypes
    from pydantic import TypeAdapter

    deployments = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
    by_name = {d["name"]: d for d in deployments}
    for d in deployments:
        # Module entrypoints: the installed package, whatever folder Prefect runs in.
        module, func_name = d["entrypoint"].split(":")
        assert isinstance(getattr(importlib.import_module(module), func_name), Flow)
        for t in d.get("triggers", []):
            TypeAdapter(DeploymentTriggerTypes).validate_python(t)
    assert (
        by_name["reassemble-settled"]["entrypoint"] == "kerani.flows.reassembly:reassemble_settled"
    )
    (schedule,) = by_name["reconcile-records"]["schedules"]
    CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])


def lose_a_trigger(settings: Settings, stores: Stores) -> tuple[int, int]:
    """A page settled by people whose trigger never ran, and one settled by the OCR alone."""
    lost = seed_page(stores, [("city", "text", "SHAH ALAM", 40.0)])
    done = seed_page(stores, MISMATCH[:1])
    rules = settings.crowd
    # People settle the field straight in the queue: nobody calls the trigger (a crash
    # between the answer and the event, say), so no record is built.
    for name in ("ana", "ben"):
        worker = person_by_code(
            stores.db, add_person(stores.db, name, "worker", proven=True, practised=True)
        ).id
        task = claim_next(stores.db, worker, rules)
        if task is not None:
            submit_answer(
                stores.db, task.task_id, worker, "value", "SHAH ALAM", secrets.token_hex(8), rules
            )
    assert field_rows(stores, lost)["city"].status == "settled"
    assert record_count(stores, lost) == 0
    # Its settle's outbox row waited in vain: the crash was a while ago.
    o = schema.settle_outbox
    with stores.db.begin() as conn:
        conn.execute(o.update().values(settled_at=o.c.settled_at - timedelta(minutes=10)))
    assert set(pages_to_reassemble(stores.db)) == {lost, done}
    return lost, done


def test_reconcile_library_call_builds_missed_records(settings: Settings, stores: Stores) -> None:
    lost, done = lose_a_trigger(settings, stores)
    assert finish_ready_documents(stores.db, batch_of(stores, lost)) == 1
    assert record_count(stores, lost) == 1 and record_count(stores, done) == 0
    assert pages_to_reassemble(stores.db) == [done]


@pytest.mark.slow
def test_a_document_whose_trigger_is_lost_is_picked_up_by_reconcile(
    settings: Settings, stores: Stores, prefect_server: None
) -> None:
    lost, done = lose_a_trigger(settings, stores)
    with using_settings(settings):  # what the flows read: the settings are no parameter
        result = reconcile_records()
    assert result["pages"] == 2 and result["assembled"] == 2  # the lost one, and `done`
    assert record_count(stores, lost) == 1 and record_count(stores, done) == 1
    assert pages_to_reassemble(stores.db) == []
    # Nothing left to do: a second run changes nothing.
    with using_settings(settings):
        assert reconcile_records()["pages"] == 0

    # The reassembly flow itself, as the deployment trigger runs it (a publication's id).
    page_id = seed_page(stores, MISMATCH[1:3])
    outbox.ensure_settled(stores.db, page_id)
    publication = outbox.new_publication("event")
    outbox.take(stores.db, publication, unpublished=True)
    with using_settings(settings):
        result = reassemble_settled(publication)
    assert result["pages"] == 1 and result["sent_back"] == 1
    assert result["sent_back_fields"] == {page_id: ["date_of_birth", "ic_number"]}
    # finish-batch publishes the batch report as a Prefect artifact.
    batch_id = batch_of(stores, lost)
    with using_settings(settings):
        finish = finish_batch(batch_id)
    assert finish["report"]["records"] == 1
    artifact: Any = Artifact.get(key=f"batch-report-{batch_id[:12]}")  # sync here
    assert artifact is not None and "Fields that could not be read" in str(artifact.data)
