"""The OCR-engine interface: a page image in, words with boxes and confidences out.

An engine is anything with a `name` and a `read_page` method. `NullEngine` returns the
words it was given, so that routing and the web app can be tested without Tesseract.

A second engine (`LineReader`: it also recognises given field crops) confirms Tesseract's
reading of a field; `kerani.ocr.second_engine` makes the one Kerani knows (ocr.rapid,
the optional `ocr2` extra). Tesseract stays the first engine: it reads the page once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from kerani.core.boxes import Box


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


class LineReader(Protocol):
    """A second engine: recognises the text inside given boxes of a page, one line each."""

    name: str

    def read_lines(self, image: Image.Image, boxes: Sequence[Box]) -> list[tuple[str, float]]:
        """Return (text, confidence 0-100) for each box, in order."""
        ...
