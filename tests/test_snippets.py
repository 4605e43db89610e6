"""A snippet is legible on a 360 px phone: whole characters, its one line dark, long lines split."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from kerani.ocr.engine import Box
from kerani.ocr.snippets import (
    INK_BELOW,
    MAX_PIECE_RATIO,
    SNIPPET_MAX_WIDTH,
    crop_snippet,
)
from kerani.ocr.tesseract import TesseractEngine
from kerani.review_ui.web import snippet_media_type

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _page(lines: list[tuple[int, str]], width: int = 1400, size: int = 22) -> Image.Image:
    """A white page with each (y, text) line drawn at x=20."""
    page = Image.new("RGB", (width, 400), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(FONT, size)
    for y, text in lines:
        draw.text((20, y), text, fill="black", font=font)
    return page


def _box_of(page: Image.Image, y: int, text: str, size: int = 22) -> Box:
    """The ink box of a line drawn by _page."""
    font = ImageFont.truetype(FONT, size)
    x0, y0, x1, y1 = ImageDraw.Draw(page).textbbox((20, y), text, font=font)
    return int(x0), int(y0), int(x1), int(y1)


def _grey(snippet: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(snippet)) as image:
        return np.asarray(image.convert("L"))


@pytest.fixture(scope="module")
def engine() -> TesseractEngine:
    return TesseractEngine("eng")


def test_a_long_line_is_split_at_its_word_gaps_into_pieces_a_phone_shows_large(
    engine: TesseractEngine,
) -> None:
    text = "NO.53 55,57 & 59, JALAN SAGU 18, TAMAN DAYA, 81100 JOHOR BAHRU"
    page = _page([(100, text)])
    box = _box_of(page, 100, text)
    snippet = crop_snippet(page, box, 6)
    grey = _grey(snippet)
    # Shown 328 CSS px wide, the text of each piece stands at least 24 px high.
    rows = (grey < INK_BELOW).any(axis=1)
    bands = np.flatnonzero(np.diff(np.concatenate([[0], rows.astype(int), [0]])))
    heights = bands[1::2] - bands[0::2]
    assert len(heights) >= 3  # the line went into pieces one under the other
    assert min(heights) * 328 / grey.shape[1] >= 24
    # Each piece ends at a word gap: read back, every word is whole and in order.
    words = engine.read_page(Image.open(io.BytesIO(snippet)).convert("RGB"))
    assert " ".join(w.text for w in sorted(words, key=lambda w: (w.line, w.box[0]))) == text
    assert snippet_media_type(snippet) == "image/webp" and len(snippet) < 12_000
    assert grey.shape[1] <= SNIPPET_MAX_WIDTH


def test_a_box_cut_through_a_word_shows_the_whole_word(engine: TesseractEngine) -> None:
    page = _page([(100, "2811, JALAN")])
    x0, y0, x1, y1 = _box_of(page, 100, "2811, JALAN")
    cut = (x0, y0, x1 - 12, y1)  # ends inside the N, as a template box may
    snippet = Image.open(io.BytesIO(crop_snippet(page, cut, 6))).convert("RGB")
    assert " ".join(w.text for w in engine.read_page(snippet)) == "2811, JALAN"


def test_context_is_dimmed_and_no_neighbour_line_is_shown_cut_in_half() -> None:
    # The line above sits close enough for the context to reach half into it.
    page = _page([(84, "PAID ALREADY STAMPED"), (110, "RM 30.91")])
    box = _box_of(page, 110, "RM 30.91")
    grey = _grey(crop_snippet(page, box, 6))
    dark_rows = np.flatnonzero((grey < INK_BELOW).any(axis=1))
    inked_rows = np.flatnonzero((grey < 250).any(axis=1))
    # Only the line to type is dark: the dimmed line above, if shown, is all lighter.
    dark_band = dark_rows[-1] - dark_rows[0] + 1
    assert np.all(np.diff(dark_rows) == 1)
    above = grey[: dark_rows[0]]
    assert above.size == 0 or above.min() >= INK_BELOW
    # Nothing touches the top or bottom edge: a neighbour is shown whole or not at all.
    assert inked_rows[0] > 0 and inked_rows[-1] < grey.shape[0] - 1
    assert dark_band < grey.shape[0]


def test_a_short_line_is_not_split_and_stays_within_the_piece_ratio() -> None:
    page = _page([(100, "25/12/2018")])
    box = _box_of(page, 100, "25/12/2018")
    grey = _grey(crop_snippet(page, box, 6))
    rows = (grey < INK_BELOW).any(axis=1)
    band = np.flatnonzero(rows)
    assert np.all(np.diff(band) == 1)  # one band of text: not split
    assert grey.shape[1] / (band[-1] - band[0] + 1) <= MAX_PIECE_RATIO + 3
