"""The text of a page with a record, as the archive files carry it: one block per field.

Each field holds the value people settled on, or the OCR text where the machine was trusted,
in the field's box. Word boxes are the field's box split in proportion to word lengths:
after a correction the true word positions are not known, and a searchable-PDF or full-text
tool needs only roughly placed words. hOCR (records.archive), ALTO (records.alto) and the
searchable PDF (records.searchable_pdf) are all drawn from this one reading of the database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from kerani.core.errors import NotFoundError
from kerani.core.vocabulary import ValueKind, ValueSource
from kerani.forms.catalogue import template_of
from kerani.storage import schema

Box = tuple[int, int, int, int]

# Tesseract's language data names (ISO 639-2/3, some with a variant) as BCP 47 tags. A name
# missing here is kept when it is a plain three-letter code, which BCP 47 accepts as a tag.
_BCP47 = {
    "ara": "ar",
    "ben": "bn",
    "chi_sim": "zh-Hans",
    "chi_tra": "zh-Hant",
    "deu": "de",
    "eng": "en",
    "fil": "fil",
    "fra": "fr",
    "hin": "hi",
    "ind": "id",
    "jav": "jv",
    "jpn": "ja",
    "kor": "ko",
    "msa": "ms",
    "nld": "nl",
    "por": "pt",
    "spa": "es",
    "tam": "ta",
    "tel": "te",
    "tha": "th",
    "vie": "vi",
}
# Not languages: orientation and script detection, and equations.
_NOT_LANGUAGES = {"osd", "equ"}
_THREE_LETTERS = re.compile(r"^[a-z]{3}$")
# What XML 1.0 cannot hold (C0 controls other than tab and newlines, lone surrogates, U+FFFE
# and U+FFFF): a value with one would make hOCR and ALTO files no parser reads.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ENGINE = re.compile(r"^(?P<name>[A-Za-z][A-Za-z_]*)-(?P<version>\d[\w.]*)$")


@dataclass(frozen=True)
class FieldText:
    """One field of a page as the archive files show it: its settled text in its box."""

    name: str
    box: Box
    text: str
    kind: str
    source: str
    confidence: float  # 0-100: the OCR's, or people's agreement

    @property
    def corrected(self) -> bool:
        """Whether people settled the value (rather than the OCR alone)."""
        return self.source == ValueSource.HUMAN

    def words(self) -> list[tuple[str, Box]]:
        """The value's words, each with its share of the field's box."""
        return split_words(self.text, self.box)


@dataclass(frozen=True)
class PageText:
    """A page with a record: where it came from, its size, and its fields in reading order."""

    page_id: int
    batch_id: str
    scan_id: int
    filename: str  # the original file's name, as submitted
    number: int  # 1 for the file's first page
    size: tuple[int, int]  # pixels of the page image the boxes refer to
    image_key: str
    source_sha256: str
    fields: tuple[FieldText, ...]
    # The engines whose guesses the fields hold, by name-version (e.g. tesseract-5.3.0).
    engines: tuple[str, ...]
    # Tesseract's language setting the page was read with ('eng+msa'); None for pages read
    # before it was kept (migration 0017).
    ocr_languages: str | None = None


@dataclass(frozen=True)
class Software:
    """An OCR engine named in a record, split into its name and version."""

    name: str
    version: str | None


def xml_safe(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold."""
    return _NOT_XML.sub("", text)


def split_words(text: str, box: Box) -> list[tuple[str, Box]]:
    """The words of `text` (less what XML cannot hold), each with a slice of `box` in
    proportion to its length."""
    words = xml_safe(text).split()
    if not words:
        return []
    x0, y0, x1, y1 = box
    # One space's width between words, the rest shared by character count.
    units = sum(len(w) for w in words) + len(words) - 1
    step = (x1 - x0) / max(1, units)
    out: list[tuple[str, Box]] = []
    pos = 0
    for w in words:
        left = x0 + round(pos * step)
        right = max(left + 1, x0 + round((pos + len(w)) * step))
        out.append((w, (left, y0, min(right, x1), y1)))
        pos += len(w) + 1
    return out


def language_tags(languages: str | None) -> tuple[str, ...]:
    """BCP 47 tags of a Tesseract language setting ('eng+msa' -> ('en', 'ms')); () if none."""
    tags: list[str] = []
    for name in (languages or "").split("+"):
        name = name.strip()
        tag = _BCP47.get(name) or (
            name if _THREE_LETTERS.match(name) and name not in _NOT_LANGUAGES else None
        )
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)


def software(engine: str) -> Software:
    """Split an engine label ('tesseract-5.3.0') into name and version."""
    found = _ENGINE.match(engine)
    if found is None:
        return Software(engine, None)
    return Software(found["name"], found["version"])


def _confidence(cell: dict[str, Any]) -> float:
    if cell.get("source") == ValueSource.OCR:
        return float(cell.get("ocr_confidence") or 0.0)
    return 100.0 * float(cell.get("agreement") or 0.0)


def read_page_text(db: Engine, page_id: int) -> PageText:
    """The text of a page with a record; NotFoundError if it has none."""
    p, s, f, r = schema.pages, schema.scans, schema.fields, schema.records
    with db.connect() as conn:
        row = conn.execute(
            select(
                p.c.batch_id,
                p.c.scan_id,
                p.c.page_index,
                p.c.width,
                p.c.height,
                p.c.template,
                p.c.template_id,
                p.c.image_key,
                p.c.source_sha256,
                p.c.duplicate_of,
                p.c.ocr_languages,
                s.c.filename,
                r.c.data,
            )
            .join(s, s.c.id == p.c.scan_id)
            .join(r, r.c.page_id == p.c.id)
            .where(p.c.id == page_id)
        ).first()
        if row is None:
            raise NotFoundError(f"page {page_id} has no record yet")
        # A page its agency sent before has no fields of its own, only a copy of the first
        # reading's record (kerani.ingest.batches): its boxes are that reading's, on the
        # same page image.
        read = row.duplicate_of if row.duplicate_of is not None else page_id
        languages = row.ocr_languages
        if row.duplicate_of is not None:
            languages = conn.execute(
                select(p.c.ocr_languages).where(p.c.id == row.duplicate_of)
            ).scalar()
        boxes = {
            b.name: (b.x0, b.y0, b.x1, b.y1)
            for b in conn.execute(
                select(f.c.name, f.c.x0, f.c.y0, f.c.x1, f.c.y1).where(f.c.page_id == read)
            )
        }
    data: dict[str, dict[str, Any]] = json.loads(row.data)
    # A key field's value is read off the page's lines, which the layer holds already: its
    # words again over them would be the page's text twice.
    keys = {k.name for k in template_of(db, row.template, row.template_id).key_fields}
    fields = [
        FieldText(
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
    # The record keeps each guess's engine, with the evidence after a '+' (records.assembly).
    engines = sorted(
        {str(c["ocr_engine"]).split("+", 1)[0] for c in data.values() if c.get("ocr_engine")}
    )
    return PageText(
        page_id=page_id,
        batch_id=str(row.batch_id),
        scan_id=int(row.scan_id),
        filename=str(row.filename),
        number=int(row.page_index) + 1,
        size=(int(row.width), int(row.height)),
        image_key=str(row.image_key),
        source_sha256=str(row.source_sha256),
        fields=tuple(fields),
        engines=tuple(engines),
        ocr_languages=str(languages) if languages else None,
    )
