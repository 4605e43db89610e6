"""End to end with real Tesseract and real Prefect flows, on SQLite and on PostgreSQL.

Three real SROIE receipts and two synthetic forms go through submit → micro tasks answered
through the review app's HTTP API → finish; the exports must hold what people submitted.
"""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from kerani.core.settings import CrowdSettings, Settings, using_settings
from kerani.evaluation.accuracy import field_truths
from kerani.evaluation.crowd_sim import Profile, SimulatedWorker, run_crowd, truth_by_task
from kerani.evaluation.ground_truth import read_truth, sroie_to_dataset
from kerani.evaluation.synthetic import generate_dataset
from kerani.flows.digitise import finish_batch, submit_batch
from kerani.forms.templates import load_template
from kerani.microtasks.tasks import queue_depth
from kerani.people.workers import add_person
from kerani.records.exports import DELIVERABLES, FORMATS, neutralise_cell
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores

pytestmark = pytest.mark.slow


def _counts(stores: Stores) -> dict[str, int]:
    with stores.db.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (schema.batches, schema.pages, schema.fields, schema.tasks, schema.scans)
        }


def test_receipts_and_forms_end_to_end(
    settings: Settings, stores: Stores, prefect_server: None, sroie_dir: Path, tmp_path: Path
) -> None:
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=2, seed=11)
    receipts = tmp_path / "receipts"
    sroie_to_dataset(sroie_dir, receipts, names=["000", "004", "008"])

    with using_settings(settings):  # what the flows read: the settings are no parameter
        form_report = submit_batch([str(forms / "pages")], "bantuan_form")
        receipt_report = submit_batch([str(receipts / "pages")], "receipt")
    assert form_report["pages_created"] == 2 and receipt_report["pages_created"] == 3
    assert form_report["rejected"] == [] and receipt_report["rejected"] == []
    assert receipt_report["routing"]["tasks_created"] > 20  # receipts yield many text lines
    assert queue_depth(stores.db) > 0

    truth_of_field: dict[int, str | None] = {}
    for report, folder in ((form_report, forms), (receipt_report, receipts)):
        mapping, _ = field_truths(stores.db, report["batch_id"], read_truth(folder))
        truth_of_field.update(mapping)

    truth_of_task = truth_by_task(stores.db, truth_of_field)
    # Three careful simulated workers answer every task through the HTTP API. The limit of
    # fields per document (tested on its own) is lifted so that three people can finish.
    crowd = CrowdSettings(max_fields_per_document=1000, gold_every=0)
    app_settings = settings.model_copy(update={"crowd": crowd})
    workers = [
        SimulatedWorker(
            n, add_person(stores.db, n, "worker", proven=True, practised=True), Profile("careful")
        )
        for n in ("a", "b", "c")
    ]
    # Restricted fields (MyKad numbers) need cleared workers: two, since a field needs two
    # independent looks (a confirmation of the pre-filled guess is not one).
    with stores.db.begin() as conn:
        conn.execute(
            schema.workers.update()
            .where(schema.workers.c.name.in_(["a", "b"]))
            .values(cleared=True)
        )
    with TestClient(create_app(app_settings, stores)) as client:
        stats = run_crowd(client, workers, truth_of_task)
    assert stats.answers > 0 and queue_depth(stores.db) == 0

    # The review app rebuilt each record when its last field settled.
    with stores.db.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.records)).scalar_one() == 5

    for report in (form_report, receipt_report):
        with using_settings(settings):
            result = finish_batch(report["batch_id"])
        csv_key = f"exports/{report['batch_id']}/records.csv"
        frame = pd.read_csv(io.BytesIO(stores.blobs.get(csv_key)), dtype=str, keep_default_na=False)
        lines = pd.read_json(
            io.BytesIO(stores.blobs.get(csv_key.replace(".csv", ".jsonl"))), lines=True, dtype=False
        )
        assert result["exports"]["csv"].endswith("records.csv")
        assert set(result["exports"]) == {*FORMATS, *DELIVERABLES}
        assert set(frame["status"]) == {"done"} and (frame["waiting_fields"] == "0").all()
        assert result["text_layers"]["pages"] == report["pages_created"]
        assert result["report"]["records"] == report["pages_created"]
        assert len(frame) == len(lines) == report["pages_created"]
        # Every field settled by people appears in the export with the agreed answer.
        with stores.db.connect() as conn:
            settled = conn.execute(
                select(
                    schema.fields.c.name,
                    schema.fields.c.value,
                    schema.fields.c.value_kind,
                    schema.fields.c.source,
                    schema.scans.c.filename,
                )
                .join(schema.pages, schema.pages.c.id == schema.fields.c.page_id)
                .join(schema.scans, schema.scans.c.id == schema.pages.c.scan_id)
                .where(schema.pages.c.batch_id == report["batch_id"])
            ).all()
        humans = [r for r in settled if r.source == "human"]
        assert humans, "some fields must have gone to people"
        for r in settled:
            row = frame[frame["document"] == r.filename].iloc[0]
            assert row[f"{r.name}__source"] == r.source
            if r.value_kind == "text":
                # As a spreadsheet reads the file: a line such as -INVOICE- starts with '.
                assert row[r.name] == neutralise_cell(r.value)
                assert row[f"{r.name}__status"] == "value"
            else:
                # Unreadable and blank fields are marked as such, never silently empty.
                assert row[r.name] == "" and row[f"{r.name}__status"] == r.value_kind
        # ... and what the workers typed is what the truth says, for each human field.
        for r in humans:
            if r.value_kind == "text":
                assert r.value in {t for t in truth_of_field.values() if t}

    # Submitting the same batches again creates nothing new.
    before = _counts(stores)
    with using_settings(settings):
        again = submit_batch([str(forms / "pages")], "bantuan_form")
        submit_batch([str(receipts / "pages")], "receipt")
    assert again["batch_id"] == form_report["batch_id"]
    assert again["pages_created"] == 0 and again["pages_existing"] == 2
    assert _counts(stores) == before


def test_bad_files_are_reported_and_the_rest_goes_on(
    settings: Settings, stores: Stores, prefect_server: None, tmp_path: Path
) -> None:
    forms = tmp_path / "forms"
    generate_dataset(load_template("bantuan_form"), forms, count=1, seed=5)
    batch = tmp_path / "batch"
    batch.mkdir()
    good = (forms / "pages" / "form_001.png").read_bytes()
    (batch / "good.png").write_bytes(good)
    (batch / "corrupt.png").write_bytes(good[: len(good) // 3])
    (batch / "notes.png").write_bytes(b"these are my notes, not a scan\n")
    fake_png = b"\x89PNG\r\n\x1a\n" + zlib.compress(b"garbage")
    (batch / "broken-header.png").write_bytes(fake_png)

    with using_settings(settings):
        report = submit_batch([str(batch)], "bantuan_form")

    reasons = {r["name"]: r["reason"] for r in report["rejected"]}
    assert set(reasons) == {"batch/corrupt.png", "batch/notes.png", "batch/broken-header.png"}
    assert "cannot be decoded" in reasons["batch/corrupt.png"]
    assert "not an image or a PDF" in reasons["batch/notes.png"]
    assert report["pages_created"] == 1
    assert report["routing"]["auto_accepted"] + report["routing"]["tasks_created"] == 10
    with stores.db.connect() as conn:
        rejected = conn.execute(
            select(schema.scans.c.filename, schema.scans.c.error).where(
                schema.scans.c.status == "rejected"
            )
        ).all()
    assert {r.filename for r in rejected} == set(reasons)
