"""Pre-OCR one page: clean it, OCR it once, map words to fields, store guesses and snippets.

The stage itself (clean-up, orientation, alignment, batched re-OCR) is `ocr.stage`; this
module stores its result. Field boxes are stored in scan pixels (what the hOCR export and
box matching against ground truth expect); snippets are cut from the cleaned, levelled page.
Each field's guess is stored as its reading in `ocr_readings`, with the engine and the
evidence behind it (`page`, `agree`, `reocr`, `disagree`, ...), which routing reads back.
`store_fields` is the one way to store fields with their OCR, for benchmarks and tests too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy import Connection, Engine, func, insert, select

from kerani.core.errors import KeraniError
from kerani.core.vocabulary import FieldStatus, PageStatus, Sensitivity
from kerani.forms.key_fields import Line, find_key_fields
from kerani.forms.templates import Template
from kerani.ocr.engine import OcrEngine
from kerani.ocr.geometry import clip_box
from kerani.ocr.snippets import SNIPPET_SUFFIX, crop_snippet
from kerani.ocr.stage import FieldRead, StageOptions, read_template_page
from kerani.storage import schema
from kerani.storage.blobs import BlobStore
from kerani.storage.database import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reading:
    """One engine's reading of a field: what it read, how sure it was, and how it got it."""

    engine: str  # name and version, e.g. tesseract-5.3.0
    text: str
    confidence: float  # 0-100
    evidence: str = "page"  # the calibration's group: page | agree | reocr | disagree, ...


def store_fields(
    conn: Connection, fields: Sequence[Mapping[str, Any]], guesses: Sequence[Reading]
) -> list[int]:
    """Insert field rows, each with its guess as its reading; return the new fields' ids.

    `fields` are `fields` rows without their OCR columns; `guesses[i]` is the reading of
    `fields[i]` the page pre-fills and routing judges. Its text and confidence are also
    copied into the field (fields.ocr_text, ocr_confidence), which the queue reads.
    """
    if len(fields) != len(guesses):
        raise ValueError(f"{len(fields)} fields but {len(guesses)} guesses")
    if not fields:
        return []
    f = schema.fields
    rows = [
        {**row, "ocr_text": g.text, "ocr_confidence": g.confidence}
        for row, g in zip(fields, guesses, strict=True)
    ]
    ids = [
        int(i)
        for i in conn.execute(
            insert(f).returning(f.c.id, sort_by_parameter_order=True), rows
        ).scalars()
    ]
    now = utcnow()
    conn.execute(
        insert(schema.ocr_readings),
        [
            {
                "field_id": field_id,
                "engine": g.engine,
                "text": g.text,
                "confidence": g.confidence,
                "evidence": g.evidence,
                "is_guess": True,
                "created_at": now,
            }
            for field_id, g in zip(ids, guesses, strict=True)
        ],
    )
    return ids


def key_field_reads(template: Template, reads: Sequence[FieldRead]) -> list[FieldRead]:
    """A template-free page's key fields, found by their rules among the lines it read.

    Each is a field of the key field's type whose guess the rule chose (forms.key_fields),
    boxed on the line(s) it came from, so that its snippet shows that line with a little
    context and never the page. A key field with no candidate is still a field, with an
    empty guess (people are asked) boxed on the lines where it would most likely be (a
    page with no line at all is refused before this: no readable text).
    """
    lines = [Line(r.text, r.confidence, r.box) for r in reads]
    out = []
    for k in find_key_fields(template.key_fields, lines):
        box = k.box if k.box is not None else (0, 0, 1, 1)
        out.append(FieldRead(k.name, k.kind, box, k.text, k.confidence, k.evidence))
    return out


def preocr_page(
    db: Engine,
    blobs: BlobStore,
    page_id: int,
    template: Template,
    engine: OcrEngine,
    snippet_margin: int,
    options: StageOptions | None = None,
) -> str:
    """OCR page `page_id` into field rows unless done already; return the page's new status.

    A page that cannot be read (blank, tiny, no text, Tesseract failing) is marked
    `ocr_failed` with the reason, so that one bad page never stops its batch.
    """
    with db.connect() as conn:
        page = conn.execute(select(schema.pages).where(schema.pages.c.id == page_id)).one()
        done = conn.execute(
            select(func.count())
            .select_from(schema.fields)
            .where(schema.fields.c.page_id == page_id)
        ).scalar_one()
    if page.status != "ingested" or done:
        return str(page.status)
    try:
        image = Image.open(io.BytesIO(blobs.get(page.image_key)))
        image.load()
        read, reads = read_template_page(image, template, engine, options)
        if template.kind == "lines" and template.key_fields:
            # Key fields first: their columns come first in the exports, as their ids here.
            reads = key_field_reads(template, reads) + reads
        cleaned = read.prepared.image
        snippets = {r.name: crop_snippet(cleaned, r.box, snippet_margin) for r in reads}
        to_scan = read.prepared.to_page.inverse()
        if read.notes:
            log.info("page %s: %s", page_id, "; ".join(read.notes))
    except KeraniError as e:
        log.warning("page %s could not be OCRed: %s", page_id, e)
        with db.begin() as conn:
            conn.execute(
                schema.pages.update()
                .where(schema.pages.c.id == page_id)
                .values(status=PageStatus.OCR_FAILED, error=str(e))
            )
        return PageStatus.OCR_FAILED
    sensitivity = {f.name: f.sensitivity for f in (*template.fields, *template.key_fields)}
    rows: list[dict[str, Any]] = []
    guesses: list[Reading] = []
    for r in reads:
        key = f"snippets/{page_id}/{r.name}{SNIPPET_SUFFIX}"
        blobs.put(key, snippets[r.name])
        x0, y0, x1, y1 = clip_box(to_scan.box(r.box), image.width, image.height)
        rows.append(
            {
                "page_id": page_id,
                "name": r.name,
                "kind": r.kind,
                "x0": x0,
                "y0": y0,
                "x1": x1,
                "y1": y1,
                # Template-free lines can hold anything: treat them as personal data.
                "sensitivity": sensitivity.get(r.name, Sensitivity.PERSONAL),
                "snippet_key": key,
                "status": FieldStatus.PENDING,
                "answer_count": 0,
            }
        )
        # The stage keeps only its guess (FieldRead): a re-OCR or second engine's own
        # reading is folded into the guess's evidence, not kept as a reading of its own.
        guesses.append(Reading(engine.name, r.text, r.confidence, r.evidence))
    with db.begin() as conn:
        # Guard against a concurrent run of the same page: only the first writer inserts.
        updated = conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id == page_id, schema.pages.c.status == "ingested")
            # What the archive files name as the page's languages (records.archive).
            .values(status=PageStatus.OCRED, ocr_languages=getattr(engine, "languages", None))
        ).rowcount
        if updated:
            store_fields(conn, rows, guesses)
    return PageStatus.OCRED
