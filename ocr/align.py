"""Template alignment by anchor words: the form's printed labels, found by OCR on the scan.

A template's anchors are the printed words outside its fields (title, labels, footer) with
their centres on a clean rendering of the form, OCRed once. On a scan, each anchor whose
text appears exactly once among the page's words gives a point pair; a similarity
transform (scale, rotation, shift) is fitted to the pairs robustly (RANSAC over pairs of
pairs, then least squares on the inliers), and maps every field box onto the scan.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerani.core.errors import BadInputError
from kerani.ocr.engine import Box, Word
from kerani.ocr.geometry import Affine

ANCHORS_SUFFIX = ".anchors.json"
_NOT_WORD = re.compile(r"[^0-9A-Z]+")
MIN_PAIRS = 3
MIN_SCALE, MAX_SCALE = 0.3, 3.5
MIN_AGREEING = 0.5  # share of the anchors found that must agree on one map


@dataclass(frozen=True)
class Anchor:
    """A printed word of the form and its centre in template pixels."""

    text: str
    x: float
    y: float


def normalise(text: str) -> str:
    """Upper case, letters and digits only: how anchor words are compared."""
    return _NOT_WORD.sub("", text.upper())


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _inside_any(x: float, y: float, boxes: Sequence[Box]) -> bool:
    return any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in boxes)


def anchors_from_words(
    words: Sequence[Word], field_boxes: Sequence[Box], min_confidence: float = 80.0
) -> list[Anchor]:
    """Anchors from the OCR of a clean rendering: confident words, unique, outside fields."""
    keep: list[Anchor] = []
    for w in words:
        text = normalise(w.text)
        cx, cy = _centre(w.box)
        if (
            len(text) >= 3
            and w.confidence >= min_confidence
            and not _inside_any(cx, cy, field_boxes)
        ):
            keep.append(Anchor(text, cx, cy))
    counts = Counter(a.text for a in keep)
    return [a for a in keep if counts[a.text] == 1]


def save_anchors(anchors: Sequence[Anchor], path: Path) -> None:
    """Write anchors as JSON."""
    rows = [json.dumps({"text": a.text, "x": round(a.x, 1), "y": round(a.y, 1)}) for a in anchors]
    path.write_text("[\n" + ",\n".join(rows) + "\n]\n", encoding="utf-8")


def read_anchors(path: Path) -> list[Anchor]:
    """Read anchors written by save_anchors; BadInputError names a broken file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Anchor(str(d["text"]), float(d["x"]), float(d["y"])) for d in data]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise BadInputError(f"{path}: not a usable anchor file: {e}") from e


def _pairs(
    anchors: Sequence[Anchor], words: Sequence[Word]
) -> list[tuple[float, float, float, float]]:
    seen = Counter(normalise(w.text) for w in words)
    by_text = {normalise(w.text): w for w in words}
    pairs = []
    for a in anchors:
        if seen.get(a.text) == 1:
            px, py = _centre(by_text[a.text].box)
            pairs.append((a.x, a.y, px, py))
    return pairs


def _fit(pairs: np.ndarray) -> np.ndarray:
    """Least-squares similarity (p, q, tx, ty): x' = p x + q y + tx, y' = -q x + p y + ty."""
    x, y, u, v = pairs.T
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    rows = np.concatenate([np.stack([x, y, ones, zeros], 1), np.stack([y, -x, zeros, ones], 1)])
    rhs = np.concatenate([u, v])
    sol, *_ = np.linalg.lstsq(rows, rhs, rcond=None)
    return np.asarray(sol)


def _fit_all_pairs(pairs: np.ndarray, tolerance_px: float) -> np.ndarray | None:
    """RANSAC over every pair of point pairs at once; the inliers of the best, or None.

    A similarity is a complex affine map z' = s z + t, so two point pairs fix it in closed
    form: all the candidate maps and their residuals come out of a few array operations
    (a least-squares solve per pair cost a tenth of a page's OCR time).
    """
    src = pairs[:, 0] + 1j * pairs[:, 1]
    dst = pairs[:, 2] + 1j * pairs[:, 3]
    i, j = np.triu_indices(len(pairs), k=1)  # same order as itertools.combinations
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (dst[j] - dst[i]) / (src[j] - src[i])
    t = dst[i] - s * src[i]
    # A scan at a third of the template's resolution, or three times it, is still the form.
    plausible = (np.abs(s) > MIN_SCALE) & (np.abs(s) < MAX_SCALE)
    if not plausible.any():
        return None
    s, t = s[plausible], t[plausible]
    residuals = np.abs(s[:, None] * src[None, :] + t[:, None] - dst[None, :])
    inliers = residuals < tolerance_px
    counts = inliers.sum(axis=1)
    best = int(np.argmax(counts))  # the first of the best, as a loop in that order finds
    # On a scan of the form nearly every anchor found agrees (48 of 50 on a clean page, 17
    # of 18 at 60 dpi); three that agree by chance among many scattered words are no fit.
    enough = max(MIN_PAIRS, int(np.ceil(MIN_AGREEING * len(pairs))))
    return np.asarray(inliers[best]) if counts[best] >= enough else None


def anchors_found(anchors: Sequence[Anchor], words: Sequence[Word]) -> int:
    """How many of the anchor words the page shows, each once (what alignment can use)."""
    return len(_pairs(anchors, words))


def fit_alignment(
    anchors: Sequence[Anchor], words: Sequence[Word], tolerance_px: float | None = None
) -> Affine | None:
    """The map from template pixels to page pixels, or None when too few anchors agree.

    An anchor agrees when it lands within `tolerance_px` of its word; by default half the
    page's median word height, so the tolerance follows the scan's resolution.
    """
    pairs = np.array(_pairs(anchors, words), dtype=np.float64)
    if len(pairs) < MIN_PAIRS:
        return None
    if tolerance_px is None:
        heights = [w.box[3] - w.box[1] for w in words]
        tolerance_px = max(4.0, 0.5 * float(np.median(heights))) if heights else 12.0
    # Anchors are few (tens): trying every pair of point pairs is cheap and exhaustive.
    best = _fit_all_pairs(pairs, tolerance_px)
    if best is None:
        return None
    p, q, tx, ty = _fit(pairs[best])
    return Affine(float(p), float(q), float(tx), float(-q), float(p), float(ty))


def place_box(box: Box, template_to_page: Affine) -> Box:
    """A template field box on the page."""
    return template_to_page.box(box)
