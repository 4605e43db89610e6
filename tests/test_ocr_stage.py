"""The pre-OCR stage with real Tesseract: alignment, orientation, bad pages, batched re-OCR."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
from PIL import Image

from kerani.core.boxes import coverage
from kerani.core.errors import BadInputError, TemplateMismatchError
from kerani.evaluation.ground_truth import read_truth
from kerani.evaluation.synthetic import fake_values, generate_dataset, render_form
from kerani.forms.templates import Template, load_template
from kerani.ocr.cleanup import estimate_skew, prepare_page
from kerani.ocr.geometry import Affine
from kerani.ocr.reocr import Crop, read_strip, reread
from kerani.ocr.stage import lines_run_vertically, read_page_words, read_template_page
from kerani.ocr.tesseract import TesseractEngine

pytestmark = pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs tesseract")


@pytest.fixture(scope="module")
def engine() -> TesseractEngine:
    return TesseractEngine("eng")


@pytest.fixture(scope="module")
def form() -> Template:
    return load_template("bantuan_form")


def _clean_form(template: Template, seed: int) -> tuple[Image.Image, dict[str, str]]:
    rng = random.Random(seed)
    values = fake_values(template, rng)
    image, _truth = render_form(
        template, values, rng, noise=0.0, max_skew_deg=0.0, max_shift_frac=0.0, max_scale=0.0
    )
    return image, values


def _content_on_page(box: tuple[int, int, int, int], to_page: Affine) -> tuple[int, int, int, int]:
    from kerani.benchmarks.ocr_bench import _content_box

    return _content_box(box, to_page)


def test_affine_round_trip() -> None:
    m = Affine.rotation_about(2.5, 600, 800).then_after(Affine.similarity(1.1, 0, 30, -20))
    x, y = m.inverse().apply(*m.apply(123.0, 456.0))
    assert abs(x - 123.0) < 1e-6 and abs(y - 456.0) < 1e-6


def test_skew_is_measured(form: Template) -> None:
    image, _values = _clean_form(form, 1)
    for angle in (-2.7, 1.4):
        turned = image.rotate(angle, fillcolor=255)
        # The page was turned counter-clockwise by `angle`: turning it back takes -angle.
        assert abs(estimate_skew(turned) + angle) <= 0.15


@pytest.mark.slow
def test_forms_shifted_turned_and_scaled_are_aligned(
    form: Template, engine: TesseractEngine, tmp_path: Path
) -> None:
    """Scans rotated up to 3 degrees, shifted 5% and scaled 10%: >= 98% of regions cover."""
    generate_dataset(
        form, tmp_path, count=6, seed=11, max_skew_deg=3.0, max_shift_frac=0.05, max_scale=0.10
    )
    covered = total = 0
    for truth in read_truth(tmp_path):
        page, reads = read_template_page(Image.open(tmp_path / truth.page), form, engine)
        assert "aligned by anchor words" in page.notes
        where = {r.name: r.box for r in reads}
        for f in truth.fields:
            total += 1
            content = _content_on_page(f.box, page.prepared.to_page)
            covered += coverage(where[f.name], content) >= 0.95
    assert covered / total >= 0.98


@pytest.mark.slow
@pytest.mark.parametrize(
    ("turn", "clockwise"),
    [(Image.Transpose.ROTATE_180, 180), (Image.Transpose.ROTATE_90, 90)],
)
def test_turned_pages_are_turned_back(
    form: Template, engine: TesseractEngine, turn: Image.Transpose, clockwise: int
) -> None:
    image, values = _clean_form(form, 2)
    page, reads = read_template_page(image.transpose(turn), form, engine)
    assert f"turned {clockwise} degrees clockwise" in page.notes
    right = sum(r.text == values[r.name] for r in reads)
    assert right >= 8, [(r.name, r.text) for r in reads]


@pytest.mark.slow
def test_a_receipt_read_sideways_is_turned_although_its_text_reads(
    engine: TesseractEngine, sroie_dir: Path
) -> None:
    # Turned 90 degrees clockwise, this receipt gives Tesseract hundreds of confident
    # characters along vertical lines: only the shape of the word boxes shows it is sideways.
    scan = next(iter(sorted((sroie_dir / "img").glob("*.jpg"))))
    upright = read_page_words(Image.open(scan), engine)
    sideways = Image.open(scan).transpose(Image.Transpose.ROTATE_270)
    assert not lines_run_vertically(upright.words)
    assert lines_run_vertically(engine.read_page(sideways.convert("L")))
    page = read_page_words(sideways, engine)
    assert "turned 270 degrees clockwise" in page.notes
    assert not lines_run_vertically(page.words)


def test_bad_pages_say_what_is_wrong(engine: TesseractEngine) -> None:
    with pytest.raises(BadInputError, match="too small"):
        prepare_page(Image.new("L", (30, 400), 255))
    with pytest.raises(BadInputError, match="blank page"):
        prepare_page(Image.new("L", (1200, 1600), 250))
    # Not a document: random grey blotches, no text.
    rng = random.Random(3)
    noise = Image.frombytes("L", (400, 300), rng.randbytes(400 * 300)).resize((1200, 900))
    with pytest.raises(BadInputError, match="no readable text"):
        read_page_words(noise, engine)


def test_an_enormous_page_is_shrunk_not_refused() -> None:
    big = Image.new("L", (5000, 4000), 255)
    big.paste(0, (100, 100, 4900, 160))  # a bar of ink, so the page is not blank
    prepared = prepare_page(big, max_pixels=4_000_000)
    assert prepared.image.width * prepared.image.height <= 4_000_000
    assert any("shrunk" in n for n in prepared.notes)
    assert prepared.to_page.scale < 1


def test_a_batched_strip_reads_like_one_call_per_field(
    form: Template, engine: TesseractEngine
) -> None:
    image, values = _clean_form(form, 3)
    grey = image.convert("L")
    crops = [Crop(f.box, f.type) for f in form.fields]
    batched = reread(engine, grey, crops)
    from kerani.ocr.reocr import whitelist_for

    single = [read_strip(engine, grey, [c.box], whitelist_for(c.kind))[0] for c in crops]
    assert [b.text for b in batched] == [s.text for s in single]
    right = sum(b.text == values[f.name] for b, f in zip(batched, form.fields, strict=True))
    assert right >= 9, [b.text for b in batched]


def test_unread_ink_flags_what_the_words_miss() -> None:
    import numpy as np

    from kerani.ocr.engine import Word
    from kerani.ocr.ink import ink_masks, unread_ink

    page = Image.new("L", (400, 100), 255)
    page.paste(0, (20, 40, 120, 60))  # a word ...
    page.paste(0, (126, 44, 130, 56))  # ... and a colon after it that OCR dropped
    word = Word("DATE", (20, 40, 120, 60), 96.0, (1, 1, 1))
    ink, covered = ink_masks(page, [word])
    assert isinstance(ink, np.ndarray)
    assert unread_ink(ink, covered, (20, 40, 120, 60)) > 0.02
    page.paste(255, (126, 44, 130, 56))
    ink, covered = ink_masks(page, [word])
    assert unread_ink(ink, covered, (20, 40, 120, 60)) == 0.0


def test_a_page_that_is_not_its_template_is_refused_for_it_with_the_reason(
    engine: TesseractEngine, form: Template
) -> None:
    receipt = Path(__file__).resolve().parents[1] / "kerani" / "samples" / "receipts" / "pages"
    image = Image.open(receipt / "000.jpg").convert("RGB")
    # Read as a form, its boxes would put the receipt's words in the address field.
    with pytest.raises(TemplateMismatchError) as refused:
        read_template_page(image, form, engine)
    assert str(refused.value).startswith(
        "does not look like the form 'bantuan_form': alignment failed,"
    )
    page, _ = _clean_form(form, seed=11)  # its own form aligns
    read, _reads = read_template_page(page, form, engine)
    assert "aligned by anchor words" in read.notes


def _low_resolution(page: Image.Image, percent: int, quality: int) -> Image.Image:
    import io

    small = page.convert("L").resize((page.width * percent // 100, page.height * percent // 100))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=quality)
    return Image.open(out).convert("RGB")


def test_a_68_dpi_scan_of_the_form_is_scaled_aligned_and_read(
    engine: TesseractEngine, form: Template
) -> None:
    page, values = _clean_form(form, seed=11)
    # The 150 dpi form at 45%: about 68 dpi, and a harsh JPEG.
    scan = _low_resolution(page, 45, 35)
    read, reads = read_template_page(scan, form, engine)
    assert any(n.startswith("scaled up") for n in read.notes), read.notes
    assert "aligned by anchor words" in read.notes
    right = sum(r.text == values[r.name] for r in reads)
    # Before this page was scaled up, and before the fit took scales below 0.5 with a
    # tolerance that follows the word height, it was read unaligned (either change alone
    # now aligns it; without both it is not). Aligned, it reads all 10 values right.
    assert right >= 9, [(r.text, values[r.name]) for r in reads]


def test_a_form_whose_anchors_do_not_agree_is_read_unaligned_and_kept_out_of_auto_accept(
    form: Template,
) -> None:
    from kerani.ocr.calibration import load_calibration
    from kerani.ocr.engine import NullEngine, Word
    from kerani.ocr.stage import template_anchors

    page, _ = _clean_form(form, seed=11)
    anchors = template_anchors(form)
    # Every anchor word is on the page, each somewhere else: a page whose print moved
    # (a folded or pasted-up scan), or another layout using the same words.
    rng = random.Random(3)
    words = [
        Word(a.text, (x, y, x + 60, y + 20), 95.0, (i,))
        for i, a in enumerate(anchors)
        for x, y in [(rng.randrange(page.width - 60), rng.randrange(page.height - 20))]
    ]
    read, reads = read_template_page(page, form, NullEngine(words), anchors=anchors)
    assert any(n.startswith("not aligned (") for n in read.notes), read.notes
    assert {r.evidence for r in reads} == {"unaligned"}
    calibration = load_calibration("bantuan_form")
    assert calibration is not None
    assert all(calibration.rule_for(r.kind, r.evidence) is None for r in reads)
