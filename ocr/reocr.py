"""Field re-OCR: each doubtful field's crop read again on its own, with its character set.

With Tesseract in process (tesserocr, `CropEngine`) every crop is read alone, as one line
or, when it is taller than two lines, as a block: about 11 ms a crop. Without it, the
crops that share a character set are stacked into one tall strip for one `tesseract`
process (a process costs about 0.15 s just to start), read as a block of single lines
(--psm 6), and each word goes back to the crop its centre falls in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from PIL import Image

from kerani.ocr.engine import Box, Word
from kerani.ocr.geometry import clip_box
from kerani.ocr.ink import has_ink

# Characters each typed field may hold; free text has no whitelist.
_DIGITS = "0123456789"
CHARSETS: dict[str, str] = {
    "number": _DIGITS,
    "amount": _DIGITS + ".",
    "date": _DIGITS + "/",
    "ic_number": _DIGITS + "-",
    "phone": _DIGITS + "-",
    "postcode": _DIGITS,
}
# One whitelist for every numeric type: one strip (one process) for all of them; each
# type's validator still rejects a character that does not belong.
NUMERIC_WHITELIST = _DIGITS + "./-"
MARGIN_PX = 3
# Tesseract reads best with capitals about 20-40 px tall; tiny crops are enlarged.
MIN_CROP_HEIGHT = 24


@runtime_checkable
class CropEngine(Protocol):
    """An engine that reads one crop in process (Tesseract through tesserocr)."""

    def read_crop(self, crop: Image.Image, *, block: bool, whitelist: str) -> Reading | None:
        """Read a crop as one line (or a block); None when in-process reading is unavailable."""
        ...


class BlockReader(Protocol):
    """An engine that can OCR an image in a given page-segmentation mode."""

    def read_block(
        self, image: Image.Image, psm: int, variables: dict[str, str] | None = None
    ) -> list[Word]:
        """Return the words of the image."""
        ...


@dataclass(frozen=True)
class Crop:
    """A field region to re-read: its box on the page and its field type."""

    box: Box
    kind: str


@dataclass(frozen=True)
class Reading:
    """What the re-OCR made of one crop: its text and the weakest word's confidence."""

    text: str
    confidence: float


def whitelist_for(kind: str) -> str:
    """The characters Tesseract may output for a field type ('' means any)."""
    return NUMERIC_WHITELIST if kind in CHARSETS else ""


def build_strip(
    page: Image.Image, boxes: Sequence[Box]
) -> tuple[Image.Image, list[tuple[int, int]]]:
    """Stack the crops of `boxes` into one white strip; return it and each crop's y-band."""
    crops: list[Image.Image] = []
    for box in boxes:
        x0, y0, x1, y1 = clip_box(
            (box[0] - MARGIN_PX, box[1] - MARGIN_PX, box[2] + MARGIN_PX, box[3] + MARGIN_PX),
            page.width,
            page.height,
        )
        crop = page.crop((x0, y0, x1, y1))
        if crop.height < MIN_CROP_HEIGHT:
            factor = MIN_CROP_HEIGHT / crop.height
            crop = crop.resize(
                (max(1, round(crop.width * factor)), MIN_CROP_HEIGHT), Image.Resampling.BICUBIC
            )
        crops.append(crop)
    pad = 16
    # Half a line of white between crops keeps Tesseract from merging neighbouring lines.
    heights = sorted(c.height for c in crops)
    gap = max(12, heights[len(heights) // 2] // 2) if heights else 12
    width = max((c.width for c in crops), default=1) + 2 * pad
    height = sum(c.height for c in crops) + gap * (len(crops) + 1)
    strip = Image.new("L", (width, height), 255)
    bands: list[tuple[int, int]] = []
    y = gap
    for c in crops:
        strip.paste(c, (pad, y))
        bands.append((y, y + c.height))
        y += c.height + gap
    return strip, bands


def _assign(words: Sequence[Word], bands: Sequence[tuple[int, int]]) -> list[Reading]:
    per_band: list[list[Word]] = [[] for _ in bands]
    for w in words:
        cy = (w.box[1] + w.box[3]) / 2
        for i, (top, bottom) in enumerate(bands):
            if top <= cy <= bottom:
                per_band[i].append(w)
                break
    readings = []
    for ws in per_band:
        if not ws:
            readings.append(Reading("", 0.0))
            continue
        ordered = sorted(ws, key=lambda w: w.box[0])
        readings.append(
            Reading(" ".join(w.text for w in ordered), min(w.confidence for w in ordered))
        )
    return readings


def read_strip(
    reader: BlockReader, page: Image.Image, boxes: Sequence[Box], whitelist: str
) -> list[Reading]:
    """OCR the crops of `boxes` in one call (one strip) and return one reading per box."""
    if not boxes:
        return []
    strip, bands = build_strip(page, boxes)
    variables = {"tessedit_char_whitelist": whitelist} if whitelist else {}
    return _assign(reader.read_block(strip, psm=6, variables=variables), bands)


def cut_crop(page: Image.Image, box: Box) -> Image.Image:
    """A field's crop with a little paper around it, enlarged when its text is tiny."""
    x0, y0, x1, y1 = clip_box(
        (box[0] - MARGIN_PX, box[1] - MARGIN_PX, box[2] + MARGIN_PX, box[3] + MARGIN_PX),
        page.width,
        page.height,
    )
    crop = page.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    if crop.height < MIN_CROP_HEIGHT:
        factor = MIN_CROP_HEIGHT / crop.height
        crop = crop.resize(
            (max(1, round(crop.width * factor)), MIN_CROP_HEIGHT), Image.Resampling.LANCZOS
        )
    return crop


def read_crops(
    reader: CropEngine, page: Image.Image, crops: Sequence[Crop], line_px: float
) -> list[Reading] | None:
    """Read every crop alone, in process; None when the engine cannot (use `reread`)."""
    out: list[Reading] = []
    for c in crops:
        crop = cut_crop(page, c.box)
        if not has_ink(crop):
            # Tesseract invents a character or two on a blank crop read as one line.
            out.append(Reading("", 0.0))
            continue
        block = line_px > 0 and c.box[3] - c.box[1] > 2 * line_px
        reading = reader.read_crop(crop, block=block, whitelist=whitelist_for(c.kind))
        if reading is None:
            return None
        out.append(reading)
    return out


def reread(reader: BlockReader, page: Image.Image, crops: Sequence[Crop]) -> list[Reading]:
    """Re-OCR every crop, one strip (one process) per character set; readings in input order."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(crops):
        groups.setdefault(whitelist_for(c.kind), []).append(i)
    out: list[Reading] = [Reading("", 0.0)] * len(crops)
    for whitelist, idx in groups.items():
        for i, reading in zip(
            idx, read_strip(reader, page, [crops[i].box for i in idx], whitelist), strict=True
        ):
            out[i] = reading
    return out
