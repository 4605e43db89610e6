"""What a worker's phone shows, measured from the rendered page: text height and tap targets.

Used by `kerani bench ui` for its figures and by the browser tests for their asserts, so that
both measure the same thing the same way.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from playwright.sync_api import Page

from kerani.ocr.snippets import INK_BELOW

# Fewer rows than this in a band of dark rows is a speck.
MIN_BAND_CSS_PX = 3
# The controls a finger has to hit. A checkbox hidden inside its label is tapped through the
# label (the label is the target); what a closed menu holds has no box and is not counted.
CONTROLS = (
    "() => Array.from(document.querySelectorAll("
    "'a[href], button, summary, select, textarea, input:not([type=hidden]), label.cant'))"
    ".filter(e => e.matches('label.cant') || !e.closest('label.cant'))"
    ".map(e => { const r = e.getBoundingClientRect(), s = getComputedStyle(e);"
    " return {what: (e.tagName + (e.id ? '#' + e.id : '') + ' ' +"
    " (e.textContent || e.value || e.name || '').trim().slice(0, 24)).trim(),"
    " width: r.width, height: r.height, shown: r.width > 0 && r.height > 0"
    " && s.visibility !== 'hidden' && s.display !== 'none'}; })"
    ".filter(c => c.shown)"
)


@dataclass(frozen=True)
class Target:
    """One control on screen and its box, in CSS px."""

    what: str
    width: float
    height: float

    @property
    def size(self) -> float:
        """The smaller side: what a finger has to hit."""
        return min(self.width, self.height)


def snippet_text_px(page: Page, selector: str = "#snippet") -> float | None:
    """The height in CSS px of the line to type as drawn: its tallest band of dark rows.

    The snippet's context is dimmed (ocr/snippets.py): only the line to type is darker than
    INK_BELOW, so each band of rows holding dark pixels is that line, or one piece of it
    when a long line is split (its pieces are one line's text; the tallest holds its
    ascenders and descenders both, as a line's height does).
    """
    png = page.locator(selector).screenshot(scale="css", animations="disabled")
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    rows = (grey < INK_BELOW).any(axis=1).astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], rows, [0]])))
    heights = [int(h) for h in edges[1::2] - edges[0::2] if h >= MIN_BAND_CSS_PX]
    return float(max(heights)) if heights else None


def touch_targets(page: Page) -> list[Target]:
    """Every control shown on the page, with its box."""
    return [
        Target(str(c["what"]), float(c["width"]), float(c["height"]))
        for c in page.evaluate(CONTROLS)
    ]


def smallest_target(page: Page) -> Target | None:
    """The control with the smallest side on the page."""
    targets = touch_targets(page)
    return min(targets, key=lambda t: t.size) if targets else None
