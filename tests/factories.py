"""Build small database states for tests: a page whose fields carry given OCR guesses."""

from __future__ import annotations

import io
import re
import secrets
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import insert, select

from kerani.core.vocabulary import BatchStatus, FieldStatus, PageStatus, ScanStatus
from kerani.forms.templates import load_template
from kerani.ingest.batches import record_scan
from kerani.microtasks.routing import route_page
from kerani.ocr.engine import NullEngine, Word
from kerani.ocr.preocr import Reading, preocr_page, store_fields
from kerani.ocr.stage import StageOptions
from kerani.storage import schema
from kerani.storage.database import utcnow
from kerani.storage.stores import Stores


def png(width: int = 60, height: int = 20) -> bytes:
    """A tiny grey PNG to stand in for a snippet."""
    out = io.BytesIO()
    Image.new("L", (width, height), 200).save(out, format="PNG")
    return out.getvalue()


def text_png(text: str) -> bytes:
    """A snippet-like greyscale PNG showing `text` in a printed font."""
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 22)
    width = int(font.getlength(text)) + 16
    image = Image.new("L", (max(width, 40), 36), 245)
    ImageDraw.Draw(image).text((8, 5), text, fill=20, font=font)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def seed_page(
    stores: Stores,
    guesses: list[tuple[str, str, str, float]],
    template: str = "bantuan_form",
    threshold: float = 96.0,
    pictures: dict[str, str] | None = None,
) -> int:
    """A batch with one OCRed page whose fields are (name, type, ocr_text, confidence); routed."""
    page_id = _new_page(stores, template, "none", (100, 100), PageStatus.OCRED)
    add_fields(stores, page_id, guesses, threshold, pictures)
    return page_id


def add_fields(
    stores: Stores,
    page_id: int,
    guesses: list[tuple[str, str, str, float]],
    threshold: float = 96.0,
    pictures: dict[str, str] | None = None,
) -> None:
    """Store an OCRed page's fields, (name, type, ocr_text, confidence) each, and route it."""
    with stores.db.begin() as conn:
        rows = []
        for i, (name, kind, _text, _conf) in enumerate(guesses):
            key = f"snippets/{page_id}/{name}.png"
            stores.blobs.put(key, text_png(pictures[name]) if pictures else png())
            rows.append(
                {
                    "page_id": page_id,
                    "name": name,
                    "kind": kind,
                    "x0": 0,
                    "y0": 10 * i,
                    "x1": 50,
                    "y1": 10 * i + 8,
                    "snippet_key": key,
                    "status": FieldStatus.PENDING,
                    "answer_count": 0,
                }
            )
        store_fields(conn, rows, [Reading("null", text, conf) for _n, _k, text, conf in guesses])
    route_page(stores.db, int(page_id), threshold)


def new_batch(stores: Stores, template: str = "bantuan_form") -> str:
    """A new, empty batch of the bundled template `template`; its id."""
    batch_id = secrets.token_hex(16)
    with stores.db.begin() as conn:
        conn.execute(
            insert(schema.batches).values(
                id=batch_id,
                template=template,
                source="test",
                status=BatchStatus.INGESTED,
                created_at=utcnow(),
            )
        )
    return batch_id


def add_page(
    stores: Stores,
    scan_id: int,
    index: int,
    status: str,
    *,
    image_key: str = "none",
    size: tuple[int, int] = (100, 100),
    error: str | None = None,
    duplicate_of: int | None = None,
) -> int:
    """Page `index` (from 0) of a scan, in `status`, in the scan's batch; the page's id."""
    s = schema.scans
    with stores.db.begin() as conn:
        scan = conn.execute(
            select(s.c.batch_id, s.c.sha256, schema.batches.c.template)
            .join(schema.batches, schema.batches.c.id == s.c.batch_id)
            .where(s.c.id == scan_id)
        ).one()
        return int(
            conn.execute(
                insert(schema.pages)
                .values(
                    batch_id=scan.batch_id,
                    scan_id=scan_id,
                    source_sha256=scan.sha256,
                    page_index=index,
                    template=scan.template,
                    image_key=image_key,
                    width=size[0],
                    height=size[1],
                    status=status,
                    error=error,
                    duplicate_of=duplicate_of,
                    created_at=utcnow(),
                )
                .returning(schema.pages.c.id)
            ).scalar_one()
        )


def _new_page(
    stores: Stores, template: str, image_key: str, size: tuple[int, int], status: str
) -> int:
    """A new batch with one scan and one page of `size` in `status`; the page's id."""
    batch_id = new_batch(stores, template)
    scan_id = record_scan(
        stores.db,
        batch_id,
        "scan.png",
        size=1,
        sha256=batch_id * 2,
        blob_key=None,
        status=ScanStatus.ACCEPTED,
        error=None,
    )
    return add_page(stores, scan_id, 0, status, image_key=image_key, size=size)


def ingested_page(stores: Stores, image: Image.Image, template: str = "receipt") -> int:
    """A new batch holding one page of `image`, ingested and not yet OCRed; its page id."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    key = f"pages/{secrets.token_hex(16)}.png"
    stores.blobs.put(key, buf.getvalue())
    return _new_page(stores, template, key, image.size, PageStatus.INGESTED)


def read_with_words(stores: Stores, page_id: int, words: list[Word]) -> str:
    """Pre-OCR a receipt page with an engine that 'finds' `words`; the page's new status."""
    return preocr_page(
        stores.db,
        stores.blobs,
        page_id,
        load_template("receipt"),
        NullEngine(words),
        snippet_margin=6,
        options=StageOptions(deskew=False, second_engine=""),
    )


def batch_of(stores: Stores, page_id: int) -> str:
    """The batch id of a page."""
    with stores.db.connect() as conn:
        return str(
            conn.execute(
                select(schema.pages.c.batch_id).where(schema.pages.c.id == page_id)
            ).scalar_one()
        )


def form_token(client: Any) -> str:
    """The CSRF token of the forms shown before sign-in (its cookie lands in the client)."""
    page = client.get("/signin")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None, "the sign-in page has no form token"
    return found.group(1)


def sign_in_with_code(client: Any, code: str) -> Any:
    """Sign an operator, agency user or worker in with their access code; the response."""
    return client.post("/signin/code", data={"code": code, "csrf": form_token(client)})
