"""Machine readings as their own rows: pre-OCR writes them, migration 0009 carries old ones."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw
from sqlalchemy.exc import IntegrityError

from kerani.ocr.engine import Word
from kerani.records.assembly import reassemble_page
from kerani.storage import schema
from kerani.storage.database import _create_engine, migrate, utcnow
from kerani.storage.stores import Stores
from tests.factories import ingested_page, read_with_words, seed_page


def _readings(conn: sa.Connection) -> list[sa.Row[tuple[object, ...]]]:
    r = schema.ocr_readings
    return list(conn.execute(sa.select(r).order_by(r.c.field_id, r.c.id)).all())


def test_migration_gives_every_field_its_guess_reading(database_url: str) -> None:
    engine = _create_engine(database_url)
    migrate(engine, "0008")
    labels = {1: "tesseract-5.3.0+page-num-2agree", 2: "tesseract-5.3.0", 3: "null+agree-ink"}
    with engine.begin() as conn:
        for sql in (
            "INSERT INTO batches (id, template, source, status, created_at) VALUES"
            " ('b1', 'receipt', 'test', 'ingested', :at)",
            "INSERT INTO scans (id, batch_id, filename, size, status, created_at) VALUES"
            " (1, 'b1', 'a.png', 1, 'accepted', :at)",
            "INSERT INTO pages (id, batch_id, scan_id, source_sha256, page_index, template,"
            " image_key, width, height, status, created_at) VALUES (1, 'b1', 1, 'x', 0,"
            " 'receipt', 'k', 1, 1, 'routed', :at)",
        ):
            conn.execute(sa.text(sql), {"at": "2026-11-01 08:00:00"})
        for field_id, label in labels.items():
            conn.execute(
                sa.text(
                    "INSERT INTO fields (id, page_id, name, kind, x0, y0, x1, y1, ocr_text,"
                    " ocr_confidence, ocr_engine, snippet_key, status, answer_count,"
                    " sensitivity) VALUES (:id, 1, :name, 'line', 0, 0, 1, 1, :text, :conf,"
                    " :label, 's', 'pending', 0, 'personal')"
                ),
                {
                    "id": field_id,
                    "name": f"line_{field_id:03d}",
                    "text": f"TOTAL {field_id}",
                    "conf": 90.0 + field_id,
                    "label": label,
                },
            )
    migrate(engine)
    with engine.connect() as conn:
        readings = _readings(conn)
        page_arrived = conn.execute(sa.select(schema.pages.c.created_at)).scalar_one()
        field_columns = {c["name"] for c in sa.inspect(conn).get_columns("fields")}
    assert [(r.field_id, r.engine, r.evidence) for r in readings] == [
        (1, "tesseract-5.3.0", "page-num-2agree"),
        (2, "tesseract-5.3.0", "page"),  # no '+': read from the page alone
        (3, "null", "agree-ink"),
    ]
    assert [(r.text, r.confidence, r.is_guess) for r in readings] == [
        ("TOTAL 1", 91.0, True),
        ("TOTAL 2", 92.0, True),
        ("TOTAL 3", 93.0, True),
    ]
    assert {r.created_at for r in readings} == {page_arrived}
    # The engine and the evidence live in the reading now; the guess's text stays a copy.
    assert "ocr_engine" not in field_columns and "ocr_text" in field_columns
    engine.dispose()


def _page_with_words(stores: Stores, words: list[Word]) -> int:
    image = Image.new("L", (800, 300), 255)
    draw = ImageDraw.Draw(image)
    for w in words:
        draw.rectangle(w.box, fill=0)  # ink under each word, and nowhere else
    return ingested_page(stores, image)


def test_preocr_writes_one_guess_reading_per_field(stores: Stores) -> None:
    words = [
        Word("TOTAL", (20, 20, 200, 60), 96.0, (1, 1, 1)),
        Word("12.50", (20, 100, 200, 140), 93.0, (1, 1, 2)),
        Word("Cashier", (20, 180, 200, 220), 81.0, (1, 1, 3)),
    ]
    page_id = _page_with_words(stores, words)
    assert read_with_words(stores, page_id, words) == "ocred"
    f = schema.fields
    with stores.db.connect() as conn:
        fields = conn.execute(sa.select(f).where(f.c.page_id == page_id).order_by(f.c.id)).all()
        readings = _readings(conn)
    # The receipt's key fields first, then its lines: each field has its one guess.
    names = ["company", "date", "total", "line_001", "line_002", "line_003"]
    assert [row.name for row in fields] == names
    assert [r.field_id for r in readings] == [row.id for row in fields]
    assert all(r.is_guess and r.engine == "null" for r in readings)
    # The field's copy of the guess is the reading's text and confidence.
    assert [(r.text, r.confidence) for r in readings] == [
        (row.ocr_text, row.ocr_confidence) for row in fields
    ]
    assert [(r.text, r.evidence) for r in readings[3:]] == [
        ("TOTAL", "page"),
        ("12.50", "page-num"),
        ("Cashier", "page"),
    ]
    assert all(r.evidence.startswith("key-") for r in readings[:3])


def test_a_field_has_one_guess_and_any_other_readings(stores: Stores) -> None:
    page_id = seed_page(stores, [("line_001", "line", "TOTAL 9.00", 90.0)], template="receipt")
    with stores.db.connect() as conn:
        field_id = conn.execute(
            sa.select(schema.fields.c.id).where(schema.fields.c.page_id == page_id)
        ).scalar_one()
    other = {
        "field_id": field_id,
        "engine": "rapidocr-1.4",
        "text": "TOTAL 9.0O",
        "confidence": 88.0,
        "evidence": "page",
        "created_at": utcnow(),
    }
    with stores.db.begin() as conn:
        conn.execute(sa.insert(schema.ocr_readings).values(**other, is_guess=False))
    with pytest.raises(IntegrityError), stores.db.begin() as conn:
        conn.execute(sa.insert(schema.ocr_readings).values(**other, is_guess=True))


def test_a_record_keeps_the_engine_and_evidence_label(stores: Stores) -> None:
    # Valid and confident: both auto-accepted, so the page is ready to reassemble.
    page_id = seed_page(
        stores, [("household_size", "number", "4", 99.0), ("postcode", "postcode", "50000", 99.0)]
    )
    f, r = schema.fields, schema.ocr_readings
    with stores.db.begin() as conn:
        conn.execute(
            sa.update(r)
            .where(
                r.c.field_id
                == sa.select(f.c.id).where(f.c.name == "household_size").scalar_subquery()
            )
            .values(evidence="agree-ink")
        )
    assert reassemble_page(stores.db, page_id).status == "assembled"
    with stores.db.connect() as conn:
        data = json.loads(
            conn.execute(
                sa.select(schema.records.c.data).where(schema.records.c.page_id == page_id)
            ).scalar_one()
        )
    # What fields.ocr_engine held before readings had their own table.
    assert data["household_size"]["ocr_engine"] == "null+agree-ink"
    assert data["postcode"]["ocr_engine"] == "null"
