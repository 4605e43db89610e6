"""The pre-OCR stage for one page: clean, OCR once, turn if needed, align, read every field.

1. `prepare_page`: size checks, greyscale, contrast, deskew (ocr.cleanup).
2. One page OCR. When the result looks like an upside-down or sideways page (few
   confident words), Tesseract's OSD says how far to turn it and the turned page is read
   again; the better reading wins. Pages with no readable text are refused.
3. Regions: the template's boxes aligned by anchor words, truth boxes in the benchmark, or
   one region per text line on template-free pages.
4. Words to regions; the doubtful regions (low confidence, or a typed field that fails its
   validator) are re-read in one strip per character set, within a pixel budget.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from kerani.core.boxes import coverage
from kerani.core.errors import BadInputError, TemplateMismatchError
from kerani.core.settings import OcrSettings
from kerani.core.text import fold_whitespace
from kerani.forms.rendering import blank_form
from kerani.forms.templates import Template
from kerani.forms.validators import validate
from kerani.ocr.align import (
    ANCHORS_SUFFIX,
    Anchor,
    anchors_found,
    anchors_from_words,
    fit_alignment,
    read_anchors,
)
from kerani.ocr.calibration import BUNDLED_CALIBRATIONS
from kerani.ocr.cleanup import PreparedPage, clean_page, prepare_page, turn
from kerani.ocr.engine import Box, OcrEngine, Word
from kerani.ocr.fields import guesses_by_line, join_words
from kerani.ocr.geometry import Affine, clip_box
from kerani.ocr.ink import ink_masks, unread_ink, unread_regions
from kerani.ocr.reocr import CHARSETS, Crop, CropEngine, read_crops, reread
from kerani.ocr.second_engine import second_engine
from kerani.ocr.vote import Candidate, vote

# A page showing fewer than this share of its template's anchor words is another document
# (receipts read as the form show 0 or 1 of 50); a poor scan of the form shows a good many.
MISMATCH_BELOW = 0.1
UNALIGNED = "not aligned"
UNALIGNED_EVIDENCE = "unaligned"  # the evidence group of fields on an unaligned page
UNREAD_EVIDENCE = "unread"  # ink that no word covered: no calibrated rule accepts it


@runtime_checkable
class BlockEngine(Protocol):
    """An engine that can also read strips of crops (Tesseract)."""

    name: str

    def read_page(self, image: Image.Image) -> list[Word]:
        """Return every word found on the page."""
        ...

    def read_block(
        self, image: Image.Image, psm: int, variables: dict[str, str] | None = None
    ) -> list[Word]:
        """Return the words of an image read in page-segmentation mode `psm`."""
        ...


@dataclass(frozen=True)
class StageOptions:
    """What the stage does beyond one page OCR; the defaults are what the benchmark kept."""

    deskew: bool = True
    scale_text: bool = True  # scale pages with small text up (ocr.cleanup.text_scale)
    denoise: bool = False
    contrast: bool = False
    orientation: bool = True
    reocr: bool = True
    reocr_in_process: bool = True  # crops read one by one by tesserocr; off: strips
    # Re-read a field whose page confidence is at least this, to confirm it (off: above
    # 100). Measured on SROIE, confirmation did not make any group of lines safe to
    # auto-accept at 99.5% (both reads drop the same trailing colons) and it took the
    # budget from corrections: field accuracy 57.6% without, 54.8% with it at 95.
    confirm_above: float = 101.0
    # ... or below this (to correct it) ...
    reocr_below: float = 90.0
    # ... as long as the crops re-read add up to at most this share of all the fields'
    # pixels: a strip costs about as much as the page text it holds.
    reocr_budget: float = 0.08
    # A field with more ink next to or inside it that no word covers than this share of
    # the ink its words cover is marked "-ink" (a dropped colon, digit or word).
    unread_ink_max: float = 0.04
    # A second engine ("rapidocr", ocr.second_engine; '' for none) reads every field whose
    # confidence is from `second_above` to below `second_below`, every invalid one and
    # every one with ink unread beside it: evidence "-2agree"
    # when it reads the same text (ignoring case and spacing runs), "-2differ" when not,
    # and then the text is the two readings' vote (ocr.vote). On template-free pages its
    # detector finds the lines. On SROIE lines it takes field accuracy from 64% to 81%,
    # at about twice the stage's time (see ocr/calibrations/README.md).
    second_engine: str = field(
        default_factory=lambda: os.environ.get("KERANI_OCR_SECOND_ENGINE", "rapidocr")
    )
    second_above: float = 0.0
    second_below: float = 95.0
    # The second engine's vote against Tesseract's, per unit of confidence: on SROIE lines
    # where the two differ, RapidOCR was right 60% of the time and Tesseract 14%.
    second_weight: float = 1.5

    @classmethod
    def from_settings(cls, ocr: OcrSettings) -> StageOptions:
        """The options a deployment's OCR settings ask for."""
        return cls(
            deskew=ocr.deskew,
            orientation=ocr.orientation,
            reocr=ocr.reocr,
            confirm_above=ocr.confirm_above,
            reocr_below=ocr.reocr_below,
            reocr_budget=ocr.reocr_budget,
            second_engine=ocr.second_engine,
        )


@dataclass(frozen=True)
class Region:
    """Where a field is on the cleaned page, and its type."""

    name: str
    kind: str
    box: Box
    # "ocr": words or a template put it there; "ink": ink no word covers, which people
    # check ("is there text here?"), never auto-accepted (evidence UNREAD_EVIDENCE).
    found_by: str = "ocr"


@dataclass(frozen=True)
class FieldRead:
    """The stage's guess for one field, with the evidence routing needs."""

    name: str
    kind: str
    box: Box
    text: str
    confidence: float
    evidence: str  # page | agree | reocr | disagree, + "-ink", "-num", "-2agree" (ocr.calibration)

    @property
    def valid(self) -> bool:
        """True when the text passes its field type's validator."""
        return _is_valid(self.kind, self.text)


@dataclass
class PageRead:
    """A cleaned page and its words, in cleaned-page pixels."""

    prepared: PreparedPage
    words: list[Word]
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # time per costly step
    _ink: tuple[np.ndarray, np.ndarray] | None = field(default=None, init=False, repr=False)

    def ink_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """The page's ink and what its words cover (ocr.ink.ink_masks), made once a page."""
        if self._ink is None:
            self._ink = ink_masks(self.prepared.image, self.words)
        return self._ink


def _good_chars(words: Sequence[Word]) -> int:
    return sum(len(w.text) for w in words if w.confidence >= 70 and len(w.text) >= 2)


def _looks_turned(words: Sequence[Word]) -> bool:
    # Upside-down or sideways text comes out as short, unsure fragments.
    if not words:
        return True
    mean = sum(w.confidence for w in words) / len(words)
    return mean < 60 or _good_chars(words) < 20


def _poor(words: Sequence[Word]) -> bool:
    return _looks_turned(words)


def lines_run_vertically(words: Sequence[Word]) -> bool:
    """True when most words of three or more characters are taller than wide.

    A page read sideways can still give confident text: Tesseract finds the vertical
    lines and reads them (SROIE receipts turned 90 degrees clockwise read 'well'), so
    poor text alone misses it; only the shape of the word boxes tells.
    """
    long = [w for w in words if len(w.text) >= 3]
    tall = sum(1 for w in long if w.box[3] - w.box[1] > w.box[2] - w.box[0])
    return len(long) >= 3 and tall > len(long) / 2


def read_page_words(
    image: Image.Image, engine: OcrEngine, options: StageOptions | None = None
) -> PageRead:
    """Clean a scan and OCR it once; refuse pages with no text.

    Only a page whose first reading is poor (few confident characters) or runs vertically
    (a page scanned sideways) costs more, in this order: Tesseract's OSD and a reading of
    the page turned the way it says; for poor pages also a reading
    with the contrast stretched (faint thermal receipts); a reading as one block of text
    (--psm 6, for pages whose layout analysis finds no text at all). The reading with the
    most confident characters wins.
    """
    opts = options or StageOptions()
    prepared = prepare_page(
        image,
        deskew=opts.deskew,
        denoise=opts.denoise,
        contrast=opts.contrast,
        scale_text=opts.scale_text,
    )
    words = engine.read_page(prepared.image)
    notes = list(prepared.notes)
    seconds: dict[str, float] = {}
    if isinstance(engine, BlockEngine) and (_poor(words) or lines_run_vertically(words)):
        from kerani.ocr.tesseract import detect_orientation

        osd = detect_orientation(prepared.image) if opts.orientation else None
        if osd is not None and osd.rotate:
            # OSD's "Rotate" is clockwise; ocr.cleanup.turn counts counter-clockwise.
            img, to_page = turn(prepared.image, prepared.to_page, 360 - osd.rotate)
            turned_words = engine.read_page(img)
            # Sideways text read along its lines can have many confident characters: a
            # turn that makes the lines run across the page wins unless it reads less.
            upright = lines_run_vertically(words) and not lines_run_vertically(turned_words)
            if _good_chars(turned_words) > _good_chars(words) or (
                upright and _good_chars(turned_words) >= _good_chars(words) // 2
            ):
                # text_px None: the turned page's lines are measured anew.
                prepared = replace(prepared, image=img, to_page=to_page, text_px=None)
                words = turned_words
                notes.append(f"turned {osd.rotate} degrees clockwise")
        if _poor(words) and not opts.contrast:
            stretched = clean_page(prepared.image)
            again = engine.read_page(stretched)
            if _good_chars(again) > _good_chars(words):
                prepared = replace(prepared, image=stretched, text_px=None)
                words = again
                notes.append("contrast stretched (faint page)")
        if _poor(words):
            block = engine.read_block(prepared.image, psm=6)
            if _good_chars(block) > _good_chars(words):
                words = block
                notes.append("read as one block of text")
    if _good_chars(words) < 4:
        # Tesseract's layout analysis can find nothing on a page a neural detector reads
        # (SROIE receipt 052 at half resolution): the second engine reads the page then.
        reader = second_engine(opts.second_engine)
        read_page = getattr(reader, "read_page", None)
        if reader is not None and callable(read_page) and isinstance(engine, BlockEngine):
            started = time.perf_counter()
            rescued: list[Word] = read_page(prepared.image)
            seconds["second_engine_page"] = time.perf_counter() - started
            if _good_chars(rescued) >= 4:
                words = rescued
                notes.append(f"read by {reader.name}: Tesseract found no text")
    if _good_chars(words) < 4:
        raise BadInputError("no readable text on the page (not a document, or unreadable)")
    return PageRead(prepared=prepared, words=words, notes=notes, seconds=seconds)


def assign_words(words: Sequence[Word], boxes: Sequence[Box]) -> list[list[Word]]:
    """Give each word to the box that holds most of it (at least half), or to none."""
    out: list[list[Word]] = [[] for _ in boxes]
    for w in words:
        best, best_share = -1, 0.5
        for i, b in enumerate(boxes):
            share = coverage(b, w.box)
            if share > best_share:
                best, best_share = i, share
        if best >= 0:
            out[best].append(w)
    return out


def _is_valid(kind: str, text: str) -> bool:
    return bool(text.strip()) and validate(kind, text) is None


def _area(box: Box) -> int:
    return max(0, box[2] - box[0]) * max(0, box[3] - box[1])


def _choose_reocr(
    regions: Sequence[Region],
    page_reads: Sequence[tuple[str, float]],
    opts: StageOptions,
    budget: float | None,
) -> list[int]:
    # Three kinds of field are worth a second read, in this order: a typed field that
    # fails its validator (a digits-only read often fixes it); a confident field, whose
    # confirmation by a second read is the evidence that lets routing auto-accept it
    # (Tesseract's confidence alone is not: on SROIE, lines scored >= 95 are 94% right);
    # a doubtful one, which a second read may correct.
    candidates: list[tuple[int, float, int]] = []
    for i, (r, (text, conf)) in enumerate(zip(regions, page_reads, strict=True)):
        typed = r.kind in CHARSETS
        if typed and text and not _is_valid(r.kind, text):
            candidates.append((0, conf, i))
        elif text and conf >= opts.confirm_above:
            candidates.append((1, -conf, i))
        elif conf < opts.reocr_below:
            candidates.append((2, conf, i))
    candidates.sort()
    if budget is None:
        return sorted(i for _prio, _conf, i in candidates)
    chosen: list[int] = []
    left = budget * sum(_area(r.box) for r in regions)
    for _prio, _conf, i in candidates:
        area = _area(regions[i].box)
        if area <= left:
            chosen.append(i)
            left -= area
    return sorted(chosen)


def _worth_rereading(
    todo: list[int],
    regions: Sequence[Region],
    page_reads: Sequence[tuple[str, float]],
    opts: StageOptions,
) -> list[int]:
    """The chosen re-reads that pay: all of them, or with the second engine on only some.

    With the second engine reading the doubtful fields, a Tesseract re-read of a crop adds
    nothing to the vote (SROIE lines: 81.4% right without, 81.3% with) but its time: only
    typed fields that fail their validator are re-read, with their character whitelist,
    which the second engine has not.
    """
    if not opts.second_engine:
        return todo
    return [
        i
        for i in todo
        if regions[i].kind in CHARSETS and not _is_valid(regions[i].kind, page_reads[i][0])
    ]


def _merge(kind: str, page: tuple[str, float], again: tuple[str, float]) -> tuple[str, float, str]:
    (p_text, p_conf), (r_text, r_conf) = page, again
    p_text, r_text = fold_whitespace(p_text), fold_whitespace(r_text)
    if not r_text:
        return p_text, p_conf, "page"
    if p_text == r_text:
        return p_text, max(p_conf, r_conf), "agree"
    if not p_text:
        return r_text, r_conf, "reocr"
    if kind in CHARSETS:
        p_ok, r_ok = _is_valid(kind, p_text), _is_valid(kind, r_text)
        if p_ok != r_ok:
            return (r_text, r_conf, "disagree") if r_ok else (p_text, p_conf, "disagree")
    return (r_text, r_conf, "disagree") if r_conf > p_conf else (p_text, p_conf, "disagree")


def read_regions(
    page: PageRead,
    regions: Sequence[Region],
    engine: OcrEngine,
    options: StageOptions | None = None,
) -> list[FieldRead]:
    """Each region's text from the page words, re-reading the doubtful ones in strips."""
    opts = options or StageOptions()
    img = page.prepared.image
    boxes = [clip_box(r.box, img.width, img.height) for r in regions]
    page_reads = [join_words(ws) for ws in assign_words(page.words, boxes)]
    again: dict[int, tuple[str, float]] = {}
    if opts.reocr and isinstance(engine, BlockEngine):
        started = time.perf_counter()
        # In process, a crop costs little: every candidate is read; a strip costs about
        # what the page text it holds does, so strips keep to the pixel budget.
        todo = _choose_reocr(regions, page_reads, opts, budget=None)
        todo = _worth_rereading(todo, regions, page_reads, opts)
        crops = [Crop(boxes[i], regions[i].kind) for i in todo]
        readings = (
            read_crops(engine, img, crops, page.prepared.line_px)
            if opts.reocr_in_process and isinstance(engine, CropEngine)
            else None
        )
        if readings is None:
            todo = _choose_reocr(regions, page_reads, opts, budget=opts.reocr_budget)
            todo = _worth_rereading(todo, regions, page_reads, opts)
            readings = reread(engine, img, [Crop(boxes[i], regions[i].kind) for i in todo])
        for i, reading in zip(todo, readings, strict=True):
            again[i] = (reading.text, reading.confidence)
        page.seconds["reocr"] = time.perf_counter() - started
    ink, covered = page.ink_masks()
    out = []
    for i, r in enumerate(regions):
        if i in again:
            text, conf, evidence = _merge(r.kind, page_reads[i], again[i])
        else:
            text, conf, evidence = fold_whitespace(page_reads[i][0]), page_reads[i][1], "page"
        if text and unread_ink(ink, covered, boxes[i]) > opts.unread_ink_max:
            evidence += "-ink"
        if r.kind not in CHARSETS and NUMERIC_TEXT.fullmatch(text):
            # Free text that is all figures (amounts, dates on receipts) errs differently
            # from words: its own calibration group.
            evidence += "-num"
        out.append(FieldRead(r.name, r.kind, boxes[i], text, conf, evidence))
    started = time.perf_counter()
    out = _second_opinion(img, out, opts)
    page.seconds["second_engine"] = time.perf_counter() - started
    # Ink no word covered is asked of people whatever any engine made of it.
    return [
        replace(read, evidence=UNREAD_EVIDENCE) if r.found_by == "ink" else read
        for r, read in zip(regions, out, strict=True)
    ]


# Figures and the separators of amounts, dates and times, without spaces.
NUMERIC_TEXT = re.compile(r"[0-9][0-9.,:/%-]*")


def same_text(a: str, b: str) -> bool:
    """Whether two engines read the same: equal after folding whitespace runs and case."""
    return fold_whitespace(a).casefold() == fold_whitespace(b).casefold()


def _combined(kind: str, tesseract: FieldRead, text: str, conf: float, prior: float) -> str:
    """Tesseract's and the second engine's readings voted character by character."""
    voted = vote(
        [
            Candidate(tesseract.text, max(tesseract.confidence, 1.0) / 100),
            Candidate(fold_whitespace(text), prior * max(conf, 1.0) / 100),
        ]
    )
    # A typed field keeps a reading that passes its validator over a vote that does not
    # (the second engine has no character whitelist).
    if kind in CHARSETS and not _is_valid(kind, voted) and tesseract.valid:
        return tesseract.text
    return fold_whitespace(voted)


def _second_opinion(
    img: Image.Image, reads: list[FieldRead], opts: StageOptions
) -> list[FieldRead]:
    reader = second_engine(opts.second_engine)
    if reader is None:
        return reads
    # A valid field Tesseract is sure of (>= second_below) and that left no ink unread
    # gains nothing from a second reading (SROIE lines at >= 95: 93.3% right alone, 93.4%
    # voted) and costs its time; an invalid one is always read.
    todo = [
        i
        for i, r in enumerate(reads)
        if not r.valid
        or "-ink" in r.evidence
        or opts.second_above <= r.confidence < opts.second_below
    ]
    answers = reader.read_lines(img, [reads[i].box for i in todo])
    out = list(reads)
    for i, (text, conf) in zip(todo, answers, strict=True):
        r = reads[i]
        if same_text(r.text, text):
            out[i] = replace(r, evidence=r.evidence + "-2agree")
        else:
            # The evidence stays Tesseract's (its confidence is what the rule's floors
            # are on); the text is the vote, which the crowd then checks.
            voted = _combined(r.kind, r, text, conf, opts.second_weight)
            out[i] = replace(r, text=voted, evidence=r.evidence + "-2differ")
    return out


# ------------------------------------------------------------------------------ templates


@functools.lru_cache(maxsize=16)
def _rendered_anchors(template_json: str, languages: str) -> tuple[Anchor, ...]:
    # Imported here: rendering is only needed for a template without bundled anchors.
    from kerani.ocr.tesseract import tesseract_words

    template = Template.model_validate_json(template_json)
    words = tesseract_words(blank_form(template), languages=languages)
    return tuple(anchors_from_words(words, [f.box for f in template.fields]))


def template_anchors(template: Template, languages: str = "eng") -> list[Anchor]:
    """The template's anchor words: its own (chosen from a sample scan), else bundled in
    ocr/calibrations, else from a clean rendering."""
    if template.anchors:
        return [Anchor(a.text, a.x, a.y) for a in template.anchors]
    path = BUNDLED_CALIBRATIONS / f"{template.name}{ANCHORS_SUFFIX}"
    if path.is_file():
        return read_anchors(path)
    return list(_rendered_anchors(template.model_dump_json(), languages))


def template_regions(
    template: Template, page: PageRead, anchors: Sequence[Anchor] | None
) -> tuple[list[Region], str]:
    """The template's field boxes on the cleaned page, and how they were placed."""
    mapping: Affine | None = fit_alignment(anchors, page.words) if anchors else None
    how = "aligned by anchor words"
    found = anchors_found(anchors, page.words) if mapping is None and anchors else 0
    if mapping is None and anchors and found < MISMATCH_BELOW * len(anchors):
        # The page shows almost none of its template's printed words: another form, a
        # receipt. Reading its boxes anyway would put a receipt's "CASH BILL" in the
        # address, confidently; the page is refused for this template. (A poor scan of the
        # right form shows many of them, only not where they agree: it is read unaligned.)
        raise TemplateMismatchError(
            f"does not look like the form {template.name!r}: alignment failed, {found} of "
            f"its {len(anchors)} printed anchor words found where they agree; submit it "
            "with its own template"
        )
    if mapping is None:
        # No anchors to go by (an engine without word boxes), or too few that agree: the
        # scan's own geometry, scaled to the page size.
        how = f"{UNALIGNED} ({found} of {len(anchors or ())} anchor words): scaled to the page"
        assert template.page_size is not None  # checked when the template was loaded
        scan_w, scan_h = page.prepared.scan_size
        sx, sy = scan_w / template.page_size[0], scan_h / template.page_size[1]
        mapping = page.prepared.to_page.then_after(Affine(sx, 0, 0, 0, sy, 0))
    regions = [Region(f.name, f.type, mapping.box(f.box)) for f in template.fields]
    return regions, how


@runtime_checkable
class LineDetector(Protocol):
    """An engine that finds text lines on a page without reading them (RapidOCR's)."""

    def detect_lines(self, image: Image.Image) -> list[Box]:
        """The boxes of the page's text lines."""
        ...


def _overlaps(a: Box, b: Box) -> bool:
    return coverage(a, b) > 0.3 or coverage(b, a) > 0.3


def line_regions(page: PageRead, detector: LineDetector | None = None) -> list[Region]:
    """Template-free pages: one region per text line, so that no text goes unasked.

    With a line detector (the second engine's), its lines, then Tesseract's segments
    (ocr.fields.guesses_by_line) that none of them holds; without one, Tesseract's
    segments. Then ink that no word and no line covers, as regions of its own for people
    to check. Named line_001, ... in reading order (top to bottom, then left to right).
    """
    segments = [g.box for g in guesses_by_line(page.words)]
    lines = segments
    if detector is not None:
        started = time.perf_counter()
        found = detector.detect_lines(page.prepared.image)
        page.seconds["line_detection"] = time.perf_counter() - started
        lines = found + [b for b in segments if not any(_overlaps(b, d) for d in found)]
    ink, by_words = page.ink_masks()
    covered = by_words.copy()  # the page's own mask serves the fields' -ink evidence too
    for x0, y0, x1, y1 in lines:
        covered[max(0, y0) : y1, max(0, x0) : x1] = True
    unread = unread_regions(ink, covered, page.prepared.line_px)
    boxes = [(b, "ocr") for b in lines] + [(b, "ink") for b in unread]
    boxes.sort(key=lambda b: (b[0][1], b[0][0]))
    return [
        Region(f"line_{i:03d}", "line", box, found_by)
        for i, (box, found_by) in enumerate(boxes, start=1)
    ]


def read_template_page(
    image: Image.Image,
    template: Template,
    engine: OcrEngine,
    options: StageOptions | None = None,
    anchors: Sequence[Anchor] | None = None,
) -> tuple[PageRead, list[FieldRead]]:
    """The whole stage for one page of a template (a form or template-free lines)."""
    page = read_page_words(image, engine, options)
    if template.kind == "lines":
        reader = second_engine((options or StageOptions()).second_engine)
        regions = line_regions(page, reader if isinstance(reader, LineDetector) else None)
    else:
        if anchors is None:
            languages = getattr(engine, "languages", "eng")
            anchors = (
                template_anchors(template, languages) if isinstance(engine, BlockEngine) else []
            )
        regions, how = template_regions(template, page, anchors)
        page.notes.append(how)
        if how.startswith(UNALIGNED):
            # Boxes placed by guesswork are their own evidence group: no calibrated rule
            # accepts them until people have checked enough of them (ocr.calibration).
            reads = read_regions(page, regions, engine, options)
            return page, [replace(r, evidence=UNALIGNED_EVIDENCE) for r in reads]
    return page, read_regions(page, regions, engine, options)
