"""Page clean-up before OCR: size checks, greyscale, contrast, deskew, orientation, denoise.

`prepare_page` returns the cleaned image together with the affine map from scan pixels to
cleaned-page pixels, so that boxes given on the scan (ground truth) can follow the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from kerani.core.errors import BadInputError
from kerani.ocr.geometry import Affine

# Smaller than this cannot hold a readable line of text.
MIN_SIDE_PX = 48
MIN_PIXELS = 120 * 120
# Bigger than this is a poster-size scan: Tesseract gains nothing and takes minutes.
MAX_OCR_PIXELS = 16_000_000
# Tesseract reads best when a line of text is about this tall (ink top to bottom, as
# `text_height` measures it); pages with smaller text are scaled up to it. Measured on
# SROIE receipts (see ocr/calibrations/README.md).
TARGET_TEXT_PX = 26.0
# ... but only when their text is clearly smaller, and by at most this factor.
SCALE_BELOW_PX = 20.0
MAX_UPSCALE = 3.0
# Deskew only when the page is clearly turned; Tesseract copes with less on its own.
MIN_DESKEW_DEG = 0.3
MAX_DESKEW_DEG = 5.0


@dataclass
class PreparedPage:
    """A cleaned greyscale page and how its pixels relate to the scan's."""

    image: Image.Image
    to_page: Affine  # scan pixels -> cleaned-page pixels
    scan_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)
    # The height of its text lines in cleaned-page pixels (text_height), measured once a
    # page for the steps that size things by the line (crop reading, unread ink); None
    # measures it from `image` (pass None with a new image).
    text_px: float | None = None

    def __post_init__(self) -> None:
        if self.text_px is None:
            self.text_px = text_height(self.image)

    @property
    def line_px(self) -> float:
        """`text_px`, measured."""
        assert self.text_px is not None  # set in __post_init__
        return self.text_px


def clean_page(image: Image.Image) -> Image.Image:
    """Return a greyscale copy with its contrast stretched, which helps faint scans."""
    grey = image.convert("L")
    # A 1% cut ignores specks of dust and the darkest scanner edge when stretching.
    return ImageOps.autocontrast(grey, cutoff=1)


def check_size(image: Image.Image) -> None:
    """Refuse a page too small to hold text (BadInputError says why)."""
    w, h = image.size
    if min(w, h) < MIN_SIDE_PX or w * h < MIN_PIXELS:
        raise BadInputError(f"page too small to read: {w}x{h} pixels")


def paper_level(arr: np.ndarray) -> int:
    """The paper's grey level: the 90th percentile of a greyscale array's values."""
    # A histogram of 256 levels: far cheaper than np.percentile's sort of every pixel.
    counts = np.bincount(arr.ravel(), minlength=256)
    return int(np.searchsorted(np.cumsum(counts), 0.9 * arr.size))


def small_copy(grey: Image.Image, max_side: int = 700) -> tuple[np.ndarray, float]:
    """A greyscale page shrunk by an integer factor to at most `max_side`, and the factor.

    Box reduction (averaging whole blocks of pixels) is several times cheaper than a
    thumbnail's resampling, and page-wide measures (ink, skew) need no more.
    """
    factor = max(1, -(-max(grey.size) // max_side))
    small = grey.reduce(factor) if factor > 1 else grey
    return np.asarray(small), float(factor)


def ink_fraction(grey: Image.Image, small: np.ndarray | None = None) -> float:
    """Share of pixels clearly darker than the paper: about 0 for a blank page."""
    arr = small_copy(grey)[0] if small is None else small
    # Faded thermal receipts print at 40-50 grey levels below the paper.
    return float(np.mean(arr < paper_level(arr) - 30))


def estimate_skew(
    grey: Image.Image, max_deg: float = MAX_DESKEW_DEG, small: np.ndarray | None = None
) -> float:
    """Angle in degrees to turn the page counter-clockwise (PIL's rotate) to level its lines.

    Projection profiles of the dark pixels: the rows are sharpest when the lines are level.
    `small` is the page from `small_copy`, when the caller has it already.
    """
    arr = small_copy(grey)[0] if small is None else small
    ys_i, xs_i = np.nonzero(arr < paper_level(arr) - 60)
    xs, ys = xs_i.astype(np.float64), ys_i.astype(np.float64)
    if len(xs) < 200:
        return 0.0
    if len(xs) > 60_000:
        # A random sample keeps the cost flat on dense pages; fixed seed, same answer each run.
        pick = np.random.default_rng(0).choice(len(xs), 60_000, replace=False)
        xs, ys = xs[pick], ys[pick]

    def score(angle: float) -> float:
        t = np.radians(angle)
        # Row of each dark point after turning the page counter-clockwise by `angle`.
        rows = -xs * np.sin(t) + ys * np.cos(t)
        hist = np.bincount((rows - rows.min()).astype(np.int64))
        return float(np.sum(hist.astype(np.float64) ** 2))

    coarse = np.arange(-max_deg, max_deg + 1e-9, 0.5)
    best = max(coarse, key=score)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.1)
    return float(max(fine, key=score))


def run_bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each run of True in a 1-D mask starts, and where it ends (one past its last)."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]


def clear_dark_edges(grey: Image.Image, max_share: float = 0.03) -> tuple[Image.Image, int]:
    """Paint dark bands along the page's edges (a scanner's lid or its shadow) as paper.

    A black row across the top and bottom of a scan makes Tesseract's layout analysis
    find no text at all ("Empty page!!" on a clean SROIE receipt). Rows and columns from
    each edge inwards whose mean is under half the paper's level are cleared, at most
    `max_share` of the page's side each; the geometry does not change. Returns the page
    and the number of rows and columns cleared.
    """
    arr = np.asarray(grey)
    paper = paper_level(arr[::4, ::4])
    dark = paper / 2
    height, width = arr.shape
    rows, cols = arr.mean(axis=1), arr.mean(axis=0)

    def run(means: np.ndarray, limit: int) -> int:
        n = 0
        while n < limit and means[n] < dark:
            n += 1
        return n

    top, bottom = run(rows, int(height * max_share)), run(rows[::-1], int(height * max_share))
    left, right = run(cols, int(width * max_share)), run(cols[::-1], int(width * max_share))
    cleared = top + bottom + left + right
    if not cleared:
        return grey, 0
    out = arr.copy()
    out[:top] = paper
    out[height - bottom :] = paper
    out[:, :left] = paper
    out[:, width - right :] = paper
    return Image.fromarray(out, mode="L"), cleared


def text_height(grey: Image.Image, strips: int = 6) -> float:
    """The typical height in pixels of the page's text lines (ink top to bottom), 0 if none.

    Row profiles of the ink in vertical strips (so that columns and a little skew still
    give separate lines): each run of inked rows is one line. The median is weighted by
    each run's ink, so that specks and dotted rules, many but light, do not pull it
    down. It reads about 0.8 of a SROIE line box's height (those boxes carry padding).
    """
    arr = np.asarray(grey.convert("L"))
    ink = arr < paper_level(arr[::4, ::4]) - 60
    width = ink.shape[1]
    step = max(1, width // strips)
    lengths: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for left in range(0, max(1, width - step + 1), step):
        counts = np.count_nonzero(ink[:, left : left + step], axis=1)
        # Two inked pixels make a row of text: one is a speck of dust.
        tops, bottoms = run_bounds(counts >= 2)
        cumulative = np.concatenate(([0], np.cumsum(counts)))
        lengths.append(bottoms - tops)
        weights.append(cumulative[bottoms] - cumulative[tops])
    if not lengths:
        return 0.0
    length, weight = np.concatenate(lengths), np.concatenate(weights)
    # Runs under 3 px are rules and the dots of a dotted line.
    keep = length >= 3
    length, weight = length[keep], weight[keep]
    if not length.size:
        return 0.0
    order = np.argsort(length)
    cumulative_weight = np.cumsum(weight[order])
    middle = int(np.searchsorted(cumulative_weight, cumulative_weight[-1] / 2))
    return float(length[order][middle])


def text_scale(
    image: Image.Image, target_px: float = TARGET_TEXT_PX, max_pixels: int = MAX_OCR_PIXELS
) -> float:
    """How far to scale a page up so that its text reaches `target_px` (1.0: leave it)."""
    return _scale_for(text_height(image), image.size, target_px, max_pixels)


def _scale_for(height: float, size: tuple[int, int], target_px: float, max_pixels: int) -> float:
    if height <= 0 or height >= SCALE_BELOW_PX:
        return 1.0
    # Never past the pixel cap that keeps Tesseract's time bounded.
    room = (max_pixels / max(1, size[0] * size[1])) ** 0.5
    return round(max(1.0, min(target_px / height, MAX_UPSCALE, room)), 2)


def turn(image: Image.Image, to_page: Affine, degrees_ccw: int) -> tuple[Image.Image, Affine]:
    """Turn a page by a multiple of 90 degrees counter-clockwise; return it and the new map."""
    w, h = image.size
    k = (degrees_ccw // 90) % 4
    if k == 0:
        return image, to_page
    ops = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180}
    ops[3] = Image.Transpose.ROTATE_270
    turned = image.transpose(ops[k])
    # Where a pixel (x, y) of the old image lands on the turned one.
    maps = {
        1: Affine(0, 1, 0, -1, 0, w),  # 90 ccw: (x, y) -> (y, w - x)
        2: Affine(-1, 0, w, 0, -1, h),
        3: Affine(0, -1, h, 1, 0, 0),  # 270 ccw: (x, y) -> (h - y, x)
    }
    return turned, maps[k].then_after(to_page)


def prepare_page(
    image: Image.Image,
    *,
    deskew: bool = True,
    denoise: bool = False,
    contrast: bool = False,
    max_pixels: int = MAX_OCR_PIXELS,
    scale_text: bool = True,
) -> PreparedPage:
    """Check, greyscale, shrink if enormous, stretch contrast, level and scale a scan for OCR.

    Small text (a low-resolution scan, a fax, a receipt photographed from afar) is scaled
    up to the size Tesseract reads best (`text_scale`), after levelling.

    Raises BadInputError for a page too small to read or with no ink on it (blank).
    """
    check_size(image)
    to_page = Affine()
    notes: list[str] = []
    work = image
    if work.width * work.height > max_pixels:
        factor = (max_pixels / (work.width * work.height)) ** 0.5
        size = (max(1, int(work.width * factor)), max(1, int(work.height * factor)))
        notes.append(f"shrunk from {work.width}x{work.height} to {size[0]}x{size[1]}")
        to_page = Affine(size[0] / work.width, 0, 0, 0, size[1] / work.height, 0)
        work = work.convert("L").resize(size, Image.Resampling.BOX)
    grey = clean_page(work) if contrast else work.convert("L")
    grey, cleared = clear_dark_edges(grey)
    if cleared:
        notes.append(f"dark scan edges cleared ({cleared} rows and columns)")
    small, _factor = small_copy(grey)
    if ink_fraction(grey, small) < 0.0005:
        raise BadInputError("blank page: no ink found")
    if denoise:
        # A 3x3 median removes salt-and-pepper specks and keeps stroke edges.
        grey = grey.filter(ImageFilter.MedianFilter(3))
    if deskew:
        angle = estimate_skew(grey, small=None if denoise else small)
        if abs(angle) >= MIN_DESKEW_DEG:
            # Bilinear: a bicubic turn of the whole page cost a tenth of its OCR time, and
            # Tesseract reads both alike at scan resolution.
            grey = grey.rotate(
                angle, resample=Image.Resampling.BILINEAR, fillcolor=paper_level(small)
            )
            to_page = Affine.rotation_about(angle, grey.width / 2, grey.height / 2).then_after(
                to_page
            )
            notes.append(f"deskewed by {angle:+.1f} degrees")
    text_px = text_height(grey)
    scale = _scale_for(text_px, grey.size, TARGET_TEXT_PX, max_pixels) if scale_text else 1.0
    if scale > 1.0:
        size = (round(grey.width * scale), round(grey.height * scale))
        # Lanczos keeps strokes smooth where a bilinear upscale leaves them blurred.
        grey = grey.resize(size, Image.Resampling.LANCZOS)
        to_page = Affine(scale, 0, 0, 0, scale, 0).then_after(to_page)
        notes.append(f"scaled up {scale:.2f}x for small text")
        text_px = text_height(grey)
    return PreparedPage(
        image=grey, to_page=to_page, scan_size=image.size, notes=notes, text_px=text_px
    )
