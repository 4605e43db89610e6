"""Low-resolution copies of a ground-truth dataset: the scans archives and faxes give.

`degrade_dataset` writes every page of a dataset again, scaled down (a scanner at a lower
resolution averages whole areas: box filter), optionally saved as a lossy JPEG, and
optionally made to look faxed (half the vertical resolution, one bit per pixel, specks),
with the truth boxes following the pages. The OCR benchmark then measures each step of
the stage on scans like those of real archives, without needing such scans with truth.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kerani.core.boxes import Box
from kerani.core.errors import BadInputError
from kerani.evaluation.ground_truth import (
    PAGES_DIR,
    TruthField,
    TruthPage,
    read_truth,
    write_truth,
)


@dataclass(frozen=True)
class Degradation:
    """What to do to each page: scale, JPEG quality (None: lossless PNG), fax look."""

    scale: float = 1.0
    jpeg_quality: int | None = None
    fax: bool = False
    seed: int = 0

    def check(self) -> None:
        """Refuse settings that cannot make a page (BadInputError names the option)."""
        if not 0.05 <= self.scale <= 1.0:
            raise BadInputError(f"--scale must be between 0.05 and 1, not {self.scale}")
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 95:
            raise BadInputError(f"--jpeg-quality must be between 1 and 95, not {self.jpeg_quality}")


def _scaled_box(box: Box, scale: float, width: int, height: int) -> Box:
    # Outward rounding: the text stays inside its box after the page shrinks.
    x0, y0 = math.floor(box[0] * scale), math.floor(box[1] * scale)
    x1 = min(width, max(x0 + 1, math.ceil(box[2] * scale)))
    y1 = min(height, max(y0 + 1, math.ceil(box[3] * scale)))
    return (x0, y0, x1, y1)


def _faxed(grey: Image.Image, rng: random.Random) -> Image.Image:
    """Standard-resolution fax: every second row only, one bit per pixel, a few specks."""
    arr = np.asarray(grey, dtype=np.uint8)
    # 98 lines per inch against 204 dots: each kept row is shown twice, as fax viewers do.
    rows = np.repeat(arr[::2], 2, axis=0)[: arr.shape[0]]
    # A fixed threshold between ink and paper, as a fax machine's sensor applies.
    paper = int(np.percentile(arr[::4, ::4], 90))
    binary = np.where(rows < paper * 0.75, 0, 255).astype(np.uint8)
    noise = np.random.default_rng(rng.randrange(2**32)).random(binary.shape)
    binary[noise < 0.002] = 0  # line noise: black specks
    binary[noise > 0.999] = 255  # and dropouts
    return Image.fromarray(binary, mode="L")


def degrade_page(image: Image.Image, how: Degradation, rng: random.Random) -> Image.Image:
    """One page degraded as `how` says (greyscale out)."""
    grey = image.convert("L")
    if how.scale < 1.0:
        size = (max(1, round(grey.width * how.scale)), max(1, round(grey.height * how.scale)))
        grey = grey.resize(size, Image.Resampling.BOX)
    if how.fax:
        grey = _faxed(grey, rng)
    return grey


def degrade_dataset(source: Path, out_dir: Path, how: Degradation) -> int:
    """Write a degraded copy of the dataset at `source` to `out_dir`; return the page count."""
    how.check()
    if source.resolve() == out_dir.resolve():
        raise BadInputError(f"{out_dir}: write the degraded copy to another folder")
    pages = read_truth(source)
    (out_dir / PAGES_DIR).mkdir(parents=True, exist_ok=True)
    written: list[TruthPage] = []
    names: dict[str, str] = {}
    for n, page in enumerate(pages):
        # One generator per page: the same page degrades alike however many are made.
        rng = random.Random(f"kerani-degrade:{how.seed}:{n}")
        try:
            with Image.open(source / page.page) as im:
                image = degrade_page(im, how, rng)
        except (OSError, UnidentifiedImageError) as e:
            raise BadInputError(f"{source / page.page}: cannot read the page: {e}") from e
        suffix = ".jpg" if how.jpeg_quality is not None else ".png"
        # The page's own path, its suffix swapped: two pages never write one file.
        rel = Path(page.page).with_suffix(suffix).as_posix()
        if rel in names:
            raise BadInputError(
                f"{source}: pages {names[rel]!r} and {page.page!r} would both be written as {rel}"
            )
        names[rel] = page.page
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        if how.jpeg_quality is not None:
            image.save(out_dir / rel, format="JPEG", quality=how.jpeg_quality)
        else:
            image.save(out_dir / rel, format="PNG")
        fields = [
            TruthField(f.name, _scaled_box(f.box, how.scale, image.width, image.height), f.text)
            for f in page.fields
        ]
        written.append(TruthPage(page=rel, fields=fields))
    write_truth(out_dir, written)
    return len(written)
