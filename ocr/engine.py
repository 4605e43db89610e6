"""The OCR-engine interface: a page image in, words with boxes and confidences out.

An engine is anything with a `name` and a `read_page` method. `NullEngine` returns the
words it was given, so that routing and the web app can be tested without Tesseract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Word:
    """One recognised word: its text, box in page pixels, confidence 0-100 and its line."""

    text: str
    box: Box
    confidence: float
    line: tuple[int, ...]  # engine's own line identity: words with equal `line` share a line


class OcrEngine(Protocol):
    """Reads the words of a page image."""

    name: str

    def read_page(self, image: Image.Image) -> list[Word]:
        """Return every word found on the page, in reading order."""
        ...


class NullEngine:
    """An engine that 'recognises' a fixed list of words: for tests without Tesseract."""

    name = "null"

    def __init__(self, words: Sequence[Word] = ()) -> None:
        self.words = list(words)

    def read_page(self, image: Image.Image) -> list[Word]:
        """Return the words given at construction, whatever the image."""
        return list(self.words)
