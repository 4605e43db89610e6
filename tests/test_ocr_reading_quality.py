"""Reading that beats bare Tesseract: small text scaled, crops read in process, a second
engine voted with Tesseract, and template-free ink that no word covers asked of people."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image, ImageDraw, ImageFont

from kerani.core.errors import BadInputError
from kerani.evaluation.ground_truth import fold_whitespace, read_truth
from kerani.forms.templates import load_template
from kerani.microtasks.routing import route_page
from kerani.ocr.calibration import Calibration, GroupRule, load_calibration
from kerani.ocr.engine import NullEngine, Word
from kerani.ocr.stage import (
    UNREAD_EVIDENCE,
    Region,
    StageOptions,
    read_page_words,
    read_regions,
    read_template_page,
)
from kerani.ocr.tesseract import TesseractEngine
from kerani.storage import schema
from kerani.storage.stores import Stores
from tests.factories import ingested_page, read_with_words

needs_tesseract = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract")
RECEIPTS = Path(__file__).resolve().parents[1] / "kerani" / "samples" / "receipts"
TESSERACT_ONLY = StageOptions(second_engine="")


def _right(text: str, truth: str) -> bool:
    return fold_whitespace(text.upper()) == fold_whitespace(truth)


def _half_resolution_reads(options: StageOptions) -> int:
    """Lines of the bundled receipts read right from copies at half their resolution."""
    engine = TesseractEngine()
    right = 0
    for truth in read_truth(RECEIPTS):
        with Image.open(RECEIPTS / truth.page) as im:
            grey = im.convert("L")
        small = grey.resize((grey.width // 2, grey.height // 2), Image.Resampling.BOX)
        page = read_page_words(small, engine, options)
        regions = [
            Region(f.name, "line", page.prepared.to_page.box(tuple(v // 2 for v in f.box)))  # type: ignore[arg-type]
            for f in truth.fields
        ]
        reads = read_regions(page, regions, engine, options)
        right += sum(_right(r.text, f.text) for r, f in zip(reads, truth.fields, strict=True))
    return right


@needs_tesseract
def test_half_resolution_receipts_read_far_better_with_their_text_scaled_up() -> None:
    unscaled = _half_resolution_reads(StageOptions(scale_text=False, second_engine=""))
    scaled = _half_resolution_reads(TESSERACT_ONLY)
    # Measured: 65 of 180 lines right unscaled, 90 scaled.
    assert scaled >= unscaled + 15, (unscaled, scaled)


@needs_tesseract
def test_field_crops_are_read_in_process_not_by_one_process_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    truth = read_truth(RECEIPTS)[0]
    with Image.open(RECEIPTS / truth.page) as im:
        image = im.convert("RGB")
    engine = TesseractEngine()
    page = read_page_words(image, engine, TESSERACT_ONLY)

    def no_process(*args: object, **kwargs: object) -> list[Word]:
        raise AssertionError("a tesseract process was started for the crops")

    monkeypatch.setattr(engine, "read_block", no_process)
    regions = [Region(f.name, "line", page.prepared.to_page.box(f.box)) for f in truth.fields]
    reads = read_regions(page, regions, engine, TESSERACT_ONLY)
    reread = [r for r in reads if r.evidence.split("-")[0] != "page"]
    assert len(reread) >= 5  # the doubtful lines were read again, by tesserocr
    assert page.seconds["reocr"] > 0
    assert sum(_right(r.text, f.text) for r, f in zip(reads, truth.fields, strict=True)) >= 15


def test_the_second_engine_reads_real_receipt_lines() -> None:
    from kerani.ocr.rapid import RapidOcrEngine

    truth = read_truth(RECEIPTS)[0]
    with Image.open(RECEIPTS / truth.page) as im:
        image = im.convert("RGB")
    lines = truth.fields[:8]
    reads = RapidOcrEngine().read_lines(image, [f.box for f in lines])
    right = [f.text for f, (text, _conf) in zip(lines, reads, strict=True) if _right(text, f.text)]
    # "TAN WOON YANN", "789417-W", "TAMAN DAYA,", "81100 JOHOR BAHRU,", "JOHOR.", ...
    # (line 2's truth says "SDN BND" where the receipt prints "SDN BHD").
    assert len(right) >= 6, [(f.text, t) for f, (t, _c) in zip(lines, reads, strict=True)]
    assert all(0 < conf <= 100 for _t, conf in reads)


def _two_line_page() -> tuple[Image.Image, list[Word]]:
    image = Image.new("L", (700, 260), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    words = []
    x = 30
    for text in ("TOTAL", "12.50"):
        draw.text((x, 40), text, fill=0, font=font)
        x0, y0, x1, y1 = draw.textbbox((x, 40), text, font=font)
        words.append(Word(text, (int(x0), int(y0), int(x1), int(y1)), 96.0, (1, 1, 1)))
        x = int(x1) + 20
    # The engine found the first line only: the second is ink no word covers.
    draw.text((30, 160), "TUNAI 20.00", fill=0, font=font)
    return image, words


def test_ink_that_no_word_covers_becomes_a_region_people_check() -> None:
    image, words = _two_line_page()
    _page, reads = read_template_page(
        image,
        load_template("receipt"),
        NullEngine(words),
        StageOptions(deskew=False, second_engine=""),
    )
    assert [r.name for r in reads] == ["line_001", "line_002"]
    first, second = reads
    assert first.text == "TOTAL 12.50" and first.evidence != UNREAD_EVIDENCE
    # The line the engine missed is a field of its own, empty, for a person to read.
    assert second.evidence == UNREAD_EVIDENCE and second.text == ""
    assert second.box[1] >= 150 and second.box[3] <= 210
    assert second.box[0] <= 40 and second.box[2] >= 200  # the whole line, not a speck
    calibration = load_calibration("receipt")
    assert calibration is not None
    assert not calibration.accepts("line", UNREAD_EVIDENCE, 100.0, True)


def test_a_line_the_engine_missed_reaches_people_as_a_task(stores: Stores) -> None:
    image, words = _two_line_page()
    page_id = ingested_page(stores, image)
    read_with_words(stores, page_id, words)
    # Even a rule that accepts every read line, however unsure, leaves the unread ink.
    every = GroupRule(min_confidence=0.0, samples=1000, accepted=1000, errors=0)
    rule = Calibration(
        template="receipt",
        target=0.995,
        z=1.96,
        rules={"line|page": every, "line|page-num": every},
    )
    route_page(stores.db, page_id, calibration=rule)
    f, t = schema.fields, schema.tasks
    with stores.db.connect() as conn:
        rows = conn.execute(
            sa.select(f.c.id, f.c.name, f.c.status)
            .where(f.c.page_id == page_id, f.c.kind == "line")  # not the receipt's key fields
            .order_by(f.c.name)
        ).all()
        tasks = set(conn.execute(sa.select(t.c.field_id)).scalars())
    assert [r.name for r in rows] == ["line_001", "line_002"]
    assert rows[0].status == "auto_accepted"
    assert rows[1].id in tasks and rows[1].status != "auto_accepted"
    assert stores.blobs.get(f"snippets/{page_id}/line_002.webp")


SROIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sroie"


@needs_tesseract
@pytest.mark.skipif(not (SROIE / "img" / "600.jpg").is_file(), reason="needs ../shared/data/sroie")
def test_a_receipt_framed_by_dark_scan_edges_is_read() -> None:
    # SROIE 600: black rows along its top and bottom; bare tesseract says "Empty page!!".
    with Image.open(SROIE / "img" / "600.jpg") as im:
        image = im.convert("RGB")
    page = read_page_words(image, TesseractEngine(), TESSERACT_ONLY)
    assert any(n.startswith("dark scan edges cleared") for n in page.notes)
    assert page.prepared.image.size == image.size  # painted over, not cropped
    text = " ".join(w.text for w in page.words)
    assert "MEGAH" in text and "INVOICE" in text


@needs_tesseract
@pytest.mark.skipif(not (SROIE / "img" / "052.jpg").is_file(), reason="needs ../shared/data/sroie")
def test_a_page_tesseract_finds_no_text_on_is_read_by_the_second_engine() -> None:
    # SROIE 052 at half its resolution: Tesseract's layout analysis finds no text on it.
    with Image.open(SROIE / "img" / "052.jpg") as im:
        grey = im.convert("L")
    small = grey.resize((grey.width // 2, grey.height // 2), Image.Resampling.BOX)
    with pytest.raises(BadInputError, match="no readable text"):
        read_page_words(small, TesseractEngine(), TESSERACT_ONLY)
    page = read_page_words(small, TesseractEngine(), StageOptions(second_engine="rapidocr"))
    assert any(n.startswith("read by rapidocr") for n in page.notes), page.notes
    assert "SHOPPING" in {w.text for w in page.words}


@needs_tesseract
def test_a_blank_crop_is_read_as_nothing_not_invented() -> None:
    from kerani.ocr.reocr import Crop, read_crops

    page = Image.new("L", (400, 120), 255)
    ImageDraw.Draw(page).text((20, 20), "TOTAL", fill=0, font=ImageFont.load_default(size=30))
    blank, inked = Crop((200, 60, 380, 100), "line"), Crop((10, 10, 150, 60), "line")
    readings = read_crops(TesseractEngine(), page, [blank, inked], line_px=30)
    assert readings is not None
    # Read alone as a line, this white crop came back as "OO" (confidence 0).
    assert readings[0].text == "" and readings[1].text == "TOTAL"
