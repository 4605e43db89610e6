"""Exports, text layers and the batch report of a batch settled partly by OCR, partly by people."""

from __future__ import annotations

import io
import json
import re
import secrets
import xml.etree.ElementTree as ET
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from kerani.cli import app as cli
from kerani.core.settings import Settings
from kerani.flows.documents import finish_ready_documents
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.leases import claim_next
from kerani.microtasks.ledger import ringgit, ringgit_each
from kerani.people.workers import add_person, agency_named, person_by_code
from kerani.records.archive import hocr_key, write_text_layers
from kerani.records.exports import (
    DELIVERABLES,
    FORMATS,
    export_batch,
    frame_bytes,
    read_export,
    records_frame,
)
from kerani.records.report import batch_report, report_markdown
from kerani.review_ui.app import create_app
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import batch_of, seed_page, sign_in_with_code

HOCR = "{http://www.w3.org/1999/xhtml}"

# What people say each doubtful line of a receipt holds: (answer kind, value).
PEOPLE = {
    "line_001": ("value", 'LOT 5, "KAMPUNG" BARU'),  # comma and quotes: CSV quoting
    "line_002": ("unreadable", ""),
    "line_003": ("value", "0123"),  # leading zero: stays text
    "line_004": ("value", "NA"),  # not a missing value
    "line_005": ("blank", ""),
}


def settle_by_people(
    settings: Settings, stores: Stores, answers: dict[str, tuple[str, str]]
) -> None:
    """New workers answer every open task as `answers` says, until nothing is offered."""
    rules = settings.crowd
    for i in range(8):
        worker = person_by_code(
            stores.db, add_person(stores.db, f"w{i}", "worker", proven=True, practised=True)
        ).id
        while (task := claim_next(stores.db, worker, rules)) is not None:
            kind, value = answers[task.field_name]
            submit_answer(stores.db, task.task_id, worker, kind, value, secrets.token_hex(8), rules)
    with stores.db.connect() as conn:
        open_tasks = conn.execute(
            select(func.count()).select_from(schema.tasks).where(schema.tasks.c.status == "open")
        ).scalar_one()
    assert open_tasks == 0


@pytest.fixture
def batch(settings: Settings, stores: Stores) -> str:
    """A receipt settled by people (one line unreadable, one blank), its records assembled."""
    page_id = seed_page(
        stores,
        [(name, "line", f"ocr {name}", 60.0) for name in PEOPLE],
        template="receipt",
    )
    settle_by_people(settings, stores, PEOPLE)
    batch_id = batch_of(stores, page_id)
    finish_ready_documents(stores.db, batch_id)
    return batch_id


def test_exports_round_trip_and_mark_unreadable_fields(stores: Stores, batch: str) -> None:
    result = export_batch(stores.db, stores.blobs, batch)
    assert result.records == 1 and set(result.keys) == {*FORMATS, *DELIVERABLES}
    frame = records_frame(stores.db, batch)
    for fmt in FORMATS:
        back = read_export(stores.blobs.get(result.keys[fmt]), fmt)
        pd.testing.assert_frame_equal(back, frame, check_dtype=True)
    row = frame.iloc[0]
    assert row["line_001"] == 'LOT 5, "KAMPUNG" BARU' and row["line_001__status"] == "value"
    assert row["line_003"] == "0123" and row["line_004"] == "NA"
    assert pd.isna(row["line_002"]) and row["line_002__status"] == "unreadable"
    assert pd.isna(row["line_005"]) and row["line_005__status"] == "blank"
    for name in PEOPLE:
        assert row[f"{name}__source"] == "human"
        assert row[f"{name}__people"] >= 1
        assert 0 < row[f"{name}__agreement"] <= 1

    # Plain pandas, without Kerani's reader, sees the same values in CSV and Parquet.
    csv = pd.read_csv(
        io.BytesIO(stores.blobs.get(result.keys["csv"])), dtype=str, keep_default_na=False
    )
    parquet = pd.read_parquet(io.BytesIO(stores.blobs.get(result.keys["parquet"])))
    for name in PEOPLE:
        for col in (name, f"{name}__status", f"{name}__source"):
            expected: Any = parquet.loc[0, col]
            assert csv.loc[0, col] == ("" if pd.isna(expected) else expected), col
        agreement: Any = csv.loc[0, f"{name}__agreement"]
        assert float(agreement) == parquet.loc[0, f"{name}__agreement"]
    lines = [json.loads(x) for x in stores.blobs.get(result.keys["jsonl"]).decode().splitlines()]
    assert lines[0]["line_002"] is None and lines[0]["line_002__status"] == "unreadable"


def test_re_export_is_byte_identical(stores: Stores, batch: str) -> None:
    first = {
        f: stores.blobs.get(k) for f, k in export_batch(stores.db, stores.blobs, batch).keys.items()
    }
    # Rebuilding the record (a later reconcile, say) changes its timestamp, not the export.
    with stores.db.begin() as conn:
        conn.execute(schema.pages.update().values(status="routed"))
    assert finish_ready_documents(stores.db, batch) == 1
    again = {
        f: stores.blobs.get(k) for f, k in export_batch(stores.db, stores.blobs, batch).keys.items()
    }
    assert again == first
    frame = records_frame(stores.db, batch)
    assert all(frame_bytes(frame, f) == first[f] for f in FORMATS)


def test_hocr_text_layer_holds_corrected_values(stores: Stores, batch: str) -> None:
    (key,) = write_text_layers(stores.db, stores.blobs, batch)
    assert (
        key
        == hocr_key(batch, "scan.png", 1)
        == records_frame(stores.db, batch).loc[0, "text_layer"]
    )
    root = ET.fromstring(stores.blobs.get(key))  # noqa: S314 - a file this test just wrote
    page = root.find(f".//{HOCR}div[@class='ocr_page']")
    assert page is not None and "bbox 0 0 100 100" in page.attrib["title"]
    areas = {
        a.attrib["data-field"]: a
        for a in root.iter(f"{HOCR}div")
        if a.attrib.get("class") == "ocr_carea"
    }
    assert set(areas) == set(PEOPLE)

    def words(name: str) -> list[str]:
        return [
            w.text or ""
            for w in areas[name].iter(f"{HOCR}span")
            if w.attrib["class"] == "ocrx_word"
        ]

    assert " ".join(words("line_001")) == 'LOT 5, "KAMPUNG" BARU'  # the correction, not the OCR
    assert words("line_002") == [] and areas["line_002"].attrib["data-kind"] == "unreadable"
    assert areas["line_001"].attrib["data-source"] == "human"
    for w in areas["line_001"].iter(f"{HOCR}span"):
        assert re.match(r"bbox \d+ \d+ \d+ \d+; x_wconf \d+", w.attrib["title"])


def test_batch_report_counts_cost_and_unreadable_fields(
    settings: Settings, stores: Stores, batch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = batch_report(stores.db, batch)
    with stores.db.connect() as conn:
        paid = conn.execute(
            select(func.coalesce(func.sum(schema.ledger.c.amount_sen), 0))
        ).scalar_one()
        answers = conn.execute(select(func.count()).select_from(schema.answers)).scalar_one()
    assert (report.pages, report.pages_complete, report.records, report.fields) == (1, 1, 1, 5)
    assert report.settled_by_people == 5 and report.auto_accepted == 0
    assert report.unreadable == 1 and report.blank == 1
    assert report.answers == answers and report.cost_sen == paid
    assert [(u.field, u.kind) for u in report.unread_fields] == [("line_002", "unreadable")]
    text = report_markdown(report)
    assert (
        f"paid to workers in all: {ringgit(paid)}" in text
        and "| scan.png | 1 | line\\_002 |" in text  # a field name's _ escaped for Markdown
    )
    assert ringgit(1234) == "RM 12.34" and ringgit(5) == "RM 0.05"
    # Shares of the cost read as money: RM and whole sen per record, sen per field.
    assert f"per record: {ringgit(paid)} ({paid} sen) over 1 record built" in text
    assert ringgit_each(1790, 3) == "RM 5.97" and ringgit_each(54, 10) == "5.4 sen"
    assert ringgit_each(100, 0) == "–"

    # The agency's page shows the same report (the batch is theirs); workers may not see it.
    client = TestClient(create_app(settings, stores), follow_redirects=False)
    agency_code = add_person(stores.db, "agency", "agency")
    agency_id = agency_named(stores.db, "agency")
    with stores.db.begin() as conn:
        conn.execute(
            schema.batches.update().where(schema.batches.c.id == batch).values(agency_id=agency_id)
        )
    assert sign_in_with_code(client, agency_code).status_code == 303
    page = client.get(f"/batches/{batch[:10]}/report")
    assert page.status_code == 200 and "line_002" in page.text and ringgit(paid) in page.text
    worker = TestClient(create_app(settings, stores), follow_redirects=False)
    sign_in_with_code(worker, add_person(stores.db, "wendy", "worker", proven=True, practised=True))
    assert worker.get(f"/batches/{batch}/report").status_code == 403

    # ... and so does the CLI.
    monkeypatch.setenv("KERANI_DB_URL", settings.database_url)
    monkeypatch.setenv("KERANI_BLOB_URL", settings.blob_url)
    out = CliRunner().invoke(cli, ["report", batch[:10], "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["unreadable"] == 1
    missing = CliRunner().invoke(cli, ["report", "ffffffffff"])
    assert missing.exit_code == 6 and "no batch" in missing.output
