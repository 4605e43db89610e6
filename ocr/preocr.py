"""Pre-OCR one page: clean it, OCR it once, map words to fields, store guesses and snippets.

The stage itself (clean-up, orientation, alignment, batched re-OCR) is `ocr.stage`; this
module stores its result. Field boxes are stored in scan pixels (what the hOCR export and
box matching against ground truth expect); snippets are cut from the cleaned, levelled page.
The evidence behind a guess (`page`, `agree`, `reocr`, `disagree`) is recorded after a `+`
in `ocr_engine`, e.g. `tesseract-5.3.0+agree`, which routing reads back.
"""

from __future__ import annotations

import io
import logging

from PIL import Image
from sqlalchemy import Engine, func, insert, select

from kerani.core.errors import KeraniError
from kerani.forms.templates import Template
from kerani.ocr.calibration import engine_label
from kerani.ocr.engine import OcrEngine
from kerani.ocr.fields import SNIPPET_SUFFIX, crop_snippet
from kerani.ocr.geometry import clip_box
from kerani.ocr.stage import StageOptions, read_template_page
from kerani.storage import schema
from kerani.storage.blobs import BlobStore

log = logging.getLogger(__name__)


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
                .values(status="ocr_failed", error=str(e))
            )
        return "ocr_failed"
    sensitivity = {f.name: f.sensitivity for f in template.fields}
    rows = []
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
                "ocr_text": r.text,
                "ocr_confidence": r.confidence,
                "ocr_engine": engine_label(engine.name, r.evidence),
                # Template-free lines can hold anything: treat them as personal data.
                "sensitivity": sensitivity.get(r.name, "personal"),
                "snippet_key": key,
                "status": "pending",
                "answer_count": 0,
            }
        )
    with db.begin() as conn:
        # Guard against a concurrent run of the same page: only the first writer inserts.
        updated = conn.execute(
            schema.pages.update()
            .where(schema.pages.c.id == page_id, schema.pages.c.status == "ingested")
            .values(status="ocred")
        ).rowcount
        if updated and rows:
            conn.execute(insert(schema.fields), rows)
    return "ocred"
