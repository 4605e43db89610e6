"""A field's snippet as a worker sees it: the one line to type, legible on a 360 px phone.

The snippet is drawn at the full width of the phone's screen, so its legibility is the
ratio of its width to the height of its text: a 328 CSS px wide picture of a line ten
times as wide as tall shows text 33 px high, whatever the scan's resolution. So:

- the field's box is widened until no character is cut at its edges (a box cut through
  "JALAN" shows "JALAI");
- a little context is kept around it, up to the nearest gap between words or lines, so
  that no neighbour is shown cut in half, and the context is dimmed: the line to type is
  the only dark ink;
- a line too long for that ratio is split at its word gaps into pieces stacked one under
  the other, read top to bottom like the line itself.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from kerani.ocr.engine import Box

SNIPPET_SUFFIX = ".webp"
# Wide enough for a phone at twice its CSS pixels; wider crops only cost a worker's data.
SNIPPET_MAX_WIDTH = 720
# Narrow crops are scaled up to about 1.5 times a phone's 328 CSS px (crisp on a cheap
# phone's screen), at most 2.5 times: a receipt line's median goes from 0.7 to 1.3 KB.
SNIPPET_MIN_WIDTH = 480
MAX_UPSCALE = 2.5
# Widest a piece may be, in text heights: 328 CSS px / 9 shows text about 36 px high.
MAX_PIECE_RATIO = 9.0
# A one-line snippet is at least this many times as wide as it is tall: about 7.5 text
# heights wide with its context, its text some 40 px high on a phone.
MIN_ASPECT = 3.5
# Lighter than this is paper; a scan's ink is well below.
INK_BELOW = 150
# Context is drawn at this share of its contrast, so its darkest ink stays above INK_BELOW.
CONTEXT_CONTRAST = 0.35


def crop_snippet(page: Image.Image, box: Box, margin: int) -> bytes:
    """Cut a field's line (with a little dimmed context) from the page as a greyscale WebP.

    WebP at quality 80 reads as the PNG does and weighs about 40% of it (on SROIE lines a
    median of 1 KB against 2.4 KB): workers on mobile data pay for every byte.
    """
    grey = np.asarray(page.convert("L"), dtype=np.uint8)
    ink = grey < INK_BELOW
    focus = whole_characters(ink, clip(box, grey.shape), margin)
    text_height = ink_height(ink, focus)
    pieces = split_at_word_gaps(ink, focus, text_height)
    if len(pieces) == 1:
        picture = at_least_wide(with_context(grey, ink, focus, text_height, margin))
    else:
        picture = stacked(grey, ink, pieces, text_height, margin)
    return _webp(picture)


def clip(box: Box, shape: tuple[int, ...]) -> Box:
    """The box inside the page, at least one pixel each way."""
    height, width = shape[0], shape[1]
    x0 = min(max(0, int(box[0])), width - 1)
    y0 = min(max(0, int(box[1])), height - 1)
    x1 = min(max(x0 + 1, int(box[2])), width)
    y1 = min(max(y0 + 1, int(box[3])), height)
    return x0, y0, x1, y1


def whole_characters(ink: np.ndarray, box: Box, margin: int) -> Box:
    """Widen the box until no ink crosses its edges (within reach), so nothing is cut."""
    x0, y0, x1, y1 = box
    height, width = ink.shape
    reach_x = 2 * (y1 - y0) + margin
    reach_y = max(margin, (y1 - y0) // 2)
    # Outward while the edge line still holds ink of the box's own rows or columns.
    # A thin stroke can leave one blank column inside a letter: the edge needs a few.
    clear = max(2, (y1 - y0) // 8)
    for _ in range(reach_x):
        if x0 == 0 or not ink[y0:y1, max(0, x0 - clear) : x0].any():
            break
        x0 -= 1
    for _ in range(reach_x):
        if x1 == width or not ink[y0:y1, x1 : x1 + clear].any():
            break
        x1 += 1
    for _ in range(reach_y):
        if y0 == 0 or not ink[y0, x0:x1].any():
            break
        y0 -= 1
    for _ in range(reach_y):
        if y1 == height or not ink[y1 - 1, x0:x1].any():
            break
        y1 += 1
    return x0, y0, x1, y1


def ink_height(ink: np.ndarray, box: Box) -> int:
    """The height of the box's band of text (the box's own height when it holds no ink)."""
    top, bottom = text_band(ink, box)
    return max(8, bottom - top)


def text_band(ink: np.ndarray, box: Box) -> tuple[int, int]:
    """The rows [top, bottom) of the box's text: its inkiest run of inked rows.

    A box drawn round a line often holds a sliver of the next one (the dots of a dotted
    rule, the foot of a letter above): those runs are apart from the line and lighter.
    """
    x0, y0, x1, y1 = box
    per_row = ink[y0:y1, x0:x1].sum(axis=1)
    # Lines set close touch by a descender or two: a row with next to no ink parts them.
    sparse = 0.04 * float(per_row.max()) if per_row.size else 0.0
    runs: list[tuple[int, int]] = []
    for i, inked in enumerate(per_row.tolist()):
        if inked <= sparse:
            continue
        if runs and i - runs[-1][1] <= 1:  # one blank row does not part a line
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    if not runs:
        return y0, y1
    top, bottom = max(runs, key=lambda r: int(per_row[r[0] : r[1]].sum()))
    return y0 + top, y0 + bottom


def split_at_word_gaps(ink: np.ndarray, box: Box, text_height: int) -> list[Box]:
    """The box cut at word gaps into pieces of about equal width, none wider than
    MAX_PIECE_RATIO text heights (equal pieces: the stack is as narrow as it can be)."""
    x0, y0, x1, y1 = box
    widest = int(MAX_PIECE_RATIO * text_height)
    width = x1 - x0
    if width <= widest * 1.15:  # a little over is better than a piece of one letter
        return [box]
    blank: np.ndarray = np.logical_not(ink[y0:y1, x0:x1].any(axis=0))
    gaps = _gaps(blank, min_width=max(2, text_height // 4))
    pieces: list[Box] = []
    start = 0
    while width - start > widest * 1.15:
        left = max(2, math.ceil((width - start) / widest))  # pieces still to make
        aim = start + (width - start) / left
        limit = start + widest
        fits = [g for g in gaps if start + widest // 3 < g[0] and g[1] <= limit]
        if fits:
            # Word gaps are wider than the gaps between letters: of the wide gaps, the one
            # nearest an even share of what is left.
            wide = max(g[1] - g[0] for g in fits)
            cut_end, cut_start = min(
                (g for g in fits if g[1] - g[0] >= 0.6 * wide),
                key=lambda g: abs((g[0] + g[1]) / 2 - aim),
            )
        else:  # one very long word: cut at its last blank column, or at the width
            inside = np.flatnonzero(blank[start + widest // 2 : limit])
            cut_end = cut_start = start + widest // 2 + int(inside[-1]) if inside.size else limit
        pieces.append((x0 + start, y0, x0 + cut_end, y1))
        start = cut_start
    pieces.append((x0 + start, y0, x1, y1))
    return [_trimmed(ink, p) for p in pieces]


def _gaps(blank: np.ndarray, min_width: int) -> list[tuple[int, int]]:
    """Runs of blank columns at least `min_width` wide, as (start, end) column indexes."""
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for i, empty in enumerate([*blank.tolist(), False]):
        if empty and start is None:
            start = i
        elif not empty and start is not None:
            if i - start >= min_width:
                runs.append((start, i))
            start = None
    return runs


def _trimmed(ink: np.ndarray, box: Box) -> Box:
    """The box narrowed to its band of text, and to its ink left and right."""
    x0, y0, x1, y1 = box
    y0, y1 = text_band(ink, box)
    cols = np.flatnonzero(ink[y0:y1, x0:x1].any(axis=0))
    if cols.size == 0:
        return x0, y0, x1, y1
    return x0 + int(cols[0]), y0, x0 + int(cols[-1]) + 1, y1


def with_context(
    grey: np.ndarray, ink: np.ndarray, focus: Box, text_height: int, margin: int
) -> Image.Image:
    """The focus with a little context around it (a text height each side, 0.6 above and
    below), dimmed, no neighbour cut."""
    x0, y0, x1, y1 = focus
    height, width = grey.shape
    pad_x = max(margin, text_height)
    pad_y = max(margin, int(0.6 * text_height))
    # Each edge of the crop moves in towards the focus until it crosses no ink.
    columns = ink.T
    left = _blank_edge(columns, max(0, x0 - pad_x), x0, y0 - pad_y, y1 + pad_y, inward=1)
    right = _blank_edge(columns, min(width - 1, x1 - 1 + pad_x), x1 - 1, y0 - pad_y, y1 + pad_y, -1)
    top = _blank_edge(ink, max(0, y0 - pad_y), y0, left, right + 1, inward=1)
    bottom = _blank_edge(ink, min(height - 1, y1 - 1 + pad_y), y1 - 1, left, right + 1, -1)
    crop = grey[top : bottom + 1, left : right + 1].astype(np.float32)
    # Paper in the context goes white (no speckle, no faint edge of a neighbour), ink grey.
    dimmed = np.where(crop < INK_BELOW, 255 - (255 - crop) * CONTEXT_CONTRAST, 255.0)
    fx0, fy0, fx1, fy1 = x0 - left, y0 - top, x1 - left, y1 - top
    dimmed[fy0:fy1, fx0:fx1] = crop[fy0:fy1, fx0:fx1]
    return Image.fromarray(dimmed.clip(0, 255).astype(np.uint8), mode="L")


def at_least_wide(picture: Image.Image) -> Image.Image:
    """A short line padded with paper on its right to MIN_ASPECT times its height.

    Drawn at the phone's width, "RM 5" alone would stand 80 px high and push the answer
    box off the screen; padded, a one-line snippet shows its text some 30 to 50 px high.
    """
    width = round(MIN_ASPECT * picture.height)
    if picture.width >= width:
        return picture
    padded = Image.new("L", (width, picture.height), 255)
    padded.paste(picture, (0, 0))
    return padded


def _blank_edge(lines: np.ndarray, start: int, stop: int, lo: int, hi: int, inward: int) -> int:
    """From `start` towards `stop`, the first line whose span [lo, hi) holds no ink."""
    lo, hi = max(0, lo), min(lines.shape[1], hi)
    at = start
    while at != stop:
        if not lines[at, lo:hi].any():
            return at
        at += inward
    return stop


def stacked(
    grey: np.ndarray, ink: np.ndarray, pieces: list[Box], text_height: int, margin: int
) -> Image.Image:
    """The pieces of a long line one under the other, left-aligned, a blank line between."""
    pad = max(2, min(margin, text_height // 3))
    crops = []
    for x0, y0, x1, y1 in pieces:
        # Above and below, up to the nearest blank row: the next line is never cut in half.
        top = _blank_edge(ink, max(0, y0 - pad), y0, x0, x1, inward=1)
        bottom = _blank_edge(ink, min(ink.shape[0] - 1, y1 - 1 + pad), y1 - 1, x0, x1, -1)
        crops.append(grey[top : bottom + 1, max(0, x0 - pad) : x1 + pad])
    gap = max(4, text_height // 2)
    width = max(c.shape[1] for c in crops)
    height = sum(c.shape[0] for c in crops) + gap * (len(crops) - 1)
    canvas = np.full((height, width), 255, dtype=np.uint8)
    y = 0
    for crop in crops:
        canvas[y : y + crop.shape[0], : crop.shape[1]] = crop
        y += crop.shape[0] + gap
    return Image.fromarray(canvas, mode="L")


def _webp(picture: Image.Image) -> bytes:
    """The picture between SNIPPET_MIN_WIDTH and SNIPPET_MAX_WIDTH wide, as WebP quality 80."""
    if picture.width < SNIPPET_MIN_WIDTH:
        # Scaled up here with Lanczos rather than by the phone's blurrier bilinear filter.
        factor = min(MAX_UPSCALE, SNIPPET_MIN_WIDTH / picture.width)
        size = (round(picture.width * factor), round(picture.height * factor))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    if picture.width > SNIPPET_MAX_WIDTH:
        height = max(1, math.ceil(picture.height * SNIPPET_MAX_WIDTH / picture.width))
        picture = picture.resize((SNIPPET_MAX_WIDTH, height), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    picture.save(out, format="WEBP", quality=80, method=4)
    return out.getvalue()
