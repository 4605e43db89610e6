"""Ink the OCR did not read: beside a field's words, or on its own where no field is.

A page's ink is every pixel clearly darker than its paper; the words Tesseract returned
cover some of it. What is left is either a character dropped from a field (`unread_ink`,
evidence "-ink") or text no word and no field holds at all (`unread_regions`): on a
template-free page that would be a value never digitised, so it becomes a task of its
own ("is there text here?") instead of silence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from kerani.core.boxes import Box
from kerani.ocr.cleanup import paper_level, run_bounds
from kerani.ocr.engine import Word

# Ink is this many grey levels darker than the paper (faded thermal print is 40-50).
INK_BELOW_PAPER = 40
# At most this many regions a page: a dirty scan must not turn into hundreds of tasks.
MAX_REGIONS = 12


def ink_masks(img: Image.Image, words: Sequence[Word]) -> tuple[np.ndarray, np.ndarray]:
    """The page's ink, and the pixels the words' boxes (one pixel wider) cover."""
    arr = np.asarray(img.convert("L"))
    paper = paper_level(arr[::4, ::4])
    ink = arr < paper - INK_BELOW_PAPER
    covered = np.zeros(arr.shape, dtype=bool)
    for w in words:
        covered[max(0, w.box[1] - 1) : w.box[3] + 1, max(0, w.box[0] - 1) : w.box[2] + 1] = True
    return ink, covered


def unread_ink(ink: np.ndarray, covered: np.ndarray, box: Box) -> float:
    """Unread ink in and beside a field, as a share of the ink its words cover.

    Looks one line height to each side: high when Tesseract dropped a colon, a digit or a
    word that belongs to the field.
    """
    height, width = ink.shape
    pad = box[3] - box[1]
    x0, x1 = max(0, box[0] - pad), min(width, box[2] + pad)
    y0, y1 = max(0, box[1]), min(height, box[3])
    ink_here, covered_here = ink[y0:y1, x0:x1], covered[y0:y1, x0:x1]
    read = int(np.count_nonzero(ink_here & covered_here))
    unread = int(np.count_nonzero(ink_here & ~covered_here))
    return unread / max(1, read)


def has_ink(crop: Image.Image) -> bool:
    """Whether a crop holds anything clearly darker than its paper."""
    arr = np.asarray(crop.convert("L"))
    return bool(arr.size) and int(arr.min()) < paper_level(arr) - INK_BELOW_PAPER


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a 1-D mask."""
    starts, ends = run_bounds(mask)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _close_gaps(runs: list[tuple[int, int]], gap: float) -> list[tuple[int, int]]:
    """Runs with gaps of at most `gap` between them joined into one."""
    joined: list[tuple[int, int]] = []
    for start, end in runs:
        if joined and start - joined[-1][1] <= gap:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return joined


def unread_regions(
    ink: np.ndarray, covered: np.ndarray, line_px: float, max_regions: int = MAX_REGIONS
) -> list[Box]:
    """Boxes of text-like ink that no word covers, most ink first, at most `max_regions`.

    Bands of rows holding uncovered ink (gaps under a third of a line closed, so that a
    colon's two dots stay one mark), split across at gaps wider than a line is tall. A
    piece is text-like when it is half a line tall or more and at most 2.5 lines (not a
    rule, a dashed line, a logo or a barcode), away from the page's edges (scanner
    borders), and its ink fills some but not most of it.
    """
    if line_px <= 0:
        return []
    loose = ink & ~covered
    height, width = loose.shape
    margin = max(2, round(0.2 * line_px))
    found: list[tuple[int, Box]] = []
    rows = np.count_nonzero(loose, axis=1) >= 2
    for top, bottom in _close_gaps(_runs(rows), line_px / 3):
        if not 0.5 * line_px <= bottom - top <= 2.5 * line_px:
            continue
        if top < margin or bottom > height - margin:
            continue
        band = loose[top:bottom]
        for left, right in _close_gaps(_runs(np.count_nonzero(band, axis=0) > 0), line_px):
            if left < margin or right > width - margin:
                continue
            piece = band[:, left:right]
            inked = int(np.count_nonzero(piece))
            # The piece's own rows: a dashed rule in a band with a speck is still thin.
            ys = np.nonzero(np.count_nonzero(piece, axis=1))[0]
            tall = int(ys[-1] - ys[0] + 1) if ys.size else 0
            fill = inked / max(1, (bottom - top) * (right - left))
            if tall >= 0.5 * line_px and inked >= 0.05 * line_px**2 and 0.04 <= fill <= 0.6:
                found.append((inked, (left, top + int(ys[0]), right, top + int(ys[-1]) + 1)))
    found.sort(key=lambda f: -f[0])
    return [box for _inked, box in found[:max_regions]]
