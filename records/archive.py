"""Per-page text layers for archives: hOCR with the settled (corrected) value of each field.

Each field becomes an `ocr_carea` holding one `ocr_line` whose words carry the value people
settled on, or the OCR text where the machine was trusted. Word boxes are the field's box
split in proportion to word lengths: after a correction the true word positions are not
known, and a searchable-PDF or full-text tool needs only roughly placed words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from sqlalchemy import Engine, select

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import ValueKind, ValueSource
from kerani.forms.catalogue import template_of
from kerani.storage import schema
from kerani.storage.blobs import BlobStore

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def hocr_key(batch_id: str, filename: str, page_number: int) -> str:
    """The blob key of a page's hOCR file: readable, and stable from one export to the next."""
    safe = _UNSAFE.sub("_", filename.replace("/", "__")).strip("._") or "page"
    return f"exports/{batch_id}/hocr/{safe}.p{page_number:03d}.hocr"


@dataclass(frozen=True)
class _Field:
    name: str
    box: tuple[int, int, int, int]
    text: str
    kind: str
    source: str
    confidence: float


def _words(text: str, box: tuple[int, int, int, int]) -> list[tuple[str, tuple[int, ...]]]:
    words = text.split()
    if not words:
        return []
    x0, y0, x1, y1 = box
    # One space's width between words, the rest shared by character count.
    units = sum(len(w) for w in words) + len(words) - 1
    step = (x1 - x0) / max(1, units)
    out: list[tuple[str, tuple[int, ...]]] = []
    pos = 0
    for w in words:
        left = x0 + round(pos * step)
        right = max(left + 1, x0 + round((pos + len(w)) * step))
        out.append((w, (left, y0, min(right, x1), y1)))
        pos += len(w) + 1
    return out


def _bbox(box: tuple[int, ...]) -> str:
    return "bbox " + " ".join(str(v) for v in box)


def render_hocr(
    filename: str, page_number: int, size: tuple[int, int], fields: list[_Field]
) -> str:
    """An hOCR 1.2 document for one page (XHTML, UTF-8)."""
    p = page_number
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        '<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="ms" lang="ms">',
        "<head>",
        f"<title>{escape(filename)} page {p}</title>",
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />',
        '<meta name="ocr-system" content="kerani (tesseract + people)" />',
        '<meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_line ocrx_word" />',
        "</head>",
        "<body>",
        f'<div class="ocr_page" id="page_{p}" title={quoteattr(_page_title(filename, p, size))}>',
    ]
    for i, f in enumerate(fields, start=1):
        attrs = (
            f"data-field={quoteattr(f.name)} data-source={quoteattr(f.source)} "
            f"data-kind={quoteattr(f.kind)}"
        )
        out.append(f'<div class="ocr_carea" id="block_{p}_{i}" title="{_bbox(f.box)}" {attrs}>')
        out.append(
            f'<span class="ocr_line" id="line_{p}_{i}" '
            f'title="{_bbox(f.box)}; x_wconf {round(f.confidence)}">'
        )
        for j, (word, box) in enumerate(_words(f.text, f.box), start=1):
            out.append(
                f'<span class="ocrx_word" id="word_{p}_{i}_{j}" '
                f'title="{_bbox(box)}; x_wconf {round(f.confidence)}">{escape(word)}</span>'
            )
        out.append("</span>")
        out.append("</div>")
    out += ["</div>", "</body>", "</html>", ""]
    return "\n".join(out)


def _page_title(filename: str, page_number: int, size: tuple[int, int]) -> str:
    name = filename.replace('"', "'")
    return f'image "{name}"; bbox 0 0 {size[0]} {size[1]}; ppageno {page_number - 1}'


def _confidence(cell: dict[str, Any]) -> float:
    if cell.get("source") == ValueSource.OCR:
        return float(cell.get("ocr_confidence") or 0.0)
    return 100.0 * float(cell.get("agreement") or 0.0)


def page_hocr(db: Engine, page_id: int) -> tuple[str, str]:
    """The hOCR of a page with a record, and its blob key; NotFoundError if it has none."""
    p, s, f, r = schema.pages, schema.scans, schema.fields, schema.records
    with db.connect() as conn:
        row = conn.execute(
            select(
                p.c.batch_id,
                p.c.page_index,
                p.c.width,
                p.c.height,
                p.c.template,
                p.c.template_id,
                s.c.filename,
                r.c.data,
            )
            .join(s, s.c.id == p.c.scan_id)
            .join(r, r.c.page_id == p.c.id)
            .where(p.c.id == page_id)
        ).first()
        if row is None:
            raise NotFoundError(f"page {page_id} has no record yet")
        boxes = {
            b.name: (b.x0, b.y0, b.x1, b.y1)
            for b in conn.execute(
                select(f.c.name, f.c.x0, f.c.y0, f.c.x1, f.c.y1).where(f.c.page_id == page_id)
            )
        }
    data: dict[str, dict[str, Any]] = json.loads(row.data)
    # A key field's value is read off the page's lines, which the layer holds already: its
    # words again over them would be the page's text twice.
    keys = {k.name for k in template_of(db, row.template, row.template_id).key_fields}
    fields = [
        _Field(
            name=name,
            box=boxes[name],
            text=str(cell.get("value") or "") if cell.get("kind") == ValueKind.TEXT else "",
            kind=str(cell.get("kind")),
            source=str(cell.get("source")),
            confidence=_confidence(cell),
        )
        for name, cell in data.items()
        if name in boxes and name not in keys
    ]
    # Reading order: top to bottom, then left to right.
    fields.sort(key=lambda x: (x.box[1], x.box[0], x.name))
    number = row.page_index + 1
    text = render_hocr(row.filename, number, (row.width, row.height), fields)
    return text, hocr_key(row.batch_id, row.filename, number)


def write_text_layers(db: Engine, blobs: BlobStore, batch_id: str) -> list[str]:
    """Write the hOCR of every page of the batch that has a record; return the keys."""
    p, r = schema.pages, schema.records
    with db.connect() as conn:
        page_ids = list(
            conn.execute(
                select(p.c.id)
                .join(r, r.c.page_id == p.c.id)
                .where(p.c.batch_id == batch_id)
                .order_by(p.c.id)
            ).scalars()
        )
    keys = []
    for page_id in page_ids:
        text, key = page_hocr(db, int(page_id))
        blobs.put(key, text.encode("utf-8"))
        keys.append(key)
    return keys
