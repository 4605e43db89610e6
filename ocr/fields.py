"""From a page's words to field guesses: words in template regions, or one field per text line."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from kerani.ocr.engine import Box, Word


@dataclass(frozen=True)
class FieldGuess:
    """The machine's guess for one field: text, confidence 0-100 (0 when nothing was read)."""

    name: str
    kind: str
    box: Box
    text: str
    confidence: float


def join_words(words: Sequence[Word]) -> tuple[str, float]:
    """Join words in reading order; the confidence is the weakest word's."""
    if not words:
        return "", 0.0
    ordered = sorted(words, key=lambda w: (w.line, w.box[0]))
    return " ".join(w.text for w in ordered), min(w.confidence for w in ordered)


def split_at_gaps(words: Sequence[Word], gap_factor: float) -> list[list[Word]]:
    """Split one text line where the space between two words is wider than the line is tall.

    Receipts and registers put columns on one row (item, quantity, amount): each column
    value is its own field, as a person would read it.
    """
    ordered = sorted(words, key=lambda w: w.box[0])
    height = max(w.box[3] for w in ordered) - min(w.box[1] for w in ordered)
    pieces: list[list[Word]] = [[ordered[0]]]
    for prev, word in itertools.pairwise(ordered):
        if word.box[0] - prev.box[2] > gap_factor * height:
            pieces.append([word])
        else:
            pieces[-1].append(word)
    return pieces


def guesses_by_line(words: Sequence[Word], gap_factor: float = 1.0) -> list[FieldGuess]:
    """Template-free pages: one field per text segment, top to bottom, named line_001, ..."""
    lines: dict[tuple[int, ...], list[Word]] = {}
    for w in words:
        lines.setdefault(w.line, []).append(w)
    segments = [seg for ws in lines.values() for seg in split_at_gaps(ws, gap_factor)]
    ordered = sorted(segments, key=lambda ws: (min(w.box[1] for w in ws), ws[0].box[0]))
    guesses = []
    for i, ws in enumerate(ordered, start=1):
        box = (
            min(w.box[0] for w in ws),
            min(w.box[1] for w in ws),
            max(w.box[2] for w in ws),
            max(w.box[3] for w in ws),
        )
        text, conf = join_words(ws)
        guesses.append(FieldGuess(f"line_{i:03d}", "line", box, text, conf))
    return guesses
