"""Per-page and per-document archive files with the settled (corrected) value of each field.

Per page with a record: hOCR (here) and ALTO (records.alto); per document (a submitted file
of one or more pages): a searchable PDF/A-2b (records.searchable_pdf). All three carry the
same text (records.page_text): each field's value as people settled it, or the OCR text
where the machine was trusted, in the field's box.

Languages: the files say which languages Tesseract read with (its setting such as
'eng+msa'), as the pre-OCR kept it on the page (pages.ocr_languages); for a page read
before that was kept, the caller's `ocr_languages` (the flows pass the deployment's
KERANI_OCR_LANGUAGES), or nothing. The text's own language (hOCR and HTML `lang`, ALTO
`LANG`, the PDF's /Lang) is given only when that is a single language; with several, or
none known, it is left out rather than guessed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pikepdf.pdfa import PdfaError
from sqlalchemy import Engine, Row, select

from kerani import __version__
from kerani.core.errors import BadInputError, NotFoundError
from kerani.records.alto import render_alto
from kerani.records.page_text import (
    FieldText,
    PageText,
    language_tags,
    read_page_text,
    xml_safe,
)
from kerani.records.searchable_pdf import FLAVOUR, PdfPage, paper_sizes, render_pdf
from kerani.storage import schema
from kerani.storage.blobs import BlobStore

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(filename: str) -> str:
    return _UNSAFE.sub("_", filename.replace("/", "__")).strip("._") or "page"


def hocr_key(batch_id: str, filename: str, page_number: int) -> str:
    """The blob key of a page's hOCR file: readable, and stable from one export to the next."""
    return f"exports/{batch_id}/hocr/{_safe(filename)}.p{page_number:03d}.hocr"


def alto_key(batch_id: str, filename: str, page_number: int) -> str:
    """The blob key of a page's ALTO file, named as its hOCR is."""
    return f"exports/{batch_id}/alto/{_safe(filename)}.p{page_number:03d}.alto.xml"


def pdf_key(batch_id: str, filename: str) -> str:
    """The blob key of a document's searchable PDF: one per submitted file."""
    return f"exports/{batch_id}/pdf/{_safe(filename)}.pdf"


def _bbox(box: tuple[int, ...]) -> str:
    return "bbox " + " ".join(str(v) for v in box)


def _single(tags: Sequence[str]) -> str | None:
    """The text's language when there is exactly one; None when unknown or several."""
    return tags[0] if len(tags) == 1 else None


def render_hocr(
    filename: str,
    page_number: int,
    size: tuple[int, int],
    fields: Sequence[FieldText],
    languages: Sequence[str] = (),
) -> str:
    """An hOCR 1.2 document for one page (XHTML, UTF-8); `languages`: BCP 47 tags of the
    languages the page was read with (hOCR's ocr-langs), if known."""
    p = page_number
    lang = _single(languages)
    html = '<html xmlns="http://www.w3.org/1999/xhtml"'
    html += f' xml:lang="{lang}" lang="{lang}">' if lang else ">"
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        html,
        "<head>",
        f"<title>{escape(filename)} page {p}</title>",
        '<meta http-equiv="Content-Type" content="text/html; charset=utf-8" />',
        '<meta name="ocr-system" content="kerani (tesseract + people)" />',
        '<meta name="ocr-capabilities" content="ocr_page ocr_carea ocr_line ocrx_word" />',
    ]
    if languages:
        out.append(f'<meta name="ocr-langs" content={quoteattr(" ".join(languages))} />')
    out += [
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
        for j, (word, box) in enumerate(f.words(), start=1):
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


def _hocr_of(page: PageText, languages: Sequence[str]) -> str:
    return render_hocr(xml_safe(page.filename), page.number, page.size, page.fields, languages)


def page_hocr(db: Engine, page_id: int, ocr_languages: str | None = None) -> tuple[str, str]:
    """The hOCR of a page with a record, and its blob key; NotFoundError if it has none.
    `ocr_languages`: Tesseract's language setting the page was read with, if known."""
    page = read_page_text(db, page_id)
    text = _hocr_of(page, language_tags(ocr_languages))
    return text, hocr_key(page.batch_id, page.filename, page.number)


def _recorded_pages(db: Engine, batch_id: str) -> list[int]:
    p, r = schema.pages, schema.records
    with db.connect() as conn:
        return [
            int(i)
            for i in conn.execute(
                select(p.c.id)
                .join(r, r.c.page_id == p.c.id)
                .where(p.c.batch_id == batch_id)
                .order_by(p.c.id)
            ).scalars()
        ]


def write_text_layers(
    db: Engine, blobs: BlobStore, batch_id: str, ocr_languages: str | None = None
) -> list[str]:
    """Write the hOCR of every page of the batch that has a record; return the keys."""
    keys = []
    for page_id in _recorded_pages(db, batch_id):
        text, key = page_hocr(db, page_id, ocr_languages)
        blobs.put(key, text.encode("utf-8"))
        keys.append(key)
    return keys


@dataclass(frozen=True)
class ArchiveFiles:
    """The blob keys written for a batch, and the documents that got no PDF (and why)."""

    hocr: tuple[str, ...]
    alto: tuple[str, ...]
    pdf: tuple[str, ...]
    pdf_skipped: tuple[tuple[str, str], ...]  # (file name, reason)


def write_archive_files(
    db: Engine, blobs: BlobStore, batch_id: str, ocr_languages: str | None = None
) -> ArchiveFiles:
    """Write hOCR and ALTO of each page with a record, and a searchable PDF/A of each
    document with one; `ocr_languages`: Tesseract's setting the pages were read with."""
    tags = language_tags(ocr_languages)
    hocr: list[str] = []
    alto: list[str] = []
    by_scan: dict[int, dict[int, PageText]] = {}
    for page_id in _recorded_pages(db, batch_id):
        page = read_page_text(db, page_id)
        # The setting the page was read with, kept at pre-OCR; else the caller's.
        languages = page.ocr_languages or ocr_languages
        page_tags = language_tags(languages)
        key = hocr_key(page.batch_id, page.filename, page.number)
        blobs.put(key, _hocr_of(page, page_tags).encode("utf-8"))
        hocr.append(key)
        key = alto_key(page.batch_id, page.filename, page.number)
        blobs.put(key, render_alto(page, languages, _single(page_tags)))
        alto.append(key)
        by_scan.setdefault(page.scan_id, {})[page.page_id] = page
    pdfs: list[str] = []
    skipped: list[tuple[str, str]] = []
    for scan_id, recorded in by_scan.items():
        kept = {p.ocr_languages for p in recorded.values() if p.ocr_languages}
        doc_tags = language_tags(kept.pop()) if len(kept) == 1 else tags
        filename, key_or_none, why = _write_pdf(db, blobs, batch_id, scan_id, recorded, doc_tags)
        if key_or_none is not None:
            pdfs.append(key_or_none)
        else:
            # One unreadable page image must not cost the batch its other files.
            log.warning("no searchable PDF of %s: %s", filename, why)
            skipped.append((filename, why))
    return ArchiveFiles(tuple(hocr), tuple(alto), tuple(pdfs), tuple(skipped))


def _write_pdf(
    db: Engine,
    blobs: BlobStore,
    batch_id: str,
    scan_id: int,
    recorded: dict[int, PageText],
    tags: Sequence[str],
) -> tuple[str, str | None, str]:
    """Write one document's PDF: its file name, the key written (None if none was), and
    why none was."""
    p, s = schema.pages, schema.scans
    with db.connect() as conn:
        scan = conn.execute(select(s.c.filename, s.c.blob_key).where(s.c.id == scan_id)).one()
        rows = conn.execute(
            select(p.c.id, p.c.page_index, p.c.image_key, p.c.width, p.c.height)
            .where(p.c.scan_id == scan_id, p.c.batch_id == batch_id)
            .order_by(p.c.page_index, p.c.id)
        ).all()
    # Every page of the document, the ones still without a record as images only; one row
    # per page of the file, the one with a record first.
    pages: dict[int, Row[Any]] = {}
    for row in sorted(rows, key=lambda r: (r.page_index, r.id not in recorded, -r.id)):
        pages.setdefault(int(row.page_index), row)
    chosen = [pages[i] for i in sorted(pages)]
    filename = str(scan.filename)
    try:
        original = blobs.get(scan.blob_key) if scan.blob_key else None
    except NotFoundError:
        original = None  # the sizes fall back to the default resolution
    sizes = paper_sizes(
        original, [(int(r.page_index), int(r.width), int(r.height)) for r in chosen]
    )
    try:
        pdf_pages = [
            PdfPage(
                png=blobs.get(str(r.image_key)),
                size_pt=size,
                lines=[f.words() for f in recorded[r.id].fields] if r.id in recorded else [],
            )
            for r, size in zip(chosen, sizes, strict=True)
        ]
        data = render_pdf(
            pdf_pages,
            title=filename,
            languages=tags,
            creator=f"Kerani {__version__} (Tesseract + people)",
        )
    except (NotFoundError, BadInputError) as e:
        return filename, None, f"a page image cannot be read: {e}"
    except PdfaError as e:
        return filename, None, f"the PDF did not pass PDF/A-{FLAVOUR} validation: {e}"
    key = pdf_key(batch_id, filename)
    blobs.put(key, data)
    return filename, key, ""
