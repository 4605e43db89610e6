"""Pre-OCR one page: clean it, OCR it once, map words to fields, store guesses and snippets."""

from __future__ import annotations

import io
import logging

from PIL import Image
from sqlalchemy import Engine, func, insert, select

from kerani.exceptions import KeraniError
from ocr.cleanup import clean_page
from ocr.engine import OcrEngine
from ocr.fields import FieldGuess, crop_snippet, guess_in_region, guesses_by_line
from records.templates import Template
from storage import schema
from storage.blobs import BlobStore

log = logging.getLogger(__name__)


def field_guesses(template: Template, image: Image.Image, engine: OcrEngine) -> list[FieldGuess]:
    """OCR a page once and return one guess per template field (or per text line)."""
    words = engine.read_page(clean_page(image))
    if template.kind == "lines":
        return guesses_by_line(words)
    sx = image.width / template.page_size[0] if template.page_size else 1.0
    sy = image.height / template.page_size[1] if template.page_size else 1.0
    guesses = []
    for spec in template.fields:
        x0, y0, x1, y1 = spec.box
        box = (int(x0 * sx), int(y0 * sy), int(x1 * sx), int(y1 * sy))
        guesses.append(guess_in_region(words, spec.name, spec.type, box))
    return guesses


def preocr_page(
    db: Engine,
    blobs: BlobStore,
    page_id: int,
    template: Template,
    engine: OcrEngine,
    snippet_margin: int,
) -> str:
    """OCR page `page_id` into field rows unless done already; return the page's new status.

    A page that cannot be read is marked `ocr_failed` with the reason, so that one bad
    page never stops its batch.
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
        guesses = field_guesses(template, image, engine)
        snippets = {g.name: crop_snippet(image, g.box, snippet_margin) for g in guesses}
    except KeraniError as e:
        log.warning("page %s could not be OCRed: %s", page_id, e)
        with db.begin() as conn:
            conn.execute(
                schema.pages.update()
                .where(schema.pages.c.id == page_id)
                .values(status="ocr_failed", error=str(e))
            )
        return "ocr_failed"
    rows = []
    for g in guesses:
        key = f"snippets/{page_id}/{g.name}.png"
        blobs.put(key, snippets[g.name])
        rows.append(
            {
                "page_id": page_id,
                "name": g.name,
                "kind": g.kind,
                "x0": g.box[0],
                "y0": g.box[1],
                "x1": g.box[2],
                "y1": g.box[3],
                "ocr_text": g.text,
                "ocr_confidence": g.confidence,
                "ocr_engine": engine.name,
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
